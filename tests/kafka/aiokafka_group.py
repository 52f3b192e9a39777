"""aiokafka (asyncio) against `keel serve`'s Kafka listener: an idempotent producer (acks=all)
sends keyed records to a 3-partition topic; a consumer in a group reads every one of them once
and commits; a second consumer of the same group, started later, resumes at those commits and
reads only what was produced after. Run by tests/kafka.rs with the listener's HOST:PORT; exits
non-zero on any mismatch.
"""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
TOPIC = "aiokafka-topic"
GROUP = "aiokafka-group"
RECORDS = 200
TIMEOUT_S = 60


async def produce(first, count):
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        offsets = set()
        for i in range(first, first + count):
            md = await producer.send_and_wait(TOPIC, key=f"k{i % 13}".encode(), value=f"v{i}".encode())
            offsets.add((md.partition, md.offset))
        assert len(offsets) == count, "two records got the same partition and offset"
    finally:
        await producer.stop()


async def consume(count):
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=BOOTSTRAP, group_id=GROUP, auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500,
    )
    await consumer.start()
    seen = []
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while len(seen) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    seen.extend(r.value.decode() for r in records)
                await consumer.commit()
        # Nothing more arrives.
        extra = await consumer.getmany(timeout_ms=500)
        seen.extend(r.value.decode() for records in extra.values() for r in records)
    finally:
        await consumer.stop()
    return seen


async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    await produce(0, RECORDS)
    seen = await consume(RECORDS)
    assert sorted(seen) == sorted(f"v{i}" for i in range(RECORDS)), f"{len(seen)} read"
    await produce(RECORDS, 20)
    seen = await consume(20)
    assert sorted(seen) == sorted(f"v{i}" for i in range(RECORDS, RECORDS + 20)), seen
    print(f"aiokafka: {RECORDS + 20} records produced idempotently, read once by the group")


asyncio.run(main())
