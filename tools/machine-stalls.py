#!/usr/bin/env python3
"""Does this machine stop as a whole under disk writes plus CPU load? (No Keel involved.)

Runs, for --seconds:
  * --writers threads, each appending --write-bytes O_DIRECT writes to its own file in --dir at
    an equal share of --mb-per-s (0: no writes), each write followed by an fdatasync with --sync;
    the write (+ fdatasync) latency percentiles are printed: the device's own floor for a log
    that acknowledges once its write (or its write and sync) is done;
  * --burners processes spinning on a CPU (a fraction --duty of each 10 ms);
  * a watchdog thread at real-time priority (SCHED_FIFO, when allowed) that sleeps 1 ms at a
    time and counts wake-ups more than 4 ms late.

A real-time thread that wakes late was not run at all: on a virtual machine, its host did not
run the guest. On the machine Keel's figures were measured on, neither the writes alone nor two
busy CPUs alone stall it, but 200 MB/s of writes plus one busy CPU freeze the whole guest for
about 25 ms of every 100 ms (see docs/benchmarks.md, "This machine's stalls"). keel-bench's
results carry the same watchdog's figures (`machine_stalls`).

Example: tools/machine-stalls.py --dir /var/tmp --mb-per-s 200 --burners 1
"""

import argparse
import json
import mmap
import multiprocessing
import os
import threading
import time

THRESHOLD = 0.004
NAP = 0.001


def writer(path, write_bytes, per_s, until, latencies, sync):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    buf = mmap.mmap(-1, write_bytes)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(write_bytes))
    try:
        n, start, offset = 0, time.monotonic(), 0
        while time.monotonic() < until:
            due = start + n / per_s
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            t = time.monotonic()
            os.pwrite(fd, buf, offset)
            if sync:
                os.fdatasync(fd)
            latencies.append(time.monotonic() - t)
            offset = (offset + write_bytes) % (1 << 30)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)


def burner(duty, until):
    while time.monotonic() < until:
        t = time.monotonic()
        while time.monotonic() - t < 0.01 * duty:
            pass
        if duty < 1:
            time.sleep(0.01 * (1 - duty))


def watchdog(until, stalls, realtime):
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        realtime.append(True)
    except (PermissionError, OSError):
        realtime.append(False)
    last = time.monotonic()
    while last < until:
        time.sleep(NAP)
        now = time.monotonic()
        late = now - (last + NAP)
        if late > THRESHOLD:
            stalls.append(late)
        last = now


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=".", help="where the writers' files go (a disk, not tmpfs); default: .")
    p.add_argument("--mb-per-s", type=float, default=200.0, help="total write rate, 10^6 bytes/s; default 200")
    p.add_argument("--write-bytes", type=int, default=24576, help="bytes per write, a multiple of 4096; default 24576")
    p.add_argument("--sync", action="store_true", help="fdatasync after every write (the latency then covers both)")
    p.add_argument("--writers", type=int, default=8, help="writer threads (one file each); default 8")
    p.add_argument("--burners", type=int, default=1, help="busy processes; default 1")
    p.add_argument("--duty", type=float, default=1.0, help="share of each 10 ms a burner spins; default 1")
    p.add_argument("--seconds", type=float, default=5.0, help="how long; default 5")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = p.parse_args()
    if a.write_bytes <= 0 or a.write_bytes % 4096:
        p.error("--write-bytes must be a positive multiple of 4096")
    until = time.monotonic() + a.seconds
    burners = [multiprocessing.Process(target=burner, args=(a.duty, until)) for _ in range(a.burners)]
    for b in burners:
        b.start()
    latencies, threads = [], []
    if a.mb_per_s > 0:
        per_s = a.mb_per_s * 1e6 / a.write_bytes / a.writers
        for i in range(a.writers):
            path = os.path.join(a.dir, f"machine-stalls-{os.getpid()}-{i}")
            threads.append(threading.Thread(target=writer, args=(path, a.write_bytes, per_s, until, latencies, a.sync)))
    stalls, realtime = [], []
    threads.append(threading.Thread(target=watchdog, args=(until, stalls, realtime)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b in burners:
        b.join()
    written = len(latencies) * a.write_bytes / a.seconds / 1e6
    latencies.sort()
    q = lambda x: latencies[min(len(latencies) - 1, int(x * len(latencies)))] * 1e3 if latencies else None
    if a.json:
        print(json.dumps({
            "mb_per_s": round(written, 1), "offered_mb_per_s": a.mb_per_s if latencies else 0,
            "write_bytes": a.write_bytes, "writers": a.writers, "writes": len(latencies), "fdatasync": a.sync,
            "burners": a.burners, "duty": a.duty, "seconds": a.seconds,
            "stalls": len(stalls), "stalled_ms": round(sum(stalls) * 1e3, 1),
            "stall_share": round(sum(stalls) / a.seconds, 4),
            "longest_stall_ms": round(max(stalls, default=0) * 1e3, 1),
            "realtime": bool(realtime and realtime[0]),
            "latency_ms": {k: round(q(f), 3) for k, f in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))}
            | {"max": round(latencies[-1] * 1e3, 3)} if latencies else None,
        }))
        return
    print(
        f"writes {written:.0f} MB/s in {a.write_bytes}-byte writes ({len(latencies)} writes), "
        f"burners {a.burners} x {a.duty:.0%}: "
        f"{len(stalls)} stalls over {THRESHOLD * 1e3:.0f} ms, {sum(stalls) * 1e3:.0f} ms in all "
        f"= {100 * sum(stalls) / a.seconds:.1f} % of the time, longest {max(stalls, default=0) * 1e3:.0f} ms"
        f"{'' if realtime and realtime[0] else ' (watchdog at normal priority: not allowed real-time)'}"
    )
    if latencies:
        print(f"write{' + fdatasync' if a.sync else ''} latency ms: p50 {q(0.5):.2f} p99 {q(0.99):.2f} "
              f"p99.9 {q(0.999):.2f} max {latencies[-1] * 1e3:.2f}")

if __name__ == "__main__":
    main()
