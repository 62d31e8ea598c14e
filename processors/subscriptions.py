"""Alarm subscriptions: who gets which alarms, and how.

A subscription (JSON, on the compacted subscriptions topic, key = its id; a null value deletes)::

    {"id": "sub-…", "name": "ICU charge nurse", "wards": ["icu"], "beds": [3, 4] | null,
     "priorities": ["high", "medium"], "conditions": ["asystole", …] | null,
     "events": ["active", "escalated"], "delivery": {"kind": "webhook", "url": "https://…",
     "secret": "…"} | {"kind": "kafka"} | {"kind": "sse"}, "owner": "token-…", "created_ms": …}

``events`` selects transitions: a subscription with only ``escalated`` is the "wider audience"
that hears of a high-priority alarm nobody acknowledged in time. ``validate`` turns a request body
into a subscription or raises `Invalid` with every reason found.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

from processors.alarms import DEFAULT_CONDITIONS, PRIORITIES
from processors.wards import Principal, WardMap

STATES = ("active", "acknowledged", "escalated", "cleared", "resolved")
# raised by the delivery path and the group watch, outside the beds' alarm states
TECHNICAL_CONDITIONS = ("delivery_failed", "monitoring_stalled")
KINDS = ("webhook", "kafka", "sse")
_NAME = re.compile(r"^[\w .,:()/-]{1,120}$")


class Invalid(ValueError):
    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass
class Subscription:
    id: str
    name: str
    wards: list[str]
    delivery: dict
    beds: list[int] | None = None
    priorities: list[str] = field(default_factory=lambda: list(PRIORITIES))
    conditions: list[str] | None = None
    events: list[str] = field(default_factory=lambda: list(STATES))
    owner: str = ""
    created_ms: int = 0

    def matches(self, ev: dict) -> bool:
        return (ev["ward"] in self.wards and (self.beds is None or ev["bed"] in self.beds)
                and ev["priority"] in self.priorities and ev["state"] in self.events
                and (self.conditions is None or ev["condition"] in self.conditions))

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def public(self) -> dict:
        """What the API shows: the webhook secret never leaves the server."""
        d = asdict(self)
        if "secret" in d["delivery"]:
            d["delivery"] = {**d["delivery"], "secret": "***"}
        return d

    @classmethod
    def from_json(cls, raw: bytes) -> "Subscription":
        return cls(**json.loads(raw))


def _str_list(body: dict, key: str, allowed, reasons: list[str], default=None):
    v = body.get(key, default)
    if v is None:
        return None
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        reasons.append(f"'{key}' must be a non-empty list of strings")
        return None
    bad = [x for x in v if allowed is not None and x not in allowed]
    if bad:
        reasons.append(f"'{key}' has unknown values {bad}; allowed: {list(allowed)}")
    return list(dict.fromkeys(v))


def validate(body, principal: Principal, wards: WardMap, allow_http: bool = True) -> Subscription:
    """A subscription from an API request body, or `Invalid` (400) with every reason.
    Ward permissions are checked by the caller (403, not 400)."""
    if not isinstance(body, dict):
        raise Invalid(["the body must be a JSON object"])
    reasons: list[str] = []
    known = {"name", "wards", "beds", "priorities", "conditions", "events", "delivery"}
    extra = sorted(set(body) - known)
    if extra:
        reasons.append(f"unknown fields {extra}")
    name = body.get("name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        reasons.append("'name' must be 1-120 plain characters")
    ward_list = _str_list(body, "wards", None, reasons)
    if ward_list is None and "wards" not in body:
        reasons.append("'wards' is required")
    beds = body.get("beds")
    if beds is not None:
        if not isinstance(beds, list) or not beds or not all(isinstance(b, int) and not isinstance(b, bool)
                                                             and 0 < b < 2**31 for b in beds):
            reasons.append("'beds' must be a non-empty list of positive bed numbers")
            beds = None
        elif ward_list is not None:
            outside = [b for b in beds if wards.ward_of(b) not in ward_list]
            if outside:
                reasons.append(f"beds {outside} are not in wards {ward_list}")
    priorities = _str_list(body, "priorities", PRIORITIES, reasons, default=list(PRIORITIES))
    conditions = _str_list(body, "conditions", tuple(DEFAULT_CONDITIONS) + TECHNICAL_CONDITIONS, reasons)
    events = _str_list(body, "events", STATES, reasons, default=list(STATES))
    delivery = body.get("delivery")
    if not isinstance(delivery, dict) or delivery.get("kind") not in KINDS:
        reasons.append(f"'delivery' must be an object with 'kind' one of {list(KINDS)}")
    elif delivery["kind"] == "webhook":
        url, secret = delivery.get("url"), delivery.get("secret")
        u = urlparse(url) if isinstance(url, str) else None
        if u is None or u.scheme not in (("http", "https") if allow_http else ("https",)) or not u.netloc:
            reasons.append("'delivery.url' must be an absolute http(s) URL")
        if not isinstance(secret, str) or len(secret) < 16:
            reasons.append("'delivery.secret' (the HMAC key the receiver verifies with) must be ≥ 16 characters")
        extra_d = sorted(set(delivery) - {"kind", "url", "secret"})
        if extra_d:
            reasons.append(f"unknown delivery fields {extra_d}")
    elif set(delivery) != {"kind"}:
        reasons.append(f"delivery kind '{delivery['kind']}' takes no other fields")
    if reasons:
        raise Invalid(reasons)
    return Subscription(id=f"sub-{uuid.uuid4().hex[:16]}", name=name, wards=ward_list, delivery=dict(delivery),
                        beds=beds, priorities=priorities, conditions=conditions, events=events,
                        owner=principal.name, created_ms=int(time.time() * 1000))


class Registry:
    """Every live subscription, rebuilt from the subscriptions topic (a changelog)."""

    def __init__(self) -> None:
        self.subs: dict[str, Subscription] = {}
        self.rejected = 0

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if not key:
            self.rejected += 1
            return
        sid = key.decode(errors="replace")
        if value is None:
            self.subs.pop(sid, None)
            return
        try:
            self.subs[sid] = Subscription.from_json(value)
        except (ValueError, TypeError):
            self.rejected += 1

    def matching(self, ev: dict) -> list[Subscription]:
        return [s for s in self.subs.values() if s.matches(ev)]

    def visible_to(self, p: Principal) -> list[Subscription]:
        return [s for s in self.subs.values() if all(p.may_see(w) for w in s.wards)]
