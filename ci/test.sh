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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
make test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run: cargo prints a "test result" line per test binary.
summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
               END { printf "%d passed, %d failed", p, f }' "$log")
echo "ci: make test exited $status after $(( $(date +%s) - started ))s"
echo "$summary"
exit "$status"
