#!/usr/bin/env bash
# The storage benchmark run recorded in docs/benchmarks.md, all in one run on one machine so the
# ratios compare like with like:
#   1. baseline disk: sequential O_DIRECT write MB/s, 4 KiB write+fdatasync latency, and
#      512 KiB write+fdatasync latency (the bytes of one 8 x 64 KiB group commit);
#   2. append throughput, fsync=never (64 KiB batches of 1 KiB records), 16, 32 and 64
#      appenders (1, 2 and 4 MiB in flight), plus read-back, plus recovery of a 1 GiB log after
#      SIGKILL (32-appender run);
#   3. append latency, fsync=always, 8 appenders, 4 KiB and 64 KiB batches (group commit).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-./bench-data}
BENCH_SECS=${BENCH_SECS:-10s}
RESULTS=${RESULTS:-results/storage-$(date -u +%Y%m%dT%H%M%SZ)}
BIN=target/release/keel-bench
mkdir -p "$BENCH_DIR" "$RESULTS"
storage() { # name, then keel-bench storage flags
  local name=$1; shift
  echo "== storage $name: $*"
  $BIN storage --dir "$BENCH_DIR" --record-bytes 1024 --duration "$BENCH_SECS" --json "$@" | tee "$RESULTS/storage-$name.json"
}

echo "== baseline disk ($BENCH_DIR)"
$BIN baseline disk --dir "$BENCH_DIR" --json | tee "$RESULTS/baseline-disk.json"
storage never-16 --batch-records 64 --fsync never --appenders 16 --recovery-bytes 0
storage never-32 --batch-records 64 --fsync never --appenders 32 --recovery-bytes 1GiB
storage never-64 --batch-records 64 --fsync never --appenders 64 --recovery-bytes 0
storage always-8x4k --batch-records 4 --fsync always --appenders 8 --recovery-bytes 0
storage always-8x64k --batch-records 64 --fsync always --appenders 8 --recovery-bytes 0

python3 - "$RESULTS" <<'PY'
import json, sys, os
d = sys.argv[1]
load = lambda n: json.load(open(os.path.join(d, n + ".json")))
base = load("baseline-disk")
b_mb, b_p99 = base["mb_per_s"], base["fsync_latency_us"]["p99"]
print()
g = base.get("group_fsync_latency_us")
print(f"baseline disk: {b_mb:.0f} MB/s sequential O_DIRECT; 4 KiB write+fdatasync p50 {base['fsync_latency_us']['p50']} us, p99 {b_p99} us")
if g:
    print(f"               {base['group_bytes']//1024} KiB write+fdatasync p50 {g['p50']} us, p99 {g['p99']} us = {g['p99']/b_p99:.2f}x the 4 KiB p99")
for name in ("never-16", "never-32", "never-64"):
    r = load("storage-" + name)
    print(f"append fsync=never, {r['appenders']:>2} appenders x 64 KiB: {r['mb_per_s']:.0f} MB/s = {r['mb_per_s']/b_mb:.1%} of baseline "
          f"(target >= 80%); p99 {r['latency_us']['p99']} us; read-back {r['read_mb_per_s']:.0f} MB/s")
for name in ("always-8x4k", "always-8x64k"):
    r = load("storage-" + name)
    l = r["latency_us"]
    print(f"append fsync=always, 8 appenders x {r['batch_bytes']//1024} KiB: p50 {l['p50']} us, p99 {l['p99']} us = "
          f"{l['p99']/b_p99:.2f}x baseline fdatasync p99 (target <= 3x), p999 {l['p999']} us; {r['mb_per_s']:.0f} MB/s"
          + (f"; p99 = {l['p99']/g['p99']:.2f}x the {base['group_bytes']//1024} KiB write+fdatasync p99" if g else ""))
r = load("storage-never-32")
print(f"recovery after SIGKILL: {r['recovery_ms']:.0f} ms for a {r['recovery_bytes']/2**30:.2f} GiB log, "
      f"{r['recovery_scanned_bytes']/2**30:.2f} GiB scanned (target <= 2000 ms)")
PY
