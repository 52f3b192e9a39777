#!/usr/bin/env python3
"""Mutated requests against a running broker, on both listeners at once.

Usage: python3 tests/native/live_fuzz.py NATIVE_HOST:PORT KAFKA_HOST:PORT [--seconds S] [--seed N]

The seeds are real requests: tests/native/corpus/{native,kafka}.frames hold length-prefixed frames
exactly as the keel CLI (topic create/list/describe/alter-config, produce, consume with a group,
group offsets, cluster status) and Kafka clients (kcat -L/-P/-C/-G, kafka-python's admin client,
an idempotent gzip producer and a group consumer) sent them, captured by a recording proxy. Each
of four connections (two per listener) sends one mutation at a time and reads the answer with a
short timeout (50 ms, so a run sends some 10,000 requests in 20 s), reconnecting whenever the
broker closes the connection, as it may for bad input.
Mutations: bytes overwritten, the payload cut (length fixed up or not), a random API key and
version, garbage appended, an i32 or i16 field set to an extreme, a frame of garbage.

The broker must answer or close each connection and keep serving: the script ends with a
well-formed request on a new connection of each listener (ApiVersions) and exits non-zero if
the broker stopped answering. It prints a one-line summary. Standard library only.
"""

import os
import random
import socket
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def frames(name):
    data = open(os.path.join(HERE, "corpus", f"{name}.frames"), "rb").read()
    out, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from(">i", data, at)
        out.append(data[at:at + 4 + n])
        at += 4 + n
    return out


def mutate(r, frame):
    f = bytearray(frame)
    op = r.randrange(8)
    if op == 0:  # bytes overwritten
        for _ in range(r.randint(1, 8)):
            f[r.randrange(4, len(f))] = r.randrange(256)
    elif op == 1:  # cut short, length fixed up
        n = r.randrange(4, len(f))
        f = f[:n]
        f[0:4] = struct.pack(">i", n - 4)
    elif op == 2:  # cut short, length not fixed up: the broker waits for the rest
        f = f[:r.randrange(4, len(f))]
    elif op == 3:  # another API key and version
        f[4:6] = struct.pack(">h", r.choice([r.randrange(-5, 80), r.randrange(-32768, 32767)]))
        f[6:8] = struct.pack(">h", r.choice([r.randrange(-2, 20), r.randrange(-32768, 32767)]))
    elif op == 4:  # garbage appended, length fixed up
        f += bytes(r.randrange(256) for _ in range(r.randint(1, 64)))
        f[0:4] = struct.pack(">i", len(f) - 4)
    elif op == 5:  # an i32 set to an extreme (counts, lengths, offsets)
        if len(f) > 16:
            i = r.randrange(8, len(f) - 4)
            f[i:i + 4] = struct.pack(">i", r.choice([-1, -2, 0x7FFFFFFF, 0x10000000, 0]))
    elif op == 6:  # an i16 set to an extreme
        if len(f) > 12:
            i = r.randrange(8, len(f) - 2)
            f[i:i + 2] = struct.pack(">h", r.choice([-1, 0x7FFF, -32768, 0]))
    else:  # a frame of garbage
        body = bytes(r.randrange(256) for _ in range(r.randint(0, 100)))
        f = bytearray(struct.pack(">i", len(body)) + body)
    return bytes(f)


def worker(addr, seeds, seed, end, stats, lock):
    r = random.Random(seed)
    s = None
    while time.time() < end:
        try:
            if s is None:
                s = socket.create_connection(addr, timeout=5)
                s.settimeout(0.05)
            s.sendall(mutate(r, r.choice(seeds)))
            answer = s.recv(65536)
            key = "answered" if answer else "closed"
        except socket.timeout:
            key = "waited"  # a cut frame, or a request the broker is still serving
        except OSError:
            key = "closed"
        with lock:
            stats[key] += 1
        if key != "answered" and s is not None:
            s.close()
            s = None
    if s is not None:
        s.close()


def api_versions_answered(addr, frame):
    """A well-formed request from the corpus (ApiVersions, key 18 or native key 0) on a new
    connection gets an answer with its correlation id."""
    try:
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(frame)
            head = b""
            while len(head) < 8:
                chunk = s.recv(8 - len(head))
                if not chunk:
                    return False
                head += chunk
            return head[4:8] == frame[8:12]
    except OSError:
        return False


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    addrs = []
    for a in args[:2]:
        host, port = a.rsplit(":", 1)
        addrs.append((host, int(port)))
    seconds, seed = 20.0, 1
    rest = args[2:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--seconds":
            seconds = float(value)
        elif flag == "--seed":
            seed = int(value)
    native, kafka = frames("native"), frames("kafka")
    stats = {"answered": 0, "closed": 0, "waited": 0}
    lock = threading.Lock()
    end = time.time() + seconds
    plan = [(addrs[0], native), (addrs[0], native), (addrs[1], kafka), (addrs[1], kafka)]
    threads = [threading.Thread(target=worker, args=(a, s, seed * 100 + i, end, stats, lock))
               for i, (a, s) in enumerate(plan)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    native_ok = api_versions_answered(addrs[0], next(f for f in native if f[4:6] == b"\x00\x00"))
    kafka_ok = api_versions_answered(addrs[1], next(f for f in kafka if f[4:6] == b"\x00\x12"))
    sent = sum(stats.values())
    print(f"live fuzz: {sent} mutated requests in {seconds:.0f} s (seed {seed}): {stats['answered']} "
          f"answered, {stats['closed']} closed the connection, {stats['waited']} waited; "
          f"afterwards native {'answers' if native_ok else 'DOES NOT ANSWER'}, "
          f"Kafka {'answers' if kafka_ok else 'DOES NOT ANSWER'}")
    sys.exit(0 if native_ok and kafka_ok else 1)


if __name__ == "__main__":
    main()
