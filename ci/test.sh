#!/usr/bin/env bash
# Runs the test command it is given (.ci/run passes the README's `make test`), after checking the
# machine has what it needs. Nothing installed by hand is assumed beyond the Rust toolchain and
# Python 3 with pip: make and kcat (Debian packages), Node.js if missing, the Python test
# requirements and kafkajs (npm) are installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "ci: '$1' is required but not installed ($2)" >&2; exit 1; }; }
need cargo "install Rust with rustup"
if ! command -v make >/dev/null 2>&1; then
  echo "ci: installing make" >&2
  (apt-get update -qq && apt-get install -y -qq make) >/dev/null
fi

if ! command -v kcat >/dev/null 2>&1; then
  echo "ci: installing kcat (tests/kafka.rs runs it against the Kafka listener)" >&2
  (apt-get update -qq && apt-get install -y -qq kcat) >/dev/null
fi

need python3 "install Python 3: tests/kafka.rs runs the kafka-python client"
echo "ci: installing the Python test requirements (ci/requirements.txt)" >&2
python3 -m pip install --quiet --disable-pip-version-check -r ci/requirements.txt

if ! command -v npm >/dev/null 2>&1; then
  echo "ci: installing Node.js and npm (tests/kafka.rs runs kafkajs)" >&2
  (apt-get update -qq && apt-get install -y -qq nodejs npm) >/dev/null
fi
echo "ci: installing kafkajs (tests/kafka/kafkajs/package-lock.json)" >&2
npm ci --prefix tests/kafka/kafkajs --no-audit --no-fund --silent

echo "ci: $(cargo --version), $(nproc) cores, kernel $(uname -r)"
[ $# -gt 0 ] || set -- make test
started=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
"$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run: cargo prints a "test result" line per test binary.
summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
               END { printf "%d passed, %d failed", p, f }' "$log")
echo "ci: $* exited $status after $(( $(date +%s) - started ))s"
echo "$summary"
exit "$status"
