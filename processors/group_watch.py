"""Stalled frames partitions, seen from any worker: the group's committed offset against the end.

Each worker's own consumer lag covers only its partitions. A partition whose owner is stuck —
its process frozen, its batch blocked on an outage, or dead while the broker still counts it as a
member (the local noida-db broker never expires a member that stops heartbeating,
docs/wire.md) — is then reported by nobody, and its beds are not monitored without anyone
saying so: their ``device_silent`` alarm belongs to the stuck worker too. So every worker
samples, every few seconds, the group's committed offset and the end offset of every frames
partition (a plain OffsetFetch and ListOffsets, as any Kafka tool does, without joining the
group) and reports a partition **stalled** when frames wait on it and its committed offset has not
moved for ``WARDSTREAM_STALL_S`` (default 30 s): in the worker's stats, its ``pipeline`` point
(``group_lag``, ``stalled_partitions``; the pipeline-health dashboard's "Stalled partitions"),
and a critical log line when it stalls and an info line when it moves again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class StallTracker:
    stall_s: float
    since: dict[int, tuple[int, float]] = field(default_factory=dict)  # partition -> (committed, since when)
    stalled: set[int] = field(default_factory=set)
    lag: int = 0
    stalls: int = 0  # partitions that became stalled, since this worker started

    def update(self, committed: dict[int, int | None], ends: dict[int, int], now: float) -> set[int]:
        """One sample (``committed``: the group's offset per partition, None where none was
        committed; ``ends``: the end offsets; ``now``: a monotonic time) -> the stalled partitions."""
        lag, stalled = 0, set()
        for p, end in ends.items():
            off = committed.get(p) or 0
            waiting = max(0, end - off)
            lag += waiting
            prev = self.since.get(p)
            if prev is None or prev[0] != off or not waiting:
                self.since[p] = (off, now)
            elif now - prev[1] >= self.stall_s:
                stalled.add(p)
        self.stalls += len(stalled - self.stalled)
        for p in sorted(stalled - self.stalled):
            log.critical("frames partition %d stalled: %d frames wait, the group's offset %d has not "
                         "moved for %.0f s (its worker stuck, or gone)", p, ends[p] - (committed.get(p) or 0),
                         committed.get(p) or 0, now - self.since[p][1])
        for p in sorted(self.stalled - stalled):
            log.info("frames partition %d moves again", p)
        self.stalled, self.lag = stalled, lag
        return stalled


class GroupWatch:
    """The sampler: one consumer that never joins the group (no subscription, no commits)."""

    def __init__(self, settings, stall_s: float):
        self.s = settings
        self.tracker = StallTracker(stall_s)
        self.consumer = None

    async def sample(self, now: float) -> StallTracker | None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from stream import kafka_compat

        try:
            if self.consumer is None:
                c = AIOKafkaConsumer(bootstrap_servers=self.s.kafka_bootstrap, group_id=self.s.app_id,
                                     enable_auto_commit=False)
                await c.start()
                self.consumer = c
            c = self.consumer
            parts = await kafka_compat.partitions_of(c, self.s.frames_topic)
            tps = [TopicPartition(self.s.frames_topic, p) for p in sorted(parts)]
            if not tps:
                return None
            ends = {tp.partition: off for tp, off in (await c.end_offsets(tps)).items()}
            committed = {tp.partition: await c.committed(tp) for tp in tps}
        except Exception as exc:  # the broker unreachable for a moment: no sample this time
            log.debug("group watch: no sample (%s)", exc)
            return None
        self.tracker.update(committed, ends, now)
        return self.tracker

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
