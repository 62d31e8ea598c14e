"""The sink against the real influxd: writes, idempotent rewrites, and no loss across an outage."""

import asyncio
import time

import pytest

from processors.influx_sink import InfluxSink, SinkRejected, line
from wardstream import services
from wardstream.influxq import query

pytestmark = pytest.mark.servers

T0 = int(time.time() * 1000) // 1000 * 1000 - 3_600_000  # an hour ago: inside the live policy


def test_line_protocol_escaping_and_types():
    assert line("m x", {"bed": "a,b=c d"}, {"f": 1, "g": 2.5, "ok": True, "s": 'q"'}, 7) == \
        'm\\ x,bed=a\\,b\\=c\\ d f=1i,g=2.5,ok=true,s="q\\"" 7'
    assert line("m", {}, {"a": float("nan"), "b": 1.0}, 1) == "m b=1 1"
    with pytest.raises(ValueError):
        line("m", {}, {"a": float("inf")}, 1)


def test_write_and_idempotent_rewrite(ward_settings):
    s = ward_settings

    async def go():
        sink = InfluxSink(s)
        await sink.ensure_database()
        for _ in range(2):  # the same window twice lands on the same point
            for i in range(3):
                sink.add(line("vitals", {"bed": "1"}, {"hr_bpm": 60.0 + i}, T0 + 2000 * i))
            assert await sink.flush() == 3
        await sink.close()
        return sink.stats

    stats = asyncio.run(go())
    rows = query(s, 'SELECT "hr_bpm" FROM "vitals"')[0]["values"]
    assert [r[1] for r in rows] == [60.0, 61.0, 62.0]
    assert stats.points_written == 6 and stats.write_failures == 0


def test_nothing_lost_while_influxdb_is_down(servers, ward_settings):
    s = ward_settings
    influx = services.Influx(servers)

    async def go():
        sink = InfluxSink(s, max_backoff_s=0.5)
        await sink.ensure_database()
        influx.down()
        for i in range(100):
            sink.add(line("vitals", {"bed": "2"}, {"hr_bpm": float(i)}, T0 + i))
        flush = asyncio.ensure_future(sink.flush())
        await asyncio.sleep(2.0)
        assert not flush.done()  # back-pressure: still retrying
        influx.up()
        await asyncio.wait_for(flush, 30)
        await sink.close()
        return sink.stats

    try:
        stats = asyncio.run(go())
    finally:
        influx.up()
    assert stats.write_failures >= 2 and stats.points_written == 100
    assert query(s, 'SELECT count("hr_bpm") FROM "vitals"')[0]["values"][0][1] == 100


def test_bad_points_are_rejected_loudly(ward_settings):
    async def go():
        sink = InfluxSink(ward_settings)
        await sink.ensure_database()
        sink.add("this is not line protocol")
        try:
            await sink.flush()
        finally:
            await sink.close()

    with pytest.raises(SinkRejected, match="HTTP 400"):
        asyncio.run(go())


def test_points_beyond_retention_are_counted_not_fatal(ward_settings):
    s = ward_settings
    old = T0 - 30 * 86_400_000  # 30 days ago: older than the 7-day live policy

    async def go():
        sink = InfluxSink(s)
        await sink.ensure_database()
        sink.add(line("vitals", {"bed": "3"}, {"hr_bpm": 70.0}, old))
        sink.add(line("vitals", {"bed": "3"}, {"hr_bpm": 71.0}, T0))
        await sink.flush()
        await sink.close()
        return sink.stats

    stats = asyncio.run(go())
    assert stats.dropped_beyond_retention == 1 and stats.write_failures == 0
    assert [r[1] for r in query(s, 'SELECT "hr_bpm" FROM "vitals"')[0]["values"]] == [71.0]
