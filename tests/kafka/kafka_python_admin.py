"""kafka-python's admin client and a consumer's committed offsets against `keel serve`'s Kafka
listener: DescribeConfigs and AlterConfigs on a topic, OffsetCommit/OffsetFetch from consumers that
assign their partitions themselves (no group membership: generation -1), FindCoordinator and
ListGroups through the admin client. Run by tests/kafka.rs with the listener's HOST:PORT and a
group name; prints the committed offsets as `TOPIC PARTITION OFFSET METADATA` lines, which the
test checks through the native protocol. Exits non-zero on any mismatch.
"""

import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import OffsetAndMetadata

BOOTSTRAP = sys.argv[1]
GROUP = sys.argv[2]
TOPIC = "kafka-python-admin"
TIMEOUT_S = 60
DEFAULT_CONFIG = 5
DYNAMIC_TOPIC_CONFIG = 1


def topic_configs(admin):
    """{name: (value, config_source)} of TOPIC, through DescribeConfigs."""
    responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
    configs = {}
    for response in responses:
        for error_code, error_message, _type, name, entries in response.resources:
            assert error_code == 0, (error_code, error_message)
            assert name == TOPIC, name
            for entry in entries:
                key, value, read_only, source, sensitive = entry[:5]
                assert not read_only and not sensitive, entry
                configs[key] = (value, source)
    return configs


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="keel-kafka-python-admin")
    admin.create_topics(
        [NewTopic(TOPIC, num_partitions=2, replication_factor=1, topic_configs={"segment.ms": "3600000"})]
    )

    # DescribeConfigs: defaults and the value set at creation.
    configs = topic_configs(admin)
    assert configs["retention.ms"] == ("604800000", DEFAULT_CONFIG), configs["retention.ms"]
    assert configs["segment.ms"] == ("3600000", DYNAMIC_TOPIC_CONFIG), configs["segment.ms"]

    # AlterConfigs replaces the whole config: segment.ms, not listed, returns to its default.
    response = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC, {"retention.ms": "3600000"})])
    for error_code, error_message, _type, _name in response.resources:
        assert error_code == 0, (error_code, error_message)
    configs = topic_configs(admin)
    assert configs["retention.ms"] == ("3600000", DYNAMIC_TOPIC_CONFIG), configs["retention.ms"]
    assert configs["segment.ms"] == ("604800000", DEFAULT_CONFIG), configs["segment.ms"]
    # A bad value is refused and changes nothing.
    response = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC, {"retention.ms": "soon"})])
    assert response.resources[0][0] != 0, response
    assert topic_configs(admin)["retention.ms"] == ("3600000", DYNAMIC_TOPIC_CONFIG)

    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    for i in range(10):
        producer.send(TOPIC, value=f"v{i}".encode(), partition=i % 2)
    producer.flush()
    producer.close()

    # A consumer that assigns its partitions commits with generation -1 (no JoinGroup).
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=GROUP, enable_auto_commit=False)
    consumer.assign([tp0, tp1])
    consumer.commit({tp0: OffsetAndMetadata(3, "meta-0", -1), tp1: OffsetAndMetadata(5, "", -1)})
    consumer.close()

    # A fresh consumer of the same group reads them back and resumes there.
    consumer = KafkaConsumer(
        bootstrap_servers=BOOTSTRAP, group_id=GROUP, enable_auto_commit=False, consumer_timeout_ms=5000
    )
    consumer.assign([tp0, tp1])
    assert consumer.committed(tp0) == 3, consumer.committed(tp0)
    assert consumer.committed(tp1) == 5, consumer.committed(tp1)
    assert consumer.committed(tp0, metadata=True).metadata == "meta-0"
    # Partition 0 holds v0 v2 v4 v6 v8 (resumes at offset 3), partition 1 v1 v3 ... v9 (offset 5:
    # its end).
    values = sorted(m.value.decode() for m in consumer)
    assert values == ["v6", "v8"], values
    consumer.close()

    # The admin client: FindCoordinator, then OffsetFetch for every partition (topics null).
    offsets = admin.list_consumer_group_offsets(GROUP)
    assert {tp: o.offset for tp, o in offsets.items()} == {tp0: 3, tp1: 5}, offsets
    assert offsets[tp0].metadata == "meta-0", offsets
    # A partition with no committed offset: -1.
    none = admin.list_consumer_group_offsets(GROUP, partitions=[TopicPartition(TOPIC, 7)])
    assert none[TopicPartition(TOPIC, 7)].offset == -1, none
    groups = admin.list_consumer_groups()
    assert (GROUP, "consumer") in groups, groups
    admin.close()

    for tp, o in sorted(offsets.items()):
        print(tp.topic, tp.partition, o.offset, o.metadata or "-")


if __name__ == "__main__":
    main()
