"""Alarm events on the wire, webhook signing and delivery, and the FHIR export.

An alarm event (JSON on the alarms topic, and the body of every delivery)::

    {"id": "12:asystole:3:active:1763870000000", "bed": 12, "ward": "icu", "condition": "asystole",
     "priority": "high", "state": "active", "t_ms": …, "by": "wardstream", "why": "…", "episode": 3,
     "emitted_ms": …}

``id`` is deterministic (bed, condition, episode, state, device time), so a replayed batch
re-emits the same ids and receivers de-duplicate on it.

Webhooks are POSTed with ``Content-Type: application/json`` and::

    X-Wardstream-Event: <event id>
    X-Wardstream-Subscription: <subscription id>
    X-Wardstream-Attempt: <n>
    X-Wardstream-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

A 2xx answer acknowledges the delivery; anything else (or no answer) is retried with exponential
back-off up to the subscription's give-up time, after which the alarm is raised again as a
technical ``delivery_failed`` alarm for the same bed (to everyone else subscribed to it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

import aiohttp

from processors.alarms import AlarmEvent


def event_id(bed: int, condition: str, episode: int, state: str, t_ms: int) -> str:
    return f"{bed}:{condition}:{episode}:{state}:{t_ms}"


def event_dict(e: AlarmEvent, ward: str) -> dict:
    return {"id": event_id(e.bed, e.condition, e.episode, e.state, e.t_ms), "bed": e.bed, "ward": ward,
            "condition": e.condition, "priority": e.priority, "state": e.state, "t_ms": e.t_ms,
            "by": e.by, "why": e.why, "episode": e.episode, "emitted_ms": int(time.time() * 1000)}


def event_key(ev: dict) -> bytes:
    return b"bed-%06d:%s" % (ev["bed"], ev["condition"].encode())


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, max_age_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does with ``X-Wardstream-Signature`` (constant-time, with a replay window)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > max_age_s:
        return False
    want = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts.get("v1", ""))


@dataclass
class Outcome:
    delivered: bool
    attempts: int
    status: int | None
    error: str
    seconds: float


async def post_webhook(session: aiohttp.ClientSession, url: str, secret: str, sub_id: str, ev: dict,
                       timeout_s: float, max_backoff_s: float, give_up_s: float,
                       stop: asyncio.Event | None = None) -> Outcome:
    """POST until a 2xx, back-off doubling from 0.25 s to ``max_backoff_s``, for ``give_up_s``."""
    body = json.dumps(ev, separators=(",", ":")).encode()
    t0 = time.monotonic()
    delay, attempt, status, err = 0.25, 0, None, ""
    while True:
        attempt += 1
        headers = {"Content-Type": "application/json", "X-Wardstream-Event": ev["id"],
                   "X-Wardstream-Subscription": sub_id, "X-Wardstream-Attempt": str(attempt),
                   "X-Wardstream-Signature": sign(secret, body)}
        try:
            async with session.post(url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                status = resp.status
                await resp.read()
            if 200 <= status < 300:
                return Outcome(True, attempt, status, "", time.monotonic() - t0)
            err = f"HTTP {status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            status, err = None, f"{type(exc).__name__}: {exc}"[:200]
        if time.monotonic() - t0 + delay > give_up_s or (stop is not None and stop.is_set()):
            return Outcome(False, attempt, status, err, time.monotonic() - t0)
        await asyncio.sleep(delay)
        delay = min(max_backoff_s, delay * 2)


def delivery_failed_event(ev: dict, sub_id: str, outcome: Outcome) -> dict:
    """The technical alarm an undeliverable alarm becomes (not raised again if it fails itself)."""
    t_ms = int(time.time() * 1000)
    return {"id": event_id(ev["bed"], "delivery_failed", 0, "active", t_ms) + f":{sub_id}",
            "bed": ev["bed"], "ward": ev["ward"], "condition": "delivery_failed", "priority": "technical",
            "state": "active", "t_ms": t_ms, "by": "wardstream",
            "why": (f"alarm {ev['id']} ({ev['priority']} {ev['condition']} {ev['state']}) could not be delivered "
                    f"to subscription {sub_id} after {outcome.attempts} attempts in {outcome.seconds:.0f} s: "
                    f"{outcome.error}"),
            "episode": 0, "emitted_ms": t_ms, "undelivered": ev["id"], "subscription": sub_id}


FHIR_PRIORITY = {"high": "high", "medium": "medium", "low": "low", "technical": "low"}


def fhir_device_alert(alarm: dict) -> dict:
    """An alarm as a FHIR DeviceAlert-shaped resource (R6 ballot; the shape, not a validated
    profile): condition, priority, presence, the bed's device as source, the history of states."""
    open_ = alarm["state"] not in ("resolved",)
    return {
        "resourceType": "DeviceAlert",
        "id": alarm["id"].replace(":", "-"),
        "identifier": [{"system": "urn:wardstream:alarm", "value": alarm["id"]}],
        "status": "in-progress" if open_ else "completed",
        "category": [{"coding": [{"system": "urn:wardstream:alarm-category",
                                  "code": "technical" if alarm["priority"] == "technical" else "physiological"}]}],
        "type": {"coding": [{"system": "urn:wardstream:alarm-condition", "code": alarm["condition"]}],
                 "text": alarm["condition"]},
        "priority": FHIR_PRIORITY[alarm["priority"]],
        "presence": alarm["state"] in ("active", "escalated", "cleared"),
        "acknowledged": alarm["state"] == "acknowledged",
        "subject": {"reference": f"Device/bed-{alarm['bed']}", "display": f"bed {alarm['bed']} ({alarm['ward']})"},
        "source": {"reference": f"Device/bed-{alarm['bed']}"},
        "occurrencePeriod": {"start": _iso(alarm.get("onset_ms", alarm["t_ms"]))},
        "signal": [{"indication": {"audible": alarm["state"] in ("active", "escalated")}}],
        "note": [{"text": alarm["why"]}],
        "extension": [{"url": "urn:wardstream:iec60601-1-8-priority", "valueCode": alarm["priority"]},
                      {"url": "urn:wardstream:state", "valueCode": alarm["state"]}],
    }


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
