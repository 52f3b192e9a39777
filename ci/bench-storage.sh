#!/usr/bin/env bash
# The storage benchmark run recorded in docs/benchmarks.md: baseline disk, then the log with
# fsync=never and fsync=always (8 appenders), then recovery of a 1 GiB log after SIGKILL — all in
# one run on one machine, so the ratios compare like with like.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-./bench-data}
BENCH_SECS=${BENCH_SECS:-10s}
RESULTS=${RESULTS:-results/storage-$(date -u +%Y%m%dT%H%M%SZ)}
BIN=target/release/keel-bench
mkdir -p "$BENCH_DIR" "$RESULTS"

echo "== baseline disk ($BENCH_DIR)"
$BIN baseline disk --dir "$BENCH_DIR" --json | tee "$RESULTS/baseline-disk.json"
echo "== storage, fsync=never, 4 appenders"
$BIN storage --dir "$BENCH_DIR" --record-bytes 1024 --batch-records 64 --fsync never --appenders 4 \
  --duration "$BENCH_SECS" --recovery-bytes 1GiB --json | tee "$RESULTS/storage-never.json"
echo "== storage, fsync=always, 8 appenders"
$BIN storage --dir "$BENCH_DIR" --record-bytes 1024 --batch-records 64 --fsync always --appenders 8 \
  --duration "$BENCH_SECS" --recovery-bytes 1GiB --json | tee "$RESULTS/storage-always.json"

python3 - "$RESULTS" <<'PY'
import json, sys, os
d = sys.argv[1]
base = json.load(open(os.path.join(d, "baseline-disk.json")))
never = json.load(open(os.path.join(d, "storage-never.json")))
always = json.load(open(os.path.join(d, "storage-always.json")))
b_mb, b_p99 = base["mb_per_s"], base["fsync_latency_us"]["p99"]
print()
print(f"baseline disk: {b_mb:.0f} MB/s sequential O_DIRECT; 4 KiB write+fdatasync p50 {base['fsync_latency_us']['p50']} us, p99 {b_p99} us")
print(f"append fsync=never : {never['mb_per_s']:.0f} MB/s = {never['mb_per_s']/b_mb:.1%} of baseline (target >= 80%)")
print(f"append fsync=always: p99 {always['latency_us']['p99']} us = {always['latency_us']['p99']/b_p99:.2f}x baseline fdatasync p99 (target <= 3x)")
for name, r in (("never", never), ("always", always)):
    print(f"recovery after SIGKILL ({name} run): {r['recovery_ms']:.0f} ms for {r['recovery_bytes']/2**30:.2f} GiB (target <= 2000 ms)")
PY
