"""The open alarms of a ward as the alarms topic says (the latest transition per bed and
condition), with live listeners: what every worker's API serves (`processors.alarm_service`) and
`wardstream status` counts. No Faust, no Kafka client: it is fed the topic's events."""

from __future__ import annotations

import asyncio


class AlarmView:
    """Open alarms (latest transition per bed and condition) and live listeners."""

    def __init__(self) -> None:
        self.alarms: dict[tuple[int, str], dict] = {}
        self.listeners: set[asyncio.Queue] = set()

    def apply(self, ev: dict) -> None:
        for q in list(self.listeners):
            if q.qsize() < 1000:  # a listener that stopped reading loses events, not memory
                q.put_nowait(ev)
        if ev["condition"] == "delivery_failed":  # a one-shot technical notice, not a bed state
            return
        k = (ev["bed"], ev["condition"])
        if ev["state"] == "resolved":
            self.alarms.pop(k, None)
            return
        cur = self.alarms.get(k)
        same = cur is not None and cur["episode"] == ev["episode"]
        status = "acknowledged" if ev["state"] == "acknowledged" or (same and cur["status"] == "acknowledged") \
            else "active"
        self.alarms[k] = {**ev, "status": status, "onset_ms": cur["onset_ms"] if same else ev["t_ms"]}

    def visible(self, principal, bed: int | None = None) -> list[dict]:
        return sorted((a for a in self.alarms.values() if principal.may_see(a["ward"])
                       and (bed is None or a["bed"] == bed)),
                      key=lambda a: (["high", "medium", "low", "technical"].index(a["priority"]), a["onset_ms"]))
