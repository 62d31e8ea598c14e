"""Every topic wardstream uses, with its key/value type and partition count, and their creation.

Frames are keyed by bed (`bed_key`), so one bed's windows stay in order on one partition and the
per-bed state table is co-partitioned with them. Topics are created explicitly: a broker that
auto-creates topics would give them one partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from wardstream.settings import Settings

log = logging.getLogger(__name__)

# How long the frames topic keeps a window (`Settings.frames_retention_h`, 0: this): time to replay
# after any outage on a deployed broker. A broker that keeps every frame forever grows without
# bound; the local noida-db also slows down as its store grows, so the demo keeps 15 min there
# (`wardstream.services.LOCAL_FRAMES_RETENTION_H`, docs/measurements.md).
FRAMES_RETENTION_H = 48.0


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    key: str  # what the key holds
    value: str  # what the value holds
    retention_ms: int | None = None
    compact: bool = False  # keep the latest value per key (control settings)


def bed_key(bed_id: int) -> bytes:
    """Kafka key of a bed; the same bytes key the per-bed state table."""
    return b"bed-%06d" % bed_id


def topic_specs(s: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(s.frames_topic, s.frames_partitions, "bed_key", "wire frame v1 (stream.wire)",
                  retention_ms=frames_retention_ms(s)),
        TopicSpec(s.dlq_topic, max(1, s.frames_partitions // 4), "original key",
                  "original bytes; headers: reason, error, source partition/offset",
                  retention_ms=14 * 24 * 3600 * 1000),
        TopicSpec(s.control_topic, 1, "b'ward', bed_key or b'slack-' + bed number", "JSON control message (device_sim.control)",
                  compact=True),
        TopicSpec(s.alarms_topic, 4, "bed_key + b':' + condition", "alarm transition JSON (processors.delivery)",
                  retention_ms=30 * 24 * 3600 * 1000),
        TopicSpec(s.deliveries_topic, 4, "subscription id", "alarm transition JSON for that subscriber",
                  retention_ms=7 * 24 * 3600 * 1000),
        TopicSpec(s.subscriptions_topic, 1, "subscription id", "subscription JSON; null value deletes it",
                  compact=True),
        TopicSpec(s.limits_topic, 1, "bed_key", "alarm limits set for the bed at run time (JSON, "
                  "processors.alarms.Thresholds fields, who and when); null value clears them", compact=True),
        TopicSpec(s.commands_topic, s.frames_partitions, "bed_key", "command JSON (acknowledge, discharge)"),
    ]


# A compacted topic keeps one record per key only in its closed segments: the active one is never
# cleaned, and a segment closes after segment.ms (default 7 days) or segment.bytes (1 GB). The
# bed-state changelog gets a record per bed per window (~4.7 kB), so with the defaults it kept
# every state ever written — 95 % of the local broker's store after five 200-bed demos (noida-db
# keeps its log in one JSON file and its CPU grows with it: latency p50 1.4 s -> 10 s by the third
# run; 2026-12-06). Closing segments every minute lets compaction keep the last minute plus one
# record per bed (checked on noida-db: 900 records on 10 keys -> 310), and bounds a worker's
# recovery read the same way on Apache Kafka.
COMPACT_SEGMENT_MS = 60_000


def compact_configs() -> dict[str, str]:
    """Topic configs of a compacted topic (the ward's, and the bed-state changelog Faust creates)."""
    return {"cleanup.policy": "compact", "segment.ms": str(COMPACT_SEGMENT_MS)}


def frames_retention_ms(s: Settings) -> int:
    return int(round((s.frames_retention_h or FRAMES_RETENTION_H) * 3600 * 1000))


def segment_ms(retention_ms: int) -> int:
    """``segment.ms`` of a topic that deletes records after ``retention_ms``. A broker deletes
    only closed segments, and a segment closes after segment.ms (default 7 days) or
    segment.bytes (1 GB): the frames topic's 16 partitions at 200 beds get ~90 kB a minute each,
    so with the defaults Apache Kafka would keep 7 days and more of a "48-h" topic. An eighth of
    the retention (at most a day) keeps at most 1/8 more than asked."""
    return max(COMPACT_SEGMENT_MS, min(retention_ms // 8, 24 * 3600 * 1000))


def _configs(t: TopicSpec) -> dict[str, str]:
    out = {}
    if t.retention_ms:
        out["retention.ms"] = str(t.retention_ms)
        out["segment.ms"] = str(segment_ms(t.retention_ms))
    if t.compact:
        out.update(compact_configs())
    return out


async def ensure_topics(s: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics with their partition counts and configs; returns the names created.

    An existing topic keeps its configs, except the frames topic's retention when
    ``s.frames_retention_h`` is set: then it is brought to it (`_align_configs`)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=10000)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t.name, t.partitions, 1, topic_configs=_configs(t))
               for t in topic_specs(s) if t.name not in existing]
        if new:
            await admin.create_topics(new)
        if s.frames_retention_h and s.frames_topic in existing:
            await _align_configs(admin, next(t for t in topic_specs(s) if t.name == s.frames_topic))
        return [t.name for t in new]
    finally:
        await admin.close()


async def _align_configs(admin, t: TopicSpec) -> dict[str, tuple[str | None, str]]:
    """Set an existing topic's configs of ``_configs(t)`` where they differ; returns
    {name: (was, now)} of those changed. AlterConfigs replaces a topic's whole set of configs, so
    the others set on it (config source 1, DYNAMIC_TOPIC_CONFIG) are sent back unchanged."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    (resp,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t.name)])
    (res,) = resp.resources
    if res[0]:
        raise RuntimeError(f"{t.name}: describe configs failed: error {res[0]} {res[1]}")
    # entries (name, value, read_only, is_default (v0) | config_source (v1+), sensitive, ...)
    current = {e[0]: e[1] for e in res[4]}
    own = {e[0]: e[1] for e in res[4] if (not e[3] if resp.API_VERSION == 0 else e[3] == 1)}
    want = _configs(t)
    changed = {k: (current.get(k), v) for k, v in want.items() if current.get(k) != v}
    if changed:
        (out,) = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t.name,
                                                           configs={**own, **want})])
        for r in out.resources:
            if r[0]:
                raise RuntimeError(f"{t.name}: alter configs failed: error {r[0]} {r[1]}")
        log.warning("%s: %s", t.name, ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    return changed


async def read_to_end(bootstrap: str, topic: str, wait_s: float = 10.0, timeout_s: float = 60.0,
                      since_ms: int | None = None) -> list:
    """Every record of ``topic`` (all partitions), from its beginning (``since_ms``: from each
    partition's first record with that timestamp or later) to the end offsets it had when called;
    no consumer group. Empty when the topic does not exist after ``wait_s``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream import kafka_compat

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    out: list = []
    try:  # a failed start closes it too
        await c.start()
        tps = [TopicPartition(topic, p) for p in sorted(await kafka_compat.partitions_of(c, topic, wait_s=wait_s))]
        if not tps:
            return out
        c.assign(tps)
        if since_ms is None:  # before end_offsets: the other order read nothing at times (aiokafka)
            await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        if since_ms is not None:  # ListOffsets by time: a long-lived topic is not read from its beginning
            for tp, found in (await c.offsets_for_times({tp: since_ms for tp in tps})).items():
                c.seek(tp, found.offset if found is not None else ends[tp])
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await c.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s:.0f} s")
            for tp, msgs in (await c.getmany(timeout_ms=500)).items():
                out.extend(m for m in msgs if m.offset < ends[tp])
    finally:
        await c.stop()
    return out
