#!/usr/bin/env bash
# The standard workloads (bench/workloads/*.toml) against Keel's native protocol and its Kafka
# listener, each workload one `keel-bench run` with both targets side by side and the loopback
# and disk baselines measured in the same run:
#   1. a release `keel serve` on two free loopback ports (native + Kafka), data under $BENCH_DIR,
#      --memory $BROKER_MEMORY;
#   2. for each workload: keel-bench run WORKLOAD --target keel://... --target kafka://...
#      --disk-dir $BENCH_DIR --out $RESULTS/<workload> [--duration $BENCH_DURATION];
#   3. SIGTERM, and a check that the broker exits 0.
# Each run writes result.json, report.md and SVG plots; a summary of every report is printed and
# collected in $RESULTS/summary.md.
#
# Environment: BENCH_DIR (./bench-data), BENCH_DURATION (the workloads' own, 60 s; e.g. 20s),
# BENCH_WORKLOADS (every bench/workloads/*.toml), BROKER_MEMORY (1GiB), RESULTS
# (results/bench-<UTC time>), KEEL_BIN / KEEL_BENCH_BIN (target/release/...),
# KEEL_BENCH_ARGS (extra `keel-bench run` flags, e.g. "--kafka-producer wire"), KEEP_DATA=1 to keep
# the broker's data.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/broker-lib.sh
BENCH_DIR=${BENCH_DIR:-./bench-data}
BROKER_MEMORY=${BROKER_MEMORY:-1GiB}
RESULTS=${RESULTS:-results/bench-$(date -u +%Y%m%dT%H%M%SZ)}
KEEL_BIN=${KEEL_BIN:-target/release/keel}
KEEL_BENCH_BIN=${KEEL_BENCH_BIN:-target/release/keel-bench}
read -r -a WORKLOADS <<<"${BENCH_WORKLOADS:-$(ls bench/workloads/*.toml | tr '\n' ' ')}"
read -r -a EXTRA <<<"${KEEL_BENCH_ARGS:-}"
DURATION=()
[ -n "${BENCH_DURATION:-}" ] && DURATION=(--duration "$BENCH_DURATION")

prepare_bench_run keel-bench

start_keel "$DATA" "$BROKER_MEMORY" "$RESULTS/broker.log"

FAILED=()
: >"$RESULTS/summary.md"
for w in "${WORKLOADS[@]}"; do
  name=$(basename "$w" .toml)
  echo "== $name"
  if ! "$KEEL_BENCH_BIN" run "$w" --target "keel://$ADDR" --target "kafka://$KAFKA_ADDR" \
      --disk-dir "$BENCH_DIR" --out "$RESULTS/$name" "${DURATION[@]}" "${EXTRA[@]}"; then
    FAILED+=("$name")
  fi
  if [ -f "$RESULTS/$name/report.md" ]; then
    { echo "## $name"; echo; sed -n '/^## Baselines/,$p' "$RESULTS/$name/report.md" | sed 's/^## /### /';
      echo; } >>"$RESULTS/summary.md"
  fi
done

echo "== stopping keel serve (SIGTERM)"
rc=0
stop_broker "$BROKER_PID" || rc=$?
BROKER_PID=
echo "broker exit status after SIGTERM: $rc"
echo "summary: $RESULTS/summary.md"
if [ ${#FAILED[@]} -gt 0 ] || [ "$rc" != 0 ]; then
  echo "error: failed: ${FAILED[*]:-} (broker exit $rc)" >&2
  exit 1
fi
