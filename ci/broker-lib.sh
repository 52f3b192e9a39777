# Shared by the benchmark scripts (sourced): a release `keel serve` with both listeners on free
# loopback ports.

# Starts `$KEEL_BIN serve` with data in $1, --memory $2, its log in $3 (any further arguments go
# to `keel serve` as they are), on two free ports below
# the ephemeral range (no outgoing connection can hold them); waits until it answers. Sets
# BROKER_PID, ADDR and KAFKA_ADDR (HOST:PORT of the native and Kafka listeners).
start_keel() {
  local data=$1 memory=$2 log=$3 port kafka_port i
  shift 3
  read -r port kafka_port < <(python3 - <<'PY'
import random, socket
found = []
for _ in range(1000):
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        if p not in found:
            found.append(p)
    except OSError:
        pass
    finally:
        s.close()
    if len(found) == 2:
        break
print(*found)
PY
)
  ADDR=127.0.0.1:$port
  KAFKA_ADDR=127.0.0.1:$kafka_port
  echo "== keel serve on $ADDR (Kafka listener $KAFKA_ADDR), data in $data, --memory $memory $* (log: $log)"
  "$KEEL_BIN" serve --data-dir "$data" --listen "$ADDR" --admin-listen 127.0.0.1:0 --kafka-listen "$KAFKA_ADDR" \
    --memory "$memory" "$@" >"$log" 2>&1 &
  BROKER_PID=$!
  for i in $(seq 300); do
    if "$KEEL_BIN" cluster status --bootstrap "$ADDR" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null || [ "$i" = 300 ]; then
      echo "error: keel serve did not come up on $ADDR:" >&2; tail -20 "$log" >&2; exit 1
    fi
    sleep 0.1
  done
}

# SIGTERM to pid $1, wait up to 60 s, then SIGKILL; returns the exit status.
stop_broker() {
  local pid=$1 rc=0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "error: keel serve did not exit within 60 s of SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" || rc=$?
  return $rc
}

# Checks that $KEEL_BIN and $KEEL_BENCH_BIN exist, makes $BENCH_DIR and $RESULTS, sets DATA (an
# empty $BENCH_DIR/$1-PID for the broker) and BROKER_PID (none yet), and on exit stops a broker
# still running (stop_broker) and removes DATA (kept with KEEP_DATA=1).
prepare_bench_run() {
  local bin
  for bin in "$KEEL_BIN" "$KEEL_BENCH_BIN"; do
    [ -x "$bin" ] || { echo "error: $bin is missing: build with \`make build\` (cargo build --release --workspace)" >&2; exit 1; }
  done
  mkdir -p "$BENCH_DIR" "$RESULTS"
  DATA="$BENCH_DIR/$1-$$"
  rm -rf "$DATA"
  BROKER_PID=
  trap cleanup_bench_run EXIT
}

cleanup_bench_run() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then stop_broker "$BROKER_PID" || true; fi
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$DATA"
  # Data kept in memory (tmpfs) is never kept: it holds the machine's RAM.
  if [ -n "${MEM_DATA:-}" ]; then rm -rf "$MEM_DATA"; fi
}
