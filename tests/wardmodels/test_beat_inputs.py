"""`beat_inputs` (vectorised per template size) against the rule it implements, beat by beat."""

import numpy as np

from wardmodels.classifier import TEMPLATE_BEATS, TEMPLATE_SPAN_S, beat_inputs


def _reference(waves, beats, fs, first):
    out = np.zeros((len(waves) - first, 2, waves.shape[1]), np.float32)
    span = int(TEMPLATE_SPAN_S * fs)
    for i in range(first, len(waves)):
        lo = max(0, i - TEMPLATE_BEATS)
        while lo < i and beats[i] - beats[lo] > span:
            lo += 1
        tmpl = np.median(waves[lo:i], axis=0) if i > lo else waves[i]
        out[i - first, 0] = waves[i]
        out[i - first, 1] = waves[i] - tmpl
    return out


def test_beat_inputs_equal_the_per_beat_median_bit_for_bit():
    rng = np.random.default_rng(7)
    for trial in range(20):
        n = int(rng.integers(1, 40))
        # beat spacing mixes normal RR with pauses longer than the template span
        gaps = rng.choice([90, 110, 140, int(TEMPLATE_SPAN_S * 128) + 50], size=n, p=[0.4, 0.3, 0.2, 0.1])
        beats = np.cumsum(gaps).astype(np.int64)
        waves = rng.standard_normal((n, 112)).astype(np.float32)
        first = int(rng.integers(0, n))
        got = beat_inputs(waves, beats, 128, first)
        want = _reference(waves, beats, 128, first)
        assert got.shape == want.shape and np.array_equal(got, want), trial


def test_morphology_augmentation_reshapes_a_beat_and_its_template_alike():
    from wardmodels.classifier import BEAT_PRE, BEAT_SAMPLES
    from wardmodels.clf_data import morph_augment

    t = np.arange(BEAT_SAMPLES) - BEAT_PRE
    qrs = np.exp(-0.5 * (t / 3.0) ** 2).astype(np.float32)  # a narrow QRS at the R peak
    pvc = np.exp(-0.5 * (t / 8.0) ** 2).astype(np.float32)  # a wide one
    waves = np.stack([qrs] * 200 + [pvc] * 200)
    tmpl = np.stack([qrs] * 400)
    w, tm = morph_augment(np.random.default_rng(0), waves, tmpl, share=1.0)
    # a normal beat stays identical to its template: the difference channel still says "normal"
    assert np.allclose(w[:200], tm[:200], atol=1e-6)
    # ... while the absolute shapes now vary in width between "patients"
    widths = (w[:200] > 0.5).sum(1)
    assert widths.min() < (qrs > 0.5).sum() < widths.max()
    # the ectopic beat still differs from its (augmented) template
    assert np.abs(w[200:] - tm[200:]).max(1).min() > 0.2
    assert np.all(np.abs(w[:, BEAT_PRE] - np.r_[qrs, pvc].reshape(2, -1)[:, BEAT_PRE].repeat(200)) < 0.35)
    w0, t0 = morph_augment(np.random.default_rng(0), waves, tmpl, share=0.0)
    assert w0 is waves and t0 is tmpl
