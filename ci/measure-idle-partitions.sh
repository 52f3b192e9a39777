#!/usr/bin/env bash
# What an idle partition costs the broker, as recorded in docs/benchmarks.md:
#   1. start `keel serve` (all cores, --memory $MEMORY) on an empty data directory and read its
#      resident set size (VmRSS) once it answers;
#   2. create a topic with $PARTITIONS partitions and read VmRSS again (empty partitions);
#   3. produce one record to every partition (keyless records go round-robin) and read VmRSS
#      again after the once-a-second cache trim has run (idle partitions holding data);
#   4. print the cost per partition above the empty broker, the disk used and the open files,
#      check it against the 256 KiB target, and stop the broker with SIGTERM (exit 0 expected).
# Needs `ulimit -n` above the partition count (each partition keeps its active segment open).
set -euo pipefail
cd "$(dirname "$0")/.."
KEEL=${KEEL_BIN:-target/release/keel}
DIR=${IDLE_DIR:-./bench-data/idle}
PARTITIONS=${PARTITIONS:-10000}
MEMORY=${MEMORY:-1GiB}
PORT=${PORT:-19700}
ADMIN_PORT=${ADMIN_PORT:-19701}
BOOT=127.0.0.1:$PORT

rm -rf "$DIR"
mkdir -p "$DIR"
"$KEEL" serve --data-dir "$DIR/data" --listen "$BOOT" --admin-listen "127.0.0.1:$ADMIN_PORT" --kafka-listen off --memory "$MEMORY" \
  2>"$DIR/serve.log" &
PID=$!
trap 'kill -9 $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  "$KEEL" cluster status --bootstrap "$BOOT" >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
sleep 1
EMPTY=$(rss)
START=$(date +%s.%N)
"$KEEL" topic create idle --partitions "$PARTITIONS" --bootstrap "$BOOT"
CREATED=$(date +%s.%N)
sleep 1
AFTER_CREATE=$(rss)
seq 1 "$PARTITIONS" | "$KEEL" produce idle --acks all --bootstrap "$BOOT"
sleep 3 # the shards trim caches once a second
AFTER_DATA=$(rss)
FILES=$(ls "/proc/$PID/fd" | wc -l)
DISK=$(du -sk "$DIR/data" | cut -f1)
kill -TERM $PID
wait $PID
STATUS=$?
trap - EXIT
python3 - "$PARTITIONS" "$EMPTY" "$AFTER_CREATE" "$AFTER_DATA" "$FILES" "$DISK" "$START" "$CREATED" "$STATUS" <<'PY'
import sys
n, empty, created, data, files, disk = (int(x) for x in sys.argv[1:7])
start, done, status = float(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9])
per = lambda kib: (kib - empty) / n
print(f"empty broker: VmRSS {empty / 1024:.1f} MiB")
print(f"{n} empty partitions: VmRSS {created / 1024:.1f} MiB = {per(created):.1f} KiB per partition above the empty broker (created in {done - start:.1f} s)")
print(f"{n} partitions with one record each: VmRSS {data / 1024:.1f} MiB = {per(data):.1f} KiB per partition (target <= 256 KiB)")
print(f"open files: {files}; data directory: {disk / 1024:.0f} MiB ({disk / n:.0f} KiB per partition)")
print(f"SIGTERM: exit {status}")
sys.exit(0 if per(data) <= 256 and status == 0 else 1)
PY
