"""The control topic, as devices read it: run-time task-error bounds per ward or per bed.

Messages (topic ``Settings.control_topic``, compacted, one partition, so a device that starts
late still reads the latest value of every key)::

    key   b"ward"          -> the bound of every bed that has no more specific bound
          b"ward-<id>"     -> the bound of every bed whose device runs the error predictor <id>
                              (12 hex digits, `wardmodels.predictor.Predictor.digest`) and has no
                              bed-level bound: in a ward of mixed predictors, whose task errors
                              differ (the beat term), each predictor's bound apart
          b"bed-000012"    -> the bound of bed 12 (`stream.topics.bed_key`)
    value {"bound": 0.3, "by": "who", "at_ms": 1700000000000}    (JSON; "bound": null clears it)

A bed's bound is the most specific one set: its own, else its predictor's, else the ward's, else
its device's deployed one.

    key   b"slack-000012"  -> bed 12's slack correction from the cloud's audits (`processors.audit`):
    value {"slack": 0.12, "by": "audit", "at_ms": ...}            added to the calibrated slack in
                                                                  log1p units (>= 0; null clears)

The correction has its own key so that it never overwrites an operator's per-bed bound.

    key   b"hold-000012"   -> bed 12's fidelity hold, set and cleared by the worker
    value {"max_level": 1, "why": "nsvt", "by": "alarm", "at_ms": ...}   (`processors.hold`):
                                                                  while a ventricular or asystole
                                                                  alarm is open (and a while after),
                                                                  the device sends no ECG level above
                                                                  ``max_level`` (0..7; 0: raw only;
                                                                  null clears)

A hold only ever caps the level: the device still sends the highest level up to the cap whose
predicted error is under its bound, raw if none. It has its own key, so it never overwrites an
operator's bound.

A device applies a message as soon as it is read, so the next window it encodes uses it (the
simulator polls the topic between windows). A malformed message is rejected with a reason,
logged and counted; it changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field

from stream.downlink import MAX_LEVEL as MAX_HOLD_LEVEL  # the highest level a hold can name
from stream.wire import is_predictor_id

log = logging.getLogger("wardstream.control")

WARD_KEY = b"ward"
PREDICTOR_KEY_PREFIX = b"ward-"


class ControlError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


SLACK_PREFIX = b"slack-"
HOLD_PREFIX = b"hold-"


def slack_key(bed: int) -> bytes:
    return SLACK_PREFIX + f"{bed:06d}".encode()


def hold_key(bed: int) -> bytes:
    return HOLD_PREFIX + f"{bed:06d}".encode()


def predictor_key(predictor_id: str) -> bytes:
    """The key of a predictor's ward-wide bound (``predictor_id``: 12 hex digits)."""
    key = PREDICTOR_KEY_PREFIX + predictor_id.encode()
    parse(key, message(1.0))  # validates the id
    return key


def parse(key: bytes | None, value: bytes | None) -> tuple[str, int | str | None, float | None]:
    """-> (field "bound", "slack" or "max_level", its scope: a bed id, a predictor id (str) or None
    for the ward, value or None to clear)."""
    field_name = "bound"
    if key == WARD_KEY:
        bed = None
    elif key and key.startswith(PREDICTOR_KEY_PREFIX) \
            and is_predictor_id(key[len(PREDICTOR_KEY_PREFIX):].decode("latin-1")):
        bed = key[len(PREDICTOR_KEY_PREFIX):].decode()
    elif key and key.startswith(b"bed-") and key[4:].isdigit():
        bed = int(key[4:])
    elif key and key.startswith(SLACK_PREFIX) and key[len(SLACK_PREFIX):].isdigit():
        field_name, bed = "slack", int(key[len(SLACK_PREFIX):])
    elif key and key.startswith(HOLD_PREFIX) and key[len(HOLD_PREFIX):].isdigit():
        field_name, bed = "max_level", int(key[len(HOLD_PREFIX):])
    else:
        raise ControlError("bad_key", f"key {key!r} is none of b'ward', b'ward-<12 hex digits>', b'bed-NNNNNN', "
                                      f"b'slack-NNNNNN', b'hold-NNNNNN'")
    try:
        msg = json.loads(value or b"")
    except ValueError as exc:
        raise ControlError("bad_json", str(exc)) from None
    if not isinstance(msg, dict) or field_name not in msg:
        raise ControlError(f"no_{field_name}", f"expected an object with {field_name!r}, got {str(msg)[:80]}")
    b = msg[field_name]
    if b is None:
        return field_name, bed, None
    if field_name == "max_level":
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= MAX_HOLD_LEVEL:
            raise ControlError("bad_max_level", f"max_level must be an integer 0..{MAX_HOLD_LEVEL}, got {b!r}")
        return field_name, bed, b
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
        raise ControlError(f"bad_{field_name}", f"{field_name} must be a finite number, got {b!r}")
    if field_name == "bound" and b <= 0:
        raise ControlError("bad_bound", f"bound must be a positive finite number, got {b!r}")
    if field_name == "slack" and not 0 <= b <= 10:
        raise ControlError("bad_slack", f"slack must lie in [0, 10] (log1p units), got {b!r}")
    return field_name, bed, float(b)


def message(bound: float | None, by: str = "wardstream") -> bytes:
    return json.dumps({"bound": bound, "by": by, "at_ms": int(time.time() * 1000)}).encode()


def slack_message(slack: float | None, by: str = "audit") -> bytes:
    return json.dumps({"slack": slack, "by": by, "at_ms": int(time.time() * 1000)}).encode()


def hold_message(max_level: int | None, why: str = "", by: str = "alarm", at_ms: int | None = None) -> bytes:
    return json.dumps({"max_level": max_level, "why": why, "by": by,
                       "at_ms": int(time.time() * 1000) if at_ms is None else int(at_ms)}).encode()


@dataclass
class Bounds:
    """Default, ward-wide, per-predictor and per-bed bounds (a bed's bound is the most specific one
    set), and the per-bed slack corrections of the cloud's audits."""

    default: float | None  # the devices' own bound (None: devices that do not predict their error)
    ward: float | None = None
    beds: dict[int, float] = field(default_factory=dict)
    slacks: dict[int, float] = field(default_factory=dict)
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    predictors: dict[str, float] = field(default_factory=dict)  # predictor id -> its ward-wide bound
    holds: dict[int, int] = field(default_factory=dict)  # bed -> the highest ECG level its fidelity hold allows

    def for_bed(self, bed: int, predictor: str | None = None) -> float:
        """The bound of bed ``bed``, whose device runs the error predictor with id ``predictor``."""
        if bed in self.beds:
            return self.beds[bed]
        if predictor is not None and predictor in self.predictors:
            return self.predictors[predictor]
        return self.ward if self.ward is not None else self.default

    def slack_for(self, bed: int) -> float:
        return self.slacks.get(bed, 0.0)

    def max_level_for(self, bed: int) -> int | None:
        """The highest ECG level bed ``bed`` may send while a fidelity hold is on, else None."""
        return self.holds.get(bed)

    def apply(self, key: bytes | None, value: bytes | None) -> bool:
        try:
            kind, bed, val = parse(key, value)
        except ControlError as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            log.warning("control message rejected (%s)", exc)
            return False
        if kind == "slack":
            if val is None:
                self.slacks.pop(bed, None)
            else:
                self.slacks[bed] = val
        elif kind == "max_level":
            if val is None:
                self.holds.pop(bed, None)
            else:
                self.holds[bed] = val
        elif bed is None:
            self.ward = val
        elif isinstance(bed, str):
            if val is None:
                self.predictors.pop(bed, None)
            else:
                self.predictors[bed] = val
        elif val is None:
            self.beds.pop(bed, None)
        else:
            self.beds[bed] = val
        self.applied += 1
        return True


async def start_client(client) -> None:
    """Start an aiokafka client; if it cannot (no broker), close what it opened and raise."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise


@contextlib.asynccontextmanager
async def _from_start(settings):
    """A consumer of the control topic's one partition, at its beginning -> (consumer, partition)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await start_client(consumer)
    try:
        tp = TopicPartition(settings.control_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        yield consumer, tp
    finally:
        await consumer.stop()


async def follow(settings, bounds: Bounds, on_change, stop: asyncio.Event) -> None:
    """Read the control topic from its beginning and keep following it; ``on_change()`` after
    every applied message."""
    from stream import kafka_compat

    kafka_compat.install()  # an idle consumer must not spin on a broker without long polls
    async with _from_start(settings) as (consumer, _):
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            changed = False
            for msgs in batches.values():
                for m in msgs:
                    changed |= bounds.apply(m.key, m.value)
            if changed:
                on_change()


async def latest(settings) -> dict[bytes, bytes | None]:
    """The latest value of every key on the control topic, read from its beginning to its end
    (None where the last message cleared the key's value)."""
    async with _from_start(settings) as (consumer, tp):
        end = (await consumer.end_offsets([tp]))[tp]
        out: dict[bytes, bytes | None] = {}
        while await consumer.position(tp) < end:
            for msgs in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for m in msgs:
                    out[m.key] = m.value
        return out


async def _send(settings, items: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await start_client(producer)
    try:
        for key, value in items:
            await producer.send_and_wait(settings.control_topic, value, key=key)
    finally:
        await producer.stop()


async def publish_slack(settings, slacks: dict[int, float | None], by: str = "audit") -> None:
    """Per-bed slack corrections, as the worker sends them (`processors.agents`)."""
    items = [(slack_key(bed), slack_message(v, by)) for bed, v in sorted(slacks.items())]
    for key, value in items:
        parse(key, value)  # validates before anything is sent
    await _send(settings, items)


async def publish_holds(settings, holds: dict[int, tuple[int | None, str]], by: str = "alarm") -> None:
    """Fidelity holds per bed (max level, or None to end it; why), as the worker sends them
    (`processors.agents.publish_hold_updates`)."""
    items = [(hold_key(bed), hold_message(level, why, by)) for bed, (level, why) in sorted(holds.items())]
    for key, value in items:
        parse(key, value)  # validates before anything is sent
    await _send(settings, items)


async def publish(settings, bound: float | None, bed: int | None = None, by: str = "wardstream",
                  predictor: str | None = None) -> None:
    """A bound for bed ``bed``, else for the beds whose devices run predictor id ``predictor``,
    else for the ward (None clears a bed's or a predictor's)."""
    from stream.topics import bed_key

    if bed is not None and predictor is not None:
        raise ControlError("bad_key", "a bound is for one bed or for one predictor's beds, not both")
    key = bed_key(bed) if bed is not None else predictor_key(predictor) if predictor is not None else WARD_KEY
    parse(key, message(bound))  # validates before anything is sent
    await _send(settings, [(key, message(bound, by))])
