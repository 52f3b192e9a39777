#!/usr/bin/env bash
# The broker benchmark, all in one run on one machine so the ratios compare like with like:
#   1. baseline disk (keel-bench baseline disk): sequential O_DIRECT write MB/s, fdatasync latency;
#   2. keel serve (release build) on a free loopback port, data under $BENCH_DIR, --memory
#      $BROKER_MEMORY, driven by keel-bench over the native protocol:
#      a. produce throughput: 1 KiB records, closed loop, 8 producers, acks=1, 8 partitions,
#         fsync.policy=never; MB/s as a share of the disk baseline (target >= 50%);
#      a'. the same run over the broker's Kafka listener (keel-bench --target kafka://, librdkafka),
#         right after a; the Kafka/native throughput ratio is printed;
#      a''. the same again with --kafka-producer wire: Kafka's protocol with the native producer's
#         request shape (every partition in one Produce), which isolates the listener's own cost;
#         broker and keel-bench CPU per record are printed for a, a' and a'';
#      b. produce latency: 50 MB/s offered (48828 records/s of 1 KiB, open loop with
#         coordinated-omission correction), 2 producers, acks=all, fsync.policy=always,
#         2 partitions; p99 (target <= 1 ms) and p99.9 (target <= 2 ms);
#      c. end-to-end latency: 200 MB/s offered (195312 records/s of 1 KiB, open loop), 2 producers,
#         2 consumers tailing, acks=1, fsync.policy=never, 8 partitions; p99 (target <= 2 ms) and
#         p99.99 (target <= 5 ms) of read time - intended send time, plus the check that every
#         acknowledged record was read exactly once, in order;
#   3. the broker's peak RSS (VmHWM) against --memory, then SIGTERM and a check that it exits 0;
#   4. b and c again against a second broker started with --cores $LATENCY_CORES (1 by default),
#      which leaves the other core to keel-bench: on a 2-core machine the load generator competes
#      with every shard otherwise;
#   5. the disk's own latency floor at b's and c's loads, without Keel (keel-bench baseline log):
#      an ideal log (each partition file gets every record due in one O_DIRECT write, + fdatasync
#      for b) fed the same records on the same schedule, latency measured from the due time as for
#      Keel; b's shape (2 files, a thread each, 50 MB/s, fdatasync) and c's (8 files written in
#      turn by one thread, as one shard would, 200 MB/s), each on a quiet machine and beside one
#      busy thread (a broker and a load generator keep at least one CPU busy), with the share of
#      the time the machine stalled and Keel's figures over the floor's;
#   6. c once more against a broker with --cores $LATENCY_CORES whose data lives in memory
#      (tmpfs under $MEMORY_DIR, /dev/shm by default, --preallocate-bytes 0, retention bounding it
#      to about 2.5 GiB): Keel's own end-to-end path without the disk and its stalls. Skipped when
#      MEMORY_DIR is empty or has less than 4 GiB free.
# Each measurement's line also says how much of its window the machine itself stood still
# (keel-bench's stall watchdog; on a virtual machine the host can freeze the whole guest).
# Each topic is deleted after its run. Results (JSON) land in $RESULTS/ and a summary is printed.
#
# Environment: BENCH_DIR (./bench-data), BROKER_SECS (60s per measurement, after
# BROKER_WARMUP=2s), BROKER_MEMORY (1GiB), RESULTS (results/broker-<UTC time>), KEEL_BIN
# (target/release/keel), KEEL_BENCH_BIN (target/release/keel-bench), BROKER_RETENTION_BYTES
# (retention.bytes per partition of run a, 1073741824; -1 = none) and BROKER_MIN_FREE_BYTES
# (5368709120: a run is stopped if free space under BENCH_DIR falls below it), KEEP_DATA=1 to
# keep the broker's data directory, LATENCY_CORES (1; empty skips step 4), FLOOR_SECS (10 per
# floor measurement; 0 skips step 5), MEMORY_DIR (/dev/shm; empty skips step 6).
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/broker-lib.sh
BENCH_DIR=${BENCH_DIR:-./bench-data}
BROKER_SECS=${BROKER_SECS:-60s}
BROKER_WARMUP=${BROKER_WARMUP:-2s}
BROKER_MEMORY=${BROKER_MEMORY:-1GiB}
RESULTS=${RESULTS:-results/broker-$(date -u +%Y%m%dT%H%M%SZ)}
KEEL_BIN=${KEEL_BIN:-target/release/keel}
KEEL_BENCH_BIN=${KEEL_BENCH_BIN:-target/release/keel-bench}
BROKER_RETENTION_BYTES=${BROKER_RETENTION_BYTES:-1073741824}
BROKER_MIN_FREE_BYTES=${BROKER_MIN_FREE_BYTES:-5368709120}
LATENCY_CORES=${LATENCY_CORES-1}
FLOOR_SECS=${FLOOR_SECS:-10}
MEMORY_DIR=${MEMORY_DIR-/dev/shm}

prepare_bench_run keel-broker
FAILED=()

echo "== baseline disk ($BENCH_DIR)"
"$KEEL_BENCH_BIN" baseline disk --dir "$BENCH_DIR" --json | tee "$RESULTS/baseline-disk.json"

# Retention every 5 s, not every 30 s: at a's ~1 GB/s a 30 s pass lets a topic grow by 30 GB
# past its retention.bytes before the first deletion.
start_keel "$DATA" "$BROKER_MEMORY" "$RESULTS/broker.log" --maintenance-interval-ms 5000
TARGET=keel://$ADDR
KAFKA_TARGET=kafka://$KAFKA_ADDR

# Stops keel-bench (pid $1) if free space under BENCH_DIR falls below BROKER_MIN_FREE_BYTES.
watchdog() {
  while kill -0 "$1" 2>/dev/null; do
    local free
    free=$(df --output=avail -B1 "$BENCH_DIR" | tail -1 | tr -d ' ')
    if [ "$free" -lt "$BROKER_MIN_FREE_BYTES" ]; then
      echo "error: only $free bytes left under $BENCH_DIR: stopping the run (retention not enforced? shorten BROKER_SECS)" >&2
      kill -TERM "$1" 2>/dev/null || true
      return
    fi
    sleep 1
  done
}

broker_cpu_ticks() { # user + system clock ticks of keel serve so far
  awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"
}

run() { # name target topic, then keel-bench arguments
  local name=$1 target=$2 topic=$3; shift 3
  local cmd=("$KEEL_BENCH_BIN" "$@" --target "$target" --topic "$topic" --record-bytes 1024
    --duration "$BROKER_SECS" --warmup "$BROKER_WARMUP" --report-interval 10s --json)
  echo "== $name: ${cmd[*]}"
  local rc=0 pid wd cpu0
  cpu0=$(broker_cpu_ticks)
  "${cmd[@]}" >"$RESULTS/$name.json" &
  pid=$!
  watchdog "$pid" &
  wd=$!
  wait "$pid" || rc=$?
  kill "$wd" 2>/dev/null || true
  wait "$wd" 2>/dev/null || true
  python3 -c 'import json, os, sys; print(json.dumps({"broker_cpu_s": int(sys.argv[1]) / os.sysconf("SC_CLK_TCK")}))' \
    "$(( $(broker_cpu_ticks) - cpu0 ))" >"$RESULTS/$name.broker-cpu.json"
  cat "$RESULTS/$name.json"
  if [ "$rc" != 0 ]; then
    echo "error: $name failed (exit $rc)" >&2
    FAILED+=("$name")
  fi
  "$KEEL_BIN" topic delete "$topic" --bootstrap "$ADDR" >/dev/null 2>&1 || echo "warning: could not delete topic $topic" >&2
}

# The latency targets' loads, run against every broker below, and the disk floors at the end
# that mirror them (keel-bench baseline log: the same records on the same schedule, one file per
# partition): b's with an fdatasync after each write, a thread per file; c's files written in
# turn by one thread, as one shard would.
B_RATE=48828.125 B_PARTITIONS=2 C_RATE=195312.5 C_PARTITIONS=8
B_LOAD=(produce --partitions $B_PARTITIONS --producers 2 --acks all --rate $B_RATE --topic-config fsync.policy=always)
C_LOAD=(e2e --partitions $C_PARTITIONS --producers 2 --consumers 2 --acks 1 --rate $C_RATE --topic-config fsync.policy=never)
B_FLOOR=(--rate $B_RATE --files $B_PARTITIONS --sync)
C_FLOOR=(--rate $C_RATE --files $C_PARTITIONS --threads 1)

RETENTION=()
if [ "$BROKER_RETENTION_BYTES" != -1 ]; then
  RETENTION=(--topic-config "retention.bytes=$BROKER_RETENTION_BYTES" --topic-config segment.bytes=268435456)
fi
run produce-throughput "$TARGET" bench-produce produce --partitions 8 --producers 8 --acks 1 \
  --topic-config fsync.policy=never "${RETENTION[@]}"
run produce-throughput-kafka "$KAFKA_TARGET" bench-produce-kafka produce --partitions 8 --producers 8 --acks 1 \
  --topic-config fsync.policy=never "${RETENTION[@]}"
run produce-throughput-kafka-wire "$KAFKA_TARGET" bench-produce-kafka-wire produce --partitions 8 --producers 8 \
  --acks 1 --kafka-producer wire --topic-config fsync.policy=never "${RETENTION[@]}"
run produce-latency "$TARGET" bench-latency "${B_LOAD[@]}"
run e2e "$TARGET" bench-e2e "${C_LOAD[@]}"

HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$BROKER_PID/status")
RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$BROKER_PID/status")
echo "== stopping keel serve (SIGTERM)"
BROKER_RC=0
stop_broker "$BROKER_PID" || BROKER_RC=$?
BROKER_PID=
echo "{\"vm_hwm_kib\": $HWM_KB, \"vm_rss_kib\": $RSS_KB, \"memory\": \"$BROKER_MEMORY\", \"exit_code\": $BROKER_RC}" >"$RESULTS/broker-process.json"

if [ -n "$LATENCY_CORES" ]; then
  rm -rf "$DATA"
  start_keel "$DATA" "$BROKER_MEMORY" "$RESULTS/broker-cores-$LATENCY_CORES.log" --cores "$LATENCY_CORES"
  TARGET=keel://$ADDR
  run produce-latency-cores "$TARGET" bench-latency "${B_LOAD[@]}"
  run e2e-cores "$TARGET" bench-e2e "${C_LOAD[@]}"
  echo "== stopping keel serve --cores $LATENCY_CORES (SIGTERM)"
  stop_broker "$BROKER_PID" || { echo "error: keel serve --cores $LATENCY_CORES did not exit cleanly" >&2; FAILED+=(cores); }
  BROKER_PID=
fi

if [ -n "$LATENCY_CORES" ] && [ -n "$MEMORY_DIR" ] && [ -d "$MEMORY_DIR" ] \
  && [ "$(df --output=avail -B1 "$MEMORY_DIR" | tail -1 | tr -d ' ')" -ge $((4 << 30)) ]; then
  MEM_DATA="$MEMORY_DIR/keel-bench-broker-$$"
  rm -rf "$MEM_DATA"
  start_keel "$MEM_DATA" "$BROKER_MEMORY" "$RESULTS/broker-memory.log" --cores "$LATENCY_CORES" --preallocate-bytes 0
  run e2e-memory "keel://$ADDR" bench-e2e "${C_LOAD[@]}" \
    --topic-config retention.bytes=268435456 --topic-config segment.bytes=67108864
  stop_broker "$BROKER_PID" || { echo "error: keel serve on $MEM_DATA did not exit cleanly" >&2; FAILED+=(memory); }
  BROKER_PID=
  rm -rf "$MEM_DATA"
fi

if [ "$FLOOR_SECS" != 0 ]; then
  rm -rf "$DATA"
  mkdir -p "$DATA"
  for busy in 0 1; do
    for shape in b c; do
      if [ $shape = b ]; then floor=("${B_FLOOR[@]}"); else floor=("${C_FLOOR[@]}"); fi
      cmd=("$KEEL_BENCH_BIN" baseline log --dir "$DATA" "${floor[@]}" --record-bytes 1024
        --duration-secs "$FLOOR_SECS" --busy-threads "$busy" --json)
      echo "== the disk's floor at $shape's load, $busy busy thread(s): ${cmd[*]}"
      "${cmd[@]}" | tee "$RESULTS/floor-$shape-$busy.json" || FAILED+=("floor-$shape-$busy")
    done
  done
fi

python3 - "$RESULTS" "$BROKER_MEMORY" "$HWM_KB" "$BROKER_RC" "$LATENCY_CORES" <<'PY'
import json, os, re, sys
d, memory, hwm_kb, rc, latency_cores = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def load(n):
    try:
        return json.load(open(os.path.join(d, n + ".json")))
    except (OSError, ValueError):
        return None
def ms(us):
    return f"{us / 1000:.2f} ms"
def verdict(ok):
    return "yes" if ok else "NO"
def stalls(res):
    # The share of the window the machine itself stood still (keel-bench's stall watchdog): a
    # frozen virtual machine delays every record in the stretch, whatever the broker does.
    m = res.get("machine_stalls")
    if not m:
        return ""
    steal = f", CPU steal {m['steal_share']:.1%}" if m.get("steal_share") is not None else ""
    return (f"; machine stalled {m['share']:.1%} of the window ({m['count']} stalls over {m['threshold_ms']:.0f} ms, "
            f"longest {m['longest_ms']:.0f} ms{steal})")
base = load("baseline-disk")
b_mb = base["mb_per_s"]
print()
print(f"baseline disk: {b_mb:.0f} MB/s sequential O_DIRECT; 4 KiB write+fdatasync p50 {base['fsync_latency_us']['p50']} us, "
      f"p99 {base['fsync_latency_us']['p99']} us")
w = base.get("write_latency_us")
if w:
    print(f"   {base['write_latency_bytes'] // 1024} KiB write alone (no fdatasync): p50 {w['p50']} us, p99 {w['p99']} us, "
          f"p99.9 {w['p999']} us, max {w['max']} us ({w['samples']} samples)")
r = load("produce-throughput")
if r:
    print(f"a. produce, closed loop, {r['producers']} producers, acks={r['acks']}, {r['partitions']} partitions, "
          f"fsync.policy=never: {r['mb_per_s']:.0f} MB/s ({r['records_per_s']:.0f} records/s) = {r['mb_per_s'] / b_mb:.1%} "
          f"of the disk baseline (target >= 50%: {verdict(r['mb_per_s'] >= 0.5 * b_mb)}); "
          f"ack p50 {ms(r['latency_us']['p50'])}, p99 {ms(r['latency_us']['p99'])}{stalls(r)}")
else:
    print("a. produce throughput: no result")
def per_record(name, res):
    # (broker, keel-bench) CPU microseconds per record sent, or None.
    b = load(name + ".broker-cpu")
    n = res.get("records_sent") or 0
    return (b["broker_cpu_s"] * 1e6 / n, res["client_cpu_s"] * 1e6 / n) if b and n else None
def cpu(name, res):
    c = per_record(name, res)
    return f"; CPU per record: broker {c[0]:.2f} us, keel-bench {c[1]:.2f} us" if c else ""
if r:
    print(f"   {cpu('produce-throughput', r).lstrip('; ')}")
for name, label, client in (("produce-throughput-kafka", "a'", "librdkafka: one partition per request"),
                            ("produce-throughput-kafka-wire", "a''", "--kafka-producer wire: the native requests' shape")):
    k = load(name)
    if k:
        ratio = f" = {k['mb_per_s'] / r['mb_per_s']:.2f}x the native throughput" if r and r["mb_per_s"] > 0 else ""
        print(f"{label}. the same over the Kafka listener ({k['target']}, {client}): {k['mb_per_s']:.0f} MB/s "
              f"({k['records_per_s']:.0f} records/s){ratio}; ack p50 {ms(k['latency_us']['p50'])}, "
              f"p99 {ms(k['latency_us']['p99'])}{cpu(name, k)}{stalls(k)}")
    else:
        print(f"{label}. produce throughput over Kafka ({client}): no result")
k = load("produce-throughput-kafka")
native_cpu = per_record("produce-throughput", r) if r else None
kafka_cpu = per_record("produce-throughput-kafka", k) if k else None
if native_cpu and kafka_cpu and r["records_per_s"] > 0:
    # librdkafka's own CPU shares the machine with the broker: even a broker that served its
    # one-partition requests as cheaply as the native ones could not go past this.
    cpus = os.cpu_count()
    bound = cpus / ((kafka_cpu[1] + native_cpu[0]) * 1e-6)
    print(f"   CPU ceiling of a': {cpus} CPUs / (librdkafka's {kafka_cpu[1]:.2f} us + the native broker's {native_cpu[0]:.2f} us "
          f"per record) = {bound:.0f} records/s = {bound / r['records_per_s']:.2f}x a's records/s, with every CPU busy")
def floor(shape, keel):
    # An ideal log's latency at this load on this disk, without Keel (keel-bench baseline log),
    # measured from the due time as Keel's is: quiet, and beside one busy thread. `keel` is Keel's
    # summary for the same percentiles, so each figure is also given as Keel / floor.
    parts, what = [], None
    for busy in (0, 1):
        f = load(f"floor-{shape}-{busy}")
        if f and f.get("latency_us"):
            what = (f"{f['files']} files, {f['threads']} writer thread(s), "
                    f"{'write + fdatasync' if f['sync'] else 'one write'} of every record due"
                    f"{' over zeroed files' if f.get('zeroed') else ''}, "
                    f"{f['offered_mb_per_s']:.0f} MB/s in all")
            l = f["latency_us"]
            names = {"p99": "p99", "p999": "p99.9", "p9999": "p99.99"}
            ratios = ", ".join(f"{names[q]} {keel[q] / l[q]:.1f}x" for q in names if keel and keel.get(q) and l.get(q))
            parts.append(f"{'quiet' if busy == 0 else 'beside one busy thread'}: p50 {ms(l['p50'])}, p99 {ms(l['p99'])}, "
                         f"p99.9 {ms(l['p999'])}, p99.99 {ms(l['p9999'])}, max {ms(l['max'])}; "
                         f"{f['mb_per_s']:.0f} MB/s in writes of {f['mean_write_bytes'] / 1024:.1f} KiB on average, "
                         f"machine stalled {f['machine_stalls']['share']:.1%}" + (f"; Keel / floor: {ratios}" if ratios else ""))
    if parts:
        print(f"   the disk's own floor at this load, an ideal log without Keel ({what}):")
        for p in parts:
            print(f"     {p}")
def latency_b(name, label):
    r = load(name)
    if not r:
        print(f"{label}. produce latency: no result")
        return
    l = r["latency_us"]
    print(f"{label}. produce at {r['offered_mb_per_s']:.0f} MB/s offered (open loop), acks={r['acks']}, {r['partitions']} partitions, "
          f"fsync.policy=always: p50 {ms(l['p50'])}, p99 {ms(l['p99'])} (target <= 1 ms: {verdict(l['p99'] <= 1000)}), "
          f"p99.9 {ms(l['p999'])} (target <= 2 ms: {verdict(l['p999'] <= 2000)}), p99.99 {ms(l['p9999'])}, max {ms(l['max'])}; "
          f"achieved {r['mb_per_s']:.1f} MB/s{stalls(r)}")
def latency_c(name, label):
    r = load(name)
    if not r:
        print(f"{label}. e2e: no result")
        return
    e, a, v = r["e2e_latency_us"], r["latency_us"], r["verification"]
    print(f"{label}. e2e at {r['offered_mb_per_s']:.0f} MB/s offered (open loop), acks={r['acks']}, {r['partitions']} partitions, "
          f"fsync.policy=never, {r['producers']} producers, {r['consumers']} consumers: end-to-end p50 {ms(e['p50'])}, "
          f"p99 {ms(e['p99'])} (target <= 2 ms: {verdict(e['p99'] <= 2000)}), p99.99 {ms(e['p9999'])} "
          f"(target <= 5 ms: {verdict(e['p9999'] <= 5000)}), max {ms(e['max'])}; produce-ack p99 {ms(a['p99'])}; "
          f"consumed {r['consume_mb_per_s']:.1f} MB/s{stalls(r)}")
    print(f"   records: {r['records_acked']} acknowledged, {r['records_consumed']} consumed, {v['missing']} missing, "
          f"{v['duplicates']} duplicates, {v['out_of_order']} out of order -> {'verified' if v['ok'] else 'VERIFICATION FAILED'}")
latency_b("produce-latency", "b")
if latency_cores:
    latency_b("produce-latency-cores", f"b (keel serve --cores {latency_cores})")
f = base["fsync_latency_us"]
print(f"   one 4 KiB write+fdatasync alone takes p50 {ms(f['p50'])}, p99 {ms(f['p99'])}, p99.9 {ms(f['p999'])}: an acks=all "
      f"append under fsync.policy=always waits for at least one")
floor("b", (load("produce-latency") or {}).get("latency_us"))
latency_c("e2e", "c")
if latency_cores:
    latency_c("e2e-cores", f"c (keel serve --cores {latency_cores})")
if w:
    print(f"   one 64 KiB write alone takes p99 {ms(w['p99'])}, p99.9 {ms(w['p999'])}: a record is readable once the "
          f"write holding it is done")
floor("c", (load("e2e") or {}).get("e2e_latency_us"))
if latency_cores:
    latency_c("e2e-memory", f"c (keel serve --cores {latency_cores}, data on tmpfs: Keel's own path, no disk)")
units = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
         "kb": 10**3, "mb": 10**6, "gb": 10**9}
m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", memory)
budget = int(m.group(1)) * units.get(m.group(2).lower(), 1) if m else None
hwm = hwm_kb * 1024
line = f"broker peak RSS (VmHWM): {hwm / 2**20:.0f} MiB with --memory {memory}"
if budget:
    line += f" ({hwm / budget:.0%} of it)"
print(line)
print(f"broker exit status after SIGTERM: {rc} ({'clean' if rc == 0 else 'NOT CLEAN'})")
PY

status=0
if [ "$BROKER_RC" != 0 ]; then
  echo "error: keel serve exited with status $BROKER_RC after SIGTERM (see $RESULTS/broker.log)" >&2
  status=1
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "error: failed runs: ${FAILED[*]}" >&2
  status=1
fi
exit $status
