"""Batches run at a few padded sizes (`wardmodels.shapes`): the padding changes no output."""

import numpy as np
import pytest

from wardmodels.shapes import STEP, bucket


def test_the_buckets_are_powers_of_two_then_multiples_of_the_step():
    assert [bucket(n) for n in (1, 2, 3, 5, 9, 17, 31, 32, 33, 64, 65, 200, 512)] == \
        [1, 2, 4, 8, 16, 32, 32, 32, 64, 64, 96, 224, 512]
    sizes = {bucket(n) for n in range(1, 513)}
    assert len(sizes) == 6 + 512 // STEP - 1  # 1 … 32, then 64 … 512
    assert all(0 <= bucket(n) - n < max(STEP, n) for n in range(1, 513))


@pytest.mark.parametrize("kind", ["rhythm", "beat"])
def test_a_classifier_says_the_same_of_a_window_in_any_batch(kind):
    from wardmodels.classifier import BEAT_CONTEXT, BEAT_SAMPLES
    from wardmodels.clf_runtime import load_deployed_classifier

    clf = load_deployed_classifier(kind)
    rng = np.random.default_rng(1)
    n = 5  # runs as 8 rows
    if kind == "rhythm":
        x, extra = rng.standard_normal((n, clf.model.cfg.in_samples)).astype(np.float32), None
        alone = np.concatenate([clf.proba(x[i:i + 1]) for i in range(n)])
        together = clf.proba(x)
    else:
        x = rng.standard_normal((n, 2, BEAT_SAMPLES)).astype(np.float32)
        extra = np.abs(rng.standard_normal((n, BEAT_CONTEXT))).astype(np.float32)
        alone = np.concatenate([clf.proba(x[i:i + 1], extra[i:i + 1]) for i in range(n)])
        together = clf.proba(x, extra)
    assert together.shape == (n, len(clf.classes))
    np.testing.assert_allclose(together, alone, atol=2e-3)  # bf16 arithmetic where the CPU has it
    assert clf.proba(x[:0], None if extra is None else extra[:0]).shape == (0, len(clf.classes))


def test_the_decoder_reconstructs_a_window_the_same_in_any_batch():
    from wardmodels import runtime

    c = runtime.load_deployed(5)
    rng = np.random.default_rng(2)
    k1, n1 = c.level_codebook_size(1), c.n_indices(1)
    k3, n3 = c.level_codebook_size(3), c.n_indices(3)
    # three windows at mixed levels, one without EEG: run as 4 rows
    idx = {"ecg": [rng.integers(0, k1, n1), rng.integers(0, k3, n3), rng.integers(0, k1, n1)],
           "eeg": [rng.integers(0, k1, n1), None, rng.integers(0, k1, n1)]}
    codes = {"ecg": [90, 100, 110], "eeg": [80, None, 120]}
    together = c.decode_windows(idx, codes)
    for i in range(3):
        one = c.decode_windows({m: [idx[m][i]] for m in idx}, {m: [codes[m][i]] for m in codes})
        for m in ("ecg", "eeg"):
            if idx[m][i] is None:
                assert together[m][i] is None and one[m][0] is None
            else:
                assert together[m][i].shape == (256,)
                np.testing.assert_allclose(together[m][i], one[m][0], rtol=1e-4, atol=1e-4 * np.abs(one[m][0]).max())
