"""What a bed hands the classifiers: the last 10 s for the rhythm, each beat once, restart-safe."""

import numpy as np

from device_sim.sources import SyntheticBed
from device_sim.ward import Device, RawEncoder
from processors.bed import BedState, process_frame
from processors.decode import reconstruct
from stream.wire import Modality, decode_frame
from wardmodels.classifier import (IRREGULARITY_INTERVALS, RHYTHM_SAMPLES, beat_context, beat_waves, rr_context,
                                   rr_features, rr_irregularity, rr_prematurity)
from wardmodels.frontend import filter_record


def _frames(bed=7, n=12):
    dev = Device(bed, SyntheticBed(bed, seed=3), 1_800_000_000_000_000, RawEncoder(), None)
    out = []
    for _ in range(n):
        raw, _ = dev.next_frame()
        out.append((decode_frame(raw), len(raw)))
    return out


def _step_all(frames, state=None, restore_every=False):
    state = state or BedState()
    got = []
    for fr, n in frames:
        if restore_every:
            state = BedState.from_bytes(state.to_bytes())
        state, res = process_frame(state, fr, reconstruct(fr), n)
        got.append(res.classify)
    return state, got


def test_rhythm_crop_after_ten_seconds_equals_the_filtered_stream():
    frames = _frames(n=8)
    _, got = _step_all(frames)
    assert [c.rhythm is not None for c in got] == [False] * 4 + [True] * 4
    raw = np.concatenate([reconstruct(fr)[Modality.ECG] for fr, _ in frames])
    want = filter_record(raw)  # the device front end, causal, started on the first sample
    np.testing.assert_allclose(got[-1].rhythm, want[-RHYTHM_SAMPLES:], atol=2e-3, rtol=2e-3)
    assert got[-1].rhythm_ts_ms == frames[-1][0].t_start_us // 1000


def test_every_beat_classified_once_and_restart_changes_nothing():
    frames = _frames(n=12)
    state, straight = _step_all(frames)
    _, restored = _step_all(frames, restore_every=True)
    ts = [t for c in straight for t in c.beat_ts_ms]
    assert len(ts) == len(set(ts)) and len(ts) >= 10
    assert ts == sorted(ts)
    for a, b in zip(straight, restored):
        assert a.beat_ts_ms == b.beat_ts_ms
        np.testing.assert_array_equal(a.beat_waves, b.beat_waves)
        np.testing.assert_array_equal(a.beat_ctx, b.beat_ctx)
        if a.rhythm is not None:
            np.testing.assert_array_equal(a.rhythm, b.rhythm)
    # one beat (the last) waits for its successor
    assert len(state.pending) >= 1


def test_rr_context_uses_only_the_past_except_the_next_beat():
    beats = np.array([0, 100, 200, 300, 350, 500, 600, 700]) * 1  # samples
    pre, post, local, long = rr_context(beats, 100)
    assert pre[4] == 0.5 and post[4] == 1.5  # a premature beat and its compensatory pause
    # changing beats after i+1 leaves i's context alone
    b2 = beats.copy()
    b2[6:] += 37
    p2 = rr_context(b2, 100)
    for v, w in zip((pre, post, local, long), p2):
        assert v[4] == w[4]
    f = rr_features(pre, post, local, long)
    assert f.shape == (8, 5) and f[4, 0] < 0 < f[4, 1]


def test_beat_waves_are_scaled_by_the_local_signal():
    x = np.zeros(2000, np.float32)
    x[1000] = 1.0
    a = beat_waves(x, np.array([1000]))
    b = beat_waves(5 * x, np.array([1000]))
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert a.shape == (1, 112) and a[0].argmax() == 48


def test_the_beats_a_bed_keeps_give_every_beat_its_full_minute_of_rr_context(monkeypatch):
    """A beat's RR context (the 60-s mean, the prematurity's 60-s percentile) reaches a minute
    before it, and it is classified seconds after it: the bed keeps enough beats that its contexts
    equal those computed from the whole history, past the first minute too."""
    import processors.bed as bed

    frames = _frames(n=45)  # 90 s
    _, kept = _step_all(frames)
    monkeypatch.setattr(bed, "BEAT_HISTORY_S", 1e9)
    state, full = _step_all(frames)
    assert state.beats[0] < 128 * 10  # (the reference run kept every beat)
    n = 0
    for a, b in zip(kept, full):
        assert a.beat_ts_ms == b.beat_ts_ms
        np.testing.assert_array_equal(a.beat_ctx, b.beat_ctx)
        n += sum(t > 70_000 + frames[0][0].t_start_us // 1000 for t in a.beat_ts_ms)
    assert n >= 10  # beats whose minute of context starts after the stream did


def test_irregularity_leaves_out_the_beats_own_prematurity():
    regular = np.arange(0, 3000, 100)  # 1 s RR at 100 Hz
    irr = rr_irregularity(regular, 100)
    assert irr[:4].tolist() == [0, 0, 0, 0] and np.allclose(irr[4:], 0)  # fewer than 3 intervals: 0
    early = regular.copy()
    early[20:] -= 40  # beat 20 comes 0.4 s early (and the rhythm resumes from it)
    e = rr_irregularity(early, 100)
    assert e[20] == 0  # its own short pre-RR is not counted
    assert np.all(e == 0)  # and one ectopic beat does not make a rhythm irregular (a median)
    alt = np.cumsum(np.tile([60, 140], 20))  # bigeminy-like alternation: every difference is 0.8 s
    assert np.all(rr_irregularity(alt, 100)[12:] > 0.5)  # over the median interval (0.6 or 1.4 s)
    rng = np.random.default_rng(0)
    af = np.cumsum(rng.uniform(50, 150, 40)).astype(np.int64)  # irregularly irregular
    assert np.median(rr_irregularity(af, 100)[12:]) > 0.2
    # positions `at` give the same as the whole array
    np.testing.assert_array_equal(rr_irregularity(af, 100, at=np.array([5, 17, 30])), rr_irregularity(af, 100)[[5, 17, 30]])
    ctx = beat_context(af, 100)
    assert ctx.shape == (40, 7)
    np.testing.assert_array_equal(ctx[:, :5], rr_features(*rr_context(af, 100)))
    np.testing.assert_array_equal(ctx[:, 5], rr_irregularity(af, 100).astype(np.float32))
    np.testing.assert_array_equal(ctx[:, 6], rr_prematurity(af, 100).astype(np.float32))


def test_prematurity_equals_its_definition_and_sees_frequent_premature_beats():
    """`rr_prematurity`: log(pre-RR / the 90th-percentile order statistic of the intervals
    between the beats of the 60 s before the beat), clipped to ±3, 0 below 4 such intervals."""
    def by_definition(beats, fs):
        t = np.asarray(beats, np.float64) / fs
        out = np.zeros(len(t))
        for i in range(1, len(t)):
            j = np.searchsorted(t, t[i] - 60.0)
            rr = np.sort(np.diff(t[j:i]))
            if len(rr) >= 4:
                out[i] = np.clip(np.log((t[i] - t[i - 1] + 1e-3) / (rr[(9 * (len(rr) - 1)) // 10] + 1e-3)), -3, 3)
        return out

    rng = np.random.default_rng(2)
    for n in (0, 1, 4, 5, 6, 30, 200):
        beats = np.cumsum(rng.integers(20, 300, n)).astype(np.int64)
        np.testing.assert_array_equal(rr_prematurity(beats, 128), by_definition(beats, 128))
    regular = np.arange(0, 128 * 60, 100)
    assert np.abs(rr_prematurity(regular, 128)).max() < 1e-9
    # atrial bigeminy (0.5 s coupling, 0.9 s back to sinus): the means fall to 0.7 s and the
    # premature beats read only log(0.5 / 0.7) against them; the long end stays at 0.9 s
    bigeminy = np.cumsum(np.tile([64, 115], 60)).astype(np.int64)
    prem = rr_prematurity(bigeminy, 128)[20:]
    pre_long = beat_context(bigeminy, 128)[20:, 0]  # log(pre / long mean)
    early = np.arange(20, len(bigeminy)) % 2 == 0
    assert np.all(prem[early] < -0.55) and np.all(np.abs(prem[~early]) < 0.01)
    assert np.all(pre_long[early] > -0.4)


def test_irregularity_equals_its_definition_beat_by_beat():
    """The vectorised `rr_irregularity` against its docstring, one beat at a time."""
    def by_definition(beats, fs):
        rr = np.diff(np.asarray(beats, np.float64)) / fs
        out = np.zeros(len(beats))
        for i in range(len(beats)):
            seg = rr[max(0, i - 1 - IRREGULARITY_INTERVALS):max(0, i - 1)]
            if len(seg) >= 3:
                out[i] = np.median(np.abs(np.diff(seg))) / max(np.median(seg), 1e-3)
        return out

    rng = np.random.default_rng(1)
    for n in (0, 1, 3, 4, 5, 11, 12, 37):
        beats = np.cumsum(rng.integers(20, 300, n)).astype(np.int64)
        np.testing.assert_array_equal(rr_irregularity(beats, 128), by_definition(beats, 128))


def test_context_at_a_few_positions_equals_the_vectorised_form_bit_for_bit():
    """`beat_context` at ≤ 8 positions (the worker's case) computes them one by one in scalar
    arithmetic; it must give the numpy form's float32 values exactly, including a position
    without a successor, short histories, an irregular (AF-like) rhythm and beats over 60 s."""
    from wardmodels import classifier as C

    rng = np.random.default_rng(5)
    checked = 0
    for n in (2, 3, 4, 5, 11, 12, 40, 75, 140):
        for kind in ("regular", "irregular", "ectopic"):
            if kind == "regular":
                rr = rng.integers(95, 105, n)
            elif kind == "irregular":
                rr = rng.integers(40, 260, n)
            else:
                rr = np.where(rng.random(n) < 0.2, 60, 110)
            beats = np.cumsum(rr).astype(np.int64) + 1000
            full = np.concatenate([rr_features(*rr_context(beats, 128)),
                                   rr_irregularity(beats, 128)[:, None].astype(np.float32),
                                   rr_prematurity(beats, 128)[:, None].astype(np.float32)], axis=1)
            for at in ([n - 2], [n - 1], [1], list(range(max(1, n - 8), n)), [n // 2, n - 2]):
                at = np.asarray(sorted(set(a for a in at if 1 <= a < n)), np.int64)
                if not len(at):
                    continue
                few = C._context_few(beats, 128, at)
                assert few is not None and few.dtype == np.float32
                np.testing.assert_array_equal(few, full[at])
                np.testing.assert_array_equal(beat_context(beats, 128, at=at), full[at])
                checked += 1
    assert checked > 100
    # a position without a predecessor goes to the vectorised form (its fallbacks)
    beats = np.array([100, 210, 330, 420], np.int64)
    assert C._context_few(beats, 128, np.array([0, 2])) is None
    np.testing.assert_array_equal(beat_context(beats, 128, at=np.array([0, 2])),
                                  np.concatenate([rr_features(*rr_context(beats, 128)),
                                                  rr_irregularity(beats, 128)[:, None].astype(np.float32),
                                                  rr_prematurity(beats, 128)[:, None].astype(np.float32)],
                                                 axis=1)[[0, 2]])
