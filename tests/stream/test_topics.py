import asyncio

import pytest

from stream.topics import bed_key, topic_specs

pytestmark = pytest.mark.servers


def test_topics_are_created_with_their_partition_counts(ward_settings):
    from aiokafka.admin import AIOKafkaAdminClient

    s = ward_settings

    async def describe():
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:
            return await admin.describe_topics([t.name for t in topic_specs(s)])
        finally:
            await admin.close()

    got = {t["topic"]: len(t["partitions"]) for t in asyncio.run(describe())}
    want = {t.name: t.partitions for t in topic_specs(s)}
    assert got == want
    assert got[s.frames_topic] >= 8 and s.dlq_topic in got


def test_bed_keys_are_stable_bytes():
    assert bed_key(7) == b"bed-000007" and bed_key(7) != bed_key(70)


def test_partitions_of_sees_a_topic_created_after_the_consumer_started(ward_settings):
    """The alarm views' consumer may start before Faust declares the topic it follows; the cached
    metadata of aiokafka would hide that topic for minutes (the race behind a CI failure)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from stream import kafka_compat

    late = f"{ward_settings.app_id}-late"

    async def scenario():
        c = AIOKafkaConsumer(bootstrap_servers=ward_settings.kafka_bootstrap)
        await c.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=ward_settings.kafka_bootstrap)
        await admin.start()
        try:
            assert await kafka_compat.partitions_of(c, late) == set()
            await admin.create_topics([NewTopic(late, num_partitions=3, replication_factor=1)])
            await c.topics()
            cached = c.partitions_for_topic(late)
            return cached, await kafka_compat.partitions_of(c, late, wait_s=10.0)
        finally:
            await admin.close()
            await c.stop()

    cached, fresh = asyncio.run(scenario())
    assert not cached  # what the old code waited on
    assert fresh == {0, 1, 2}
