import asyncio

import pytest

from stream.topics import bed_key, topic_specs
from tests.isolation import topic_configs

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


def test_compacted_topics_close_segments_so_that_compaction_runs(ward_settings):
    """A compacted topic is cleaned only in closed segments: the ward's get ``segment.ms``
    (`stream.topics.COMPACT_SEGMENT_MS`), and on the broker a topic whose segments close keeps one
    record per key of them (with the defaults it kept every record: the bed-state changelog grew
    the local broker's store by every window of every run)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from stream.topics import COMPACT_SEGMENT_MS, compact_configs

    s = ward_settings
    compacted = [t.name for t in topic_specs(s) if t.compact]
    got = topic_configs(s, compacted)
    assert compacted and all(got[n]["cleanup.policy"] == "compact" and got[n]["segment.ms"] == str(COMPACT_SEGMENT_MS)
                             for n in compacted), got
    name = f"{s.app_id}-compacted"

    async def scenario() -> tuple[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:  # the ward's configs, segments closing every 0.3 s instead of every minute
            await admin.create_topics([NewTopic(name, 1, 1, topic_configs={**compact_configs(), "segment.ms": "300"})])
        finally:
            await admin.close()
        p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await p.start()
        try:
            for _ in range(5):
                for i in range(200):
                    await p.send(name, b"v%d" % i, key=b"k%d" % (i % 5), partition=0)
                await p.flush()
                await asyncio.sleep(0.6)
            await (await p.send(name, b"last", key=b"k0", partition=0))
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
        await c.start()
        try:
            tp = TopicPartition(name, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            end, n, last = (await c.end_offsets([tp]))[tp], 0, {}
            while await c.position(tp) < end:
                for m in (await c.getmany(tp, timeout_ms=1000)).get(tp, []):
                    n += 1
                    last[m.key] = m.value
            assert last[b"k0"] == b"last" and last[b"k4"] == b"v199"  # the latest value of every key
            return n, end
        finally:
            await c.stop()

    kept, written = asyncio.run(scenario())
    # the segments before the last one or two hold one record per key (noida-db: 206 of 601 with
    # three rounds, the last round's segment not yet cleaned)
    assert written == 1001 and kept <= 410, (kept, written)


def test_topics_that_delete_close_segments_well_inside_their_retention():
    """A broker deletes closed segments only; with the 7-day default segment.ms (and 1-GB
    segments a frames partition takes days to fill) a 48-h frames topic would keep 7 days."""
    from stream.topics import COMPACT_SEGMENT_MS, FRAMES_RETENTION_H, frames_retention_ms, segment_ms
    from wardstream.settings import Settings

    hour = 3600 * 1000
    assert frames_retention_ms(Settings()) == FRAMES_RETENTION_H * hour == 48 * hour
    assert frames_retention_ms(Settings(frames_retention_h=0.5)) == hour // 2
    assert segment_ms(48 * hour) == 6 * hour and segment_ms(hour) == hour // 8
    assert segment_ms(30 * 24 * hour) == 24 * hour  # at most a day
    assert segment_ms(60 * 1000) == COMPACT_SEGMENT_MS  # never below a minute
    specs = {t.name: t for t in topic_specs(Settings())}
    assert specs["ward.frames"].retention_ms == 48 * hour and not specs["ward.control"].retention_ms
    # the cost model stores on the broker what the frames topic keeps: 48 h and one open 6-h segment
    from wardstream.cost import ASSUMPTIONS

    assert ASSUMPTIONS["broker_retention_days"] * 24 == 48 + 6


def test_a_frames_retention_set_is_applied_to_the_existing_topic_and_nothing_else_changes(ward_settings):
    """`WARDSTREAM_FRAMES_RETENTION_H`: an existing frames topic gets the retention (and its
    segment.ms) while a config set on it by hand stays; unset, an existing topic keeps what it has."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from stream.topics import ensure_topics, segment_ms

    s = ward_settings
    name, hour = s.frames_topic, 3600 * 1000
    assert topic_configs(s, [name])[name]["retention.ms"] == str(48 * hour)  # created by the fixture

    async def set_by_hand():
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:  # an operator's setting (AlterConfigs replaces the whole set: retention.ms kept here)
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs={
                "retention.ms": str(48 * hour), "segment.ms": str(segment_ms(48 * hour)),
                "max.message.bytes": "300000"})])
        finally:
            await admin.close()

    asyncio.run(set_by_hand())
    assert asyncio.run(ensure_topics(s)) == []
    cfg = topic_configs(s, [name])[name]
    assert cfg["retention.ms"] == str(48 * hour) and cfg["max.message.bytes"] == "300000"
    one_hour = s.replace(frames_retention_h=1.0)
    assert asyncio.run(ensure_topics(one_hour)) == []
    cfg = topic_configs(s, [name])[name]
    assert (cfg["retention.ms"], cfg["segment.ms"], cfg["max.message.bytes"]) == (str(hour), str(hour // 8), "300000")
    assert asyncio.run(ensure_topics(s)) == []  # unset again: the topic keeps its hour
    assert topic_configs(s, [name])[name]["retention.ms"] == str(hour)
    others = topic_configs(s, [s.dlq_topic, s.alarms_topic])
    assert others[s.dlq_topic]["retention.ms"] == str(14 * 24 * hour)
    assert others[s.alarms_topic]["segment.ms"] == str(24 * hour)


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
