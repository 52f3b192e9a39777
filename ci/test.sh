#!/usr/bin/env bash
# Runs the project's tests exactly as the README says (`make test`), after checking the
# machine has what they need. Nothing installed by hand is assumed beyond the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "ci: '$1' is required but not installed ($2)" >&2; exit 1; }; }
need cargo "install Rust with rustup"
if ! command -v make >/dev/null 2>&1; then
  echo "ci: installing make" >&2
  (apt-get update -qq && apt-get install -y -qq make) >/dev/null
fi

echo "ci: $(cargo --version), $(nproc) cores, kernel $(uname -r)"
started=$(date +%s)
make test
echo "ci: make test passed in $(( $(date +%s) - started ))s"
