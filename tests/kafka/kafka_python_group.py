"""kafka-python consumer groups against `keel serve`'s Kafka listener: an idempotent producer sends records
to a 3-partition topic; two KafkaConsumers subscribe in one group and split the partitions
between them; together they read every record once and commit; the admin client describes the
group (Stable, two members, the partitions assigned) and lists it; after both close, a new
member of the group resumes at the commits and reads only what was produced since. Run by
tests/kafka.rs with the listener's HOST:PORT; exits non-zero on any mismatch.
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

BOOTSTRAP = sys.argv[1]
TOPIC = "kafka-python-group"
GROUP = "kafka-python-group"
PARTITIONS = 3
RECORDS = 300
TIMEOUT_S = 60


def produce(first, count):
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    for i in range(first, first + count):
        producer.send(TOPIC, key=f"k{i % 17}".encode(), value=f"v{i}".encode())
    producer.flush(TIMEOUT_S)
    producer.close()


def member(name):
    return KafkaConsumer(
        TOPIC,
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        client_id=name,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )


def read_until(consumers, want):
    """Polls every consumer (in turn, one thread) until `want` values are read in all."""
    seen = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(seen) < want:
        assert time.monotonic() < deadline, f"read {len(seen)} of {want}"
        for c in consumers:
            for records in c.poll(timeout_ms=100).values():
                seen.extend(r.value.decode() for r in records)
            c.commit()
    return seen


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    produce(0, RECORDS)

    a, b = member("member-a"), member("member-b")
    seen = read_until([a, b], RECORDS)
    assert sorted(seen) == sorted(f"v{i}" for i in range(RECORDS)), "each record exactly once"
    assigned = [sorted(tp.partition for tp in c.assignment()) for c in (a, b)]
    assert sorted(assigned[0] + assigned[1]) == list(range(PARTITIONS)), assigned
    assert assigned[0] and assigned[1], f"both members got partitions: {assigned}"

    (described,) = admin.describe_consumer_groups([GROUP])
    assert described.state == "Stable", described
    assert described.protocol_type == "consumer", described
    assert sorted(m.client_id for m in described.members) == ["member-a", "member-b"], described.members
    listed = dict(admin.list_consumer_groups())
    assert listed.get(GROUP) == "consumer", listed

    a.close()
    b.close()
    produce(RECORDS, 30)
    c = member("member-c")
    seen = read_until([c], 30)
    time.sleep(0.5)
    for records in c.poll(timeout_ms=500).values():
        seen.extend(r.value.decode() for r in records)
    assert sorted(seen) == sorted(f"v{i}" for i in range(RECORDS, RECORDS + 30)), seen
    c.close()
    offsets = admin.list_consumer_group_offsets(GROUP)
    assert sum(o.offset for o in offsets.values()) == RECORDS + 30, offsets
    print(f"group read {RECORDS + 30} records once; committed {sorted((tp.partition, o.offset) for tp, o in offsets.items())}")


main()
