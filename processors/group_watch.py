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

The clinicians are told too: every bed with frames waiting on a stalled partition gets a
technical ``monitoring_stalled`` alarm (priority ``WARDSTREAM_STALL_PRIORITY``, default
technical) through the alarm service, as any other alarm: the alarms topic, the subscriptions'
webhooks, Kafka deliveries and server-sent events, the open alarms of the API and InfluxDB's alarm
history. It resolves when the partition's group offset moves. Any worker may raise or resolve
it — the stuck one cannot be relied on, and a worker whose batch waits on an InfluxDB outage is
stuck while its event loop and Kafka still answer — so the transitions are reconciled against the
open alarms every worker reads from the alarms topic (`stall_transitions`), and are
deterministic: the episode is the stalled group offset, the onset the timestamp of the first
frame waiting behind it plus ``stall_s``, so two workers raising the same stall send the same
event id (receivers de-duplicate on it) and write the same InfluxDB point.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from processors.delivery import event_id

log = logging.getLogger(__name__)

CONDITION = "monitoring_stalled"
WAITING_READ_MAX = 5000  # frames read behind a stalled offset to learn whose windows wait
HANDOVER_MS = 15_000  # a stall another worker's partition no longer has: resolved by its owner, else after this


@dataclass(frozen=True)
class Waiting:
    """What waits on a stalled partition behind its group offset ``offset``."""

    offset: int
    first_ms: int  # the timestamp of the first frame waiting
    beds: frozenset[int]
    frames: int  # frames read (at most WAITING_READ_MAX per sample)
    read_to: int  # the offset after the last frame read: the next sample reads on from here


def bed_of_key(key: bytes | None) -> int | None:
    """The bed of a frames key (`stream.topics.bed_key`); None for any other key."""
    if not key or not key.startswith(b"bed-"):
        return None
    try:
        return int(key[4:])
    except ValueError:
        return None


def stall_transitions(committed: dict[int, int | None], ends: dict[int, int], waiting: dict[int, Waiting],
                      open_alarms: dict[int, dict], now_ms: int, stall_s: float, ward_of, priority: str,
                      by: str, owned: set[int] | None = None, pending: dict | None = None,
                      handover_ms: int = HANDOVER_MS) -> list[dict]:
    """The ``monitoring_stalled`` events that bring the open alarms (bed -> its open event, as
    the alarms topic last said) in line with one sample: ``committed`` / ``ends`` per partition,
    ``waiting`` for the stalled ones. An open alarm resolves when its partition's group offset
    has moved from its episode (or nothing waits any more); every bed with frames waiting on a
    stalled partition and no alarm of that stall gets one.

    Who resolves: raising is deterministic (its time is the onset), resolving is not (its time is
    the sample's), so two workers resolving the same stall would write two ``resolved`` points.
    With ``owned`` (the partitions this worker is assigned; None: all) a worker resolves at once
    only the stalls of its own partitions — the owner is the one whose processing moved the
    offset, so it is alive and samples within one period —, and another's only after the stall
    has been resolvable for ``handover_ms`` (the owner gone or stuck again right after), tracked in
    ``pending`` ((bed, episode) -> first ms seen resolvable; the caller keeps it between samples;
    None: no hand-over, every worker resolves at once).
    A bed whose open alarm is of an older episode of a partition stalled again resolves with the
    new episode's raise, whoever sends it."""
    out = []
    restalled = {(b, p) for p, w in waiting.items() for b in w.beds}
    seen = set()
    for bed, a in sorted(open_alarms.items()):
        p, ep = a.get("partition"), a["episode"]
        if p in ends and ((committed.get(p) or 0) != ep or ends[p] <= ep):
            if owned is not None and p not in owned and (bed, p) not in restalled and pending is not None:
                seen.add((bed, ep))
                if now_ms - pending.setdefault((bed, ep), now_ms) < handover_ms:
                    continue
            out.append(_event(bed, ward_of(bed), p, ep, "resolved", a["onset_ms"], now_ms, priority, by,
                              f"frames partition {p} moves again: the group's offset "
                              f"{committed.get(p) or 0} (stalled at {ep}), {max(0, ends[p] - (committed.get(p) or 0))} "
                              "frames waiting"))
    if pending is not None:
        for k in [k for k in pending if k not in seen]:
            del pending[k]
    resolved = {e["bed"] for e in out}
    for p, w in sorted(waiting.items()):
        onset = w.first_ms + int(stall_s * 1000)
        for bed in sorted(w.beds):
            a = open_alarms.get(bed)
            if a is not None and bed not in resolved and a.get("partition") == p and a["episode"] == w.offset:
                continue
            out.append(_event(bed, ward_of(bed), p, w.offset, "active", onset, onset, priority, by,
                              f"this bed's windows are not being processed: frames partition {p} has "
                              f"{max(0, ends.get(p, 0) - w.offset)} frames waiting behind the group's offset "
                              f"{w.offset}, which has not moved for {stall_s:.0f} s (its worker stuck or gone); "
                              "no other alarm of this bed can be raised meanwhile"))
    return out


def _event(bed: int, ward: str, partition: int, episode: int, state: str, onset_ms: int, t_ms: int,
           priority: str, by: str, why: str) -> dict:
    return {"id": event_id(bed, CONDITION, episode, state, onset_ms), "bed": bed, "ward": ward,
            "condition": CONDITION, "priority": priority, "state": state, "t_ms": t_ms, "by": by, "why": why,
            "episode": episode, "partition": partition, "onset_ms": onset_ms,
            "emitted_ms": int(time.time() * 1000)}


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
            # the clock starts at the first sample that sees frames wait behind this offset, not
            # at an earlier one that saw nothing wait: the frames may have arrived just now (at
            # a stall_s of one sample period, every partition at a ward's start was reported
            # stalled at the first sample after its first frame, whose commit was a second away;
            # 2026-12-07)
            if not waiting:
                self.since.pop(p, None)
            elif prev is None or prev[0] != off:
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
        self.committed: dict[int, int | None] = {}
        self.ends: dict[int, int] = {}
        self.waiting: dict[int, Waiting] = {}  # stalled partition -> what waits on it

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
            stalled = self.tracker.update(committed, ends, now)
            waiting = {}
            for p in sorted(stalled):
                off = committed.get(p) or 0
                w = self.waiting.get(p)
                # frames that arrived since the last sample may be other beds': read on from there
                waiting[p] = await self._read_waiting(p, w if w is not None and w.offset == off else None, off, ends[p])
        except Exception as exc:  # the broker unreachable for a moment: no sample this time
            log.debug("group watch: no sample (%s)", exc)
            return None
        self.committed, self.ends, self.waiting = committed, ends, waiting
        return self.tracker

    async def _read_waiting(self, partition: int, prev: Waiting | None, offset: int, end: int) -> Waiting:
        """The beds whose frames wait on ``partition`` behind the group's ``offset`` (the frames'
        keys; read, never committed), read on from ``prev`` (the last sample's, same offset)."""
        from aiokafka import TopicPartition

        start = prev.read_to if prev is not None else offset
        if start >= end:
            return prev if prev is not None else Waiting(offset, int(time.time() * 1000), frozenset(), 0, offset)
        c, tp = self.consumer, TopicPartition(self.s.frames_topic, partition)
        c.assign([tp])
        c.seek(tp, start)
        beds = set(prev.beds) if prev is not None else set()
        first_ms = prev.first_ms if prev is not None and prev.frames else None
        n = 0
        stop = min(end, start + WAITING_READ_MAX)
        while n < stop - start:
            got = await c.getmany(tp, timeout_ms=2000, max_records=500)
            msgs = got.get(tp) or []
            if not msgs:
                break
            for m in msgs:
                if m.offset >= stop:
                    break
                if first_ms is None:
                    first_ms = m.timestamp
                n += 1
                b = bed_of_key(m.key)
                if b is not None:
                    beds.add(b)
            if msgs[-1].offset + 1 >= stop:
                break
        c.assign([])
        return Waiting(offset, first_ms if first_ms is not None else int(time.time() * 1000), frozenset(beds),
                       (prev.frames if prev is not None else 0) + n, start + n)

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None


def stall_alarm_levels(evs: list[dict], alarms: dict) -> list[str]:
    """An ``alarm_level`` point per ``monitoring_stalled`` transition, at its time: the bed's highest
    open priority and open count with the stall counted while it is active. The bed's own worker,
    which writes its alarm level with every window, is the one stuck, so without these the ward's
    "Highest active alarm" tile would show a bed nobody monitors as it was before the stall. The
    other open alarms are the alarms topic's (``alarms``: (bed, condition) -> alarm); deterministic,
    so two workers sending the same transition write the same point."""
    from processors.influx_sink import line
    from processors.stages import PRIORITY_CODE

    out = []
    for e in evs:
        pr = [PRIORITY_CODE[a["priority"]] for (b, c), a in alarms.items()
              if b == e["bed"] and c != CONDITION]
        if e["state"] == "active":
            pr.append(PRIORITY_CODE[e["priority"]])
        out.append(line("alarm_level", {"bed": str(e["bed"])}, {"highest": max(pr, default=0), "open": len(pr)},
                        e["t_ms"]))
    return out
