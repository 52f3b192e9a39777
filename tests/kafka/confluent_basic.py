"""confluent-kafka (librdkafka) against `keel serve`'s Kafka listener: the admin client creates a
topic with a config, describes and alters its configs, an uncompressed producer and an lz4 one
(acks=all) send keyed records with headers, a consumer with a group name that assigns its
partitions itself (no group membership) reads them all back from the beginning, commits offsets
that a fresh consumer reads back, offsets are listed (watermarks, by timestamp), the topic is
deleted. Run by tests/kafka.rs with the listener's HOST:PORT; exits non-zero on any mismatch.
"""

import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)

BOOTSTRAP = sys.argv[1]
TOPIC = "confluent-basic"
GROUP = "confluent-group"
PARTITIONS = 6
RECORDS = 300  # the first half uncompressed, the second half lz4
TIMEOUT_S = 60


def record(i):
    key = f"key-{i % 23}".encode()
    value = f"value {i} ".encode() + bytes(range(i % 50)) * 4
    headers = [("seq", str(i).encode()), ("codec", b"none" if i < RECORDS // 2 else b"lz4")]
    return key, value, headers


def wait(futures):
    """The results of an admin call's {key: future}."""
    return {key: future.result(timeout=TIMEOUT_S) for key, future in futures.items()}


def topic_configs(admin):
    """{name: (value, ConfigSource)} of TOPIC, through DescribeConfigs."""
    (entries,) = wait(admin.describe_configs([ConfigResource(ResourceType.TOPIC, TOPIC)])).values()
    configs = {}
    for name, entry in entries.items():
        assert not entry.is_read_only and not entry.is_sensitive, entry
        configs[name] = (entry.value, ConfigSource(entry.source))
    return configs


def producer(**extra):
    # The plain (non-idempotent) path, librdkafka's default, said explicitly here; idempotent
    # producers are tested in confluent_restart.py.
    config = {
        "bootstrap.servers": BOOTSTRAP,
        "enable.idempotence": False,
        "acks": "all",
        "linger.ms": 5,
    }
    config.update(extra)
    return Producer(config)


def consumer():
    return Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": GROUP,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 200,
        }
    )


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "client.id": "keel-confluent-test"})
    wait(
        admin.create_topics(
            [NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1, config={"retention.ms": "3600000"})],
            operation_timeout=TIMEOUT_S,
        )
    )
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    assert TOPIC in metadata.topics, metadata.topics
    assert len(metadata.topics[TOPIC].partitions) == PARTITIONS, metadata.topics[TOPIC]

    # DescribeConfigs: the value set at creation, and a default.
    configs = topic_configs(admin)
    assert configs["retention.ms"] == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG), configs["retention.ms"]
    assert configs["segment.ms"] == ("604800000", ConfigSource.DEFAULT_CONFIG), configs["segment.ms"]

    # IncrementalAlterConfigs: SET one key, the other keeps its value.
    resource = ConfigResource(
        ResourceType.TOPIC,
        TOPIC,
        incremental_configs=[
            ConfigEntry("segment.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    wait(admin.incremental_alter_configs([resource]))
    configs = topic_configs(admin)
    assert configs["segment.ms"] == ("7200000", ConfigSource.DYNAMIC_TOPIC_CONFIG), configs["segment.ms"]
    assert configs["retention.ms"] == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG), configs["retention.ms"]
    # DELETE returns a key to its default.
    resource = ConfigResource(
        ResourceType.TOPIC,
        TOPIC,
        incremental_configs=[ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)],
    )
    wait(admin.incremental_alter_configs([resource]))
    configs = topic_configs(admin)
    assert configs["retention.ms"] == ("604800000", ConfigSource.DEFAULT_CONFIG), configs["retention.ms"]
    assert configs["segment.ms"] == ("7200000", ConfigSource.DYNAMIC_TOPIC_CONFIG), configs["segment.ms"]

    # Two producers, one after the other: the second compresses with lz4. Every delivery report
    # names the partition and offset the record got.
    acked = {}  # seq -> (partition, offset)
    errors = []

    def on_delivery(seq):
        def report(err, msg):
            if err is not None:
                errors.append((seq, err))
            else:
                acked[seq] = (msg.partition(), msg.offset())

        return report

    for first, last, extra in [(0, RECORDS // 2, {}), (RECORDS // 2, RECORDS, {"compression.type": "lz4"})]:
        p = producer(**extra)
        for i in range(first, last):
            key, value, headers = record(i)
            p.produce(TOPIC, key=key, value=value, headers=headers, on_delivery=on_delivery(i))
            p.poll(0)
        assert p.flush(TIMEOUT_S) == 0, "records still undelivered"
    assert not errors, errors
    assert sorted(acked) == list(range(RECORDS)), "missing delivery reports"
    assert len(set(acked.values())) == RECORDS, "two records got the same partition and offset"

    # A group name, but assigned partitions (no JoinGroup), from the beginning.
    c = consumer()
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    read = {p: [] for p in range(PARTITIONS)}
    deadline = time.time() + TIMEOUT_S
    while sum(len(r) for r in read.values()) < RECORDS:
        assert time.time() < deadline, f"read only {sum(len(r) for r in read.values())} records"
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error() is not None:
            assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
            continue
        read[m.partition()].append(m)

    seen = set()
    partition_of_key = {}
    for p, messages in read.items():
        offsets = [m.offset() for m in messages]
        assert offsets == list(range(len(messages))), f"partition {p}: offsets {offsets}"
        seqs = [int(dict(m.headers())["seq"]) for m in messages]
        assert seqs == sorted(seqs), f"partition {p}: records out of send order: {seqs}"
        for m in messages:
            i = int(dict(m.headers())["seq"])
            key, value, headers = record(i)
            assert (m.key(), m.value()) == (key, value), f"record {i}: {m.key()} {m.value()}"
            assert list(m.headers()) == headers, f"record {i}: headers {m.headers()}"
            assert acked[i] == (p, m.offset()), f"record {i}: producer said {acked[i]}, read at {(p, m.offset())}"
            assert partition_of_key.setdefault(m.key(), p) == p, f"key {m.key()} in two partitions"
            seen.add(i)
    assert seen == set(range(RECORDS)), "missing or duplicated records"

    # OffsetCommit (generation -1), read back by a fresh consumer of the same group.
    commits = [TopicPartition(TOPIC, p, len(read[p]) // 2 + p) for p in range(PARTITIONS)]
    c.commit(offsets=commits, asynchronous=False)
    c.close()
    fresh = consumer()
    committed = fresh.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
    for tp in committed:
        assert tp.error is None, tp
    assert {tp.partition: tp.offset for tp in committed} == {tp.partition: tp.offset for tp in commits}, committed

    # ListOffsets: watermarks, and by timestamp (every record is younger than the epoch).
    for p in range(PARTITIONS):
        low, high = fresh.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=TIMEOUT_S, cached=False)
        assert (low, high) == (0, len(read[p])), (p, low, high)
    by_time = fresh.offsets_for_times([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
    assert [(tp.partition, tp.offset) for tp in by_time] == [(p, 0) for p in range(PARTITIONS)], by_time
    # After the last record's timestamp: nothing, the end offset (-1 = none).
    future = int(time.time() * 1000) + 3_600_000
    by_time = fresh.offsets_for_times([TopicPartition(TOPIC, p, future) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
    assert all(tp.offset == -1 for tp in by_time), by_time
    fresh.close()

    wait(admin.delete_topics([TOPIC], operation_timeout=TIMEOUT_S))
    deadline = time.time() + TIMEOUT_S
    while TOPIC in admin.list_topics(timeout=TIMEOUT_S).topics:
        assert time.time() < deadline, "the topic is still listed after deletion"
        time.sleep(0.1)
    print(f"confluent-kafka: {RECORDS} records (half lz4) over {PARTITIONS} partitions, all read back")


if __name__ == "__main__":
    main()
