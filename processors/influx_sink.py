"""Batching InfluxDB sink: line protocol over the v1 (`/write`) or v2 (`/api/v2/write`) API.

``add()`` per point, ``await flush()`` before the Kafka offsets of those points are committed.
Transient failures (connection refused, timeouts, 429, 5xx) are retried with exponential back-off
for as long as it takes: the caller does not consume more input meanwhile (back-pressure), so
nothing is lost while InfluxDB is down. A 4xx other than 429 means the points themselves are bad
(a programming error) and raises `SinkRejected`. Points are keyed by series and timestamp, so a
replayed window overwrites itself instead of adding a second point.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

import aiohttp

from processors import retention
from wardstream.settings import Settings

log = logging.getLogger("wardstream.influx")


class SinkRejected(RuntimeError):
    pass


def _esc_tag(v: str) -> str:
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def line(measurement: str, tags: dict[str, str], fields: dict[str, float | int | str | bool],
         ts_ms: int) -> str:
    """One line of line protocol; ints get the ``i`` suffix, non-finite floats are dropped.

    Floats are written with 7 significant digits: more than any measurement here carries, and
    it makes a replayed window's values byte-identical whatever batch it was computed in.
    """
    t = ",".join(f"{_esc_tag(k)}={_esc_tag(str(v))}" for k, v in sorted(tags.items()))
    parts = []
    for k, v in fields.items():
        if isinstance(v, bool):
            parts.append(f"{_esc_tag(k)}={'true' if v else 'false'}")
        elif isinstance(v, int):
            parts.append(f"{_esc_tag(k)}={v}i")
        elif isinstance(v, float):
            if v == v and abs(v) != float("inf"):
                parts.append(f"{_esc_tag(k)}={v:.7g}")
        else:
            s = str(v).replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{_esc_tag(k)}="{s}"')
    if not parts:
        raise ValueError(f"point {measurement} has no finite field")
    head = _esc_tag(measurement) + ("," + t if t else "")
    return f"{head} {','.join(parts)} {ts_ms}"


_BEYOND_RP = re.compile(r"points beyond retention policy dropped=(\d+)")


@dataclass
class SinkStats:
    points_written: int = 0
    batches: int = 0
    write_failures: int = 0
    last_error: str = ""
    retry_seconds: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)
    # points InfluxDB refused as older than their retention policy (the rest of the batch is
    # written); the worker dead-letters such windows first, so this counts what slipped past
    dropped_beyond_retention: int = 0


class InfluxSink:
    def __init__(self, settings: Settings, batch_size: int = 5000, max_backoff_s: float = 5.0,
                 session: aiohttp.ClientSession | None = None):
        self.s = settings
        self.batch_size = batch_size
        self.max_backoff_s = max_backoff_s
        self._lines: list[str] = []
        self._rp_lines: dict[str, list[str]] = {}  # points for a named retention policy
        self._lock = asyncio.Lock()
        self._ready_lock = asyncio.Lock()
        self._ready = False
        self._session = session
        self.stats = SinkStats()
        base = settings.influx_url.rstrip("/")
        if settings.influx_api == "v2":
            self.url = f"{base}/api/v2/write"
            self.params = {"org": settings.influx_org, "bucket": settings.influx_bucket, "precision": "ms"}
        else:
            self.url = f"{base}/write"
            self.params = {"db": settings.influx_db, "precision": "ms"}
            if settings.influx_rp:
                self.params["rp"] = settings.influx_rp
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.influx_token:
            self.headers["Authorization"] = f"Token {settings.influx_token}"

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def add(self, point_line: str, rp: str | None = None) -> None:
        """Buffer a point; ``rp`` names a retention policy (`processors.retention`) other than the
        default. On the v2 API there are no policies: every point goes to the bucket."""
        if rp is None or self.s.influx_api == "v2":
            self._lines.append(point_line)
        else:
            self._rp_lines.setdefault(rp, []).append(point_line)

    def __len__(self) -> int:
        return len(self._lines) + sum(len(v) for v in self._rp_lines.values())

    async def ready(self) -> None:
        """`ensure_database` once per sink: writers await it before their first flush, so no
        point is sent to a database or retention policy that does not exist yet."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await self.ensure_database()
                self._ready = True

    async def ensure_database(self, timeout_s: float = 60.0) -> None:
        """v1 only: ``CREATE DATABASE`` (idempotent), retried until InfluxDB has it.

        InfluxQL answers HTTP 200 even when a statement fails (the error is in the JSON body),
        and a just-started influxd can answer /ping before its meta store is open: so the
        database is looked up again after creating it.
        """
        if self.s.influx_api != "v1":
            return
        url = self.s.influx_url.rstrip("/") + "/query"
        auth = {k: v for k, v in self.headers.items() if k == "Authorization"}
        deadline = time.monotonic() + timeout_s
        while True:
            await self._retry(lambda sess: sess.post(url, data={"q": f'CREATE DATABASE "{self.s.influx_db}"'},
                                                     headers=auth), what="create database")
            sess = await self._sess()
            try:
                async with sess.get(url, params={"q": "SHOW DATABASES"}, headers=auth) as resp:
                    body = await resp.json(content_type=None)
                names = [v[0] for series in body["results"][0].get("series", []) for v in series["values"]]
                if self.s.influx_db in names:
                    if self.s.influx_retention:
                        await self.ensure_retention()
                    return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, KeyError, ValueError) as exc:
                log.warning("checking database %s: %s", self.s.influx_db, exc)
            if time.monotonic() > deadline:
                raise SinkRejected(f"database {self.s.influx_db!r} still missing after {timeout_s:.0f}s")
            await asyncio.sleep(0.2)

    async def _query(self, q: str, method: str = "post") -> dict:
        url = self.s.influx_url.rstrip("/") + "/query"
        auth = {k: v for k, v in self.headers.items() if k == "Authorization"}
        sess = await self._sess()
        req = sess.post(url, data={"q": q, "db": self.s.influx_db}, headers=auth) if method == "post" else \
            sess.get(url, params={"q": q, "db": self.s.influx_db}, headers=auth)
        async with req as resp:
            body = await resp.json(content_type=None)
        res = body.get("results", [{}])[0]
        if resp.status >= 300 or "error" in res:
            raise SinkRejected(f"InfluxQL {q[:120]!r}: HTTP {resp.status}: {res.get('error', body)}")
        return res

    async def ensure_retention(self) -> None:
        """v1: the retention policies and continuous queries of `processors.retention`."""
        db = self.s.influx_db
        rps = {v[0] for s in (await self._query(f'SHOW RETENTION POLICIES ON "{db}"', "get")).get("series", [])
               for v in s.get("values", [])}
        cqs = {v[0] for s in (await self._query("SHOW CONTINUOUS QUERIES", "get")).get("series", [])
               if s.get("name") == db for v in s.get("values", [])}
        for q in retention.statements(db, rps, cqs):
            await self._query(q)

    async def flush(self) -> int:
        """Write every buffered point; returns how many. Retries transient failures forever."""
        await self.ready()
        async with self._lock:
            return await self._flush_locked()

    async def _flush_locked(self) -> int:
        n = await self._write(self._lines, self.params)
        for rp, lines in self._rp_lines.items():
            n += await self._write(lines, {**self.params, "rp": rp})
        return n

    async def _write(self, lines: list[str], params: dict) -> int:
        n = 0
        while lines:
            chunk = lines[: self.batch_size]
            body = ("\n".join(chunk)).encode()
            await self._retry(lambda sess: sess.post(self.url, params=params, data=body,
                                                     headers=self.headers), what=f"write {len(chunk)} points")
            del lines[: len(chunk)]
            self.stats.points_written += len(chunk)
            self.stats.batches += 1
            n += len(chunk)
        return n

    async def _retry(self, request, what: str) -> None:
        delay = 0.05
        t0 = time.monotonic()
        while True:
            try:
                sess = await self._sess()
                async with request(sess) as resp:
                    status = resp.status
                    text = await resp.text() if status >= 300 else ""
                self.stats.by_status[str(status)] = self.stats.by_status.get(str(status), 0) + 1
                if status < 300:
                    if time.monotonic() - t0 > 0.5:
                        log.warning("influx %s succeeded after %.1fs of retries", what, time.monotonic() - t0)
                    self.stats.retry_seconds += time.monotonic() - t0 if delay > 0.05 else 0.0
                    return
                m = _BEYOND_RP.search(text) if status == 400 else None
                if m:  # a partial write: InfluxDB kept every other point of the batch
                    self.stats.dropped_beyond_retention += int(m.group(1))
                    log.error("influx %s: %s points older than their retention policy dropped", what, m.group(1))
                    return
                if status != 429 and status < 500:
                    raise SinkRejected(f"InfluxDB rejected {what}: HTTP {status}: {text[:300]}")
                err = f"HTTP {status}: {text[:200]}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                err = f"{type(exc).__name__}: {exc}"
            self.stats.write_failures += 1
            self.stats.last_error = err
            log.warning("influx %s failed (%s); retrying in %.2fs", what, err, delay)
            await asyncio.sleep(delay)
            delay = min(self.max_backoff_s, delay * 2)
