"""A broker restart in the middle of a group's work (confluent-kafka / librdkafka).

Starts `keel serve` itself (argv: KEEL_BINARY DATA_DIR NATIVE_ADDR KAFKA_ADDR ADMIN_ADDR), has an
idempotent producer (acks=all, retries) send records while two consumers in a group read and
commit them, kills the broker with SIGKILL halfway, starts it again on the same data directory,
and goes on. Then: every record whose delivery was acknowledged was consumed (records processed
but not yet committed at the kill may be read twice: at-least-once), the group formed again with
both members and its commits reach each partition's end; and the log itself holds every record
exactly once, in the order produced per key: the producer's retries of batches the broker had
stored before the kill (but not acknowledged) were recognised as duplicates, across the restart.
Exits non-zero on any mismatch.
"""

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

KEEL, DATA, NATIVE, KAFKA, ADMIN = sys.argv[1:6]
TOPIC = "restart-topic"
GROUP = "restart-group"
PARTITIONS = 4
RECORDS = 2000
TIMEOUT_S = 90
BROKER_LOG = DATA.rstrip("/") + ".broker.log"

lock = threading.Lock()
consumed = []
delivered = []
errors = []
assigned_after_restart = set()
restarted = threading.Event()


def log(*args):
    print(f"[{time.monotonic():9.3f}]", *args, file=sys.stderr, flush=True)


def start_broker():
    broker = subprocess.Popen(
        [KEEL, "serve", "--data-dir", DATA, "--listen", NATIVE, "--kafka-listen", KAFKA,
         "--admin-listen", ADMIN, "--memory", "256MiB", "--group-initial-rebalance-delay-ms", "300"],
        stdout=subprocess.DEVNULL,
        stderr=open(BROKER_LOG, "a"),  # noqa: SIM115 - the broker holds it until it exits
    )
    host, port = KAFKA.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while True:
        assert broker.poll() is None, f"keel serve exited with {broker.returncode}"
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return broker
        except OSError:
            assert time.monotonic() < deadline, "keel serve did not start"
            time.sleep(0.05)


class Member(threading.Thread):
    def __init__(self, name):
        super().__init__(name=name, daemon=True)
        self.stop = threading.Event()
        self.consumer = Consumer({
            "bootstrap.servers": KAFKA, "group.id": GROUP, "client.id": name,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 300,
        })

    def on_assign(self, consumer, partitions):
        log(self.name, "assigned", sorted(p.partition for p in partitions))
        if restarted.is_set() and partitions:
            assigned_after_restart.add(self.name)

    def run(self):
        try:
            self.consumer.subscribe([TOPIC], on_assign=self.on_assign)
            while not self.stop.is_set():
                msg = self.consumer.poll(0.1)
                if msg is None or msg.error():
                    continue
                with lock:
                    consumed.append(msg.value().decode())
                try:
                    self.consumer.commit(message=msg, asynchronous=False)
                except Exception as e:  # noqa: BLE001 - the broker may be down: commit the next one
                    log(self.name, "commit failed", e)
            self.consumer.close()
        except Exception as e:  # noqa: BLE001 - reported, fails the run
            errors.append(f"{self.name}: {e!r}")


def produce():
    producer = Producer({"bootstrap.servers": KAFKA, "acks": "all", "linger.ms": 2, "enable.idempotence": True,
                         "message.timeout.ms": 60000, "retry.backoff.ms": 100})

    def on_delivery(err, msg):
        if err is None:
            with lock:
                delivered.append(msg.value().decode())

    for i in range(RECORDS):
        producer.produce(TOPIC, key=f"k{i % 31}".encode(), value=f"v{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
        time.sleep(0.003)
    producer.flush(TIMEOUT_S)


def wait_until(what, predicate):
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert not errors, errors
        time.sleep(0.05)


def main():
    broker = start_broker()
    try:
        admin = AdminClient({"bootstrap.servers": KAFKA})
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(TIMEOUT_S)
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        members = [Member("m1"), Member("m2")]
        for m in members:
            m.start()
        wait_until("half the records consumed", lambda: len(consumed) >= RECORDS // 2)

        log("SIGKILL")
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        acked_before = len(delivered)
        time.sleep(1)
        broker = start_broker()
        restarted.set()
        log("restarted")

        producer.join(TIMEOUT_S + 30)
        assert not producer.is_alive(), "the producer did not finish"
        wait_until("every acknowledged record consumed", lambda: set(delivered) <= set(consumed))
        wait_until("both members assigned again", lambda: assigned_after_restart == {"m1", "m2"})
        assert not errors, errors
        for m in members:
            m.stop.set()
            m.join(TIMEOUT_S)

        counts = Counter(consumed)
        missing = set(delivered) - set(counts)
        assert not missing, f"{len(missing)} acknowledged records never consumed"
        outside = Consumer({"bootstrap.servers": KAFKA, "group.id": GROUP, "enable.auto.commit": False})
        for tp in outside.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=TIMEOUT_S):
            _, high = outside.get_watermark_offsets(tp, timeout=TIMEOUT_S)
            assert tp.offset == high, f"partition {tp.partition}: committed {tp.offset}, end {high}"
        outside.close()
        # The log: each record once, per key in the order produced.
        reader = Consumer({"bootstrap.servers": KAFKA, "group.id": "restart-audit", "enable.auto.commit": False})
        ends = {p: reader.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=TIMEOUT_S)[1] for p in range(PARTITIONS)}
        reader.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        stored = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(stored) < sum(ends.values()):
            assert time.monotonic() < deadline, f"read {len(stored)} of {sum(ends.values())} stored records"
            msg = reader.poll(0.2)
            if msg is not None and not msg.error():
                stored.append((msg.key().decode(), int(msg.value().decode()[1:])))
        reader.close()
        in_log = Counter(v for _, v in stored)
        assert sorted(in_log) == sorted(int(v[1:]) for v in delivered), "the log holds what was acknowledged"
        duplicates = [v for v, n in in_log.items() if n > 1]
        assert not duplicates, f"{len(duplicates)} records stored twice, e.g. {duplicates[:5]}"
        for key in {k for k, _ in stored}:
            values = [v for k, v in stored if k == key]
            assert values == sorted(values), f"key {key}: out of order {values[:10]}"
        twice = sum(1 for n in counts.values() if n > 1)
        print(f"acknowledged {len(delivered)} ({acked_before} before the kill), consumed all; "
              f"{twice} read twice after the restart; the log holds each once")
    except BaseException:
        with open(BROKER_LOG) as f:
            print("broker log (last 40 lines):", *f.readlines()[-40:], sep="", file=sys.stderr)
        raise
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)


main()
