"""Faust agents: frames in, points to InfluxDB, bad frames to the dead-letter topic.

Order of work for each batch (this order is what makes delivery exactly-once in InfluxDB):

1. decode and validate every frame; a bad one is sent to the dead-letter topic (delivery awaited)
   with its reason, and counted;
2. step each bed's state, classify, advance the alarms (`processors.stages.run_batch`: pure and
   deterministic but for the classifiers' arithmetic) and buffer the points;
3. flush the points to InfluxDB (retried until acknowledged: back-pressure);
4. only then store the new bed states in the changelogged table;
5. Faust acks the batch, and its offsets are committed afterwards.

A crash before 4 replays the batch from the old state: same points, same timestamps, the write
overwrites itself. A crash after 4 replays windows the state has already seen: they are skipped.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import socket
import time
from collections import Counter

from aiokafka.partitioner import DefaultPartitioner

from processors.bed import BedState
from processors.classify import Classifiers
from processors.decode import reconstruct_batch
from processors.influx_sink import InfluxSink, line
from processors.group_watch import GroupWatch
from processors.hold import HoldPolicy
from processors import delivery as dl
from processors.alarms import AlarmState, conditions_from, limits_from, link_step
from processors.retention import LIVE, LIVE_SECONDS, STRIP, TREND
from processors.wards import WardMap
from processors.silence import StreamClock
from processors.stages import alarm_points, run_batch
from processors.watchdog import LoopWatchdog, heartbeat_file
from stream import faust_gaps
from stream.app import app, bed_table, dlq_topic, frames_topic, settings
from stream.topics import bed_key
from stream.wire import FrameError, decode_frame

log = logging.getLogger("wardstream.agents")

BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05
# host and pid: two containers of one compose service both run as pid 1
WORKER_ID = os.environ.get("WARDSTREAM_WORKER_ID", f"{socket.gethostname()}-{os.getpid()}")
TRACE = os.environ.get("WARDSTREAM_TRACE") == "1"  # log every window's fate (diagnosis only)
_POLICIES = settings.influx_retention and settings.influx_api == "v1"
STRIP_RP = STRIP.name if _POLICIES else None
TREND_RP = TREND.name if _POLICIES else None


class StaleWindow(FrameError):
    """A window older than the live retention policy: InfluxDB would refuse its points."""

    reason = "stale_window"


class KeyMismatch(FrameError):
    """The Kafka key is not the frame's bed: its state would land on another bed's."""

    reason = "key_mismatch"


class Stats:
    def __init__(self) -> None:
        self.frames = 0
        self.windows_written = 0
        self.replays = 0
        self.gaps = 0
        self.late = 0
        self.gap_records = 0
        self.dead = Counter()
        self.latency_ms = Counter()  # 1-ms buckets: window end (device clock) -> InfluxDB ack
        self.latency_recent = Counter()  # the same since the last pipeline point
        # windows that ended before this worker started (`backlog_before`: a backlog left on the
        # broker by an outage or an earlier run): written, but their wait is downtime, not
        # pipeline latency, so they are counted here and kept out of the latency histogram
        self.backlog_windows = 0
        self.backlog_wait_max_ms = 0
        self.group: dict | None = None  # the group watch's last sample (processors/group_watch.py)
        self.batches = 0
        self.rhythm_decisions = 0
        self.beats_classified = 0
        self.alarm_events = 0
        self.slack_updates = 0
        self.hold_updates = 0
        self.started = time.time()
        # a window that ended before this counts as backlog: the process's start, or, for a worker
        # its supervisor started again, when the supervisor first started it (a window delayed by
        # the restart is latency of the running ward, not backlog from before it)
        self.backlog_before = float(os.environ.get("WARDSTREAM_SERVICE_STARTED_MS", "0")) / 1000 or self.started
        self.cpu0 = time.process_time()

    def as_dict(self, sink: InfluxSink) -> dict:
        return {"worker": WORKER_ID, "pid": os.getpid(), "frames": self.frames, "windows_written": self.windows_written,
                "replays": self.replays, "gaps": self.gaps, "late": self.late,
                "gap_records": self.gap_records, "dead_lettered": dict(self.dead),
                "batches": self.batches, "rhythm_decisions": self.rhythm_decisions,
                "beats_classified": self.beats_classified, "alarm_events": self.alarm_events,
                "slack_updates": self.slack_updates, "hold_updates": self.hold_updates, "uptime_s": time.time() - self.started,
                "cpu_s": time.process_time() - self.cpu0,
                "latency_ms_hist": {str(k): v for k, v in sorted(self.latency_ms.items())},
                "backlog": {"windows": self.backlog_windows, "wait_max_ms": self.backlog_wait_max_ms},
                "group": self.group,
                "influx": vars(sink.stats)}


stats = Stats()
classifiers = Classifiers()
CONDITIONS = conditions_from(settings.alarm_config)
WARDS = WardMap.parse(settings.wards)
LIMITS = limits_from(settings.alarm_limits, WARDS.ward_of, {w for w, _, _ in WARDS.ranges})  # bed -> alarm limits
HOLD = HoldPolicy.from_settings(settings)  # the fidelity hold (processors.hold; None: off)
# held while a batch of windows or a command (acknowledgement, discharge) changes bed states:
# never both at once
BED_LOCK = asyncio.Lock()
alarms_topic = app.topic(settings.alarms_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")
control_topic = app.topic(settings.control_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw")


class Arrivals:
    """Per bed, wall arrival times of windows of the present (ending within the last 10 s of
    wall time): the frame-flood count. A backlog of old windows after an outage is not counted."""

    SPAN_S = 10.0

    def __init__(self) -> None:
        self.t: dict[bytes, collections.deque] = {}

    def note(self, key: bytes, window_end_s: float, now_s: float) -> None:
        if window_end_s >= now_s - self.SPAN_S:
            self.t.setdefault(key, collections.deque()).append(now_s)

    def count(self, key: bytes, now_s: float) -> int:
        q = self.t.get(key)
        if not q:
            return 0
        while q and q[0] < now_s - self.SPAN_S:
            q.popleft()
        return len(q)


arrivals = Arrivals()
_publisher = None  # processors.alarm_service.fan_out, when the alarm service is loaded


def set_publisher(fn) -> None:
    global _publisher
    _publisher = fn


async def publish_alarm_events(events) -> None:
    """Alarm transitions onto the alarms topic and, for every matching subscription, onto the
    deliveries topic; delivery awaited (before the offsets move on)."""
    evs = [dl.event_dict(e, WARDS.ward_of(e.bed)) for e in events]
    if _publisher is not None:
        await _publisher(evs)
        return
    futs = [await alarms_topic.send(key=dl.event_key(ev), value=json.dumps(ev).encode()) for ev in evs]
    for f in futs:
        await f
sink = InfluxSink(settings)
faust_gaps.install({settings.frames_topic})
gap_reader = faust_gaps.RangeReader(settings.kafka_bootstrap)
offsets = faust_gaps.OffsetTracker()


def add_alarm_history(points: list[str]) -> None:
    """Alarm transitions (and the stay records beside them) written outside a batch of windows:
    into the live policy and, where the worker's policies are on, the trend policy that keeps the
    alarm history (as `handle_batch` writes a batch's transitions)."""
    for p in points:
        sink.add(p)
        if TREND_RP:
            sink.add(p, rp=TREND_RP)


async def publish_slack_updates(updates: dict[int, float]) -> None:
    """Per-bed slack corrections from the audits onto the control topic (`device_sim.control`
    defines the message), delivery awaited."""
    from device_sim.control import slack_key, slack_message

    futs = [await control_topic.send(key=slack_key(bed), value=slack_message(v)) for bed, v in sorted(updates.items())]
    for f in futs:
        await f
    stats.slack_updates += len(updates)
    log.info("slack corrections sent: %s", ", ".join(f"bed {b} {v:+.2f}" for b, v in sorted(updates.items())))


async def publish_hold_updates(updates: dict[int, tuple[int | None, str, str]]) -> None:
    """Fidelity holds begun or ended (`processors.hold`: level, why, by) onto the control topic,
    delivery awaited."""
    from device_sim.control import hold_key, hold_message

    futs = [await control_topic.send(key=hold_key(bed), value=hold_message(level, why, by))
            for bed, (level, why, by) in sorted(updates.items())]
    for f in futs:
        await f
    stats.hold_updates += len(updates)
    log.info("fidelity holds: %s", ", ".join(f"bed {b} " + (f"level <= {lv} ({why})" if lv is not None else "ended")
                                             for b, (lv, why, _) in sorted(updates.items())))


async def _dead_letter(key: bytes | None, value: bytes, err: FrameError, source: str) -> None:
    headers = [("reason", err.reason.encode()), ("error", str(err)[:500].encode()),
               ("source", source.encode()), ("worker", WORKER_ID.encode())]
    fut = await dlq_topic.send(key=key, value=value, headers=headers)
    await fut  # delivered before the source offset can be committed
    stats.dead[err.reason] += 1
    log.warning("dead-lettered %s: %s (%s)", source, err.reason, err)


async def handle_batch(events, trailing: list | None = None) -> None:
    """One batch of frames records: ``events`` as Faust delivered them, with the records it
    skipped read from Kafka (`stream.faust_gaps`), or only ``trailing`` gaps' records (`sweep_frames`)."""
    t_begin = time.time()
    # records Faust fetched but dropped (see stream.faust_gaps) join this batch
    gaps = offsets.check(events, app.consumer_generation_id, app.consumer._committed_offset) + list(trailing or [])
    inputs = [(ev.key, ev.value, f"{ev.message.topic}/{ev.message.partition}/{ev.message.offset}")
              for ev in events]
    # (partition, offset, broker time in ms: Faust's messages carry seconds, aiokafka's records ms)
    records = [(ev.message.partition, ev.message.offset, int((ev.message.timestamp or 0) * 1000)) for ev in events]
    for gap in gaps:
        for r in await gap_reader.fetch_range(gap):
            inputs.append((r.key, r.value, f"{r.topic}/{r.partition}/{r.offset}"))
            records.append((r.partition, r.offset, r.timestamp or 0))
        stats.gap_records += gap.end - gap.start
    parsed = []  # (key, value, source, frame)
    for key, value, source in inputs:
        try:
            frame = decode_frame(value, hmac_key_for=settings.device_key,
                                 require_hmac=settings.require_hmac)
            if key != bed_key(frame.bed_id):
                raise KeyMismatch(f"key {key!r} carries a frame of bed {frame.bed_id}")
            if _POLICIES and frame.t_start_us < (time.time() - LIVE_SECONDS + 3600) * 1e6:
                raise StaleWindow(f"window of bed {frame.bed_id} seq {frame.seq} starts "
                                  f"{(time.time() - frame.t_start_us / 1e6) / 86400:.1f} days ago, beyond "
                                  f"the {LIVE.duration} live retention (device clock wrong?)")
        except FrameError as err:
            await _dead_letter(key, value, err, source)
            continue
        parsed.append((key, value, source, frame))
    decoded = []  # (key, frame, signals, wire_len)
    for (key, value, source, frame), signals in zip(parsed, reconstruct_batch([p[3] for p in parsed])):
        if isinstance(signals, FrameError):
            await _dead_letter(key, value, signals, source)
            continue
        decoded.append((key, frame, signals, len(value)))
        if TRACE:
            log.info("trace in bed=%s seq=%s %s", frame.bed_id, frame.seq, source)
    stats.frames += len(inputs)

    now_s = time.time()
    for key, frame, _, _ in decoded:
        arrivals.note(key, frame.window_end_us / 1e6, now_s)
    res = run_batch(decoded, lambda key: BedState.from_bytes(bed_table.get(key)), classifiers,
                    thresholds=LIMITS, waveform_hz=settings.waveform_hz, conditions=CONDITIONS,
                    recent_windows={key: arrivals.count(key, now_s) for key, _, _, _ in decoded},
                    slack_correction=settings.audit_correction, audit_predictor=settings.dd_predictor,
                    hold=HOLD)
    for key, st in res.states.items():
        st.seen_ms = stream_clock.seen_ms[key] = int(now_s * 1000)
        stream_clock.raised.discard(key)
    windows_of = {source for _, _, source, _ in parsed}
    for (key, _, source), (part, off, ts) in zip(inputs, records):
        stream_clock.note(part, off, ts, key if source in windows_of else None)
    states, written = res.states, res.written
    for p in res.points:
        sink.add(p)
    for p in res.strip_points:
        sink.add(p, rp=STRIP_RP)
    if TREND_RP:  # the alarm history outlives the live policy
        for p in alarm_points(res.alarm_events):
            sink.add(p, rp=TREND_RP)
    stats.replays += res.replays
    stats.late += res.late
    stats.gaps += res.gaps
    stats.rhythm_decisions += res.rhythm_decisions
    stats.beats_classified += res.beats_classified
    stats.alarm_events += len(res.alarm_events)

    t_flush = time.time()
    if len(sink):
        flush = asyncio.ensure_future(sink.flush())
        try:
            await asyncio.shield(flush)
        except asyncio.CancelledError:
            # Faust acks a take() batch in a finally block: never let it commit unwritten points
            try:
                await asyncio.wait_for(flush, timeout=10)
            except Exception:
                log.critical("stopping with %d unflushed points; exiting without committing", len(sink))
                os._exit(75)
            raise
    ack_us = time.time() * 1e6
    worst_ms = 0
    started_us = stats.backlog_before * 1e6
    for end_us in written:
        lat = max(0, int((ack_us - end_us) / 1000))
        if end_us < started_us:  # waited for the worker to exist: backlog, not latency
            stats.backlog_windows += 1
            stats.backlog_wait_max_ms = max(stats.backlog_wait_max_ms, lat)
            continue
        worst_ms = max(worst_ms, lat)
        stats.latency_ms[lat] += 1
        stats.latency_recent[lat] += 1
    if worst_ms > 1000 or ack_us / 1e6 - t_begin > 0.5:
        log.warning("slow batch: %d events, process %.0f ms, flush %.0f ms, worst window %d ms",
                    len(events), (t_flush - t_begin) * 1000, (ack_us / 1e6 - t_flush) * 1000, worst_ms)
    stats.windows_written += len(written)
    if res.alarm_events:  # on the alarms topic before the states move past them (a replay re-emits the same ids)
        await publish_alarm_events(res.alarm_events)
    if res.slack_updates:  # likewise: the states record them as sent
        await publish_slack_updates(res.slack_updates)
    if res.hold_updates:  # likewise
        await publish_hold_updates(res.hold_updates)
    for key, st in states.items():
        bed_table[key] = st.to_bytes()
    for gap in gaps:  # processed and written: Faust may now commit past them
        await faust_gaps.mark_done(app.consumer, gap)
    for gap in trailing or []:
        offsets.advance(gap.tp, app.consumer_generation_id, gap.end)
        await faust_gaps.commit_trailing(app.consumer, gap)
    if TRACE:
        log.info("trace flushed+stored %d windows", len(written))
    stats.batches += 1


@app.agent(frames_topic, concurrency=1)
async def process_frames(stream):
    async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
        try:
            async with BED_LOCK:
                await handle_batch(events)
        except asyncio.CancelledError:
            raise
        except Exception:
            # a bug, not bad input (bad input is dead-lettered). take_events() would ack this
            # batch on the way out and its windows would never be written: exit without
            # committing instead, so a restarted worker processes the batch again.
            log.critical("unexpected error in a batch; exiting without committing it", exc_info=True)
            os._exit(70)


_frames_behind: dict = {}  # TP -> where a sweep found it behind (`faust_gaps.trailing`)


def _frames_idle() -> bool:
    """No batch of frames in progress and none handed to the agent: records that wait now are not
    held back by a batch (one waiting out an InfluxDB outage, say)."""
    return not BED_LOCK.locked() and not any(tp.topic == settings.frames_topic
                                             for tp in faust_gaps.in_flight(app.consumer))


@app.timer(interval=2.0)
async def sweep_frames() -> None:
    """Process the frames Faust dropped where no later record reveals them (`faust_gaps.trailing`:
    a quiet partition after a rebalance), read from Kafka, as a batch of their own. Not while a
    rebalance is in progress (the positions are being reset). A sweep that fails (the broker away)
    is logged and tried again at the next."""
    if app.rebalancing or not _frames_idle():
        _frames_behind.clear()
        return
    try:
        c, gen = app.consumer, app.consumer_generation_id
        gaps = faust_gaps.trailing(offsets, c, gen, frames_assignment(), _frames_behind)
        if not gaps:
            return
        async with BED_LOCK:
            # a batch may have been handed them while this sweep waited for the lock
            gaps = [g for g in gaps if gen == app.consumer_generation_id
                    and offsets.expected(g.tp, gen, c._committed_offset) == g.start]
            for g in gaps:
                log.warning("frames %s/%s %d..%d fetched but not delivered by Faust: reading them from Kafka",
                            g.tp.topic, g.tp.partition, g.start, g.end - 1)
            if gaps:
                await handle_batch([], trailing=gaps)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("frames sweep failed; trying again in 2 s")


STUCK_S = 15.0  # table recovery, or a frames partition with records waiting, making no progress this long
_stuck = faust_gaps.StuckWatch(STUCK_S)
_last_rejoin = [0.0]


@app.timer(interval=2.0)
async def watch_own_progress() -> None:
    """This worker stuck on its own partitions after a rebalance: its table recovery reading no
    changelog record for ``STUCK_S`` (Faust dropped records it had fetched: the recovery waits for
    offsets its consumer has passed), or a frames partition of its own with records waiting that it
    neither fetches nor is handed for as long (both seen 2026-12-07 under CPU load, after a worker
    left; `sweep_frames` handles the records fetched and dropped). The group watch alarms such a
    stall (``monitoring_stalled``) after ``WARDSTREAM_STALL_S``; this worker, which knows it is the
    one stuck, rejoins the group, so that the rebalance seeks everything again (at most once per
    ``STUCK_S``)."""
    now, c, gen = time.monotonic(), app.consumer, app.consumer_generation_id
    try:
        if app.rebalancing:
            remaining = app.tables.recovery.active_remaining_total()
            stuck = [f"table recovery ({remaining} changelog records to read)"] if _stuck.stuck(
                now, "recovery", (gen, remaining), remaining > 0) else []
        else:
            _stuck.seen.pop("recovery", None)
            idle = _frames_idle()
            stuck = []
            for tp in frames_assignment():
                nxt, hw = offsets.expected(tp, gen, c._committed_offset), c.highwater(tp)
                waiting = idle and nxt is not None and hw is not None and hw > nxt
                if _stuck.stuck(now, tp, (gen, nxt, faust_gaps.fetched_to(c, tp)), waiting):
                    stuck.append(f"frames partition {tp.partition} ({hw - nxt} records wait at offset {nxt})")
        if stuck and now - _last_rejoin[0] >= STUCK_S:
            _last_rejoin[0] = now
            log.error("no progress for %.0f s on %s: rejoining the group", STUCK_S, ", ".join(stuck))
            _stuck.seen.clear()
            await faust_gaps.request_rejoin(c)
    except asyncio.CancelledError:
        raise
    except Exception:  # not assigned yet, or a rebalance in progress
        log.debug("progress watch skipped a tick", exc_info=True)


@app.task
async def on_start() -> None:
    await sink.ready()
    # one point per worker start: the pipeline-health dashboard counts restarts from these, and lists
    # why each started (its supervisor says: "start", "restart after exit 70", "restart after kill: …")
    sink.add(line("worker_start", {"worker": WORKER_ID},
                  {"pid": os.getpid(), "reason": os.environ.get("WARDSTREAM_START_REASON", "start")},
                  int(stats.started * 1000)))
    await sink.flush()


@app.task
async def loop_watchdog() -> None:
    """The event-loop watchdog (processors/watchdog.py): beats while the worker runs."""
    if settings.loop_watchdog_s <= 0:
        return
    dog = LoopWatchdog(settings.loop_watchdog_s)
    dog.start()
    try:
        await dog.beat()
    finally:  # the worker stopping: a slow shutdown is no blocked loop
        dog.stop()


@app.task
async def heartbeat() -> None:
    """Touch the supervisor's heartbeat file every second (processors/watchdog.py), when it set one."""
    path = os.environ.get("WARDSTREAM_HEARTBEAT_FILE")
    if path:
        await heartbeat_file(path)


def _quantile(hist: Counter, q: float) -> float | None:
    total = sum(hist.values())
    acc = 0
    for k in sorted(hist):
        acc += hist[k]
        if acc >= q * total:
            return float(k)
    return None


def frames_assignment() -> list:
    """This worker's frames partitions (Faust TPs). Raises while the consumer has no assignment
    (not started, or a rebalance in progress)."""
    return [tp for tp in app.consumer.assignment() if tp.topic == settings.frames_topic]


def consumer_lag() -> int | None:
    """Frames on this worker's partitions not yet consumed (broker high water − position)."""
    try:
        c = app.consumer
        lag = 0
        for tp in frames_assignment():
            hw = c.highwater(tp)
            pos = c._committed_offset.get(tp)
            lag += max(0, (hw or 0) - (pos or 0))
        return lag
    except Exception as exc:  # not assigned yet, or a rebalance in progress
        log.debug("consumer lag unavailable: %s", exc)
        return None


group_watch = GroupWatch(settings, settings.stall_s) if settings.stall_s > 0 else None
_stall_alarms = None  # processors.alarm_service.stall_alarms, when the alarm service is loaded


def set_stall_alarms(fn) -> None:
    global _stall_alarms
    _stall_alarms = fn


@app.timer(interval=5.0)
async def watch_group() -> None:
    """Every frames partition's group offset against its end (processors/group_watch.py), on its
    own timer so that an InfluxDB outage blocking the metrics' flush does not stop it; then the
    ``monitoring_stalled`` alarms of the beds waiting on stalled partitions."""
    if group_watch is None:
        return
    tr = await group_watch.sample(time.monotonic())
    if tr is None:
        return
    stats.group = {"lag": tr.lag, "stalled_partitions": sorted(tr.stalled), "stalls": tr.stalls,
                   "beds_waiting": sorted(b for w in group_watch.waiting.values() for b in w.beds)}
    if _stall_alarms is not None:
        try:
            await _stall_alarms(group_watch)
        except Exception:  # the alarms topic unreachable for a moment: the next sample tries again
            log.exception("monitoring_stalled alarms not published this time")


@app.timer(interval=5.0)
async def pipeline_metrics() -> None:
    """Worker health into InfluxDB every 5 s (frames, dead letters, write failures, CPU,
    latency percentiles of the windows written since the last point, consumer lag)."""
    d = stats.as_dict(sink)
    fields = {"frames": d["frames"], "windows_written": d["windows_written"],
              "replays": d["replays"], "gaps": d["gaps"], "dead_lettered": sum(stats.dead.values()),
              "write_failures": sink.stats.write_failures, "points_written": sink.stats.points_written,
              "cpu_s": float(d["cpu_s"]), "uptime_s": float(d["uptime_s"]),
              "backlog_windows": stats.backlog_windows}
    recent, stats.latency_recent = stats.latency_recent, Counter()
    for q in (50, 95, 99):
        v = _quantile(recent, q / 100)
        if v is not None:
            fields[f"latency_p{q}_ms"] = v
    lag = consumer_lag()
    if lag is not None:
        fields["consumer_lag"] = lag
    if stats.group is not None:
        fields["group_lag"], fields["stalled_partitions"] = stats.group["lag"], len(stats.group["stalled_partitions"])
        fields["beds_stalled"] = len(stats.group["beds_waiting"])  # beds with a monitoring_stalled alarm
    sink.add(line("pipeline", {"worker": WORKER_ID}, fields, int(time.time() * 1000)))
    for reason, n in stats.dead.items():
        sink.add(line("dead_letters", {"worker": WORKER_ID, "reason": reason}, {"count": n},
                      int(time.time() * 1000)))
    await sink.flush()


SILENT_FORGET_S = 3600.0  # beds silent longer than this (discharged) are not re-alarmed at start
# where this worker is in each frames partition, when it last processed each bed's window (the
# mirror of BedState.seen_ms) and which beds' device_silent it raised (processors/silence.py)
stream_clock = StreamClock()
_partition_of: dict[bytes, int] = {}  # bed key -> its frames partition (the producers' partitioner)


def _frames_partition(key: bytes) -> int:
    p = _partition_of.get(key)
    if p is None:
        parts = list(range(settings.frames_partitions))
        p = _partition_of[key] = DefaultPartitioner()(key, parts, parts)
    return p


@app.on_partitions_revoked.connect
async def forget_revoked(sender, revoked, **kwargs) -> None:
    """A rebalance took ``revoked`` away (Faust revokes every partition, then assigns anew):
    `StreamClock.forget` the frames partitions among them (no await in it, so the
    ``device_silent`` timer never sees half of it; not under the bed lock, which a batch holds
    through an InfluxDB outage, and the rebalance must not wait on that)."""
    parts = {tp.partition for tp in revoked if tp.topic == settings.frames_topic}
    if parts:
        n = len(stream_clock.forget(parts, _frames_partition))
        log.info("rebalance: forgot the silence bookkeeping of %d beds on %d frames partitions", n, len(parts))


@app.timer(interval=2.0)
async def device_silent() -> None:
    """``device_silent`` for every bed of this worker's partitions with no window for
    ``WARDSTREAM_DEVICE_SILENT_S`` (technical alarm; the next window resolves it), measured where
    the worker is in the bed's partition (`processors.silence`: a worker behind on it, after a
    restart or an outage, does not call the beds whose windows still wait there silent). A bed's
    state is parsed only when it crosses the limit (or once after a restart, for its time)."""
    now_ms = int(time.time() * 1000)
    limit_ms = settings.device_silent_s * 1000
    c = app.consumer
    async with BED_LOCK:
        # each frames partition of this worker: (highwater, committed offset), once per tick
        try:
            positions = {tp.partition: (c.highwater(tp), c._committed_offset.get(tp))
                         for tp in frames_assignment()}
        except Exception:  # no assignment yet, or a rebalance in progress
            positions = {}
        events_all, changed = [], {}
        for key in list(bed_table.keys()):
            seen = stream_clock.seen_ms.get(key)
            if seen is None:  # first look after a (re)start: the stored time
                seen = stream_clock.seen_ms[key] = BedState.from_bytes(bed_table.get(key)).seen_ms
            p = _frames_partition(key)
            silent = stream_clock.silent_ms(key, p, now_ms, seen, *positions.get(p, (None, None)))
            if not seen or silent < limit_ms or silent > SILENT_FORGET_S * 1000 or key in stream_clock.raised:
                continue
            st = BedState.from_bytes(bed_table.get(key))
            stream_clock.raised.add(key)
            if not st.windows or st.discharged_ms:  # no stay: nobody to miss
                continue
            ast = AlarmState.from_dict(st.alarms)
            t_ms = st.last_t_us // 1000 + st.n_samples * 1000 // max(st.fs, 1) + silent
            evs = link_step(int(key[4:]), ast, "device_silent", True, f"no window for {silent / 1000:.0f} s",
                            t_ms, CONDITIONS)
            if evs:  # none when the stored state already has it open (raised before a restart)
                st.alarms = ast.to_dict()
                events_all.extend(evs)
                add_alarm_history(alarm_points(evs))
                changed[key] = st
        if events_all:
            await sink.flush()
            await publish_alarm_events(events_all)
            stats.alarm_events += len(events_all)
            # the states record the alarms as raised only once they are published (as a batch's
            # do): a worker stopped in between leaves them unrecorded, so whoever measures the
            # silence next raises them again, rather than finding them open and never announcing them
            for key, st in changed.items():
                bed_table[key] = st.to_bytes()


@app.page("/stats/")
async def stats_page(web, request):
    return web.json(stats.as_dict(sink))


@app.on_before_shutdown.connect
async def close_clients(app, **kwargs) -> None:
    """Flush what is buffered and close the HTTP session, the gap reader and the group watch."""
    try:
        await asyncio.wait_for(sink.flush(), timeout=10)
    finally:
        await sink.close()
        await gap_reader.close()
        if group_watch is not None:
            await group_watch.close()
