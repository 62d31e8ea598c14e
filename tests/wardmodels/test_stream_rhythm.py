"""The streaming rhythm model: window-by-window decisions equal the crop-wise ones it is trained and
evaluated on, and its convolutions never look ahead."""

import numpy as np
import pytest
import torch

from wardmodels.classifier import VARIANTS, ResNet1D
from wardmodels.compress import fold_batchnorm
from wardmodels.stream_rhythm import (STREAM_CROP, WINDOW, RhythmStream, crops_for_record, decision_ends,
                                      stream_normalise)


@pytest.fixture(scope="module")
def model():
    """The streaming variant with non-trivial batch-norm statistics, folded as deployed."""
    torch.manual_seed(0)
    m = ResNet1D(VARIANTS["rhythm-stream"]).eval()
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            mod.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            mod.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            mod.bias.data.copy_(0.6 * torch.rand(n, generator=g) - 0.3)
    return fold_batchnorm(m)


def _ecg_like(rng, n, scale):
    """Spiky beats at a drifting rate, noise whose level changes every second."""
    t = np.arange(n) / 128
    phase = 2 * np.pi * np.cumsum(1.0 + 0.6 * np.sin(2 * np.pi * t / 7.0)) / 128
    noise = np.repeat(rng.uniform(0.02, 0.6, n // 128 + 1), 128)[:n] * rng.standard_normal(n)
    return (scale * (np.sin(phase) ** 31 + noise)).astype(np.float32)


def test_stream_decisions_equal_crop_decisions(model):
    """Three beds of different lengths (one shorter than 10 s, one with a tail shorter than a
    window) interleaved in shared batches, in a stream with room for two beds only (it grows):
    every decision equals the crop-wise one at the same time."""
    rng = np.random.default_rng(0)
    recs = {"a": _ecg_like(rng, 30 * WINDOW, 0.5), "b": _ecg_like(rng, 4 * WINDOW, 2.0),
            "c": _ecg_like(rng, 12 * WINDOW + 100, 1.0)}
    rs = RhythmStream(model, capacity=2)
    got = {k: [] for k in recs}
    for j in range(30):
        beds = [k for k, x in recs.items() if (j + 1) * WINDOW <= len(x)]
        w = np.stack([recs[k][j * WINDOW:(j + 1) * WINDOW] for k in beds])
        for k, p in zip(beds, rs.step(beds, w)):
            got[k].append(p)
    for k, x in recs.items():
        crops = crops_for_record(x)
        assert crops.shape[1] == STREAM_CROP
        with torch.no_grad():
            want = torch.softmax(model(torch.from_numpy(crops)), 1).numpy()
        ends = decision_ends(len(x))
        stream = np.array(got[k])[ends // WINDOW - 1]
        assert stream.shape == want.shape
        np.testing.assert_allclose(stream, want, atol=1e-5)
        if len(want) > 1:  # not a constant output: the decisions move with the signal
            assert np.abs(np.diff(want, axis=0)).max() > 1e-4


def test_forget_restarts_a_bed_from_the_zero_state(model):
    rng = np.random.default_rng(1)
    x = _ecg_like(rng, 8 * WINDOW, 1.0)
    rs = RhythmStream(model)
    for j in range(8):
        rs.step(["a"], x[None, j * WINDOW:(j + 1) * WINDOW])
    rs.forget("a")
    fresh = RhythmStream(model)
    np.testing.assert_allclose(rs.step(["a"], x[None, :WINDOW]), fresh.step(["a"], x[None, :WINDOW]), atol=1e-6)


def test_the_trunk_never_looks_ahead(model):
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((1, 1, STREAM_CROP)).astype(np.float32))
    y = x.clone()
    y[..., 1792:] = 5.0  # change everything after sample 1792
    with torch.no_grad():
        hx, _ = model.trunk_causal(x)
        hy, _ = model.trunk_causal(y)
    per = model.cfg.total_stride
    assert torch.equal(hx[..., :1792 // per], hy[..., :1792 // per])
    assert not torch.equal(hx[..., 1792 // per:], hy[..., 1792 // per:])


def test_normalisation_uses_only_the_last_10_s():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(12 * WINDOW).astype(np.float32)
    y = x.copy()
    y[:WINDOW] *= 50  # the first window only reaches the normalisation of windows 1-5
    nx, ny = stream_normalise(x), stream_normalise(y)
    assert np.array_equal(nx[5 * WINDOW:], ny[5 * WINDOW:])
    assert not np.array_equal(nx[4 * WINDOW:5 * WINDOW], ny[4 * WINDOW:5 * WINDOW])


def test_a_crop_wise_model_cannot_stream():
    with pytest.raises(ValueError, match="not a causal model"):
        RhythmStream(ResNet1D(VARIANTS["rhythm"]))


def test_one_window_per_bed_and_step(model):
    with pytest.raises(ValueError, match="one window per bed"):
        RhythmStream(model).step(["a", "a"], np.zeros((2, WINDOW), np.float32))


def test_whole_record_pass_equals_the_crops(model):
    """`record_logits` (one causal pass per record, records of different lengths batched) gives
    every crop's logits, including a record shorter than a window."""
    from wardmodels.stream_rhythm import record_logits

    rng = np.random.default_rng(4)
    recs = [_ecg_like(rng, n, s) for n, s in [(30 * WINDOW + 17, 0.5), (200, 1.0), (6 * WINDOW, 2.0), (11 * WINDOW, 1.0)]]
    got = record_logits(model, recs, batch=3)
    for x, g in zip(recs, got):
        with torch.no_grad():
            want = model(torch.from_numpy(crops_for_record(x))).numpy()
        assert g.shape == want.shape
        np.testing.assert_allclose(g, want, atol=2e-4, rtol=1e-4)
