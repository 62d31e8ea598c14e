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
