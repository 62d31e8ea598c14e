"""The device's small rhythm model (`wardmodels.edge_rhythm`): what a device computes window by
window is what the offline analysis scores, and the committed model follows the cloud's rhythm
model on records it never saw."""

import numpy as np
import pytest

from wardmodels import DD_MODEL, runtime
from wardmodels.edge_rhythm import RhythmCheck, level_crops, rhythm_features


def _stream(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=n * 256)) * 0.01 + np.sin(np.arange(n * 256) / 9.0)
    recon = np.stack([x + rng.normal(scale=0.05 * (j + 1), size=len(x)) for j in range(5)])
    return x, recon


def test_the_device_ring_buffers_give_the_offline_crops():
    x, recon = _stream(12)
    chk = RhythmCheck()
    dev = np.stack([chk.crops(x[256 * t:256 * (t + 1)], recon[:, 256 * t:256 * (t + 1)]) for t in range(12)])
    off = level_crops(x, recon).astype(np.float32)
    assert dev.shape == off.shape == (12, 6, 1280)
    np.testing.assert_allclose(dev, off, atol=0.02)  # level_crops stores float16
    assert (dev[0, :, :1024] == 0).all() and (dev[3, :, :256] == 0).all() and (dev[4] != 0).all(axis=1).all()
    # the original's crop comes first, then levels 1..5
    assert np.abs(dev[6, 0] - dev[6, 5]).mean() > np.abs(dev[6, 0] - dev[6, 1]).mean() > 0


def test_a_level_identical_to_the_original_costs_nothing(edge):
    x, _ = _stream(8, seed=1)
    same = np.stack([x] * 5)
    f = rhythm_features(edge, x, same)
    assert f.shape == (8, 5) and np.abs(f).max() < 1e-5
    noise = np.random.default_rng(2).normal(size=(5, len(x)))
    g = rhythm_features(edge, x, np.stack([x, x, x, noise[3], 0 * x]))  # levels 4, 5: noise, flat (lead-off)
    assert (np.abs(g[:, :3]) < 1e-5).all() and (g[:, 3:] > 1e-2).all(), g


@pytest.fixture(scope="module")
def edge():
    e = runtime.load_deployed(DD_MODEL).edge_rhythm
    assert e is not None, "the deployed Dynamic-Deep codec carries its edge rhythm model"
    return e


def test_the_committed_model_is_device_sized_and_recorded(edge):
    entry = runtime.load_deployed(DD_MODEL).entry
    assert entry["edge_rhythm"] == edge.name
    assert entry["edge_rhythm_bytes"] == edge.nbytes() <= 120_000
    assert entry["edge_rhythm_macs_per_crop"] == edge.macs() <= 6_000_000
    assert edge.meta["teacher"] and edge.meta["distill_crops"] > 100_000
    assert any("--phase edge-rhythm" in r for r in entry["reproduce"])


def test_the_committed_model_follows_the_cloud_model_on_unseen_records(edge, data_dir):
    """CinC test records (never in its training or distillation): the small model's decision and
    its KL between the original and each level's reconstruction track the deployed model's."""
    from wardmodels.clf_data import cinc_split
    from wardmodels.clf_runtime import load_deployed_classifier
    from wardmodels.frontend import filter_record
    from wardmodels.predictor import kl_rows
    from wardstream.eval_dynamic import _recons

    if not (data_dir / "cinc2017" / "cinc2017_128hz.npz").exists():
        pytest.skip("CinC 2017 not present")
    codec = runtime.load_deployed(DD_MODEL)
    cloud = load_deployed_classifier("rhythm")
    test = cinc_split(data_dir, "test")
    crops = []
    for s in test.signals[:120]:
        x = filter_record(s)[-1280:]
        if len(x) < 1280:
            continue
        crops.append(level_crops(x, _recons(codec, x))[-1])
    c = np.stack(crops).astype(np.float32)  # (n, 6, 1280)
    n = len(c)
    p_e = edge.proba(c.reshape(-1, 1280)).reshape(n, 6, -1)
    p_c = cloud.proba(c.reshape(-1, 1280)).reshape(n, 6, -1)
    agree = (p_e[:, 0].argmax(1) == p_c[:, 0].argmax(1)).mean()
    kl_e = np.log1p(np.stack([kl_rows(p_e[:, 0], p_e[:, j]) for j in range(1, 6)], 1))
    kl_c = np.log1p(np.stack([kl_rows(p_c[:, 0], p_c[:, j]) for j in range(1, 6)], 1))
    corr = np.corrcoef(kl_e.ravel(), kl_c.ravel())[0, 1]
    assert agree >= 0.8 and corr >= 0.6, (n, agree, corr)
