"""Devices that pick their level per window, against the real broker: the bound set on the control
topic takes effect within one window, and every level decodes."""

import asyncio
import time

import numpy as np
import pytest

from stream.wire import Modality, decode_frame
from wardmodels import DD_MODEL

pytestmark = pytest.mark.servers


async def _frames(s, n_expected: int):
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(s.frames_topic, bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, group_id=None)
    await c.start()
    out = []
    try:
        deadline = time.time() + 45
        while len(out) < n_expected and time.time() < deadline:
            for msgs in (await c.getmany(timeout_ms=500)).values():
                out.extend((m.timestamp, decode_frame(m.value)) for m in msgs)
    finally:
        await c.stop()
    return out


@pytest.mark.parametrize("sim_encoder, scope", [("fp32", "ward"), ("firmware", "ward"),  # the Python devices, the C firmware's
                                               ("fp32", "predictor")])
def test_bound_change_on_the_control_topic_applies_within_one_window(ward_settings, sim_encoder, scope):
    """``scope="predictor"``: the bound is set for the beds whose devices run the ward's default
    predictor (key ``ward-<its id>``), after one for another predictor that must change nothing."""
    from device_sim.control import publish
    from device_sim.ward import run_ward
    from wardmodels.runtime import load_deployed
    from wardmodels.wire_codec import decode_frames, register_deployed

    register_deployed()
    speed = 4.0  # a window every 0.5 s of wall time
    s = ward_settings.replace(codec_model=DD_MODEL, level_policy="dynamic", dd_bound=3.0, sim_encoder=sim_encoder)
    own = load_deployed(DD_MODEL).predictor.digest

    async def go():
        task = asyncio.create_task(run_ward(s, 4, 8.0, speed, source="synthetic", seed=3))
        await asyncio.sleep(2.0)
        if scope == "predictor":  # another predictor's beds: not these
            await publish(s, 1e-4, predictor="0123456789ab")
        await asyncio.sleep(2.0)
        t_pub = time.time()
        # below every calibrated bound: no VQ level is safe, send raw
        await publish(s, 1e-4, predictor=own if scope == "predictor" else None)
        rep = await task
        return t_pub, rep, await _frames(s, rep.frames_sent)

    t_pub, rep, frames = asyncio.run(go())
    assert rep.frames_failed == 0 and len(frames) == rep.frames_sent
    assert rep.bounds.applied == (2 if scope == "predictor" else 1) and not rep.bounds.rejected
    window_s = 2.0 / speed
    ecg_level = [(ts / 1000.0, f.channel(Modality.ECG).level) for ts, f in frames]
    before = [lv for t, lv in ecg_level if t < t_pub]
    after = [lv for t, lv in ecg_level if t > t_pub + 0.15 + window_s]  # poll interval + one window
    assert before and max(before) >= 3, before  # a lax bound: the low-rate levels are used
    assert after and set(after) == {0}, after
    # every frame decodes, whatever level it carries
    rec = decode_frames([f for _, f in frames])
    assert all(isinstance(r, dict) and np.isfinite(r[Modality.ECG]).all() for r in rec)


def test_a_slack_correction_on_the_control_topic_applies_to_its_bed_only(ward_settings):
    """The message the worker sends after its audits (`processors.agents.publish_slack_updates`,
    same key and value as `publish_slack`): the corrected bed goes raw within one window, the
    others keep choosing, and the bound is untouched."""
    from device_sim.control import publish_slack
    from device_sim.ward import run_ward

    speed = 4.0
    s = ward_settings.replace(codec_model=DD_MODEL, level_policy="dynamic", dd_bound=3.0)

    async def go():
        task = asyncio.create_task(run_ward(s, 3, 8.0, speed, source="synthetic", seed=5))
        await asyncio.sleep(4.0)
        t_pub = time.time()
        await publish_slack(s, {1: 10.0})  # bed 1's audits: its errors far above the predictions
        rep = await task
        return t_pub, rep, await _frames(s, rep.frames_sent)

    t_pub, rep, frames = asyncio.run(go())
    assert rep.frames_failed == 0 and len(frames) == rep.frames_sent
    assert rep.bounds.applied == 1 and rep.bounds.slacks == {1: 10.0} and rep.bounds.ward is None
    after = [(f.bed_id, f.channel(Modality.ECG).level) for ts, f in frames if ts / 1000.0 > t_pub + 0.15 + 2.0 / speed]
    assert {lv for b, lv in after if b == 1} == {0}
    assert max(lv for b, lv in after if b != 1) >= 3  # the others still use the low-rate levels


@pytest.mark.parametrize("sim_encoder", ["fp32", "firmware"])  # the firmware's: as downlink frames (flag bit 1)
def test_a_fidelity_hold_on_the_control_topic_caps_its_bed_only(ward_settings, sim_encoder):
    """The message the worker sends when a bed's ventricular alarm opens (`processors.hold`,
    `processors.agents.publish_hold_updates`): within one window the held bed sends no ECG level
    above the hold's, the others keep choosing; ending the hold gives the bed its levels back."""
    from device_sim.control import publish_holds
    from device_sim.ward import run_ward

    speed = 4.0
    s = ward_settings.replace(codec_model=DD_MODEL, level_policy="dynamic", dd_bound=3.0, sim_encoder=sim_encoder)

    async def go():
        task = asyncio.create_task(run_ward(s, 3, 10.0, speed, source="synthetic", seed=7))
        await asyncio.sleep(3.0)
        t_on = time.time()
        await publish_holds(s, {2: (1, "nsvt")})
        await asyncio.sleep(3.0)
        t_off = time.time()
        await publish_holds(s, {2: (None, "")})
        rep = await task
        return t_on, t_off, rep, await _frames(s, rep.frames_sent)

    t_on, t_off, rep, frames = asyncio.run(go())
    assert rep.frames_failed == 0 and len(frames) == rep.frames_sent
    assert rep.bounds.applied == 2 and rep.bounds.holds == {} and not rep.bounds.rejected
    lag = 0.15 + 2.0 / speed  # poll interval + one window
    lv = [(ts / 1000.0, f.bed_id, f.channel(Modality.ECG).level) for ts, f in frames]
    held = [x for t, b, x in lv if b == 2 and t_on + lag < t < t_off]
    assert held and max(held) <= 1, held
    assert max(x for t, b, x in lv if b != 2 and t > t_on + lag) >= 3  # the others still use the low-rate levels
    assert max(x for t, b, x in lv if b == 2 and t > t_off + lag) >= 3  # the hold has ended


def test_the_simulators_summary_is_json_with_the_runs_numbers():
    """`wardstream sim` prints `WardReport.summary`: JSON even when the devices pick their level
    (the report then holds their control-topic bounds), with the send delays as percentiles."""
    import json

    from device_sim.control import Bounds
    from device_sim.ward import WardReport

    rep = WardReport(frames_sent=3, frames_accepted=3, wire_bytes=300, raw_bytes=3072,
                     accepted={101: [0, 1], 102: [0]}, levels={2: 2, 0: 1}, bounds=Bounds(default=0.25),
                     send_delay_ms=[10.0, 20.0, 30.0])
    d = json.loads(json.dumps(rep.summary()))
    assert d["beds"] == 2 and d["windows_accepted"] == 3 and d["ecg_levels"] == {"0": 1, "2": 2}
    assert d["send_delay_ms"] == {"p50": 20.0, "p95": 29.0, "max": 30.0}
    assert WardReport().summary()["send_delay_ms"] is None
