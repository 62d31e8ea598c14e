"""Run every panel's query against a real InfluxDB, with Grafana's macros expanded as Grafana
would expand them (`wardstream dashboards check`): the way to see a dashboard's data where no
Grafana runs, and what the tests use to prove that every panel returns data after a demo run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dashboards.build import build_all, panel_queries
from wardstream.influxq import query


@dataclass(frozen=True)
class PanelResult:
    dashboard: str
    panel: str
    query: str
    series: int
    values: int  # non-null values over every series and field
    error: str = ""

    @property
    def events_only(self) -> bool:
        """A panel over events that a run may not have: alarm transitions, their deliveries (none
        without subscribers), discharges, fidelity holds (none without a ventricular or asystole
        alarm). Empty on a quiet run, and that is not a fault."""
        return re.search(r'FROM "(alarm|alarm_delivery|stay|fidelity_hold)"(\s|$)', self.query) is not None


def expand(q: str, beds: list[str], range_s: int = 3600, interval_ms: int = 2000) -> str:
    """Grafana's expansion of ``$timeFilter``, ``$__interval(_ms)`` and a regex ``$bed``."""
    bed_re = "(" + "|".join(re.escape(b) for b in beds) + ")" if beds else ".*"
    return (q.replace("$timeFilter", f"time >= now() - {range_s}s")
            .replace("$__interval_ms", str(interval_ms))
            .replace("$__interval", f"{interval_ms}ms")
            .replace("$bed", bed_re))


def _time_from(q: str, panel: dict) -> int | None:
    tf = panel.get("timeFrom", "")
    m = re.fullmatch(r"(\d+)([smh])", tf)
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)] if m else None


def check(settings, beds: list[str], range_s: int = 3600, interval_ms: int = 2000,
          strip_range_s: int | None = None) -> list[PanelResult]:
    """One `PanelResult` per query of every generated dashboard. ``strip_range_s`` overrides the
    waveform panels' own short window (their ``timeFrom``) for runs that ended a while ago."""
    out = []
    for name, d in build_all().items():
        panels = {p["title"]: p for p in d["panels"]}
        for title, q in panel_queries(d):
            rs = range_s
            own = _time_from(q, panels.get(title, {}))
            if own is not None:
                rs = strip_range_s or own
            try:
                series = query(settings, expand(q, beds, rs, interval_ms))
                n = sum(1 for s in series for row in s["values"] for v in row[1:] if v is not None)
                out.append(PanelResult(name, title, q, len(series), n))
            except Exception as exc:
                out.append(PanelResult(name, title, q, 0, 0, error=str(exc)))
    return out
