"""confluent-kafka (librdkafka) consumer groups against `keel serve`'s Kafka listener.

A 6-partition topic gets records from a producer while a group of consumers changes under it:
two consumers start, a third joins, the first leaves (close: LeaveGroup), a fourth joins in its
place and resumes from the offsets the group committed. Each consumer commits every record it
processed (synchronously) before polling again, so each record must be consumed exactly once by
the group, across all those rebalances. Then: every partition's committed offset is its end, the
group is described with its members, an idle group cannot be deleted while it has members, and
can once they left. Run by tests/kafka.rs with the listener's HOST:PORT; exits non-zero on any
mismatch.
"""

import sys
import threading
import time
from collections import Counter

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
TOPIC = "group-topic"
GROUP = "group-of-three"
PARTITIONS = 6
RECORDS = 3000
TIMEOUT_S = 90

lock = threading.Lock()
consumed = []  # (value, consumer name, partition, offset)
assignments = {}  # consumer name -> latest assignment
errors = []


def log(*args):
    print(f"[{time.monotonic():9.3f}]", *args, file=sys.stderr, flush=True)


class Member(threading.Thread):
    def __init__(self, name):
        super().__init__(name=name, daemon=True)
        self.stop = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "group.id": GROUP,
                "client.id": name,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 300,
                "partition.assignment.strategy": "range",
            }
        )

    def on_assign(self, consumer, partitions):
        with lock:
            assignments[self.name] = sorted(p.partition for p in partitions)
        log(self.name, "assigned", assignments[self.name])

    def on_revoke(self, consumer, partitions):
        log(self.name, "revoked", sorted(p.partition for p in partitions))

    def run(self):
        try:
            self.consumer.subscribe([TOPIC], on_assign=self.on_assign, on_revoke=self.on_revoke)
            while not self.stop.is_set():
                msg = self.consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    log(self.name, "consume error", msg.error())
                    continue
                with lock:
                    consumed.append((msg.value().decode(), self.name, msg.partition(), msg.offset()))
                self.consumer.commit(message=msg, asynchronous=False)
            self.consumer.close()  # LeaveGroup
            log(self.name, "closed")
        except Exception as e:  # noqa: BLE001 - reported below, fails the run
            errors.append(f"{self.name}: {e!r}")
            log(self.name, "failed", repr(e))

    def leave(self):
        self.stop.set()
        self.join(timeout=TIMEOUT_S)
        assert not self.is_alive(), f"{self.name} did not close"


def produce():
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 2})
    delivered = []
    for i in range(RECORDS):
        producer.produce(TOPIC, key=f"k{i % 101}".encode(), value=f"v{i}".encode(),
                         on_delivery=lambda err, msg: delivered.append(err))
        producer.poll(0)
        time.sleep(0.002)
    assert producer.flush(TIMEOUT_S) == 0, "undelivered records"
    assert len(delivered) == RECORDS and all(e is None for e in delivered), [e for e in delivered if e][:3]


def wait_until(what, predicate):
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what} ({len(consumed)} records consumed)"
        assert not errors, errors
        time.sleep(0.05)


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(TIMEOUT_S)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    members = {name: Member(name) for name in ["c1", "c2"]}
    for m in members.values():
        m.start()
    wait_until("c1 and c2 to share the partitions",
               lambda: sum(len(assignments.get(n, [])) for n in ["c1", "c2"]) == PARTITIONS
               and all(assignments.get(n) for n in ["c1", "c2"]))
    wait_until("some records", lambda: len(consumed) > 300)

    members["c3"] = Member("c3")
    members["c3"].start()
    wait_until("c3 to get partitions", lambda: assignments.get("c3"))
    wait_until("more records", lambda: len(consumed) > 1200)

    log("c1 leaves")
    members.pop("c1").leave()
    wait_until("c2 and c3 to take c1's partitions",
               lambda: len(assignments.get("c2", [])) + len(assignments.get("c3", [])) == PARTITIONS)
    members["c4"] = Member("c4")
    members["c4"].start()
    wait_until("c4 to get partitions", lambda: assignments.get("c4"))

    producer.join(TIMEOUT_S)
    assert not producer.is_alive(), "the producer did not finish"
    wait_until(f"all {RECORDS} records", lambda: len(consumed) >= RECORDS)
    time.sleep(1)  # anything consumed twice would show up now
    assert not errors, errors

    values = Counter(v for v, _, _, _ in consumed)
    missing = [f"v{i}" for i in range(RECORDS) if values[f"v{i}"] == 0]
    duplicated = {v: n for v, n in values.items() if n > 1}
    assert not missing, f"{len(missing)} records never consumed, e.g. {missing[:5]}"
    assert not duplicated, f"{len(duplicated)} records consumed more than once, e.g. {list(duplicated.items())[:5]}"
    by_consumer = Counter(name for _, name, _, _ in consumed)
    assert set(by_consumer) == {"c1", "c2", "c3", "c4"}, by_consumer
    # Per partition the group read the offsets in order, with no gap.
    for p in range(PARTITIONS):
        offsets = [o for _, _, part, o in consumed if part == p]
        assert offsets == list(range(len(offsets))), f"partition {p}: offsets {offsets[:10]}..."

    # The group as the admin client sees it: Stable, three members (c2, c3, c4).
    (described,) = [f.result(TIMEOUT_S) for f in admin.describe_consumer_groups([GROUP]).values()]
    assert str(described.state).endswith("STABLE"), described.state
    assert sorted(m.client_id for m in described.members) == ["c2", "c3", "c4"], described.members
    assigned = sorted(tp.partition for m in described.members for tp in m.assignment.topic_partitions)
    assert assigned == list(range(PARTITIONS)), assigned
    try:
        admin.delete_consumer_groups([GROUP])[GROUP].result(TIMEOUT_S)
        raise AssertionError("a group with members was deleted")
    except KafkaException as e:
        assert "NON_EMPTY_GROUP" in str(e) or "not empty" in str(e).lower(), e

    for m in list(members.values()):
        m.leave()
    # The group's commits reach each partition's end (read by a consumer outside the group).
    outside = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": GROUP, "enable.auto.commit": False})
    committed = outside.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
    for tp in committed:
        _, high = outside.get_watermark_offsets(tp, timeout=TIMEOUT_S)
        assert tp.offset == high, f"partition {tp.partition}: committed {tp.offset}, end {high}"
    outside.close()
    listed = admin.list_consumer_groups().result(TIMEOUT_S)
    states = {g.group_id: str(g.state) for g in listed.valid}
    assert states.get(GROUP, "").endswith("EMPTY"), states
    admin.delete_consumer_groups([GROUP])[GROUP].result(TIMEOUT_S)
    listed = admin.list_consumer_groups().result(TIMEOUT_S)
    assert GROUP not in {g.group_id for g in listed.valid}, "deleted group still listed"
    print(f"consumed {len(consumed)} records exactly once; by consumer {dict(sorted(by_consumer.items()))}")


main()
