"""Read back from InfluxDB (InfluxQL over /query, works on 1.x and on 2.x through DBRP)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

from wardstream.settings import Settings


def query(s: Settings, q: str, timeout: float = 30.0) -> list[dict]:
    """Run InfluxQL; returns the series of the first statement (``[]`` when empty)."""
    params = {"db": s.influx_db, "q": q, "epoch": "ms"}
    req = urllib.request.Request(s.influx_url.rstrip("/") + "/query?" + urllib.parse.urlencode(params))
    if s.influx_token:
        req.add_header("Authorization", f"Token {s.influx_token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = json.loads(r.read())
    res = body.get("results", [{}])[0]
    if "error" in res:
        raise RuntimeError(f"InfluxQL error for {q!r}: {res['error']}")
    return res.get("series", [])


def query_rows(s: Settings, q: str) -> list[dict]:
    """`query` flattened: one dict per point, its series' tags and its columns."""
    return [{**ser.get("tags", {}), **dict(zip(ser["columns"], v))} for ser in query(s, q) for v in ser["values"]]


def frame_seqs(s: Settings, t0_ms: int, t1_ms: int, beds: list[int] | None = None) -> dict[int, list[int]]:
    """bed -> list of ``seq`` values of every `frame` point in [t0, t1] (one per stored window)."""
    out: dict[int, list[int]] = {}
    where = f"time >= {t0_ms}ms AND time <= {t1_ms}ms"
    if beds is not None and len(beds) <= 50:
        where += " AND (" + " OR ".join(f"bed = '{b}'" for b in beds) + ")"
    for series in query(s, f'SELECT "seq" FROM "frame" WHERE {where} GROUP BY "bed"'):
        bed = int(series["tags"]["bed"])
        out.setdefault(bed, []).extend(int(v[1]) for v in series["values"])
    return out


def missing_windows(accepted: dict[int, list[int]], stored: dict[int, list[int]]) -> list[tuple[int, int]]:
    """(bed, seq) of every accepted window that has no point in InfluxDB."""
    out = []
    for bed, seqs in sorted(accepted.items()):
        hs = set(stored.get(bed, []))
        out.extend((bed, q) for q in sorted(set(seqs)) if q not in hs)
    return out


def exactly_once(accepted: dict[int, list[int]], stored: dict[int, list[int]]) -> tuple[int, int]:
    """(windows missing, windows duplicated) of accepted windows against stored points."""
    dup = sum(len(have) - len(set(have)) for bed, have in stored.items() if bed in accepted)
    return len(missing_windows(accepted, stored)), dup
