"""Retention policies and continuous downsampling, created on the real influxd by the sink."""

from __future__ import annotations

import asyncio
import time

import pytest

from processors import retention
from processors.influx_sink import InfluxSink, line
from processors.stages import waveform_points
from stream.wire import Channel, Frame, Modality
from wardstream.influxq import query

import numpy as np


@pytest.mark.servers
def test_policies_queries_and_a_downsampling_pass(ward_settings):
    s = ward_settings
    now_ms = int(time.time() * 1000) // 60_000 * 60_000 - 120_000  # two whole minutes ago

    async def go():
        sink = InfluxSink(s)
        await sink.ensure_database()
        await sink.ensure_database()  # idempotent: policies altered, queries not duplicated
        for i in range(60):
            sink.add(line("vitals", {"bed": "7"}, {"hr_bpm": 60.0 + i % 2, "sqi": 0.9}, now_ms + i * 1000))
        sink.add(line("waveform", {"bed": "7"}, {"ecg": 0.5}, now_ms), rp=retention.STRIP.name)
        await sink.flush()
        await sink.close()

    asyncio.run(go())
    rps = {v[0]: v for ser in query(s, f'SHOW RETENTION POLICIES ON "{s.influx_db}"') for v in ser["values"]}
    assert rps["live"][1] == "168h0m0s" and rps["live"][4] is True
    assert rps["strip"][1] == "2h0m0s" and rps["trend"][1] == "17520h0m0s"
    cqs = [v[0] for ser in query(s, "SHOW CONTINUOUS QUERIES") if ser["name"] == s.influx_db for v in ser["values"]]
    assert sorted(cqs) == sorted(retention.cq_name(m) for m in retention.DOWNSAMPLE)
    # the live policy is the default: unqualified reads see the vitals; the strip has its point
    assert query(s, 'SELECT count("hr_bpm") FROM "vitals"')[0]["values"][0][1] == 60
    assert query(s, 'SELECT "ecg" FROM "strip"."waveform"')[0]["values"][0][1] == 0.5
    assert query(s, 'SELECT "ecg" FROM "waveform"') == []
    # the continuous query's own statement over the past minute: one 1-min mean in trend
    query(s, retention.cq_select(s.influx_db, "vitals", f"time >= {now_ms}ms AND time < {now_ms + 60_000}ms"))
    rows = query(s, 'SELECT "mean_hr_bpm", "mean_sqi" FROM "trend"."vitals" GROUP BY "bed"')
    assert rows[0]["tags"] == {"bed": "7"} and rows[0]["values"][0][1:] == pytest.approx([60.5, 0.9])


def test_waveform_points_block_average_to_the_strip_rate():
    x = np.arange(256, dtype=np.float64)
    frame = Frame(5, 3, 1_000_000_000, 128, 256, 0, (Channel(Modality.ECG, 0, 1.0, 0.0, np.zeros(256, np.int16)),))
    pts = waveform_points(frame, {Modality.ECG: x}, 64)
    assert len(pts) == 128
    assert pts[0] == "waveform,bed=5 ecg=0.5 1000000"
    assert pts[1].endswith(" 1000015") and pts[-1].startswith("waveform,bed=5 ecg=254.5 ")
    assert waveform_points(frame, {Modality.ECG: x}, 0) == []
    assert waveform_points(frame, {Modality.ECG: x}, 48) == []  # not a divisor of 128 Hz
    # a non-finite block is left out (line protocol has no NaN), its neighbours keep their times
    x[2:4] = np.nan
    pts = waveform_points(frame, {Modality.ECG: x / 3}, 64)
    assert len(pts) == 127 and pts[0] == "waveform,bed=5 ecg=0.16667 1000000"
    assert pts[1] == "waveform,bed=5 ecg=1.5 1000031"  # block 2 (samples 4, 5)


def test_waveform_points_carry_both_modalities_in_one_point():
    x = np.arange(256, dtype=np.float64)
    frame = Frame(5, 3, 1_000_000_000, 128, 256, 0, (Channel(Modality.ECG, 0, 1.0, 0.0, np.zeros(256, np.int16)),))
    pts = waveform_points(frame, {Modality.EEG: -10 * x, Modality.ECG: x}, 32)
    assert len(pts) == 64
    assert pts[0] == "waveform,bed=5 ecg=1.5,eeg=-15 1000000"
    assert pts[1] == "waveform,bed=5 ecg=5.5,eeg=-55 1000031"
    # a value that is not finite leaves its field out; a point with no field is not written
    ecg, eeg = x.copy(), -10 * x
    ecg[:4] = np.nan
    eeg[:8] = np.inf
    pts = waveform_points(frame, {Modality.ECG: ecg, Modality.EEG: eeg}, 32)
    assert len(pts) == 63 and pts[0] == "waveform,bed=5 ecg=5.5 1000031"
    assert pts[1] == "waveform,bed=5 ecg=9.5,eeg=-95 1000062"