"""Alarm delivery and the alarm HTTP API, inside every worker process.

Flow (every arrow a Kafka topic, so nothing lives only in one process's memory)::

    frames agent ─┬─ alarm transitions ──▶ ward.alarms ──▶ open-alarm view, server-sent events
         ▲        └─ × matching subscriptions ──▶ ward.alarms.deliveries ──▶ webhooks
         │                                 (key = subscription: also the Kafka delivery channel)
    ward.commands ◀── POST …/ack
    ward.subscriptions ◀── POST/DELETE /api/v1/subscriptions  (compacted: the changelog)

* **Views** (one consumer per worker reads both topics from their beginning, no consumer group):
  the subscription registry (`processors.subscriptions.Registry`) and the open alarms
  (`AlarmView`). A restarted worker rebuilds both before it processes or serves anything.
* **Fan-out** where transitions are published (the frames agent, the acknowledgement agent, the
  dispatcher's ``delivery_failed``): each transition × each matching webhook or Kafka
  subscription → one record on the deliveries topic, all sent and awaited before the publishing
  batch's offsets can move on.
* **Dispatcher** (consumer group ``<app>-webhooks``): POSTs each webhook delivery, signed
  (`processors.delivery`), retried with back-off; per subscription in order, subscriptions in
  parallel, so one dead receiver holds up nobody else. An offset is committed only when every
  delivery before it has ended (delivered, given up, or its subscription deleted): a crash
  re-delivers (receivers de-duplicate on the event id). Every outcome is an ``alarm_delivery``
  point; a delivery given up on becomes a technical ``delivery_failed`` alarm.
* **Acknowledgement**: the API puts a command on ``ward.commands`` (keyed and partitioned like the
  frames), and the worker that owns the bed applies it to the bed's alarm state under the same
  lock as the frames agent, so an acknowledgement and a window never interleave.

The HTTP API (Faust's web server, 127.0.0.1 by default; OpenAPI at ``/api/v1/openapi.json``)
takes ``Authorization: Bearer <token>``; tokens come from ``WARDSTREAM_API_TOKENS`` and see only
their wards: another ward's bed or subscription answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict

import aiohttp
from aiokafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError
from aiohttp import web as aioweb
from faust.web import Request, Response, View

from processors import delivery as dl
from processors import group_watch as group_watch_mod
from processors.alarm_view import AlarmView
from processors.agents import (BED_LOCK, CONDITIONS, HOLD, LIMITS, WARDS, WORKER_ID, add_alarm_history, alarms_topic,
                               control_topic, frames_assignment, publish_alarm_events, publish_hold_updates,
                               set_publisher, set_stall_alarms, sink)
from processors import hold as fidelity
from processors.alarms import AlarmEvent, AlarmState, acknowledge, check_limits, discharge
from processors.bed import BedState
from processors.influx_sink import line
from processors.stages import alarm_points
from processors.subscriptions import Invalid, Registry, Subscription, validate
from processors.wards import Tokens
from stream import faust_gaps, kafka_compat
from stream.app import app, bed_table, settings
from stream.topics import bed_key

log = logging.getLogger("wardstream.alarms")

TOKENS = Tokens(settings.api_tokens)
registry = Registry()
subs_topic = app.topic(settings.subscriptions_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=1)
deliveries_topic = app.topic(settings.deliveries_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                             value_serializer="raw")
limits_topic = app.topic(settings.limits_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=1)
commands_topic = app.topic(settings.commands_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                           value_serializer="raw", partitions=settings.frames_partitions)


view = AlarmView()
views_ready = asyncio.Event()  # subscriptions and open alarms read up to where they were at start


SERVICE_BACKOFF_MS = 50  # the views and the dispatcher may wait this long on an idle topic


async def follow(appliers: dict, ready: asyncio.Event) -> None:
    """Read every partition of each topic in ``appliers`` (topic -> apply(key, value)) from its
    beginning, forever, with one consumer; ``ready`` once caught up with the end offsets seen
    at start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    kafka_compat.install()

    async def setup(c):
        kafka_compat.set_backoff(c, SERVICE_BACKOFF_MS)
        tps = []
        for topic in appliers:
            parts = set()
            while not parts:  # Faust (this worker or another) declares the topic at start
                parts = await kafka_compat.partitions_of(c, topic, wait_s=30.0)
                if not parts:
                    log.warning("topic %s does not exist yet; waiting for it", topic)
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        return tps, await c.end_offsets(tps)

    c, (tps, ends) = await kafka_compat.started(
        lambda: AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest"), "subscription and alarm views", setup)
    try:
        while True:
            batches = await c.getmany(timeout_ms=200)
            for tp, msgs in batches.items():
                for m in msgs:
                    try:
                        appliers[tp.topic](m.key, m.value)
                    except Exception:  # a bad record is logged and skipped, never fatal
                        log.exception("skipping a bad record on %s at %s", tp.topic, m.offset)
            if not ready.is_set() and all([await c.position(tp) >= ends[tp] for tp in tps]):
                ready.set()
                log.info("subscription and alarm views ready")
    finally:
        await c.stop()


def _apply_alarm(key, value) -> None:
    view.apply(json.loads(value))


runtime_limits: dict[int, dict] = {}  # bed -> the record that set its limits (who, when, limits)


def _apply_limits(key, value) -> None:
    """A bed's run-time limits from the compacted limits topic, into the worker's `LIMITS`."""
    bed = int(key.decode().removeprefix("bed-"))
    rec = json.loads(value) if value else None
    LIMITS.set_bed(bed, rec["limits"] if rec else None)  # checked again: a bad record is skipped
    if rec:
        runtime_limits[bed] = rec
    else:
        runtime_limits.pop(bed, None)


holds_in_force: dict[int, dict] = {}  # bed -> the control topic's fidelity hold record (`processors.hold`)


def _apply_control(key, value) -> None:
    """The fidelity holds of the control topic, parsed and checked as the devices parse them
    (`device_sim.control.parse`), for the API; its other keys (bounds, slack corrections) are the
    devices' business. A record the devices would refuse raises (logged and skipped by `follow`)."""
    from device_sim.control import parse

    kind, bed, level = parse(key, value)
    if kind != "max_level":
        return
    if level is None:
        holds_in_force.pop(bed, None)
    else:
        holds_in_force[bed] = json.loads(value)


@app.task
async def follow_views() -> None:
    await follow({settings.subscriptions_topic: registry.apply, settings.alarms_topic: _apply_alarm,
                  settings.limits_topic: _apply_limits, settings.control_topic: _apply_control}, views_ready)


def _group_consumer(topic: str, group: str):
    from aiokafka import AIOKafkaConsumer

    kafka_compat.install()
    return AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                            enable_auto_commit=False, auto_offset_reset="earliest",
                            session_timeout_ms=10000, heartbeat_interval_ms=1000)


def _record(sub: Subscription, ev: dict, status: str, attempts: int = 0, seconds: float = 0.0,
            http_status: int | None = None) -> None:
    fields = {"event": ev["id"], "bed": ev["bed"], "attempts": attempts, "seconds": round(seconds, 3)}
    if http_status is not None:
        fields["http_status"] = http_status
    sink.add(line("alarm_delivery", {"subscription": sub.id, "kind": sub.delivery["kind"], "status": status,
                                     "priority": ev["priority"]}, fields, int(time.time() * 1000)))


async def fan_out(evs: list[dict]) -> None:
    """Each transition x each matching webhook or Kafka subscription -> one deliveries record
    (sent and awaited by the caller's publish, before its offsets move on)."""
    if not views_ready.is_set():  # the subscriptions must be known before anything is fanned out
        try:
            await asyncio.wait_for(views_ready.wait(), timeout=10.0)
        except asyncio.TimeoutError:
            log.warning("alarm publishing waits for the subscription view (not caught up after 10 s)")
            await views_ready.wait()
    futs = []
    for ev in evs:
        value = json.dumps(ev).encode()
        futs.append(await alarms_topic.send(key=dl.event_key(ev), value=value))
        for sub in registry.matching(ev):
            if sub.delivery["kind"] in ("webhook", "kafka"):
                futs.append(await deliveries_topic.send(key=sub.id.encode(), value=value))
                if sub.delivery["kind"] == "kafka":
                    _record(sub, ev, "delivered")
    for f in futs:
        await f


set_publisher(fan_out)

STALL_PRIORITY = settings.stall_priority
if STALL_PRIORITY not in ("high", "medium", "low", "technical"):
    raise ValueError(f"WARDSTREAM_STALL_PRIORITY={STALL_PRIORITY!r}: one of high, medium, low, technical")
_stall_sent: dict[str, int] = {}  # event ids this worker published -> when (ms), until the view has them
_stall_pending: dict = {}  # (bed, episode) of other workers' partitions -> first ms seen resolvable


async def stall_alarms(watch) -> None:
    """After each group-watch sample: the ``monitoring_stalled`` transitions that bring the open
    alarms (as the alarms topic says, whichever worker raised them) in line with it
    (`processors.group_watch.stall_transitions`), published like any alarm and written to the
    alarm history. Waits for the views: before they are caught up the open alarms are unknown."""
    if not views_ready.is_set():
        return
    now_ms = int(time.time() * 1000)
    for i, t in list(_stall_sent.items()):
        if now_ms - t > 60_000:
            del _stall_sent[i]
    open_ = {b: a for (b, c), a in view.alarms.items() if c == group_watch_mod.CONDITION}
    try:  # the owner of a partition resolves its stalls; the others only after a hand-over time
        owned = {tp.partition for tp in frames_assignment()}
    except Exception:  # no assignment yet (a rebalance): none owned
        owned = set()
    evs = [e for e in group_watch_mod.stall_transitions(
        watch.committed, watch.ends, watch.waiting, open_, now_ms, watch.tracker.stall_s, WARDS.ward_of,
        STALL_PRIORITY, f"group watch ({WORKER_ID})", owned=owned, pending=_stall_pending)
        if e["id"] not in _stall_sent]
    if not evs:
        return
    await fan_out(evs)
    for e in evs:
        _stall_sent[e["id"]] = now_ms
    add_alarm_history(alarm_points([AlarmEvent(**{k: e[k] for k in AlarmEvent.__dataclass_fields__}) for e in evs]))
    for p in group_watch_mod.stall_alarm_levels(evs, view.alarms):
        sink.add(p)
    log.warning("monitoring_stalled: %s", ", ".join(f"bed {e['bed']} {e['state']}" for e in evs))


set_stall_alarms(stall_alarms)


class Dispatcher:
    """Webhook deliveries: in order per subscription, in parallel across subscriptions."""

    def __init__(self) -> None:
        self.pending: dict = defaultdict(set)  # TopicPartition -> offsets not yet finished
        self.seen: dict = {}  # TopicPartition -> next offset after the highest read
        self.queues: dict[str, asyncio.Queue] = {}
        self.session: aiohttp.ClientSession | None = None

    def committable(self) -> dict:
        from aiokafka.structs import OffsetAndMetadata

        return {tp: OffsetAndMetadata(min(self.pending[tp]) if self.pending[tp] else nxt, "")
                for tp, nxt in self.seen.items()}

    async def run_queue(self, sid: str, q: asyncio.Queue) -> None:
        while True:
            tp, offset, ev = await q.get()
            try:
                await self.deliver(sid, ev)
            except Exception:
                log.exception("delivering %s to %s", ev.get("id"), sid)
            finally:
                self.pending[tp].discard(offset)

    async def deliver(self, sid: str, ev: dict) -> None:
        sub = registry.subs.get(sid)
        if sub is None or sub.delivery["kind"] != "webhook":
            return  # deleted meanwhile, or a Kafka subscription (the record is the delivery)
        out = await dl.post_webhook(self.session, sub.delivery["url"], sub.delivery["secret"], sid, ev,
                                    settings.webhook_timeout_s, settings.webhook_max_backoff_s,
                                    settings.webhook_give_up_s)
        _record(sub, ev, "delivered" if out.delivered else "failed", out.attempts, out.seconds, out.status)
        if not out.delivered:
            log.error("webhook delivery of %s to %s failed: %s", ev["id"], sid, out.error)
            if ev["condition"] != "delivery_failed":
                await fan_out([dl.delivery_failed_event(ev, sid, out)])
        await sink.flush()

    async def run(self) -> None:
        await views_ready.wait()
        self.session = aiohttp.ClientSession()
        c = await kafka_compat.started(lambda: _group_consumer(settings.deliveries_topic, f"{settings.app_id}-webhooks"),
                                       "webhook deliveries")
        kafka_compat.set_backoff(c, SERVICE_BACKOFF_MS)
        last_commit = 0.0
        try:
            while True:
                batches = await c.getmany(timeout_ms=200)
                for tp, msgs in batches.items():
                    for m in msgs:
                        sid = (m.key or b"").decode(errors="replace")
                        try:
                            ev = json.loads(m.value)
                        except ValueError:
                            continue
                        self.pending[tp].add(m.offset)
                        self.seen[tp] = m.offset + 1
                        q = self.queues.get(sid)
                        if q is None:
                            q = self.queues[sid] = asyncio.Queue()
                            asyncio.ensure_future(self.run_queue(sid, q))
                        q.put_nowait((tp, m.offset, ev))
                if self.seen and time.monotonic() - last_commit > 0.5:
                    assigned = c.assignment()
                    offsets = {tp: o for tp, o in self.committable().items() if tp in assigned}
                    if offsets:
                        try:
                            await c.commit(offsets)
                        except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError,
                                UnknownMemberIdError) as exc:
                            # another worker joined or left: the group rebalanced under us; the
                            # partitions that moved resume at their last committed offset on
                            # their new owner (at least once: receivers dedupe by event id)
                            log.info("webhook offsets not committed during a rebalance: %s", exc)
                    last_commit = time.monotonic()
        finally:
            await c.stop()
            await self.session.close()


dispatcher = Dispatcher()


@app.task
async def dispatch_webhooks() -> None:
    await dispatcher.run()


# Commands are rare and must never be lost, yet Faust 0.15.3 can drop fetched records (see
# `stream.faust_gaps`): one delivered shortly after a worker (re)joins its group was seen never to
# reach this agent, and (2026-12-06) the first one or two of every partition's batch were skipped
# when a worker joined with 200 discharges waiting (29 of 200 lost). The agent therefore notes,
# per partition, the offset after the last command it applied: a command delivered past it has
# the skipped ones read straight from Kafka and applied first (`faust_gaps.skipped`), and
# `sweep_commands` reads any command Faust has not delivered within two sweeps; a command
# delivered after it was read that way is skipped.
faust_gaps.install({settings.commands_topic})
command_reader = faust_gaps.RangeReader(settings.kafka_bootstrap)  # its own consumer: used outside BED_LOCK
_commands_next: dict = {}  # TP -> offset after the last command applied (this consumer generation)
_commands_generation = [None]
_commands_behind: dict = {}  # TP -> where a sweep found it behind (`faust_gaps.overdue`)


def _command_next(tp) -> int:
    if _commands_generation[0] != app.consumer_generation_id:
        _commands_generation[0] = app.consumer_generation_id
        _commands_next.clear()
        _commands_behind.clear()
    if tp not in _commands_next:
        _commands_next[tp] = app.consumer._committed_offset.get(tp) or 0
    return _commands_next[tp]


@app.agent(commands_topic)
async def apply_commands(stream):
    """Acknowledgements and discharges, applied by the worker that owns the bed."""
    async for ev in stream.events():
        tp, off = ev.message.tp, ev.message.offset
        async with BED_LOCK:
            if off < _command_next(tp):
                continue  # a sweep applied it already
            gap = faust_gaps.skipped(tp, _command_next(tp), off)
            if gap is not None and not await _apply_from_kafka(gap):
                continue  # not all read back: the sweep reads this one with them, in order
            await _apply_command(ev.value)
            _commands_next[tp] = off + 1


@app.timer(interval=2.0)
async def sweep_commands() -> None:
    """Apply the commands of this worker's partitions that Faust has not delivered (see above).
    A sweep that fails (the broker away) is logged and tried again at the next."""
    try:
        await _sweep_commands()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("commands sweep failed; trying again in 2 s")


async def _sweep_commands() -> None:
    tps = [tp for tp in app.consumer.assignment() if tp.topic == settings.commands_topic]
    if not tps:
        return
    ends = await command_reader.end_offsets(tps)  # a round trip to the broker, not under the lock
    async with BED_LOCK:
        for gap in faust_gaps.overdue({tp: _command_next(tp) for tp in tps}, ends, _commands_behind):
            await _apply_from_kafka(gap)


async def _apply_from_kafka(gap) -> bool:
    """The commands of ``gap`` (which Faust did not deliver), read from Kafka and applied in order
    (under `BED_LOCK`) -> whether all of them were."""
    tp, end = gap.tp, gap.end
    recs = await command_reader.fetch_range(gap)
    log.warning("commands %s/%s %d..%d not delivered by Faust: applying %d read from Kafka",
                tp.topic, tp.partition, gap.start, end - 1, len(recs))
    for r in recs:
        await _apply_command(r.value)
        _commands_next[tp] = r.offset + 1
    done = _commands_next[tp] == end
    if recs and done:
        await faust_gaps.mark_done(app.consumer, gap)
    return done


async def _apply_command(value) -> None:
    """One command (under `BED_LOCK`); a malformed one is logged and skipped."""
    try:
        cmd = json.loads(value)
        kind = cmd.get("cmd", "acknowledge")
        bed, by = int(cmd["bed"]), str(cmd["by"])[:80]
        condition = str(cmd["condition"]) if kind == "acknowledge" else None
        if kind not in ("acknowledge", "discharge", "fidelity"):
            raise ValueError(kind)
        if kind == "fidelity":
            minutes, level = float(cmd["minutes"]), cmd.get("max_level")
            fidelity.request(BedState(), level, minutes, by, 0)  # validates
    except (ValueError, KeyError, TypeError, AttributeError):
        log.error("malformed command %r; skipped", value[:200] if value else value)
        return
    st = BedState.from_bytes(bed_table.get(bed_key(bed)))
    ast = AlarmState.from_dict(st.alarms)
    t_ms = max(int(cmd.get("at_ms", 0)), st.last_t_us // 1000 + 1)
    if kind == "fidelity":
        if 0 < int(cmd.get("at_ms", 0)) <= st.discharge_cmd_ms:  # read again from Kafka, say after a crash
            log.info("fidelity request for bed %s by %s was made in an earlier stay; skipped", bed, by)
            return
        await _fidelity(bed, st, ast, level, minutes, by, t_ms)
        return
    if kind == "discharge":
        if int(cmd.get("at_ms", 0)) <= st.discharge_cmd_ms:
            log.info("discharge of bed %s at %s applied already; skipped", bed, cmd.get("at_ms"))
            return
        st.discharge_cmd_ms = int(cmd.get("at_ms", 0))
        await _discharge(bed, st, ast, by, t_ms)
        return
    if 0 < int(cmd.get("at_ms", 0)) <= st.discharge_cmd_ms:  # read again from Kafka, say after a crash
        log.info("acknowledge %s/%s by %s was given in an earlier stay; skipped", bed, condition, by)
        return
    events = acknowledge(bed, ast, condition, by, t_ms, CONDITIONS)
    if not events:
        log.info("acknowledge %s/%s by %s: nothing active to acknowledge", bed, condition, by)
        return
    add_alarm_history(alarm_points(events))
    await sink.flush()
    await publish_alarm_events(events)
    st.alarms = ast.to_dict()
    bed_table[bed_key(bed)] = st.to_bytes()


async def _fidelity(bed: int, st: BedState, ast: AlarmState, level: int | None, minutes: float, by: str,
                    t_ms: int) -> None:
    """A clinician's fidelity hold on the bed (under `BED_LOCK`): from the bed's last window on, its
    device sends no ECG level above ``level`` for ``minutes`` (0: the request is withdrawn), or
    lower while an automatic hold asks for less (`processors.hold`). Published and written before
    the state is stored; a request of an earlier stay is not applied to the next patient."""
    now = st.last_t_us // 1000 if st.last_t_us > 0 else t_ms
    fidelity.request(st, level, minutes, by, now)
    change = fidelity.step(st, AlarmState.from_dict(st.alarms).open_alarms(), now, HOLD)
    if change is not None:
        add_alarm_history([line("fidelity_hold", {"bed": str(bed)},
                                {"on": int(change[0] is not None), "max_level": -1 if change[0] is None else change[0],
                                 "why": change[1]}, now)])
        await sink.flush()
        await publish_hold_updates({bed: (*change, fidelity.published_by(st, by))})
    bed_table[bed_key(bed)] = st.to_bytes()
    log.info("fidelity hold on bed %s by %s: level <= %s for %s min (%s)", bed, by, level, minutes,
             "published" if change is not None else "no change")


async def _discharge(bed: int, st: BedState, ast: AlarmState, by: str, t_ms: int) -> None:
    """End the bed's stay (under `BED_LOCK`): its open alarms resolve, its patient's signal history
    and audit residuals are forgotten, and what was set for the patient returns to the ward's
    settings — run-time alarm limits, the Dynamic-Deep bound, the audits' slack correction and a
    fidelity hold
    (tombstones on the limits and control topics, which every worker and device follows). Written
    and published before the state is stored: a command applied again after a crash gives the
    same events (same ids) and messages."""
    from device_sim.control import hold_key, hold_message, message, slack_key, slack_message

    ast, events = discharge(bed, ast, by, t_ms, CONDITIONS)
    add_alarm_history(alarm_points(events) + [line("stay", {"bed": str(bed)},
                                                   {"event": "discharge", "by": by, "alarms_resolved": len(events)},
                                                   t_ms)])
    await sink.flush()
    await publish_alarm_events(events)
    futs = [await limits_topic.send(key=bed_key(bed), value=None),
            await control_topic.send(key=bed_key(bed), value=message(None, by)),
            await control_topic.send(key=slack_key(bed), value=slack_message(None, by)),
            await control_topic.send(key=hold_key(bed), value=hold_message(None, "discharged", by))]
    for f in futs:
        await f
    _apply_limits(bed_key(bed), None)
    st.end_stay(int(time.time() * 1000))
    st.alarms = ast.to_dict()
    bed_table[bed_key(bed)] = st.to_bytes()
    log.info("bed %s discharged by %s: %d open alarms resolved", bed, by, len(events))


@app.on_before_shutdown.connect
async def close_command_reader(app, **kwargs) -> None:
    await command_reader.close()


# ---------------------------------------------------------------------------------------- API

def _principal(request: Request):
    if not len(TOKENS):
        raise _Http(401, "no API tokens are configured on this worker (WARDSTREAM_API_TOKENS)")
    p = TOKENS.principal(request.headers.get("Authorization"))
    if p is None:
        raise _Http(401, "missing or unknown bearer token")
    return p


class _Http(Exception):
    def __init__(self, status: int, reason: str, **extra):
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra


def _err(view: View, e: _Http) -> Response:
    return view.json({"error": e.reason, **e.extra}, status=e.status,
                     headers={"WWW-Authenticate": "Bearer"} if e.status == 401 else None)


async def _body(request: Request):
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise _Http(400, f"the body is not JSON: {exc}") from None


@app.page("/api/v1/subscriptions")
class SubscriptionsView(View):
    async def get(self, request: Request) -> Response:
        try:
            p = _principal(request)
        except _Http as e:
            return _err(self, e)
        return self.json({"subscriptions": [s.public() for s in registry.visible_to(p)]})

    async def post(self, request: Request) -> Response:
        try:
            p = _principal(request)
            body = await _body(request)
            try:
                sub = validate(body, p, WARDS)
            except Invalid as exc:
                raise _Http(400, "invalid subscription", reasons=exc.reasons) from None
            denied = [w for w in sub.wards if not p.may_see(w)]
            if denied:
                raise _Http(403, f"this token may not subscribe to wards {denied}")
        except _Http as e:
            return _err(self, e)
        await (await subs_topic.send(key=sub.id.encode(), value=sub.to_json()))
        registry.apply(sub.id.encode(), sub.to_json())  # read-your-writes on this worker
        return self.json(sub.public(), status=201)


@app.page("/api/v1/subscriptions/{sub_id}")
class SubscriptionView(View):
    def _find(self, request: Request, sub_id: str) -> Subscription:
        p = _principal(request)
        sub = registry.subs.get(sub_id)
        if sub is None or not all(p.may_see(w) for w in sub.wards):
            raise _Http(404, f"no subscription {sub_id!r} visible to this token")
        return sub

    async def get(self, request: Request, sub_id: str) -> Response:
        try:
            return self.json(self._find(request, sub_id).public())
        except _Http as e:
            return _err(self, e)

    async def delete(self, request: Request, sub_id: str) -> Response:
        try:
            sub = self._find(request, sub_id)
        except _Http as e:
            return _err(self, e)
        await (await subs_topic.send(key=sub.id.encode(), value=None))
        registry.apply(sub.id.encode(), None)
        return self.json({"deleted": sub.id})


def _bed(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise _Http(400, f"bed must be a positive number, got {raw!r}")
    return int(raw)


def _open_alarm(p, bed: str, condition: str) -> tuple[int, dict]:
    """The open alarm of ``bed``/``condition`` if this token's wards include the bed; another
    ward's alarm is answered exactly like one that does not exist (404)."""
    b = _bed(bed)
    alarm = view.alarms.get((b, condition))
    if alarm is None or not p.may_see(alarm["ward"]):
        raise _Http(404, f"no open {condition!r} alarm on bed {b} visible to this token")
    return b, alarm


@app.page("/api/v1/alarms")
class AlarmsView(View):
    async def get(self, request: Request) -> Response:
        try:
            p = _principal(request)
            bed = _bed(request.query["bed"]) if "bed" in request.query else None
        except _Http as e:
            return _err(self, e)
        return self.json({"alarms": view.visible(p, bed), "complete": views_ready.is_set()})


@app.page("/api/v1/alarms/{bed}/{condition}/ack")
class AckView(View):
    async def post(self, request: Request, bed: str, condition: str) -> Response:
        try:
            p = _principal(request)
            _bed(bed)
            body = await _body(request) if request.content_length else {}
            by = body.get("by") if isinstance(body, dict) else None
            if not isinstance(by, str) or not 0 < len(by) <= 80:
                raise _Http(400, "'by' (who acknowledges, 1-80 characters) is required")
            b, alarm = _open_alarm(p, bed, condition)
            if condition == group_watch_mod.CONDITION:
                raise _Http(409, f"the {condition} alarm on bed {b} is the ward's processing, not the bed's: "
                                 "it resolves itself when the bed's frames partition moves again")
            if alarm["status"] != "active":
                raise _Http(409, f"the {condition} alarm on bed {b} is already {alarm['status']}")
        except _Http as e:
            return _err(self, e)
        cmd = {"cmd": "acknowledge", "bed": b, "condition": condition, "by": by, "token": p.name,
               "at_ms": int(time.time() * 1000)}
        await (await commands_topic.send(key=bed_key(b), value=json.dumps(cmd).encode()))
        return self.json({"accepted": cmd, "alarm": alarm["id"]}, status=202)


@app.page("/api/v1/beds/{bed}/limits")
class LimitsView(View):
    """A bed's alarm limits: GET the effective ones; PUT ``{"limits": {...}, "by": ...}`` sets
    run-time overrides (``{"limits": {}}`` clears them), applied from the bed's next window on
    by the worker that owns it (every worker follows the compacted limits topic)."""

    def _bed_of(self, request: Request, bed: str):
        p = _principal(request)
        b = _bed(bed)
        if not p.may_see(WARDS.ward_of(b)):
            raise _Http(404, f"no bed {b} visible to this token")
        return p, b

    def _state(self, b: int) -> dict:
        from dataclasses import asdict

        return {"bed": b, "ward": WARDS.ward_of(b), "effective": asdict(LIMITS(b)),
                "configured": LIMITS.configured(b), "runtime": runtime_limits.get(b)}

    async def get(self, request: Request, bed: str) -> Response:
        try:
            _, b = self._bed_of(request, bed)
        except _Http as e:
            return _err(self, e)
        return self.json(self._state(b))

    async def put(self, request: Request, bed: str) -> Response:
        try:
            p, b = self._bed_of(request, bed)
            body = await _body(request)
            reasons = []
            if not isinstance(body, dict):
                raise _Http(400, "invalid limits", reasons=["the body must be a JSON object"])
            by = body.get("by")
            if not isinstance(by, str) or not 0 < len(by) <= 80:
                reasons.append("'by' (who sets the limits, 1-80 characters) is required")
            if set(body) - {"limits", "by"}:
                reasons.append(f"unknown fields {sorted(set(body) - {'limits', 'by'})}")
            limits = None
            try:
                limits = check_limits(body.get("limits"), "limits")
                LIMITS.resolve(b, limits)  # consistent with the bed's configured limits too
            except ValueError as exc:
                reasons.append(str(exc))
            if reasons:
                raise _Http(400, "invalid limits", reasons=reasons)
        except _Http as e:
            return _err(self, e)
        rec = {"bed": b, "limits": limits, "by": by, "token": p.name, "at_ms": int(time.time() * 1000)} \
            if limits else None
        await (await limits_topic.send(key=bed_key(b), value=json.dumps(rec).encode() if rec else None))
        _apply_limits(bed_key(b), json.dumps(rec).encode() if rec else None)  # read-your-writes here
        return self.json(self._state(b))


async def _bed_request(request: Request, bed: str) -> tuple:
    """(principal, bed id, JSON object body or {}) of a POST about one bed of the token's wards."""
    p = _principal(request)
    b = _bed(bed)
    if not p.may_see(WARDS.ward_of(b)):
        raise _Http(404, f"no bed {b} visible to this token")
    body = await _body(request) if request.content_length else {}
    if not isinstance(body, dict):
        raise _Http(400, "a JSON object is required")
    return p, b, body


@app.page("/api/v1/beds/{bed}/discharge")
class DischargeView(View):
    """``POST {"by": ...}``: the bed's patient leaves (or another patient takes the bed). The
    worker that owns the bed resolves its open alarms, forgets the patient's signal history and
    returns the bed to the ward's alarm limits, Dynamic-Deep bound and slack; the next window
    starts a new stay (`_discharge`)."""

    async def post(self, request: Request, bed: str) -> Response:
        try:
            p, b, body = await _bed_request(request, bed)
            by = body.get("by")
            if not isinstance(by, str) or not 0 < len(by) <= 80:
                raise _Http(400, "'by' (who discharges, 1-80 characters) is required")
            if set(body) - {"by"}:
                raise _Http(400, f"unknown fields {sorted(set(body) - {'by'})}")
        except _Http as e:
            return _err(self, e)
        cmd = {"cmd": "discharge", "bed": b, "by": by, "token": p.name, "at_ms": int(time.time() * 1000)}
        await (await commands_topic.send(key=bed_key(b), value=json.dumps(cmd).encode()))
        return self.json({"accepted": cmd, "open_alarms": len(view.visible(p, b))}, status=202)


@app.page("/api/v1/beds/{bed}/fidelity")
class FidelityView(View):
    """``POST {"by": ..., "minutes": M, "max_level": L}``: a clinician asks for the bed's ECG at
    full fidelity — its device sends no level above ``L`` (default 1; 0: raw only) for ``M``
    minutes (at most a day; 0 withdraws the request), as the automatic hold on an alarm does
    (`processors.hold`). The worker that owns the bed publishes it on the control topic.
    ``GET``: the hold the bed's device is under, as the control topic says (an alarm's or a
    request's: level, why, by, since when), or null — a request shows once its worker has
    published it."""

    async def get(self, request: Request, bed: str) -> Response:
        try:
            p = _principal(request)
            b = _bed(bed)
            if not p.may_see(WARDS.ward_of(b)):
                raise _Http(404, f"no bed {b} visible to this token")
        except _Http as e:
            return _err(self, e)
        return self.json({"bed": b, "ward": WARDS.ward_of(b), "hold": holds_in_force.get(b)})

    async def post(self, request: Request, bed: str) -> Response:
        try:
            p, b, body = await _bed_request(request, bed)
            by, minutes, level = body.get("by"), body.get("minutes"), body.get("max_level", 1)
            if not isinstance(by, str) or not 0 < len(by) <= 80:
                raise _Http(400, "'by' (who asks, 1-80 characters) is required")
            if set(body) - {"by", "minutes", "max_level"}:
                raise _Http(400, f"unknown fields {sorted(set(body) - {'by', 'minutes', 'max_level'})}")
            if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
                raise _Http(400, f"'minutes' (0..{fidelity.MANUAL_MAX_MINUTES}; 0 withdraws) is required")
            if isinstance(level, bool) or not isinstance(level, int):
                raise _Http(400, "'max_level' must be an integer")
            try:
                fidelity.request(BedState(), level, float(minutes), by, 0)
            except ValueError as exc:
                raise _Http(400, str(exc)) from None
        except _Http as e:
            return _err(self, e)
        cmd = {"cmd": "fidelity", "bed": b, "by": by, "minutes": minutes, "max_level": level, "token": p.name,
               "at_ms": int(time.time() * 1000)}
        await (await commands_topic.send(key=bed_key(b), value=json.dumps(cmd).encode()))
        return self.json({"accepted": cmd}, status=202)


@app.page("/api/v1/alarms/{bed}/{condition}/fhir")
class FhirView(View):
    async def get(self, request: Request, bed: str, condition: str) -> Response:
        try:
            _, alarm = _open_alarm(_principal(request), bed, condition)
        except _Http as e:
            return _err(self, e)
        return self.json(dl.fhir_device_alert(alarm), content_type="application/fhir+json")


@app.page("/api/v1/stream")
class StreamView(View):
    """Server-sent events: every alarm transition in the token's wards (``?priority=high,medium``
    and ``?bed=12`` narrow it). A comment line every 15 s keeps proxies from closing it."""

    async def get(self, request: Request):
        try:
            p = _principal(request)
            pri = set(request.query.get("priority", "high,medium,low,technical").split(","))
            bed = _bed(request.query["bed"]) if "bed" in request.query else None
        except _Http as e:
            return _err(self, e)
        resp = aioweb.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue = asyncio.Queue()
        view.listeners.add(q)
        try:
            await resp.write(b": connected\n\n")
            while True:
                try:
                    ev = await asyncio.wait_for(q.get(), timeout=15.0)
                except asyncio.TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if p.may_see(ev["ward"]) and ev["priority"] in pri and (bed is None or ev["bed"] == bed):
                    await resp.write(f"id: {ev['id']}\nevent: alarm\ndata: {json.dumps(ev)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            view.listeners.discard(q)
        return resp


@app.page("/api/v1/openapi.json")
class OpenApiView(View):
    async def get(self, request: Request) -> Response:
        from processors.openapi import document

        return self.json(document())
