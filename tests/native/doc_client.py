#!/usr/bin/env python3
"""A Keel native-protocol client written from docs/protocol.md alone, plus a scenario.

Usage: python3 tests/native/doc_client.py HOST:PORT [--shutdown PID]

Standard library only. CRC-32C, RecordBatch v2 and its gzip codec are implemented here. Every
check compares what the broker answers with what docs/protocol.md says; the first mismatch raises
CheckFailed (exit status 1) with what was expected and what came back. On success the last line
is "doc client: N checks passed ...".

With --shutdown PID (the broker's process id), the scenario ends by checking the document's
shutdown behaviour: it sends the broker SIGTERM while a long-poll Fetch waits, so the broker is
stopped afterwards.
"""

import gzip
import os
import signal
import socket
import struct
import sys
import threading
import time

# --------------------------------------------------------------------------------------------
# checks


class CheckFailed(Exception):
    pass


CHECKS = 0
NOTES = []  # information printed with the steps (timings)


def check(cond, what, expected=None, got=None):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise CheckFailed(f"{what}: expected {expected!r}, got {got!r}")


def eq(got, expected, what):
    check(got == expected, what, expected, got)


# Broker behaviour known to contradict docs/protocol.md (reported, not yet fixed in the broker).
# A check naming one of these accepts exactly the known wrong answer besides the documented one,
# and prints it; once the broker gives the documented answer the run fails until the entry is
# removed here, so the check becomes an ordinary one again. Any other answer fails at once.
KNOWN_BROKER_BUGS = {}
BUGS_SEEN = []


def eq_or_known_bug(got, expected, bug_answer, bug, what):
    global CHECKS
    if bug not in KNOWN_BROKER_BUGS:
        return eq(got, expected, what)
    CHECKS += 1
    if got == expected:
        raise CheckFailed(f"{what}: the broker now answers as documented ({got!r}): remove "
                          f"{bug!r} from KNOWN_BROKER_BUGS")
    if got != bug_answer:
        raise CheckFailed(f"{what}: expected {expected!r} (or, known broker bug {bug!r}, "
                          f"{bug_answer!r}), got {got!r}")
    BUGS_SEEN.append(bug)
    print(f"  KNOWN BROKER BUG {bug}: {KNOWN_BROKER_BUGS[bug]}\n    {what}: documented "
          f"{expected!r}, broker {got!r}")


def note(msg):
    NOTES.append(msg)
    print(f"  note: {msg}")


# --------------------------------------------------------------------------------------------
# error codes (docs/protocol.md "Error codes")

NONE = 0
UNKNOWN_SERVER_ERROR = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_OUT_OF_RANGE = 4
MESSAGE_TOO_LARGE = 5
TOPIC_ALREADY_EXISTS = 6
INVALID_PARTITIONS = 7
INVALID_CONFIG = 8
UNSUPPORTED_VERSION = 9
UNKNOWN_API = 10
INVALID_REQUEST = 11
REQUEST_TIMED_OUT = 12
STORAGE_ERROR = 13
BROKER_SHUTTING_DOWN = 14
INVALID_TOPIC_NAME = 15
INVALID_GROUP_ID = 16
NOT_ENOUGH_MEMORY = 17
POLICY_VIOLATION = 18
OUT_OF_ORDER_SEQUENCE_NUMBER = 22
INVALID_PRODUCER_EPOCH = 23

# API keys (docs/protocol.md "APIs")
API_VERSIONS, METADATA, CREATE_TOPIC, DELETE_TOPIC, PRODUCE, FETCH, LIST_OFFSETS = range(7)
COMMIT_OFFSETS, FETCH_COMMITTED, DESCRIBE_CONFIGS, ALTER_CONFIGS, LIST_GROUPS = range(7, 12)
BROKER_STATUS = 12
API_NAMES = ["ApiVersions", "Metadata", "CreateTopic", "DeleteTopic", "Produce", "Fetch",
             "ListOffsets", "CommitOffsets", "FetchCommitted", "DescribeConfigs",
             "AlterConfigs", "ListGroups", "BrokerStatus"]

# --------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), table-driven, reflected polynomial 0x82F63B78


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# primitive encoding (docs/protocol.md "Conventions")


class W:
    def __init__(self):
        self.b = bytearray()

    def raw(self, x):
        self.b += x
        return self

    def u8(self, v): return self.raw(struct.pack(">B", v))
    def i8(self, v): return self.raw(struct.pack(">b", v))
    def u16(self, v): return self.raw(struct.pack(">H", v))
    def i16(self, v): return self.raw(struct.pack(">h", v))
    def u32(self, v): return self.raw(struct.pack(">I", v))
    def i32(self, v): return self.raw(struct.pack(">i", v))
    def u64(self, v): return self.raw(struct.pack(">Q", v))
    def i64(self, v): return self.raw(struct.pack(">q", v))

    def string(self, s):
        d = s.encode() if isinstance(s, str) else s
        return self.u16(len(d)).raw(d)

    def nstring(self, s):
        if s is None:
            return self.i16(-1)
        d = s.encode() if isinstance(s, str) else s
        return self.i16(len(d)).raw(d)

    def bytes_(self, d):
        return self.u32(len(d)).raw(d)

    def array(self, items, fn):
        self.u32(len(items))
        for it in items:
            fn(self, it)
        return self

    def narray(self, items, fn):
        if items is None:
            return self.i32(-1)
        self.i32(len(items))
        for it in items:
            fn(self, it)
        return self

    def done(self):
        return bytes(self.b)


class R:
    """Strict reader: every length must fit, and end() checks nothing is left over."""

    def __init__(self, data, what="response"):
        self.d = bytes(data)
        self.p = 0
        self.what = what

    def take(self, n):
        if n < 0 or self.p + n > len(self.d):
            raise CheckFailed(f"{self.what}: needs {n} bytes at {self.p}, only "
                              f"{len(self.d) - self.p} left")
        v = self.d[self.p:self.p + n]
        self.p += n
        return v

    def _un(self, fmt, n): return struct.unpack(fmt, self.take(n))[0]
    def u8(self): return self._un(">B", 1)
    def i8(self): return self._un(">b", 1)
    def u16(self): return self._un(">H", 2)
    def i16(self): return self._un(">h", 2)
    def u32(self): return self._un(">I", 4)
    def i32(self): return self._un(">i", 4)
    def u64(self): return self._un(">Q", 8)
    def i64(self): return self._un(">q", 8)

    def bool_(self):
        v = self.u8()
        check(v in (0, 1), f"{self.what}: bool is 0 or 1", "0|1", v)
        return v == 1

    def string(self):
        return self.take(self.u16()).decode("utf-8")

    def nstring(self):
        n = self.i16()
        if n == -1:
            return None
        check(n >= 0, f"{self.what}: nullable_string length", ">= -1", n)
        return self.take(n).decode("utf-8")

    def bytes_(self):
        return self.take(self.u32())

    def array(self, fn):
        return [fn(self) for _ in range(self.u32())]

    def narray(self, fn):
        n = self.i32()
        if n == -1:
            return None
        check(n >= 0, f"{self.what}: nullable_array count", ">= -1", n)
        return [fn(self) for _ in range(n)]

    def remaining(self):
        return len(self.d) - self.p

    def end(self):
        eq(self.remaining(), 0, f"{self.what}: bytes left over after the body")


# --------------------------------------------------------------------------------------------
# RecordBatch v2 (Kafka's DefaultRecordBatch)


def zz_varint(v):
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(d, p):
    shift = 0
    z = 0
    while True:
        if p >= len(d):
            raise CheckFailed("record: varint runs past the batch")
        b = d[p]
        p += 1
        z |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
        if shift > 63:
            raise CheckFailed("record: varint too long")
    return (z >> 1) ^ -(z & 1), p


def _lenbytes(x):
    if x is None:
        return zz_varint(-1)
    return zz_varint(len(x)) + x


class Rec:
    """One record: timestamp (ms), key, value (bytes or None), headers [(str, bytes|None)]."""

    def __init__(self, ts, key, value, headers=()):
        self.ts, self.key, self.value, self.headers = ts, key, value, list(headers)

    def __repr__(self):
        return f"Rec(ts={self.ts}, key={self.key!r}, value={self.value!r}, h={self.headers!r})"

    def __eq__(self, o):
        return (self.ts, self.key, self.value, self.headers) == \
            (o.ts, o.key, o.value, o.headers)


def build_batch(records, base_offset=0, leader_epoch=-1, producer_id=-1, producer_epoch=-1,
                base_sequence=-1, attributes=0, gzipped=False):
    """A RecordBatch v2 as docs/protocol.md "Record batches" lays it out; with gzipped, the
    records section is one gzip stream and the codec bits are 1."""
    base_ts = records[0].ts
    body = bytearray()
    for i, r in enumerate(records):
        rb = bytearray()
        rb.append(0)  # record attributes
        rb += zz_varint(r.ts - base_ts)
        rb += zz_varint(i)  # offsetDelta
        rb += _lenbytes(r.key)
        rb += _lenbytes(r.value)
        rb += zz_varint(len(r.headers))
        for hk, hv in r.headers:
            rb += _lenbytes(hk.encode())
            rb += _lenbytes(hv)
        body += zz_varint(len(rb)) + rb
    if gzipped:
        body = gzip.compress(bytes(body), mtime=0)
        attributes |= 1
    after_crc = struct.pack(">hiqqqhii", attributes, len(records) - 1, base_ts,
                            max(r.ts for r in records), producer_id, producer_epoch,
                            base_sequence, len(records)) + bytes(body)
    crc = crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)  # from partitionLeaderEpoch to the end
    return struct.pack(">qiibI", base_offset, batch_length, leader_epoch, 2, crc) + after_crc


class Batch:
    pass


def parse_batches(data, what):
    """Splits `records` into batches, checking lengths, magic and CRC-32C; decodes records."""
    out = []
    p = 0
    while p < len(data):
        check(len(data) - p >= 61, f"{what}: batch header fits", ">= 61 bytes", len(data) - p)
        base_offset, batch_length, ple, magic, crc = struct.unpack_from(">qiibI", data, p)
        end = p + 12 + batch_length
        check(end <= len(data), f"{what}: batchLength fits in records", f"<= {len(data)}", end)
        eq(magic, 2, f"{what}: magic")
        body = data[p + 21:end]
        eq(crc32c(body), crc, f"{what}: CRC-32C of the batch at offset {base_offset}")
        (attrs, lod, base_ts, max_ts, pid, pepoch, bseq, count) = \
            struct.unpack_from(">hiqqqhii", body, 0)
        b = Batch()
        b.raw = data[p:end]
        b.base_offset, b.leader_epoch, b.attributes = base_offset, ple, attrs
        b.last_offset_delta, b.base_ts, b.max_ts, b.count = lod, base_ts, max_ts, count
        b.records = []
        b.offsets = []
        q = 40
        codec = attrs & 0x07
        check(codec in (0, 1), f"{what}: codec none or gzip (the only ones this client sends)",
              "0|1", codec)
        if codec == 1:
            body = body[:40] + gzip.decompress(bytes(body[40:]))
        for _ in range(count):
            ln, q = read_varint(body, q)
            rend = q + ln
            q += 1  # attributes
            tsd, q = read_varint(body, q)
            od, q = read_varint(body, q)
            kl, q = read_varint(body, q)
            key = None if kl < 0 else bytes(body[q:q + kl])
            q += max(kl, 0)
            vl, q = read_varint(body, q)
            val = None if vl < 0 else bytes(body[q:q + vl])
            q += max(vl, 0)
            nh, q = read_varint(body, q)
            hs = []
            for _ in range(nh):
                hkl, q = read_varint(body, q)
                hk = bytes(body[q:q + hkl]).decode()
                q += hkl
                hvl, q = read_varint(body, q)
                hv = None if hvl < 0 else bytes(body[q:q + hvl])
                q += max(hvl, 0)
                hs.append((hk, hv))
            eq(q, rend, f"{what}: record length")
            b.records.append(Rec(base_ts + tsd, key, val, hs))
            b.offsets.append(base_offset + od)
        eq(q, len(body), f"{what}: records end at the end of the batch")
        out.append(b)
        p = end
    return out


# --------------------------------------------------------------------------------------------
# connection: frames, request and response headers


class Conn:
    def __init__(self, addr, client_id="doc-client", timeout=15.0):
        self.addr = addr
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client_id = client_id
        self.next_corr = 1000
        self.pending = {}  # correlation id -> (error_code, error_message, body reader)

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, api_key, version, body, corr=None, client_id=None):
        if corr is None:
            corr = self.next_corr
            self.next_corr += 1
        payload = W().u16(api_key).u16(version).u32(corr) \
            .string(self.client_id if client_id is None else client_id).raw(body).done()
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)
        return corr

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            buf += chunk
        return bytes(buf)

    def read_frame(self):
        size = struct.unpack(">I", self._recv_exact(4))[0]
        return self._recv_exact(size)

    def recv(self, corr, what="response"):
        while corr not in self.pending:
            payload = self.read_frame()
            r = R(payload, what)
            c = r.u32()
            ec = r.u16()
            msg = r.nstring()
            if ec == NONE:
                check(msg is None, f"{what}: error_message is null with NONE", None, msg)
            self.pending[c] = (ec, msg, r)
        return self.pending.pop(corr)

    def call(self, api_key, body, version=1, what=None):
        """Sends a request and returns its body reader; a top-level error fails the check."""
        what = what or API_NAMES[api_key]
        corr = self.send(api_key, version, body)
        ec, msg, r = self.recv(corr, what)
        eq((ec, msg), (NONE, None), f"{what}: top-level error")
        r.what = what
        return r

    def call_err(self, api_key, body, version=1, what=None):
        """Sends a request expected to get a top-level error; returns (code, message)."""
        what = what or API_NAMES[api_key]
        corr = self.send(api_key, version, body)
        ec, msg, r = self.recv(corr, what)
        eq(r.remaining(), 0, f"{what}: no body after a top-level error (error {ec})")
        return ec, msg


# --------------------------------------------------------------------------------------------
# API codecs (docs/protocol.md "APIs")


def api_versions(c):
    r = c.call(API_VERSIONS, b"")
    apis = r.array(lambda r: (r.u16(), r.u16(), r.u16()))
    ver = r.string()
    r.end()
    return apis, ver


def dec_metadata(r):
    shard_count = r.u32()

    def part(r):
        return dict(partition=r.u32(), shard=r.u32(), leader_epoch=r.u32(),
                    log_start=r.u64(), hw=r.u64())

    def topic(r):
        return dict(error=r.u16(), name=r.string(), id=r.take(16), partitions=r.array(part))
    topics = r.array(topic)
    r.end()
    return shard_count, topics


def metadata(c, topics):
    r = c.call(METADATA, W().narray(topics, W.string).done())
    return dec_metadata(r)


def create_topic(c, name, partitions, configs=()):
    body = W().string(name).u32(partitions) \
        .array(list(configs), lambda w, kv: w.string(kv[0]).string(kv[1])).done()
    r = c.call(CREATE_TOPIC, body)
    ec, msg = r.u16(), r.nstring()
    r.end()
    if ec == NONE:
        CREATED.add(name)
    return ec, msg


def delete_topic(c, name):
    r = c.call(DELETE_TOPIC, W().string(name).done())
    ec, msg = r.u16(), r.nstring()
    r.end()
    if ec == NONE:
        CREATED.discard(name)
    return ec, msg


CREATED = set()  # topics this run created and has not deleted: cleanup() deletes them


def enc_produce(acks, timeout_ms, topics):
    """topics: [(name, [(partition, records_bytes)])]"""
    return W().i8(acks).u32(timeout_ms).array(
        topics, lambda w, t: w.string(t[0]).array(
            t[1], lambda w, p: w.u32(p[0]).bytes_(p[1]))).done()


def dec_produce(r):
    def part(r):
        return dict(partition=r.u32(), error=r.u16(), message=r.nstring(),
                    base_offset=r.i64(), log_start=r.i64())
    topics = r.array(lambda r: (r.string(), r.array(part)))
    r.end()
    return topics


def produce(c, acks, topics, timeout_ms=30000):
    return dec_produce(c.call(PRODUCE, enc_produce(acks, timeout_ms, topics)))


def enc_fetch(max_wait_ms, min_bytes, max_bytes, topics):
    """topics: [(name, [(partition, fetch_offset, partition_max_bytes)])]"""
    return W().u32(max_wait_ms).u32(min_bytes).u32(max_bytes).array(
        topics, lambda w, t: w.string(t[0]).array(
            t[1], lambda w, p: w.u32(p[0]).u64(p[1]).u32(p[2]))).done()


def dec_fetch(r):
    def part(r):
        return dict(partition=r.u32(), error=r.u16(), hw=r.u64(), log_start=r.u64(),
                    records=r.bytes_())
    topics = r.array(lambda r: (r.string(), r.array(part)))
    r.end()
    return topics


def fetch(c, topics, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20):
    return dec_fetch(c.call(FETCH, enc_fetch(max_wait_ms, min_bytes, max_bytes, topics)))


def list_offsets(c, topics):
    """topics: [(name, [(partition, timestamp)])] -> [(name, [dict])]"""
    body = W().array(topics, lambda w, t: w.string(t[0]).array(
        t[1], lambda w, p: w.u32(p[0]).i64(p[1]))).done()
    r = c.call(LIST_OFFSETS, body)

    def part(r):
        return dict(partition=r.u32(), error=r.u16(), offset=r.i64(), timestamp=r.i64())
    topics = r.array(lambda r: (r.string(), r.array(part)))
    r.end()
    return topics


def commit_offsets(c, group, topics):
    """topics: [(name, [(partition, offset, metadata)])]"""
    body = W().string(group).array(topics, lambda w, t: w.string(t[0]).array(
        t[1], lambda w, p: w.u32(p[0]).u64(p[1]).nstring(p[2]))).done()
    r = c.call(COMMIT_OFFSETS, body)
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.u32(), r.u16()))))
    r.end()
    return topics


def fetch_committed(c, group, topics):
    """topics: None or [(name, [partition])]"""
    body = W().string(group).narray(topics, lambda w, t: w.string(t[0]).array(
        t[1], W.u32)).done()
    r = c.call(FETCH_COMMITTED, body)

    def part(r):
        return dict(partition=r.u32(), error=r.u16(), offset=r.i64(), metadata=r.nstring())
    topics = r.array(lambda r: (r.string(), r.array(part)))
    r.end()
    return topics


def describe_configs(c, topics):
    r = c.call(DESCRIBE_CONFIGS, W().array(topics, W.string).done())

    def topic(r):
        return dict(name=r.string(), error=r.u16(),
                    configs=r.array(lambda r: (r.string(), r.string(), r.bool_())))
    topics = r.array(topic)
    r.end()
    return topics


def enc_alter(topic, set_, remove):
    return W().string(topic).array(set_, lambda w, kv: w.string(kv[0]).string(kv[1])) \
        .array(remove, W.string).done()


def alter_configs(c, topic, set_=(), remove=()):
    r = c.call(ALTER_CONFIGS, enc_alter(topic, list(set_), list(remove)))
    ec, msg = r.u16(), r.nstring()
    r.end()
    return ec, msg


def list_groups(c):
    r = c.call(LIST_GROUPS, b"")
    g = r.array(R.string)
    r.end()
    return g


def broker_status(c):
    r = c.call(BROKER_STATUS, b"")
    ver, data_dir = r.string(), r.string()
    shards = r.array(lambda r: dict(shard=r.u32(), core=r.u32(), partitions=r.u32(),
                                    log_bytes=r.u64()))
    r.end()
    return ver, data_dir, shards


# --------------------------------------------------------------------------------------------
# helpers


def one_topic(resp, name, what):
    eq(len(resp), 1, f"{what}: topics in the response")
    eq(resp[0][0], name, f"{what}: topic name")
    return resp[0][1]


def latest(c, topic, partition):
    (_, parts), = list_offsets(c, [(topic, [(partition, -1)])])
    eq(parts[0]["error"], NONE, f"ListOffsets latest {topic}/{partition}: error")
    return parts[0]["offset"]


def wait_latest(c, topic, partition, want, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = latest(c, topic, partition)
        if got == want or time.monotonic() > deadline:
            eq(got, want, what)
            return
        time.sleep(0.02)


def wait_visible(c, name, timeout=5.0):
    """Waits until Metadata shows a topic just created (the doc allows a short delay)."""
    deadline = time.monotonic() + timeout
    while True:
        _, t = metadata(c, [name])
        if t[0]["error"] == NONE or time.monotonic() > deadline:
            eq(t[0]["error"], NONE, f"Metadata: {name} visible after CreateTopic")
            return t[0]
        time.sleep(0.02)


def batch_of_size(ts, size):
    """An uncompressed one-record batch of exactly `size` bytes (whole batch)."""
    for n in range(max(0, size - 80), size):
        for key in (None, b"", b"k"):
            b = build_batch([Rec(ts, key, b"v" * n)])
            if len(b) == size:
                return b
    raise CheckFailed(f"no batch of {size} bytes")


def recs_simple(ts, n):
    return [Rec(ts + i, f"k{i}".encode(), f"v{i}".encode()) for i in range(n)]


def with_fresh_crc(b):
    """A batch with its batchLength and CRC made right again after a patch."""
    b = bytearray(b)
    struct.pack_into(">i", b, 8, len(b) - 12)
    struct.pack_into(">I", b, 17, crc32c(bytes(b[21:])))
    return bytes(b)


def second_record_at(batch):
    """Index of the second record's attributes byte in an uncompressed batch."""
    n, p = read_varint(batch, 61)
    _, q = read_varint(batch, p + n)
    return q


def expect_closed(sock, what, timeout=5.0):
    """The broker must close the connection (EOF or reset) without sending anything."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        raise CheckFailed(f"{what}: expected the broker to close the connection, "
                          f"still open after {timeout}s")
    except (ConnectionResetError, BrokenPipeError):
        data = b""
    eq(data, b"", f"{what}: connection closed with nothing sent")


def assert_silent(c, what, wait=0.3):
    c.sock.settimeout(wait)
    try:
        data = c.sock.recv(1)
    except socket.timeout:
        data = None
    finally:
        c.sock.settimeout(15.0)
    eq(data, None, f"{what}: no further bytes on the connection")


def check_batches(batches, expected, what):
    """expected: [(base_offset, [Rec])]; compares offsets and every record field."""
    eq(len(batches), len(expected), f"{what}: number of batches")
    for i, (b, (base, recs)) in enumerate(zip(batches, expected)):
        w = f"{what} batch {i}"
        eq(b.base_offset, base, f"{w}: baseOffset")
        eq(b.count, len(recs), f"{w}: record count")
        eq(b.last_offset_delta, len(recs) - 1, f"{w}: lastOffsetDelta")
        eq(b.offsets, list(range(base, base + len(recs))), f"{w}: record offsets")
        eq(b.records, recs, f"{w}: records (timestamps, keys, values, headers)")
        eq(b.max_ts, max(r.ts for r in recs), f"{w}: maxTimestamp")


# --------------------------------------------------------------------------------------------
# the document's worked examples (checks of the document against this client's codecs)

EXAMPLE_PRODUCE = """
00 00 00 72 00 04 00 01 00 00 00 07 00 04 64 65 6d 6f ff 00 00 75 30 00 00 00 01 00 06 65 76 65
6e 74 73 00 00 00 01 00 00 00 00 00 00 00 47 00 00 00 00 00 00 00 00 00 00 00 3b 00 00 00 01 02
03 18 a2 70 00 00 00 00 00 00 00 00 01 5d ff 7b 06 3c 00 00 01 5d ff 7b 06 3c ff ff ff ff ff ff
ff ff ff ff ff ff ff ff 00 00 00 01 12 00 00 00 01 06 31 32 33 00"""
EXAMPLE_FETCH = """
00 00 00 79 00 00 00 07 00 00 ff ff 00 00 00 01 00 06 65 76 65 6e 74 73 00 00 00 01 00 00 00 00
00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 47 00 00 00 00 00 00 00 00 00 00
00 3b 00 00 00 01 02 03 18 a2 70 00 00 00 00 00 00 00 00 01 5d ff 7b 06 3c 00 00 01 5d ff 7b 06
3c ff ff ff ff ff ff ff ff ff ff ff ff ff ff 00 00 00 01 12 00 00 00 01 06 31 32 33 00"""


def hexb(s):
    return bytes.fromhex("".join(s.split()))


def example_checks():
    eq(crc32c(b"123456789"), 0xE3069283, "CRC-32C check value")
    prod = hexb(EXAMPLE_PRODUCE)
    eq(len(prod), 118, "worked example: produce request length")
    batch = prod[-71:]
    eq(len(batch), 71, "worked example: batch length")
    (b,) = parse_batches(batch, "worked example batch")
    eq(struct.unpack_from(">I", batch, 17)[0], 0x0318A270, "worked example: CRC field")
    eq(b.records, [Rec(1503229838908, None, b"123", [])], "worked example: record")
    rebuilt = build_batch(b.records, leader_epoch=1)
    eq(rebuilt, batch, "worked example: batch rebuilt by this client")
    payload = W().u16(PRODUCE).u16(1).u32(7).string("demo") \
        .raw(enc_produce(-1, 30000, [("events", [(0, batch)])])).done()
    eq(struct.pack(">I", len(payload)) + payload, prod, "worked example: produce request bytes")
    fr = hexb(EXAMPLE_FETCH)
    eq(len(fr), 125, "worked example: fetch response length")
    eq(struct.unpack_from(">I", fr)[0], len(fr) - 4, "worked example: fetch frame size")
    r = R(fr[4:], "worked example fetch response")
    eq((r.u32(), r.u16(), r.nstring()), (7, 0, None), "worked example: fetch response header")
    topics = dec_fetch(r)
    eq(topics, [("events", [dict(partition=0, error=0, hw=1, log_start=0, records=batch)])],
       "worked example: fetch response body")
    eq(fr[0x42:0x46], b"\x00\x00\x00\x01", "worked example: the fetch response's bytes "
       "0x42-0x45 are the batch's partitionLeaderEpoch (1), as the document says")
    eq((b.base_offset, b.leader_epoch), (0, 1), "worked example: baseOffset 0, "
       "partitionLeaderEpoch 1")
    # the record as the document's "Record" section decodes it
    eq(batch[61:], bytes.fromhex("12 00 00 00 01 06 31 32 33 00"), "worked example: record bytes")
    for v, enc in [(0, "00"), (-1, "01"), (1, "02"), (9, "12"), (64, "8001")]:
        eq(zz_varint(v).hex(), enc, f"varint {v} as the document encodes it")
    return batch


# --------------------------------------------------------------------------------------------
# scenario

# docs/protocol.md "Topic configs": every key, in the table's order, with its default
TOPIC_CONFIGS = [("cleanup.policy", "delete"), ("retention.ms", "604800000"),
                 ("retention.bytes", "-1"), ("segment.bytes", "1073741824"),
                 ("segment.ms", "604800000"), ("delete.retention.ms", "86400000"),
                 ("max.message.bytes", "1048576"), ("fsync.policy", "always"),
                 ("fsync.interval.ms", "1000")]


TOPIC = f"docclient-{os.getpid()}-{int(time.time() * 1000)}"
TOPIC_B = TOPIC + "-b"  # record batch checks, committed offsets of a deleted topic
TOPIC_M = TOPIC + "-m"  # max.message.bytes = 1024
TOPIC_CFG = TOPIC + "-cfg2"
LONG_NAME = (TOPIC + "-").ljust(249, "x")  # the longest topic name
SHORT_NAME = "abcdefghijklmnopqrstuvwxyz"[os.getpid() % 26]


def main():
    args = sys.argv[1:]
    shutdown_pid = None
    if len(args) == 3 and args[1] == "--shutdown" and args[2].isdigit():
        shutdown_pid = int(args[2])
        args = args[:1]
    if len(args) != 1 or ":" not in args[0]:
        print("usage: doc_client.py HOST:PORT [--shutdown BROKER_PID]", file=sys.stderr)
        return 2
    host, port = sys.argv[1].rsplit(":", 1)
    addr = (host, int(port))
    started = time.monotonic()
    topic = TOPIC
    group = f"docclient-group-{os.getpid()}-{int(time.time() * 1000)}"
    missing = topic + "-missing"

    def step(s):
        print(f"[{time.monotonic() - started:6.2f}s] {s}")

    step("worked examples of the document")
    example_batch = example_checks()

    c = Conn(addr)

    # ---------------------------------------------------------------- ApiVersions
    step("ApiVersions")
    apis, broker_version = api_versions(c)
    keys = [a[0] for a in apis]
    eq(keys, sorted(keys), "ApiVersions: apis in key order")
    for k in range(13):
        found = [a for a in apis if a[0] == k]
        eq(found, [(k, 1, 1)], f"ApiVersions: {API_NAMES[k]} at version 1 (min = max = 1)")
    check(len(broker_version) > 0, "ApiVersions: broker_version", "non-empty", broker_version)

    # pipelining: several requests without waiting; responses matched by correlation id
    step("pipelined requests")
    c1 = c.send(API_VERSIONS, 1, b"")
    c2 = c.send(BROKER_STATUS, 1, b"")
    c3 = c.send(LIST_GROUPS, 1, b"")
    for corr in (c3, c1, c2):
        ec, msg, r = c.recv(corr)
        eq((ec, msg), (NONE, None), f"pipelined request {corr}: top-level error")
    # BrokerStatus
    ver2, data_dir, shards = broker_status(c)
    eq(ver2, broker_version, "BrokerStatus: broker_version equals ApiVersions'")
    check(len(data_dir) > 0, "BrokerStatus: data_dir", "non-empty", data_dir)
    eq([s["shard"] for s in shards], list(range(len(shards))), "BrokerStatus: shards in order")

    # ---------------------------------------------------------------- CreateTopic
    step(f"CreateTopic {topic}")
    eq(create_topic(c, topic, 4, [("retention.ms", "86400000")]), (NONE, None),
       "CreateTopic: (error, message)")
    ec, msg = create_topic(c, topic, 4)
    eq(ec, TOPIC_ALREADY_EXISTS, "CreateTopic an existing name")
    check(msg is not None, "CreateTopic error: error_message", "details", msg)
    for bad in ["bad/name", "..", ".", "", "x" * 250, "caf\u00e9"]:
        eq(create_topic(c, bad, 1)[0], INVALID_TOPIC_NAME, f"CreateTopic name {bad[:20]!r}")
    eq(create_topic(c, topic + "-zero", 0)[0], INVALID_PARTITIONS, "CreateTopic 0 partitions")
    eq(create_topic(c, topic + "-zero", 100_001)[0], INVALID_PARTITIONS,
       "CreateTopic 100,001 partitions (the maximum is 100,000)")
    for name in (SHORT_NAME, LONG_NAME[:248], LONG_NAME):  # 1 to 249 characters
        eq(create_topic(c, name, 1), (NONE, None),
           f"CreateTopic with a {len(name)}-character name")
        eq(delete_topic(c, name), (NONE, None), f"DeleteTopic the {len(name)}-character name")
    eq(create_topic(c, topic + "-cfg", 1, [("no.such.config", "1")])[0], INVALID_CONFIG,
       "CreateTopic unknown config key")
    eq(create_topic(c, topic + "-cfg", 1, [("retention.ms", "abc")])[0], INVALID_CONFIG,
       "CreateTopic invalid config value")
    for k, v in [("retention.ms", "-2"), ("segment.bytes", str((1 << 20) - 1)),
                 ("max.message.bytes", "1023"), ("max.message.bytes", str((64 << 20) + 1)),
                 ("cleanup.policy", "none"), ("fsync.policy", "sometimes"),
                 ("delete.retention.ms", "-1")]:
        eq(create_topic(c, topic + "-cfg", 1, [(k, v)])[0], INVALID_CONFIG,
           f"CreateTopic {k}={v} (outside the topic configs table)")

    # ---------------------------------------------------------------- Metadata
    step("Metadata")
    deadline = time.monotonic() + 5
    while True:
        shard_count, topics = metadata(c, [topic, missing, topic + "-zero", topic + "-cfg"])
        if topics and topics[0]["error"] == NONE or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    eq(shard_count, len(shards), "Metadata: shard_count = BrokerStatus shards")
    eq([t["name"] for t in topics], [topic, missing, topic + "-zero", topic + "-cfg"],
       "Metadata: topics in request order")
    t0 = topics[0]
    eq(t0["error"], NONE, "Metadata: created topic error")
    check(t0["id"] != bytes(16), "Metadata: topic_id assigned", "non-zero", t0["id"].hex())
    eq([p["partition"] for p in t0["partitions"]], [0, 1, 2, 3], "Metadata: partitions in order")
    for p in t0["partitions"]:
        check(p["shard"] < shard_count, "Metadata: owning shard < shard_count",
              f"< {shard_count}", p["shard"])
        eq((p["log_start"], p["hw"]), (0, 0), f"Metadata: empty partition {p['partition']} offsets")
    eq([p["leader_epoch"] for p in t0["partitions"]], [0, 0, 0, 0],
       "Metadata: leader_epoch of a new topic's partitions")
    for t in topics[1:]:
        eq((t["error"], t["id"], t["partitions"]),
           (UNKNOWN_TOPIC_OR_PARTITION, bytes(16), []), f"Metadata: topic {t['name']} absent")
    _, all_topics = metadata(c, None)
    names = [t["name"] for t in all_topics]
    eq(names, sorted(set(names)), "Metadata(null): every topic once, sorted by name")
    by_name = {t["name"]: t for t in all_topics}
    check(topic in by_name, "Metadata(null): lists the new topic", topic, sorted(by_name))
    eq(by_name[topic]["id"], t0["id"], "Metadata(null): same topic_id")
    check("__consumer_offsets" in by_name, "Metadata(null): lists __consumer_offsets",
          "__consumer_offsets", sorted(by_name))
    eq(len(by_name["__consumer_offsets"]["partitions"]), 16,
       "Metadata: __consumer_offsets partitions")
    eq(metadata(c, [])[1], [], "Metadata with an empty array: no topic")
    eq(sum(s["partitions"] for s in broker_status(c)[2]),
       sum(len(t["partitions"]) for t in all_topics),
       "BrokerStatus: partitions over shards = partitions in Metadata(null)")

    # ---------------------------------------------------------------- configs
    step("DescribeConfigs / AlterConfigs")
    d = describe_configs(c, [topic, missing])
    eq([x["name"] for x in d], [topic, missing], "DescribeConfigs: request order")
    eq(d[0]["error"], NONE, "DescribeConfigs: error")
    want = [(k, "86400000" if k == "retention.ms" else v, k != "retention.ms")
            for k, v in TOPIC_CONFIGS]
    eq(d[0]["configs"], want, "DescribeConfigs: every key of the topic configs table, in its "
       "order, with its default (retention.ms as created)")
    eq((d[1]["error"], d[1]["configs"]), (UNKNOWN_TOPIC_OR_PARTITION, []),
       "DescribeConfigs: missing topic")

    def configs_of(name):
        return {k: (v, dflt) for k, v, dflt in describe_configs(c, [name])[0]["configs"]}

    eq(alter_configs(c, topic, [("retention.ms", "172800000")]), (NONE, None), "AlterConfigs set")
    eq(configs_of(topic)["retention.ms"], ("172800000", False),
       "DescribeConfigs after AlterConfigs set")
    ec, msg = alter_configs(c, topic, [("retention.ms", "1000"), ("no.such.config", "x")])
    eq(ec, INVALID_CONFIG, "AlterConfigs with an unknown key")
    eq(configs_of(topic)["retention.ms"], ("172800000", False),
       "AlterConfigs is atomic: nothing applied")
    eq(alter_configs(c, topic, remove=["retention.ms"]), (NONE, None), "AlterConfigs remove")
    eq(configs_of(topic)["retention.ms"], ("604800000", True),
       "DescribeConfigs after remove: the default, is_default")
    eq(alter_configs(c, topic, remove=["segment.ms"]), (NONE, None),
       "AlterConfigs remove of a key that is not set")
    # a key named twice: INVALID_REQUEST in the body (top-level 0), nothing changes
    for set_, remove, what in [
            ([("retention.ms", "5000"), ("retention.ms", "6000")], [], "set twice"),
            ([("retention.ms", "5000")], ["retention.ms"], "set and removed"),
            ([("segment.ms", "5000")], ["retention.ms", "retention.ms"], "removed twice")]:
        ec, msg = alter_configs(c, topic, set_, remove)
        eq(ec, INVALID_REQUEST, f"AlterConfigs with a key {what}: body error_code")
        check(msg is not None, f"AlterConfigs with a key {what}: error_message", "details", msg)
        cfg = configs_of(topic)
        eq((cfg["retention.ms"], cfg["segment.ms"]), (("604800000", True), ("604800000", True)),
           f"AlterConfigs with a key {what}: nothing changed")
    before = describe_configs(c, ["__consumer_offsets"])[0]["configs"]
    eq(dict((k, v) for k, v, _ in before)["cleanup.policy"], "compact",
       "__consumer_offsets: cleanup.policy=compact")
    for set_, remove in [([("retention.ms", "1000")], []), ([], ["retention.ms"]),
                         ([("cleanup.policy", "compact")], [])]:
        ec, msg = alter_configs(c, "__consumer_offsets", set_, remove)
        eq(ec, POLICY_VIOLATION, f"AlterConfigs on __consumer_offsets set={set_} "
           f"remove={remove}: body error_code")
    eq(describe_configs(c, ["__consumer_offsets"])[0]["configs"], before,
       "AlterConfigs on __consumer_offsets: nothing changed")
    eq(alter_configs(c, missing, [("retention.ms", "1000")])[0], UNKNOWN_TOPIC_OR_PARTITION,
       "AlterConfigs on a missing topic")
    eq(alter_configs(c, topic, [("retention.ms", "86400000")]), (NONE, None),
       "AlterConfigs set back")
    # CreateTopic: values trimmed and normalised; a key named twice takes the later value
    eq(create_topic(c, TOPIC_CFG, 1, [("retention.ms", "5000"), ("cleanup.policy",
                                                                 " Delete , COMPACT"),
                                      ("fsync.policy", "NEVER"), ("retention.ms", " 6000 ")]),
       (NONE, None), "CreateTopic with configs to normalise, retention.ms named twice")
    cfg = configs_of(TOPIC_CFG)
    eq((cfg["retention.ms"], cfg["cleanup.policy"], cfg["fsync.policy"]),
       (("6000", False), ("compact,delete", False), ("never", False)),
       "DescribeConfigs: the later retention.ms, normalised enumerations")
    eq(delete_topic(c, TOPIC_CFG), (NONE, None), "DeleteTopic the configs topic")

    # ---------------------------------------------------------------- Produce
    now = int(time.time() * 1000)
    T = now - 3_600_000  # an hour ago: batches of the first round
    T2 = now - 60_000  # a minute ago: batches of the second round

    def recs(ts0, n, tag, step_ms=1):
        out = []
        for i in range(n):
            hs = [("h-idx", str(i).encode()), ("trace", f"{tag}-{i}".encode() * (i + 1))]
            if i == 1:
                hs.append(("nullhdr", None))
            key = None if i == 2 else f"key-{tag}-{i}".encode()
            val = None if i == 3 else (f"value-{tag}-{i}-".encode() * (5 + i))
            out.append(Rec(ts0 + i * step_ms, key, val, hs if i != 0 else []))
        return out

    r0a, r0b, r1a, r2a = recs(T, 3, "p0a"), recs(T + 10, 2, "p0b"), recs(T, 4, "p1a"), \
        recs(T, 3, "p2a")
    b0a, b0b, b1a, b2a = build_batch(r0a), build_batch(r0b), build_batch(r1a), build_batch(r2a)
    step("Produce acks=1, three partitions, two batches in partition 0")
    resp = produce(c, 1, [(topic, [(0, b0a + b0b), (1, b1a), (2, b2a)])])
    parts = one_topic(resp, topic, "Produce acks=1")
    eq([(p["partition"], p["error"], p["message"], p["base_offset"], p["log_start"])
        for p in parts], [(0, 0, None, 0, 0), (1, 0, None, 0, 0), (2, 0, None, 0, 0)],
       "Produce acks=1: (partition, error, message, base_offset, log_start_offset)")

    r0c, r1b, r2b = recs(T2, 4, "p0c", 100), recs(T2, 5, "p1b", 100), recs(T2, 2, "p2b", 100)
    b0c, b1b, b2b = build_batch(r0c), build_batch(r1b), build_batch(r2b)
    step("Produce acks=all, partitions in order 2,0,1 plus unknown ones")
    resp = produce(c, -1, [(topic, [(2, b2b), (0, b0c), (1, b1b), (99, b2b)]),
                           (missing, [(0, b2b)])])
    eq([t[0] for t in resp], [topic, missing], "Produce acks=all: topics in request order")
    eq([(p["partition"], p["error"], p["message"], p["base_offset"], p["log_start"])
        for p in resp[0][1][:3]],
       [(2, 0, None, 3, 0), (0, 0, None, 5, 0), (1, 0, None, 4, 0)],
       "Produce acks=all: (partition, error, message, base_offset, log_start_offset)")
    for name, p in [(topic, resp[0][1][3]), (missing, resp[1][1][0])]:
        eq((p["error"], p["base_offset"], p["log_start"]),
           (UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
           f"Produce to {name}/{p['partition']}: (error, base_offset, log_start_offset)")
    expected = {0: [(0, r0a), (3, r0b), (5, r0c)], 1: [(0, r1a), (4, r1b)],
                2: [(0, r2a), (3, r2b)]}
    batch_bytes = {0: [b0a, b0b, b0c], 1: [b1a, b1b], 2: [b2a, b2b]}
    hw = {0: 9, 1: 9, 2: 5}
    for p, h in hw.items():
        wait_latest(c, topic, p, h, f"ListOffsets latest {p} after the produces")
    _, mt = metadata(c, [topic])
    eq([(p["log_start"], p["hw"]) for p in mt[0]["partitions"]],
       [(0, 9), (0, 9), (0, 5), (0, 0)], "Metadata offsets after the produces")

    # ---------------------------------------------------------------- Fetch
    step("Fetch from offset 0, three partitions in one request")
    M = 1 << 20
    resp = fetch(c, [(topic, [(1, 0, M), (0, 0, M), (2, 0, M)])])
    parts = one_topic(resp, topic, "Fetch")
    eq([p["partition"] for p in parts], [1, 0, 2], "Fetch: partitions in request order")
    for p in parts:
        n = p["partition"]
        eq((p["error"], p["hw"], p["log_start"]), (NONE, hw[n], 0),
           f"Fetch {n}: (error, high_watermark, log_start_offset)")
        eq(p["records"].__len__(), sum(len(b) for b in batch_bytes[n]),
           f"Fetch {n}: records length = the batches produced")
        batches = parse_batches(p["records"], f"Fetch {n}")
        check_batches(batches, expected[n], f"Fetch {n}")
        for b, sent in zip(batches, batch_bytes[n]):
            eq(b.raw[16:], sent[16:], f"Fetch {n}: batch bytes from magic on, as produced")
            eq(b.raw[8:12], sent[8:12], f"Fetch {n}: batchLength")
            eq(b.leader_epoch, 0, f"Fetch {n}: partitionLeaderEpoch (sent -1) stamped with the "
               "partition's leader_epoch")

    step("Fetch from an offset inside a batch")
    parts = one_topic(fetch(c, [(topic, [(0, 4, M)])]), topic, "Fetch at 4")
    batches = parse_batches(parts[0]["records"], "Fetch at 4")
    eq([b.base_offset for b in batches], [3, 5], "Fetch at 4: batches start with the one "
       "containing offset 4")

    step("Fetch limits")
    s = [len(b) for b in batch_bytes[0]]
    s1 = [len(b) for b in batch_bytes[1]]

    def fetch_bases(parts_spec, max_bytes, what):
        parts = one_topic(fetch(c, [(topic, parts_spec)], max_bytes=max_bytes), topic, what)
        eq([p["partition"] for p in parts], [p[0] for p in parts_spec], f"{what}: partitions")
        for p in parts:
            eq(p["error"], NONE, f"{what}: partition {p['partition']} error")
        return [[b.base_offset for b in parse_batches(p["records"], what)] for p in parts]

    for mb, pmb, want, what in [
            (1, M, [0], "max_bytes=1: the first batch anyway"),
            (M, 1, [0], "partition_max_bytes=1: the first batch anyway"),
            (1, 1, [0], "both limits 1: the first batch anyway"),
            (s[0] + s[1] - 1, M, [0], "max_bytes just under two batches"),
            (s[0] + s[1], M, [0, 3], "max_bytes = two batches"),
            (M, s[0] + s[1] - 1, [0], "partition_max_bytes just under two batches"),
            (M, s[0] + s[1], [0, 3], "partition_max_bytes = two batches"),
            (M, s[0] + s[1] + s[2] - 1, [0, 3], "partition_max_bytes just under three"),
            (s[0] + s[1] + s[2], M, [0, 3, 5], "max_bytes = three batches")]:
        eq(fetch_bases([(0, 0, pmb)], mb, f"Fetch partition 0, {what}"), [want],
           f"Fetch partition 0, {what}: batch base offsets")
    # several partitions: filled in request order within max_bytes; a later partition gets the
    # whole batches that still fit (a prefix) or none
    for spec, mb, want, what in [
            ([(0, 0, M), (1, 0, M)], sum(s) + s1[0], [[0, 3, 5], [0]],
             "max_bytes = all of 0 + the first batch of 1: a prefix of partition 1"),
            ([(0, 0, M), (1, 0, M)], sum(s) + s1[0] - 1, [[0, 3, 5], []],
             "max_bytes = all of 0 + one byte short of the first batch of 1: none of 1"),
            ([(1, 0, M), (0, 0, M)], sum(s1) + s[0], [[0, 4], [0]],
             "partitions 1, 0: filled in request order"),
            ([(0, 0, M), (1, 0, M), (2, 0, M)], 1, [[0], [], []],
             "max_bytes=1 over three partitions: only the first batch of the first"),
            ([(2, hw[2], M), (1, 0, 1), (0, 0, M)], 1, [[], [0], []],
             "partition 2 at its end (no data), then 1 with both limits 1: the first partition "
             "with data gets its first batch"),
            ([(0, 0, M), (1, 0, s1[0] + s1[1] - 1)], M, [[0, 3, 5], [0]],
             "partition 1 after partition 0, its partition_max_bytes just under two batches")]:
        eq(fetch_bases(spec, mb, f"Fetch {what}"), want, f"Fetch {what}: batch base offsets")
    # a later partition whose first batch alone exceeds its partition_max_bytes gets nothing:
    # only the first partition with data is exempt from the limits
    what = "Fetch partitions 0, 1 with partition 1's partition_max_bytes under its first batch"
    eq_or_known_bug(fetch_bases([(0, 0, M), (1, 0, s1[0] - 1)], M, what), [[0, 3, 5], []],
                    [[0, 3, 5], [0]], "fetch-partition-max-bytes", f"{what}: batch base offsets")

    step("Fetch errors")
    parts = one_topic(fetch(c, [(topic, [(0, hw[0] + 1, M), (1, 1 << 40, M), (2, hw[2], M),
                                         (77, 0, M)])]),
                      topic, "Fetch out of range")
    eq([(p["partition"], p["error"], p["hw"], p["log_start"], p["records"]) for p in parts],
       [(0, OFFSET_OUT_OF_RANGE, hw[0], 0, b""), (1, OFFSET_OUT_OF_RANGE, hw[1], 0, b""),
        (2, NONE, hw[2], 0, b""), (77, UNKNOWN_TOPIC_OR_PARTITION, 0, 0, b"")],
       "Fetch at hw+1, far past the end, at hw, and at an unknown partition: "
       "(partition, error, high_watermark, log_start_offset, records)")
    parts = one_topic(fetch(c, [(missing, [(0, 0, M)])]), missing, "Fetch missing topic")
    eq((parts[0]["error"], parts[0]["hw"], parts[0]["log_start"], parts[0]["records"]),
       (UNKNOWN_TOPIC_OR_PARTITION, 0, 0, b""),
       "Fetch a missing topic: (error, high_watermark, log_start_offset, records)")

    # ---------------------------------------------------------------- ListOffsets
    step("ListOffsets")
    resp = list_offsets(c, [(topic, [(1, -2), (1, -1), (0, -1), (3, -2), (3, -1), (9, -1)]),
                            (missing, [(0, -1)])])
    got = [(p["partition"], p["error"], p["offset"], p["timestamp"]) for p in resp[0][1]]
    eq(got, [(1, 0, 0, -1), (1, 0, 9, -1), (0, 0, 9, -1), (3, 0, 0, -1), (3, 0, 0, -1),
             (9, UNKNOWN_TOPIC_OR_PARTITION, -1, -1)],
       "ListOffsets (partition, error, offset, timestamp): earliest 1, latest 1, latest 0, "
       "earliest/latest of empty partition 3, unknown partition 9")
    # by time, partition 1: the batch at 0 has records at T..T+3 (offsets 0..3), the batch at
    # 4 records at T2, T2+100, ..., T2+400 (offsets 4..8). The doc: the offset of the first
    # record whose timestamp is >= t, and that record's own timestamp
    for ts, want, what in [(T - 1000, (0, T), "before every record"),
                           (T, (0, T), "= first record's time"),
                           (T + 2, (2, T + 2), "= the third record's time"),
                           (T + 3, (3, T + 3), "= the first batch's max timestamp"),
                           (T + 10_000, (4, T2), "between the batches"),
                           (T2 + 50, (5, T2 + 100), "between two records of a batch"),
                           (T2 + 400, (8, T2 + 400), "= last record's time"),
                           (T2 + 401, (-1, -1), "just after the last record"),
                           (now + 86_400_000, (-1, -1), "after every record")]:
        (_, parts), = list_offsets(c, [(topic, [(1, ts)])])
        eq((parts[0]["error"], parts[0]["offset"], parts[0]["timestamp"]), (NONE,) + want,
           f"ListOffsets by time {what} (t = T{ts - T:+d}): (error, offset, timestamp)")
    eq([(p["error"], p["offset"], p["timestamp"]) for p in resp[1][1]],
       [(UNKNOWN_TOPIC_OR_PARTITION, -1, -1)], "ListOffsets on a missing topic")
    body = W().array([(topic, [(1, -3)])], lambda w, t: w.string(t[0]).array(
        t[1], lambda w, p: w.u32(p[0]).i64(p[1]))).done()
    eq(c.call_err(LIST_OFFSETS, body)[0], INVALID_REQUEST, "ListOffsets timestamp -3")

    # ---------------------------------------------------------------- worked example, live
    step("worked example batch, fetched back byte for byte")
    parts = one_topic(produce(c, -1, [(topic, [(3, example_batch)])]), topic, "Produce example")
    eq((parts[0]["error"], parts[0]["base_offset"]), (NONE, 0), "Produce the example batch")
    corr = c.send(FETCH, 1, enc_fetch(0, 1, M, [(topic, [(3, 0, M)])]), corr=7)
    c.sock.settimeout(15)
    frame = c.read_frame()
    want = W().u32(7).u16(0).i16(-1).array([topic], lambda w, t: w.string(t).array(
        [0], lambda w, _: w.u32(3).u16(0).u64(1).u64(0).bytes_(example_batch))).done()
    # partitionLeaderEpoch is bytes 12..16 of the batch: the doc's worked example shows the
    # batch as produced (1); the broker stamps the partition's leader epoch (0) there
    ple_at = len(want) - len(example_batch) + 12
    eq(frame[:ple_at].hex() + frame[ple_at + 4:].hex(), want[:ple_at].hex() +
       want[ple_at + 4:].hex(), "Fetch of the example batch: response payload except the "
       "batch's partitionLeaderEpoch (the worked example with this topic's name, partition 3)")
    eq(frame[ple_at:ple_at + 4].hex(), "00000000",
       "Fetch of the example batch: partitionLeaderEpoch 00 00 00 00 where the worked example "
       "shows the produced 00 00 00 01")
    eq(want[ple_at:ple_at + 4].hex(), "00000001", "worked example: partitionLeaderEpoch 1")

    # ---------------------------------------------------------------- acks = 0
    step("Produce acks=0")
    r3 = recs(now, 2, "p3")
    b3 = build_batch(r3)
    c.send(PRODUCE, 1, enc_produce(0, 30000, [(topic, [(3, b3)])]), corr=4242)
    c.send(PRODUCE, 1, enc_produce(0, 30000, [(missing, [(0, b3)])]), corr=4243)
    c.send(PRODUCE, 1, enc_produce(0, 30000, [(topic, [(3, b3[:-1] + bytes([b3[-1] ^ 0xFF]))])]),
           corr=4244)
    corr = c.send(API_VERSIONS, 1, b"", corr=4245)
    frame = c.read_frame()
    eq(struct.unpack_from(">I", frame)[0], 4245,
       "acks=0: the next response on the connection is the ApiVersions one")
    assert_silent(c, "acks=0 (ok, unknown topic, corrupt batch)")
    wait_latest(c, topic, 3, 3, "acks=0: records appended (latest offset of partition 3)")
    parts = one_topic(fetch(c, [(topic, [(3, 1, M)])]), topic, "Fetch acks=0 data")
    check_batches(parse_batches(parts[0]["records"], "Fetch acks=0 data"), [(1, r3)],
                  "Fetch acks=0 data")

    # ---------------------------------------------------------------- long poll
    step("long-poll Fetch answered when data arrives")

    def produce_later(delays_and_batches, part, results):
        try:
            c2 = Conn(addr, client_id="doc-client-2")
            t0 = time.monotonic()
            for delay, b in delays_and_batches:
                time.sleep(max(0, t0 + delay - time.monotonic()))
                results.append(produce(c2, 1, [(topic, [(part, b)])]))
            c2.close()
        except Exception as e:  # reported by the main thread
            results.append(e)

    r2c = recs(int(time.time() * 1000), 3, "p2c")
    b2c = build_batch(r2c)
    results = []
    th = threading.Thread(target=produce_later, args=([(0.8, b2c)], 2, results))
    t_start = time.monotonic()
    th.start()
    parts = one_topic(fetch(c, [(topic, [(0, hw[0], M), (2, hw[2], M)])], max_wait_ms=8000,
                            min_bytes=1), topic, "long poll")
    elapsed = time.monotonic() - t_start
    th.join()
    check(not any(isinstance(x, Exception) for x in results), "second connection's produce",
          "no exception", results)
    eq(one_topic(results[0], topic, "produce during long poll")[0]["base_offset"], hw[2],
       "produce during long poll: base_offset")
    check(0.7 <= elapsed <= 4.0, "long poll: answered when the data arrived (~0.8 s), "
          "not at max_wait (8 s)", "0.7..4.0 s", round(elapsed, 3))
    note(f"long poll answered after {elapsed:.3f} s (data produced at 0.8 s)")
    eq([p["partition"] for p in parts], [0, 2], "long poll: partitions")
    eq(parts[0]["records"], b"", "long poll: nothing for partition 0")
    check_batches(parse_batches(parts[1]["records"], "long poll"), [(hw[2], r2c)],
                  "long poll partition 2")
    hw[2] += 3

    step("long-poll Fetch with min_bytes larger than one batch")
    r1c, r1d = recs(int(time.time() * 1000), 2, "p1c"), recs(int(time.time() * 1000), 2, "p1d")
    b1c, b1d = build_batch(r1c), build_batch(r1d)
    results = []
    th = threading.Thread(target=produce_later, args=([(0.5, b1c), (2.0, b1d)], 1, results))
    t_start = time.monotonic()
    th.start()
    parts = one_topic(fetch(c, [(topic, [(1, hw[1], M)])], max_wait_ms=8000,
                            min_bytes=len(b1c) + 1), topic, "long poll min_bytes")
    elapsed = time.monotonic() - t_start
    th.join()
    check(not any(isinstance(x, Exception) for x in results), "second connection's produces",
          "no exception", results)
    check(1.8 <= elapsed <= 5.0, "long poll min_bytes: answered once the second batch "
          "arrived (~2.0 s)", "1.8..5.0 s", round(elapsed, 3))
    note(f"long poll min_bytes answered after {elapsed:.3f} s (second batch at 2.0 s)")
    check_batches(parse_batches(parts[0]["records"], "long poll min_bytes"),
                  [(hw[1], r1c), (hw[1] + 2, r1d)], "long poll min_bytes")
    hw[1] += 4

    step("long-poll Fetch that times out")
    for mb in (1, 0):
        t_start = time.monotonic()
        parts = one_topic(fetch(c, [(topic, [(2, hw[2], M)])], max_wait_ms=1000, min_bytes=mb),
                          topic, "long poll timeout")
        elapsed = time.monotonic() - t_start
        check(0.95 <= elapsed <= 2.5, f"long poll min_bytes={mb}: answered after ~max_wait "
              "(1 s)", "0.95..2.5 s", round(elapsed, 3))
        note(f"long poll min_bytes={mb} max_wait 1000 ms timed out after {elapsed:.3f} s")
        eq((parts[0]["error"], parts[0]["hw"], parts[0]["records"]), (NONE, hw[2], b""),
           f"long poll min_bytes={mb} timed out: (error, hw, records)")

    # ---------------------------------------------------------------- committed offsets
    step("CommitOffsets / FetchCommitted / ListGroups")
    resp = commit_offsets(c, group, [(topic, [(0, 3, "m0"), (1, 4, None)])])
    eq(resp, [(topic, [(0, NONE), (1, NONE)])], "CommitOffsets")
    resp = fetch_committed(c, group, [(topic, [1, 0, 2])])
    eq(resp, [(topic, [dict(partition=1, error=0, offset=4, metadata=None),
                       dict(partition=0, error=0, offset=3, metadata="m0"),
                       dict(partition=2, error=0, offset=-1, metadata=None)])],
       "FetchCommitted (explicit partitions, one never committed)")
    eq(commit_offsets(c, group, [(topic, [(0, 6, "m0-bis")])]), [(topic, [(0, NONE)])],
       "CommitOffsets again")
    resp = fetch_committed(c, group, None)
    eq(resp, [(topic, [dict(partition=0, error=0, offset=6, metadata="m0-bis"),
                       dict(partition=1, error=0, offset=4, metadata=None)])],
       "FetchCommitted(null): every committed partition, latest commit")
    resp = fetch_committed(c, group + "-none", [(topic, [0])])
    eq(resp, [(topic, [dict(partition=0, error=0, offset=-1, metadata=None)])],
       "FetchCommitted for a group that never committed")
    groups = list_groups(c)
    check(group in groups, "ListGroups: has the group", group, groups)
    check(group + "-none" not in groups, "ListGroups: no group without commits", "absent",
          groups)
    eq(groups, sorted(groups), "ListGroups: sorted")
    # group ids are 1 to 255 bytes: INVALID_GROUP_ID per partition in CommitOffsets' body,
    # top-level (no body) in FetchCommitted
    for bad_group, what in [("", "empty"), ("g" * 256, "256-byte")]:
        eq(commit_offsets(c, bad_group, [(topic, [(0, 1, None), (1, 2, None)]),
                                         (missing, [(0, 1, None)])]),
           [(topic, [(0, INVALID_GROUP_ID), (1, INVALID_GROUP_ID)]),
            (missing, [(0, INVALID_GROUP_ID)])],
           f"CommitOffsets with an {what} group id: per partition, in the body")
        for topics in ([(topic, [0])], None):
            body = W().string(bad_group).narray(topics, lambda w, t: w.string(t[0]).array(
                t[1], W.u32)).done()
            ec, msg = c.call_err(FETCH_COMMITTED, body,
                                 what=f"FetchCommitted with an {what} group id")
            eq(ec, INVALID_GROUP_ID, f"FetchCommitted with an {what} group id, topics "
               f"{'null' if topics is None else 'listed'}: top-level error")
            check(msg is not None, f"FetchCommitted with an {what} group id: error_message",
                  "details", msg)
    eq(fetch_committed(c, group, [(topic, [0])])[0][1][0]["offset"], 6,
       "the group's commit is untouched by the refused requests")
    g255 = (group + "-").ljust(255, "g")
    eq(commit_offsets(c, g255, [(topic, [(2, 11, "x")])]), [(topic, [(2, NONE)])],
       "CommitOffsets with a 255-byte group id")
    eq(fetch_committed(c, g255, None),
       [(topic, [dict(partition=2, error=0, offset=11, metadata="x")])],
       "FetchCommitted with a 255-byte group id")
    # unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION for those, the others are stored
    eq(commit_offsets(c, group, [(topic, [(9, 1, None), (3, 7, None)]),
                                 (missing, [(0, 1, None)])]),
       [(topic, [(9, UNKNOWN_TOPIC_OR_PARTITION), (3, NONE)]),
        (missing, [(0, UNKNOWN_TOPIC_OR_PARTITION)])],
       "CommitOffsets to partition 9 (of 4), partition 3 and a missing topic")
    # a committed offset is stored as given, not checked against the partition's offsets
    eq(commit_offsets(c, group, [(topic, [(2, 1 << 40, None)])]), [(topic, [(2, NONE)])],
       "CommitOffsets of an offset far past the high watermark")
    # FetchCommitted does not check topics and partitions: error 0, offset -1 where none
    eq(fetch_committed(c, group, [(missing, [0, 5]), (topic, [9, 3, 2])]),
       [(missing, [dict(partition=0, error=0, offset=-1, metadata=None),
                   dict(partition=5, error=0, offset=-1, metadata=None)]),
        (topic, [dict(partition=9, error=0, offset=-1, metadata=None),
                 dict(partition=3, error=0, offset=7, metadata=None),
                 dict(partition=2, error=0, offset=1 << 40, metadata=None)])],
       "FetchCommitted for a missing topic, an unknown partition and committed ones")
    # null: every committed partition, topics sorted by name, partitions in increasing order
    eq(create_topic(c, TOPIC_B, 3), (NONE, None), f"CreateTopic {TOPIC_B}")
    wait_visible(c, TOPIC_B)
    eq(commit_offsets(c, group, [(TOPIC_B, [(2, 5, None), (0, 4, "b0")])]),
       [(TOPIC_B, [(2, NONE), (0, NONE)])], f"CommitOffsets to {TOPIC_B}")
    eq(fetch_committed(c, group, None),
       [(topic, [dict(partition=0, error=0, offset=6, metadata="m0-bis"),
                 dict(partition=1, error=0, offset=4, metadata=None),
                 dict(partition=2, error=0, offset=1 << 40, metadata=None),
                 dict(partition=3, error=0, offset=7, metadata=None)]),
        (TOPIC_B, [dict(partition=0, error=0, offset=4, metadata="b0"),
                   dict(partition=2, error=0, offset=5, metadata=None)])],
       "FetchCommitted(null): topics by name, partitions in increasing order")
    # deleting a topic deletes every group's committed offsets for it
    eq(commit_offsets(c, g255, [(TOPIC_B, [(1, 3, None)])]), [(TOPIC_B, [(1, NONE)])],
       f"CommitOffsets to {TOPIC_B} by the 255-byte group")
    eq(delete_topic(c, TOPIC_B), (NONE, None), f"DeleteTopic {TOPIC_B}")
    eq([t for t, _ in fetch_committed(c, group, None)], [topic],
       f"FetchCommitted(null) after DeleteTopic {TOPIC_B}: its commits are gone")
    eq(fetch_committed(c, g255, [(TOPIC_B, [1])]),
       [(TOPIC_B, [dict(partition=1, error=0, offset=-1, metadata=None)])],
       f"FetchCommitted of the other group for the deleted {TOPIC_B}: none")
    eq(create_topic(c, TOPIC_B, 3), (NONE, None), f"CreateTopic {TOPIC_B} again")
    wait_visible(c, TOPIC_B)
    eq(fetch_committed(c, group, [(TOPIC_B, [0, 2])]),
       [(TOPIC_B, [dict(partition=0, error=0, offset=-1, metadata=None),
                   dict(partition=2, error=0, offset=-1, metadata=None)])],
       f"FetchCommitted for {TOPIC_B} created again: no commit inherited")
    eq(fetch_committed(c, g255, None),
       [(topic, [dict(partition=2, error=0, offset=11, metadata="x")])],
       "FetchCommitted(null) of the 255-byte group: only its commit to the live topic")

    # ---------------------------------------------------------------- bad input
    step("unknown API key, unsupported versions, malformed requests")
    corr = c.send(200, 1, b"whatever", corr=0xDEADBEEF)
    ec, msg, r = c.recv(corr, "unknown API")
    eq((ec, r.remaining()), (UNKNOWN_API, 0), "api_key 200: (top-level error, body bytes)")
    check(msg is not None, "api_key 200: error_message", "details", msg)
    corr = c.send(FETCH, 9, enc_fetch(0, 1, M, [(topic, [(0, 0, M)])]), corr=7)
    ec, msg, r = c.recv(7, "Fetch v9")
    eq((ec, msg, r.remaining()),
       (UNSUPPORTED_VERSION, "Fetch v9 is not supported (supported: v1 to v1)", 0),
       "Fetch v9: (error, message, body bytes), as in the worked example")
    for key in range(13):
        for v in (0, 2):
            ec, msg = c.call_err(key, b"", version=v, what=f"{API_NAMES[key]} v{v}")
            eq(ec, UNSUPPORTED_VERSION, f"{API_NAMES[key]} v{v}: top-level error")
    for body, what in [
            (b"\x00", "ApiVersions with a trailing byte"),
    ]:
        ec, msg = c.call_err(API_VERSIONS, body, what=what)
        eq(ec, INVALID_REQUEST, what)
    malformed = [
        (PRODUCE, enc_produce(2, 0, [(topic, [(0, b0a)])]), "Produce acks=2"),
        (PRODUCE, enc_produce(-1, 0, [(topic, [(0, b0a)])]) + b"\x00", "Produce trailing byte"),
        (PRODUCE, W().i8(-1).u32(0).u32(4_000_000_000).u32(0).u32(0).u32(0).done(),
         "Produce huge topics count"),
        (METADATA, W().i32(-2).done(), "Metadata topics count -2"),
        (METADATA, W().i32(1).u16(10).raw(b"abc").done(), "Metadata truncated string"),
        (METADATA, W().i32(1).u16(2).raw(b"\xff\xfe").done(), "Metadata invalid UTF-8 name"),
        (DESCRIBE_CONFIGS, W().u32(1).done(), "DescribeConfigs truncated"),
        (COMMIT_OFFSETS, W().string("g").u32(1).string(topic).u32(1).u32(0).u64(1).i16(-5)
         .done(), "CommitOffsets metadata length -5"),
    ]
    for key, body, what in malformed:
        ec, msg = c.call_err(key, body, what=what)
        eq(ec, INVALID_REQUEST, f"{what}: top-level error")
        check(msg is not None, f"{what}: error_message", "the decoder's reason", msg)
    eq(api_versions(c)[1], broker_version, "connection still serves after the errors above")

    step("corrupt batches")
    base = latest(c, topic, 0)
    bad_crc = bytearray(build_batch(recs(now, 3, "bad")))
    bad_crc[17] ^= 0xFF
    bad_magic = bytearray(build_batch(recs(now, 3, "bad")))
    bad_magic[16] = 1
    bad_len = bytearray(build_batch(recs(now, 3, "bad")))
    struct.pack_into(">i", bad_len, 8, len(bad_len) + 100)
    flipped = bytearray(build_batch(recs(now, 3, "bad")))
    flipped[-2] ^= 0x01  # a record byte: CRC no longer matches
    good = build_batch(recs(now, 2, "good"))
    for records, what in [(bytes(bad_crc), "bad CRC field"), (bytes(flipped), "flipped byte"),
                          (bytes(bad_magic), "magic 1"), (bytes(bad_len), "batchLength too big"),
                          (good + bytes(bad_crc), "good batch then bad CRC"),
                          (good[:-3], "truncated batch")]:
        for acks in (1, -1):
            parts = one_topic(produce(c, acks, [(topic, [(0, records)])]), topic, what)
            eq((parts[0]["error"], parts[0]["base_offset"], parts[0]["log_start"]),
               (CORRUPT_MESSAGE, -1, -1),
               f"Produce acks={acks} {what}: (error, base_offset, log_start_offset)")
            check(parts[0]["message"] is not None, f"Produce {what}: error_message", "details",
                  parts[0]["message"])
    parts = one_topic(produce(c, -1, [(topic, [(0, bytes(bad_crc)), (2, good)])]), topic,
                      "bad + good partitions")
    eq([(p["partition"], p["error"], p["base_offset"]) for p in parts],
       [(0, CORRUPT_MESSAGE, -1), (2, NONE, hw[2])], "Produce bad partition 0, good partition 2")
    hw[2] += 2
    time.sleep(0.2)
    eq(latest(c, topic, 0), base, "nothing appended to partition 0 by the corrupt batches")
    wait_latest(c, topic, 2, hw[2], "good partition 2 appended next to a corrupt one")
    # the other checks at produce, on batches whose CRC is right (partition 3, which nothing
    # reads afterwards): each gets CORRUPT_MESSAGE and appends nothing
    rr = recs(now, 3, "framing")
    gb = build_batch(rr)
    at = second_record_at(gb)  # the second record's attributes byte
    eq(gb[at:at + 3], bytes([0, 2, 2]), "second record: attributes 0, timestampDelta 1, "
       "offsetDelta 1 (zigzag 02)")
    header_only = build_batch(rr[:1])[:61]
    hb = build_batch(rr[1:2])  # one record with headers, the first named "h-idx"

    def patched(b, *patches):
        b = bytearray(b)
        for fmt, off, val in patches:
            struct.pack_into(fmt, b, off, val)
        return with_fresh_crc(b)

    cases = [
        (patched(gb, (">i", 57, 4)), "recordsCount 4 with 3 records"),
        (patched(gb, (">i", 57, 4), (">i", 23, 3)),
         "recordsCount 4 and lastOffsetDelta 3 with 3 records"),
        (patched(gb, (">i", 57, 2), (">i", 23, 1)),
         "recordsCount 2 and lastOffsetDelta 1 with 3 records"),
        (patched(gb, (">i", 23, 5)), "lastOffsetDelta 5 with 3 records"),
        (patched(gb, (">i", 23, 0)), "lastOffsetDelta 0 with 3 records"),
        (patched(header_only, (">i", 57, 0), (">i", 23, 0)), "recordsCount 0, no records"),
        (patched(header_only, (">i", 57, 0), (">i", 23, -1)),
         "recordsCount 0, lastOffsetDelta -1"),
        (patched(gb, (">B", at + 2, 0)), "offset deltas 0, 0, 2"),
        (patched(gb, (">B", at + 2, 4)), "offset deltas 0, 2, 2"),
        (patched(gb, (">B", at + 3, zz_varint(-5)[0])), "a key length of -5"),
        (patched(hb, (">B", hb.index(b"\x0ah-idx"), 1)), "a header key length of -1"),
        (with_fresh_crc(bytearray(gb) + b"\x00"), "a byte after the last record"),
        (patched(gb, (">h", 21, 5)), "compression codec 5"),
        (patched(gb, (">h", 21, 7)), "compression codec 7"),
        (patched(build_batch(rr, gzipped=True), (">i", 23, 3)),
         "a gzip batch with lastOffsetDelta 3 and recordsCount 3"),
        (patched(build_batch(rr, gzipped=True), (">i", 57, 0), (">i", 23, -1)),
         "a gzip batch with recordsCount 0"),
        (bytes(patched(header_only, (">i", 57, 0), (">i", 23, 0))[:8]) +
         struct.pack(">i", 48) + bytes(header_only[12:]), "batchLength 48"),
        (gb + patched(gb, (">i", 23, 5)), "a good batch, then a bad one"),
        (b"", "no batch at all (empty records)"),
    ]
    base3 = latest(c, topic, 3)
    for records, what in cases:
        parts = one_topic(produce(c, -1, [(topic, [(3, bytes(records))])]), topic, what)
        eq((parts[0]["error"], parts[0]["base_offset"], parts[0]["log_start"]),
           (CORRUPT_MESSAGE, -1, -1),
           f"Produce a batch with a valid CRC but {what}: (error, base_offset, log_start_offset)")
        check(parts[0]["message"] is not None, f"Produce {what}: error_message", "details",
              parts[0]["message"])
        if not records:
            check("no record batch in the request" in parts[0]["message"],
                  "Produce with empty records: error_message", "no record batch in the request",
                  parts[0]["message"])
    eq(latest(c, topic, 3), base3, "nothing appended to partition 3 by the batches above")
    parts = one_topic(produce(c, -1, [(topic, [(3, gb)])]), topic, "the unpatched batch")
    eq((parts[0]["error"], parts[0]["base_offset"]), (NONE, base3),
       "Produce the unpatched batch: accepted (the cases above fail for their patch only)")

    step(f"record batches: fields the broker sets, timestamps, gzip ({TOPIC_B})")
    tb = TOPIC_B
    nb = int(time.time() * 1000)
    # baseOffset and partitionLeaderEpoch are overwritten; every other byte is kept
    rb0 = recs(nb - 5000, 2, "stamp")
    sb0 = build_batch(rb0, base_offset=12345, leader_epoch=77)
    # LogAppendTime (attributes bit 3) is stored as sent: timestamps are not rewritten
    rb1 = recs(nb - 4000, 3, "lat", 7)
    sb1 = build_batch(rb1, attributes=0x08)
    parts = one_topic(produce(c, -1, [(tb, [(0, sb0), (0, sb1)])]), tb, "Produce stamp/LAT")
    eq([(p["error"], p["base_offset"]) for p in parts], [(NONE, 0), (NONE, 2)],
       "Produce baseOffset 12345 then a LogAppendTime batch: (error, base_offset)")
    got = parse_batches(one_topic(fetch(c, [(tb, [(0, 0, M)])]), tb, "Fetch stamp")[0]["records"],
                        "Fetch stamp/LAT")
    eq([(b.base_offset, b.leader_epoch) for b in got], [(0, 0), (2, 0)],
       "fetched (baseOffset, partitionLeaderEpoch): the offsets assigned, the leader epoch 0")
    eq([b.raw[16:] for b in got], [sb0[16:], sb1[16:]],
       "fetched batches: bytes from magic on (CRC included) as produced")
    eq((got[1].attributes, got[1].max_ts, got[1].records), (0x08, nb - 4000 + 14, rb1),
       "LogAppendTime batch: attributes, maxTimestamp and record timestamps as sent")
    (_, lo), = list_offsets(c, [(tb, [(0, nb - 4000 + 1)])])
    eq((lo[0]["error"], lo[0]["offset"], lo[0]["timestamp"]), (NONE, 2, nb - 4000 + 14),
       "ListOffsets at a LogAppendTime batch: every record's time is the batch's maxTimestamp")
    # gzip: stored and served as sent; ListOffsets finds records inside it. Timestamps out of
    # order within the batch: the first record in offset order with a timestamp >= t answers
    G = nb - 600_000
    rg = [Rec(G + 10, b"k0", b"v0"), Rec(G + 30, None, b"v1" * 50, [("h", b"x")]),
          Rec(G + 20, b"k2", None), Rec(G + 40, b"k3", b"v3")]
    sg = build_batch(rg, gzipped=True)
    parts = one_topic(produce(c, -1, [(tb, [(1, sg)])]), tb, "Produce gzip")
    eq((parts[0]["error"], parts[0]["base_offset"]), (NONE, 0), "Produce a gzip batch")
    got = parse_batches(one_topic(fetch(c, [(tb, [(1, 0, M)])]), tb, "Fetch gzip")[0]["records"],
                        "Fetch gzip")
    eq([b.raw[16:] for b in got], [sg[16:]], "gzip batch fetched as produced")
    check_batches(got, [(0, rg)], "gzip batch decompressed")
    for ts, want in [(G, (0, G + 10)), (G + 10, (0, G + 10)), (G + 11, (1, G + 30)),
                     (G + 25, (1, G + 30)), (G + 31, (3, G + 40)), (G + 40, (3, G + 40)),
                     (G + 41, (-1, -1))]:
        (_, lo), = list_offsets(c, [(tb, [(1, ts)])])
        eq((lo[0]["error"], lo[0]["offset"], lo[0]["timestamp"]), (NONE,) + want,
           f"ListOffsets by time G+{ts - G} inside the gzip batch: (error, offset, timestamp)")

    step("repeated partitions in one Produce and one Fetch")
    ra, rb_, rc = recs(nb, 2, "ra"), recs(nb, 3, "rb"), recs(nb, 1, "rc")
    parts = produce(c, -1, [(tb, [(0, build_batch(ra)), (0, build_batch(rb_))]),
                            (tb, [(0, build_batch(rc))])])
    eq([[(p["partition"], p["error"], p["base_offset"]) for p in ps] for _, ps in parts],
       [[(0, NONE, 5), (0, NONE, 7)], [(0, NONE, 10)]],
       "Produce partition 0 three times: appended in request order, one element each")
    resp = fetch(c, [(tb, [(0, 5, M), (0, 7, M)]), (tb, [(0, 10, M)])])
    eq([[(p["partition"], p["error"]) for p in ps] for _, ps in resp],
       [[(0, NONE), (0, NONE)], [(0, NONE)]], "Fetch partition 0 three times: one element each")
    eq([[[b.base_offset for b in parse_batches(p["records"], "repeated Fetch")] for p in ps]
        for _, ps in resp], [[[5, 7, 10], [7, 10]], [[10]]],
       "Fetch partition 0 three times: each served from its own fetch_offset")
    check_batches(parse_batches(resp[0][1][0]["records"], "repeated"),
                  [(5, ra), (7, rb_), (10, rc)], "repeated Produce: the records")

    step("idempotent producer fields")
    P = 4_000_000_000 + os.getpid()

    def idem(partition, pid, epoch, seq, n, tag):
        b = build_batch(recs(nb, n, tag), producer_id=pid, producer_epoch=epoch,
                        base_sequence=seq)
        p = one_topic(produce(c, -1, [(tb, [(partition, b)])]), tb, "idempotent")[0]
        return p["error"], p["base_offset"]

    e0 = latest(c, tb, 2)
    for args, want, what in [
            ((P, 0, 0, 2, "s0"), (NONE, e0), "epoch 0, sequences 0-1"),
            ((P, 0, 0, 2, "s0"), (NONE, e0), "the same batch again: a retry, original offset"),
            ((P, 0, 2, 2, "s2"), (NONE, e0 + 2), "sequences 2-3"),
            ((P, 0, 5, 1, "s5"), (OUT_OF_ORDER_SEQUENCE_NUMBER, -1), "sequence 5 (4 expected)"),
            ((P, 0, 3, 1, "s3"), (OUT_OF_ORDER_SEQUENCE_NUMBER, -1),
             "sequence 3 (not a whole earlier batch)"),
            ((P, 0, 0, 2, "s0"), (NONE, e0), "the first batch again, still a retry"),
            ((P, 1, 4, 1, "e1"), (OUT_OF_ORDER_SEQUENCE_NUMBER, -1),
             "epoch 1 not starting at sequence 0"),
            ((P, 1, 0, 1, "e1"), (NONE, e0 + 4), "epoch 1, sequence 0"),
            ((P, 0, 4, 1, "old"), (INVALID_PRODUCER_EPOCH, -1), "epoch 0 after epoch 1"),
            ((P, 1, 1, 1, "e1b"), (NONE, e0 + 5), "epoch 1, sequence 1"),
            ((-1, -1, -1, 2, "plain"), (NONE, e0 + 6), "not idempotent (-1, -1, -1)"),
            ((-1, -1, -1, 2, "plain"), (NONE, e0 + 8), "the same non-idempotent batch again: "
             "appended again"),
            ((P + 1, 0, -1, 1, "noseq"), (NONE, e0 + 10), "a producer id with baseSequence -1: "
             "not idempotent"),
            ((P + 1, 0, -1, 1, "noseq"), (NONE, e0 + 11), "the same again: appended again")]:
        eq(idem(2, *args), want, f"Produce {what}: (error, base_offset)")
    eq(latest(c, tb, 2), e0 + 12, "partition 2 holds the appended batches only")
    # per (producer id, partition): partition 1 does not know producer P yet: any sequence
    eq(idem(1, P, 0, 7, 1, "other"), (NONE, 4),
       "Produce producer P's sequence 7 to another partition (unknown there): accepted")

    step(f"max.message.bytes ({TOPIC_M})")
    eq(create_topic(c, TOPIC_M, 1, [("max.message.bytes", "1024")]), (NONE, None),
       f"CreateTopic {TOPIC_M} with max.message.bytes=1024")
    wait_visible(c, TOPIC_M)
    for size, want in [(1024, (NONE, 0)), (1025, (MESSAGE_TOO_LARGE, -1)),
                       (4000, (MESSAGE_TOO_LARGE, -1))]:
        b = batch_of_size(nb, size)
        parts = one_topic(produce(c, -1, [(TOPIC_M, [(0, b)])]), TOPIC_M, "max.message.bytes")
        eq((parts[0]["error"], parts[0]["base_offset"]), want,
           f"Produce a batch of {size} bytes (whole) to a topic with max.message.bytes=1024")
    eq(latest(c, TOPIC_M, 0), 1, "only the 1024-byte batch was appended")
    eq(delete_topic(c, TOPIC_M), (NONE, None), f"DeleteTopic {TOPIC_M}")

    step("oversize frame, short frame, bad client_id")
    for size, what in [(0x7FFFFFFF, "size 2^31-1"), (0xFFFFFFFF, "size 2^32-1"),
                       (8 * 1024 * 1024 + 1, "size 8 MiB + 1 (above the default limit)")]:
        s = socket.create_connection(addr, timeout=5)
        s.sendall(struct.pack(">I", size))
        expect_closed(s, f"frame {what}")
        s.close()
    # a frame of exactly max_frame_bytes (8 MiB by default) is read, and answered
    c3 = Conn(addr)
    hdr = W().u16(API_VERSIONS).u16(1).u32(31337).string("doc-client").done()
    c3.send_raw(struct.pack(">I", 8 * 1024 * 1024) + hdr + bytes(8 * 1024 * 1024 - len(hdr)))
    ec, msg, r = c3.recv(31337, "8 MiB frame")
    eq((ec, r.remaining()), (INVALID_REQUEST, 0),
       "a frame of exactly 8 MiB (ApiVersions + trailing bytes): read and answered")
    eq(api_versions(c3)[1], broker_version, "the connection still serves after the 8 MiB frame")
    c3.close()
    s = socket.create_connection(addr, timeout=5)
    s.sendall(struct.pack(">I", 3) + b"\x00\x00\x00")
    expect_closed(s, "frame shorter than a request header")
    s.close()
    c3 = Conn(addr)
    c3.send(API_VERSIONS, 1, b"", client_id=b"\xff\xfe")
    expect_closed(c3.sock, "client_id not UTF-8")
    c3.close()
    c3 = Conn(addr)
    eq(api_versions(c3)[1], broker_version, "a new connection is served after the closes")
    c3.close()

    # ---------------------------------------------------------------- DeleteTopic
    step("DeleteTopic")
    eq(delete_topic(c, "__consumer_offsets")[0], POLICY_VIOLATION, "DeleteTopic internal topic")
    eq(delete_topic(c, topic), (NONE, None), "DeleteTopic")
    _, mt = metadata(c, [topic])
    eq((mt[0]["error"], mt[0]["partitions"]), (UNKNOWN_TOPIC_OR_PARTITION, []),
       "Metadata after DeleteTopic")
    _, all_topics = metadata(c, None)
    check(topic not in [t["name"] for t in all_topics], "Metadata(null) after DeleteTopic",
          "topic absent", [t["name"] for t in all_topics])
    eq(delete_topic(c, topic)[0], UNKNOWN_TOPIC_OR_PARTITION, "DeleteTopic again")
    parts = one_topic(produce(c, -1, [(topic, [(0, good)])]), topic, "Produce after delete")
    eq(parts[0]["error"], UNKNOWN_TOPIC_OR_PARTITION, "Produce to the deleted topic")
    parts = one_topic(fetch(c, [(topic, [(0, 0, M)])]), topic, "Fetch after delete")
    eq(parts[0]["error"], UNKNOWN_TOPIC_OR_PARTITION, "Fetch from the deleted topic")
    eq(delete_topic(c, TOPIC_B), (NONE, None), f"DeleteTopic {TOPIC_B}")
    groups = list_groups(c)
    check(group not in groups and g255 not in groups, "ListGroups after deleting the topics "
          "the groups had committed to: the groups are gone", "absent", groups)
    eq(fetch_committed(c, group, None), [], "FetchCommitted(null) after the deletes: nothing")

    if shutdown_pid is not None:
        shutdown_checks(addr, shutdown_pid, step)
    c.close()

    bugs = sorted(set(BUGS_SEEN))
    print(f"doc client: {CHECKS} checks passed in {time.monotonic() - started:.1f}s"
          + (f"; KNOWN BROKER BUGS reproduced: {', '.join(bugs)}" if bugs else ""))
    return 0


def shutdown_checks(addr, pid, step):
    """docs/protocol.md "When the broker closes the connection": a long-poll Fetch is answered at
    once when shutdown starts, with what there is; then its connection is closed; a request
    sent after shutdown started gets BROKER_SHUTTING_DOWN or a closed connection."""
    step(f"shutdown (SIGTERM to {pid}) during a long-poll Fetch")
    ts = TOPIC + "-shutdown"
    c = Conn(addr)
    eq(create_topic(c, ts, 2), (NONE, None), f"CreateTopic {ts}")
    wait_visible(c, ts)
    rs = recs_simple(int(time.time() * 1000), 3)
    bs = build_batch(rs)
    eq(one_topic(produce(c, -1, [(ts, [(0, bs)])]), ts, "Produce")[0]["error"], NONE,
       "Produce before the shutdown")
    idle = Conn(addr)
    eq(api_versions(idle)[0][0][0], API_VERSIONS, "a second connection, idle at shutdown")
    # min_bytes above what the partitions hold: the Fetch waits (up to 20 s)
    corr = c.send(FETCH, 1, enc_fetch(20_000, 1 << 20, 1 << 20,
                                      [(ts, [(0, 0, 1 << 20), (1, 0, 1 << 20)])]))
    assert_silent(c, "long-poll Fetch before the shutdown", wait=0.5)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    ec, msg, r = c.recv(corr, "long-poll Fetch at shutdown")
    elapsed = time.monotonic() - t0
    eq((ec, msg), (NONE, None), "long-poll Fetch at shutdown: top-level error")
    parts = one_topic(dec_fetch(r), ts, "long-poll Fetch at shutdown")
    check(elapsed < 2.0, "long-poll Fetch answered at once when shutdown starts (max_wait "
          "20 s)", "< 2 s", round(elapsed, 3))
    eq([(p["partition"], p["error"], p["hw"]) for p in parts], [(0, NONE, 3), (1, NONE, 0)],
       "long-poll Fetch at shutdown: (partition, error, high_watermark)")
    check_batches(parse_batches(parts[0]["records"], "Fetch at shutdown"), [(0, rs)],
                  "long-poll Fetch at shutdown: what there is")
    eq(parts[1]["records"], b"", "long-poll Fetch at shutdown: nothing for partition 1")
    expect_closed(c.sock, "the long-poll connection after its answer")
    c.close()
    idle.sock.settimeout(5)
    try:
        corr = idle.send(API_VERSIONS, 1, b"")
        ec, msg, r = idle.recv(corr, "ApiVersions after shutdown started")
        outcome = ("top-level error", ec, r.remaining())
    except socket.timeout:
        outcome = "no answer after 5 s, connection still open"
    except (ConnectionError, OSError):
        outcome = "connection closed"
    check(outcome in ("connection closed", ("top-level error", BROKER_SHUTTING_DOWN, 0)),
          "a request after shutdown started", "BROKER_SHUTTING_DOWN or a closed connection",
          outcome)
    note(f"long poll answered {elapsed:.3f} s after SIGTERM; a request on a connection idle at "
         f"shutdown: {outcome}")
    idle.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    step(f"broker process {pid} {'gone' if time.monotonic() < deadline else 'still running'} "
         f"{time.monotonic() - t0:.2f} s after SIGTERM")


def cleanup():
    """After a failure: delete the topics this run created and did not delete (best effort)."""
    try:
        host, port = sys.argv[1].rsplit(":", 1)
        c = Conn((host, int(port)), timeout=5)
        for name in sorted(CREATED):
            c.call(DELETE_TOPIC, W().string(name).done())
        c.close()
    except Exception:
        pass


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as e:
        print(f"doc client: FAILED after {CHECKS} checks: {e}", file=sys.stderr)
        cleanup()
        sys.exit(1)
    except (ConnectionError, OSError) as e:
        print(f"doc client: FAILED after {CHECKS} checks: connection error: {e!r}",
              file=sys.stderr)
        cleanup()
        sys.exit(1)
