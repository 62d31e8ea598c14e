import numpy as np
import pytest

from device_sim.sources import SyntheticBed
from device_sim.ward import Device, RawEncoder
from processors.bed import BedState, process_frame
from processors.decode import NoDecoder, reconstruct
from processors.vitals import clean_rr, ecg_quality, eeg_band_powers, hrv
from stream.wire import RAW_LEVEL, REGISTRY, Channel, CodecSpec, Frame, LevelSpec, Modality, decode_frame

FS = 128


def test_hrv_of_a_known_series():
    rr = np.array([1.0, 1.1, 0.9, 1.0, 1.1, 0.9, 1.0] * 5)
    beats = np.cumsum(rr)
    out = hrv(beats, beats[-1] + 0.1)
    nn = rr[1:][beats[1:] > beats[-1] + 0.1 - 60]
    assert out["sdnn_ms"] == pytest.approx(np.std(clean_rr(np.diff(beats)), ddof=1) * 1000)
    assert out["rmssd_ms"] == pytest.approx(np.sqrt(np.mean(np.diff(clean_rr(np.diff(beats))) ** 2)) * 1000)
    assert 55 <= out["hr_bpm"] <= 67
    assert nn.size > 0


def test_clean_rr_drops_ectopic_and_missed():
    rr = np.array([0.8, 0.8, 0.5, 1.1, 0.8, 1.6, 0.8])
    assert set(np.round(clean_rr(rr), 2)) == {0.8}


def test_quality_flat_noise_and_clean():
    src = SyntheticBed(2, seed=0, amplitude_mv=1.2)
    clean = src.next_window()[0]
    assert ecg_quality(clean, FS) > 0.6
    assert ecg_quality(np.zeros(256), FS) == 0.0
    assert ecg_quality(np.full(256, np.nan), FS) == 0.0
    rng = np.random.default_rng(0)
    assert ecg_quality(rng.standard_normal(256), FS) < 0.6


def test_eeg_band_powers_find_alpha():
    t = np.arange(256) / FS
    p = eeg_band_powers(30 * np.sin(2 * np.pi * 10 * t), FS)
    assert max(p, key=p.get) == "alpha"
    assert p["alpha"] == pytest.approx(30 ** 2 / 2, rel=0.15)  # power of a sine: A²/2


def _frames(bed=5, n=40, seq0=0):
    dev = Device(bed, SyntheticBed(bed, seed=0), 1_800_000_000_000_000, RawEncoder(), None, seq=seq0)
    out = []
    for _ in range(n):
        raw, _ = dev.next_frame()
        out.append((decode_frame(raw), len(raw)))
    return out


def _run(state, frames):
    pts = []
    for fr, n in frames:
        state, res = process_frame(state, fr, reconstruct(fr), n)
        pts.extend(res.points)
    return state, pts


def test_process_frame_is_deterministic_and_replays_are_skipped():
    frames = _frames()
    s1, p1 = _run(BedState(), frames)
    s2, p2 = _run(BedState(), frames)
    assert p1 == p2
    # restore mid-stream from serialised state: identical points from there on
    mid, pa = _run(BedState(), frames[:20])
    restored = BedState.from_bytes(mid.to_bytes())
    _, pb = _run(restored, frames[20:])
    assert pa + pb == p1
    # a replay of already processed windows yields nothing and leaves the state alone
    again, pr = _run(BedState.from_bytes(s1.to_bytes()), frames[10:15])
    assert pr == [] and again.last_seq == s1.last_seq
    kinds = {p.split(",")[0].split(" ")[0] for p in p1}
    assert {"vitals", "eeg_bands", "bandwidth", "frame", "beat"} <= kinds
    hr = [p for p in p1 if p.startswith("vitals") and "hr_bpm" in p]
    assert len(hr) >= 35


def test_gap_and_device_restart():
    frames = _frames(n=12)
    st, _ = _run(BedState(), frames[:5])
    st, res = process_frame(st, frames[8][0], reconstruct(frames[8][0]), frames[8][1])
    assert res.gap == 3 and st.gaps == 3
    # the device reboots: sequence restarts at 0 with a later clock -> new stream, not a replay
    fr, n = _frames(n=1)[0]
    later = Frame(fr.bed_id, 0, fr.t_start_us + 10**9, fr.fs, fr.n_samples, fr.model_id, fr.channels)
    st, res = process_frame(st, later, reconstruct(later), n)
    assert not res.replay and st.restarts == 1 and st.last_seq == 0


def test_a_new_stay_starts_a_new_stream_without_losing_exactly_once():
    """After `end_stay` (a discharge) the bed keeps nothing of the patient's signal — the next
    window's first beat has no RR interval reaching back into the last stay, and its rhythm input
    waits for 10 s of the new one — windows skipped meanwhile are not a gap, and a redelivered
    window of the last stay is still recognised as already written."""
    frames = _frames(n=20)
    st, _ = _run(BedState(), frames[:8])
    assert st.beats and len(st.ecg_buf) and st.qrs is not None
    st.audit_res, st.slack_sent = [0.1, 0.3], 0.2
    st.end_stay(1_234)
    st = BedState.from_bytes(st.to_bytes())  # the worker stores it; the next batch reads it back
    assert st.discharged_ms == 1_234 and not st.beats and not len(st.ecg_buf) and st.qrs is None
    assert st.audit_res == [] and st.slack_sent == 0.0 and st.last_seq == 7
    _, again = process_frame(st, frames[7][0], reconstruct(frames[7][0]), frames[7][1])
    assert again.replay
    st, res = process_frame(st, frames[11][0], reconstruct(frames[11][0]), frames[11][1])
    assert res.gap == 0 and st.gaps == 0 and st.discharged_ms == 0 and not res.replay
    assert res.classify.rhythm is None and len(st.ecg_buf) == frames[11][0].n_samples
    beats = [p for p in res.points if p.startswith("beat,")]
    assert beats and "rr_ms" not in beats[0]
    st, r9 = process_frame(st, frames[9][0], reconstruct(frames[9][0]), frames[9][1])
    assert r9.late and r9.points  # skipped at the change of stay, arriving now: written once, late
    st, again9 = process_frame(st, frames[9][0], reconstruct(frames[9][0]), frames[9][1])
    assert again9.replay


def test_vq_level_without_decoder_is_a_frame_error():
    spec = CodecSpec(4242, "test-vq", {0: RAW_LEVEL, 1: LevelSpec(1, 32, 1024)})
    REGISTRY[4242] = spec
    try:
        fr = Frame(1, 0, 0, FS, 256, 4242, (Channel(Modality.ECG, 1, 1.0, 0.0, np.zeros(32, np.uint16)),))
        with pytest.raises(NoDecoder):
            reconstruct(fr)
    finally:
        del REGISTRY[4242]


def test_batch_features_equal_single_window_features():
    from processors.vitals import ecg_quality_batch, eeg_band_powers_batch

    rng = np.random.default_rng(3)
    wins = [SyntheticBed(b, seed=1).next_window() for b in range(5)]
    ecg = np.stack([w[0] for w in wins] + [np.zeros(256), rng.standard_normal(256),
                                            np.full(256, np.nan), np.repeat([0.0, 1.0], 128)])
    q = ecg_quality_batch(ecg, FS)
    assert np.allclose(q, [ecg_quality(row, FS) for row in ecg])
    eeg = np.stack([w[1] for w in wins])
    bands = eeg_band_powers_batch(eeg, FS)
    for i, row in enumerate(eeg):
        single = eeg_band_powers(row, FS)
        assert all(np.isclose(bands[k][i], v) for k, v in single.items())


def test_batch_features_give_the_same_points():
    from processors.bed import batch_features

    frames = _frames(n=15)
    _, plain = _run(BedState(), frames)
    sigs = [reconstruct(fr) for fr, _ in frames]
    feats = batch_features(sigs, FS)
    st, pts = BedState(), []
    for (fr, n), sig, f in zip(frames, sigs, feats):
        st, res = process_frame(st, fr, sig, n, f)
        pts.extend(res.points)
    assert pts == plain


def test_a_state_in_the_json_form_of_older_workers_is_read_and_the_new_form_is_smaller():
    """A changelog written before the compact form (JSON, buffers in base64) still restores the
    same state, so a worker upgraded in place continues its beds."""
    import base64
    import json

    frames = _frames()
    mid, _ = _run(BedState(), frames[:20])
    legacy = json.dumps({**mid._fields(), "eb": base64.b64encode(mid.ecg_buf.astype("<f2").tobytes()).decode(),
                         "ab": base64.b64encode(mid.audit_buf.astype("<f2").tobytes()).decode()},
                        separators=(",", ":")).encode()
    a, b = BedState.from_bytes(legacy), BedState.from_bytes(mid.to_bytes())
    assert a._fields() == b._fields() == mid._fields()
    assert a.ecg_buf.tobytes() == b.ecg_buf.tobytes() == mid.ecg_buf.tobytes() and len(mid.ecg_buf) > 0
    _, pa = _run(a, frames[20:])
    _, pb = _run(b, frames[20:])
    assert pa == pb and pa
    assert len(mid.to_bytes()) < 0.75 * len(legacy)


def test_window_redelivered_after_a_later_one_is_processed_not_skipped():
    frames = _frames(n=12)
    st, _ = _run(BedState(), frames[:5])
    # seq 6 arrives before seq 5 (stale buffer after a rebalance re-seek), then seq 5, then 6 again
    st, r6 = process_frame(st, frames[6][0], reconstruct(frames[6][0]), frames[6][1])
    assert r6.gap == 1 and r6.points
    st, r5 = process_frame(st, frames[5][0], reconstruct(frames[5][0]), frames[5][1])
    assert r5.late and not r5.replay and any(p.startswith("frame,") for p in r5.points)
    st, again5 = process_frame(st, frames[5][0], reconstruct(frames[5][0]), frames[5][1])
    st, again6 = process_frame(st, frames[6][0], reconstruct(frames[6][0]), frames[6][1])
    assert again5.replay and again6.replay
    restored = BedState.from_bytes(st.to_bytes())
    assert restored.done == st.done and restored.late == 1
    _, r7 = process_frame(restored, frames[7][0], reconstruct(frames[7][0]), frames[7][1])
    assert r7.gap == 0 and not r7.late and not r7.replay


def test_a_lossless_raw_window_gives_the_same_signals_and_counts_its_real_bits():
    """A device that lossless-codes its raw level (Settings.raw_lossless) sends the same samples
    in about half the bytes; the bandwidth points count the bits actually sent."""
    out = {}
    for ll in (False, True):
        dev = Device(9, SyntheticBed(9, seed=4), 1_800_000_000_000_000, RawEncoder(), None, lossless=ll)
        raw, _ = dev.next_frame()
        fr = decode_frame(raw)
        _, res = process_frame(BedState(), fr, reconstruct(fr), len(raw))
        bw = {p.split("modality=")[1].split(" ")[0]: int(p.split("wire_bits=")[1].split("i")[0])
              for p in res.points if p.startswith("bandwidth")}
        out[ll] = (len(raw), bw, [p for p in res.points if p.startswith(("vitals", "eeg_bands"))])
    assert out[True][2] == out[False][2]  # same samples, same vitals
    assert out[False][1] == {"ecg": 8 * 521, "eeg": 8 * 521}  # wire v2: level byte, f32 side, samples
    assert sum(out[True][1].values()) == 8 * (out[True][0] - 22)  # every section bit, header and CRC apart
    assert out[True][0] < 0.75 * out[False][0]


def test_an_entropy_coded_frame_counts_its_real_bits_as_integers():
    """Sections entropy-coded on the wire (flag bit 6) count the bits actually sent, as the same
    integer field every other frame writes (InfluxDB keeps one type per field)."""
    from wardmodels import DD_MODEL
    from wardmodels.wire_codec import CodecEncoder, register_deployed

    register_deployed()
    dev = Device(9, SyntheticBed(9, seed=4), 1_800_000_000_000_000, CodecEncoder(DD_MODEL, 1, "fp32"), None,
                 coded=True)
    for _ in range(3):
        raw, sent = dev.next_frame()
    fr = decode_frame(raw)
    assert fr.coded and sent.coded
    _, res = process_frame(BedState(), fr, reconstruct(fr), len(raw))
    bw = [p for p in res.points if p.startswith("bandwidth")]
    bits = [int(p.split("wire_bits=")[1].split("i")[0]) for p in bw]  # "...i": an integer field
    assert len(bits) == 2 and sum(bits) == 8 * (len(raw) - 22) and all(b < 8 * 66 for b in bits)
