"""Retention policies and continuous downsampling in InfluxDB 1.x, created by the worker.

Three retention policies on the wardstream database:

* ``live`` (default, 7 days): every measurement at full resolution; what the dashboards read.
* ``strip`` (2 hours): the decoded ECG/EEG waveform strips (``waveform``, downsampled), the only
  measurement large enough to need a short life (200 beds at the default 32 Hz: 6,400 points/s,
  each with the ECG and EEG value of its sample time).
* ``trend`` (2 years): one-minute aggregates of the clinical and bandwidth measurements, written
  by continuous queries from ``live``, and every alarm transition (written there directly: an
  alarm history must outlive a week).

InfluxDB 2.x has buckets instead (retention per bucket, managed by whoever runs it): with the
v2 API nothing is created, and ``strip``/``trend`` points go to the one configured bucket.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetentionPolicy:
    name: str
    duration: str
    shard: str
    default: bool = False


LIVE = RetentionPolicy("live", "7d", "1d", default=True)
LIVE_SECONDS = 7 * 86400
STRIP = RetentionPolicy("strip", "2h", "1h")
STRIP_SECONDS = 2 * 3600
TREND = RetentionPolicy("trend", "730d", "7d")
TREND_SECONDS = 730 * 86400
POLICIES = (LIVE, STRIP, TREND)

# measurement -> aggregate of every field, one minute per point, into trend
DOWNSAMPLE = {
    "vitals": "mean(*)",
    "eeg_bands": "mean(*)",
    "rhythm": "mean(*)",
    "bandwidth": "sum(*)",
    "frame": "sum(*)",
    "alarm_level": "max(*)",
    "pipeline": "last(*)",
    "task_error": "mean(*)",
}
TREND_EVERY = "1m"


def cq_name(measurement: str) -> str:
    return f"cq_{measurement}_{TREND_EVERY}"


def cq_select(db: str, measurement: str, where: str = "") -> str:
    """The continuous query's body: also runnable by hand over a time range (``where``)."""
    w = f" WHERE {where}" if where else ""
    return (f'SELECT {DOWNSAMPLE[measurement]} INTO "{db}"."{TREND.name}".:MEASUREMENT '
            f'FROM "{db}"."{LIVE.name}"."{measurement}"{w} GROUP BY time({TREND_EVERY}), *')


def statements(db: str, existing_rps: set[str], existing_cqs: set[str]) -> list[str]:
    """InfluxQL that brings the database to the policies above (idempotent given what exists)."""
    out = []
    for rp in POLICIES:
        verb = "ALTER" if rp.name in existing_rps else "CREATE"
        out.append(f'{verb} RETENTION POLICY "{rp.name}" ON "{db}" DURATION {rp.duration} '
                   f'REPLICATION 1 SHARD DURATION {rp.shard}' + (" DEFAULT" if rp.default else ""))
    for m in DOWNSAMPLE:
        if cq_name(m) not in existing_cqs:
            out.append(f'CREATE CONTINUOUS QUERY "{cq_name(m)}" ON "{db}" BEGIN {cq_select(db, m)} END')
    return out
