"""kafka-python against `keel serve`'s Kafka listener: the admin client creates a topic, a
producer with acks=all and one with acks=0 send keyed records with headers, a consumer without a
group (assigned partitions, from the beginning) reads them all back, offsets are listed, the topic
is deleted. A producer sending to a topic that does not exist gets it auto-created (Metadata
creates it) and its record is read back. Run by tests/kafka.rs with the listener's HOST:PORT; exits non-zero on any mismatch.
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOOTSTRAP = sys.argv[1]
TOPIC = "kafka-python-basic"
PARTITIONS = 4
ACKED = 200  # sent with acks=all; their offsets are checked against what is read
UNACKED = 20  # sent with acks=0: no response, so no offsets
TIMEOUT_S = 60


def record(i):
    key = f"key-{i % 23}".encode()
    value = f"value {i} ".encode() + bytes(range(i % 50))
    headers = [("seq", str(i).encode()), ("kind", b"acked" if i < ACKED else b"unacked")]
    return key, value, headers


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="keel-kafka-python-test")
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    assert TOPIC in admin.list_topics(), admin.list_topics()

    # acks=all: every send's metadata names the partition and offset it got.
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    futures = []
    for i in range(ACKED):
        key, value, headers = record(i)
        futures.append((i, producer.send(TOPIC, key=key, value=value, headers=headers)))
    producer.flush()
    acked = {}  # seq -> (partition, offset)
    for i, future in futures:
        md = future.get(timeout=TIMEOUT_S)
        acked[i] = (md.partition, md.offset)
    producer.close()
    assert len(set(acked.values())) == ACKED, "two records got the same partition and offset"

    # acks=0: fire and forget; the broker sends no response at all. kafka-python (2.2) queues an
    # acks=0 request on its connection but writes it only along with the next request that
    # expects a response there: a short metadata refresh interval provides one.
    fire_and_forget = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks=0, linger_ms=5, metadata_max_age_ms=300)
    for i in range(ACKED, ACKED + UNACKED):
        key, value, headers = record(i)
        fire_and_forget.send(TOPIC, key=key, value=value, headers=headers)
    # flush() returns once the requests are queued, not written: the producer stays open until
    # its records have been read back.
    fire_and_forget.flush()

    # No group: assign every partition and read from the beginning.
    consumer = KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=200,
    )
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    read = {p: [] for p in range(PARTITIONS)}
    deadline = time.time() + TIMEOUT_S
    while sum(len(r) for r in read.values()) < ACKED + UNACKED:
        assert time.time() < deadline, f"read only {sum(len(r) for r in read.values())} records"
        for tp, messages in consumer.poll(timeout_ms=500).items():
            read[tp.partition].extend(messages)
    assert sum(len(r) for r in read.values()) == ACKED + UNACKED
    fire_and_forget.close()

    seen = set()
    for p, messages in read.items():
        offsets = [m.offset for m in messages]
        assert offsets == list(range(len(messages))), f"partition {p}: offsets {offsets}"
        seqs = [int(dict(m.headers)["seq"]) for m in messages]
        assert seqs == sorted(seqs), f"partition {p}: records out of send order: {seqs}"
        for m in messages:
            i = int(dict(m.headers)["seq"])
            key, value, headers = record(i)
            assert (m.key, m.value) == (key, value), f"record {i}: {m}"
            assert [(k, v) for k, v in m.headers] == headers, f"record {i}: headers {m.headers}"
            if i < ACKED:
                assert acked[i] == (p, m.offset), f"record {i}: producer said {acked[i]}, read at {(p, m.offset)}"
            seen.add(i)
    assert seen == set(range(ACKED + UNACKED)), "missing or duplicated records"
    # Keyed records: one key, one partition.
    partition_of_key = {}
    for p, messages in read.items():
        for m in messages:
            assert partition_of_key.setdefault(m.key, p) == p, f"key {m.key} in two partitions"

    # ListOffsets: earliest, latest, by timestamp.
    assert consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}
    assert consumer.end_offsets(tps) == {tp: len(read[tp.partition]) for tp in tps}
    by_time = consumer.offsets_for_times({tp: 0 for tp in tps})
    for tp in tps:
        assert by_time[tp] is not None and by_time[tp].offset == 0, by_time
    consumer.close()

    admin.delete_topics([TOPIC])
    deadline = time.time() + TIMEOUT_S
    while TOPIC in admin.list_topics():
        assert time.time() < deadline, "the topic is still listed after deletion"
        time.sleep(0.1)
    auto_created()
    admin.close()
    print(f"kafka-python: {ACKED} acked + {UNACKED} unacked records over {PARTITIONS} partitions, all read back")


def auto_created():
    """A producer's Metadata request for an unknown topic creates it (one partition by default)."""
    topic = "kafka-python-auto"
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    md = producer.send(topic, key=b"k", value=b"auto-created").get(timeout=TIMEOUT_S)
    assert (md.partition, md.offset) == (0, 0), md
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    read = []
    deadline = time.time() + TIMEOUT_S
    while not read:
        assert time.time() < deadline, "the record sent to the auto-created topic was not read back"
        for messages in consumer.poll(timeout_ms=500).values():
            read.extend(messages)
    consumer.close()
    assert [(m.key, m.value) for m in read] == [(b"k", b"auto-created")], read


if __name__ == "__main__":
    main()
