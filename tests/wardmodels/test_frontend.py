import numpy as np

from wardmodels.frontend import StreamFilter, filter_record, normalise, scale_code, scale_value


def test_stream_filter_matches_whole_record_filter():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal(256 * 10)).astype(np.float32)
    f = StreamFilter()
    windows = np.concatenate([f(x[i:i + 256]) for i in range(0, x.size, 256)])
    np.testing.assert_allclose(windows, filter_record(x), rtol=1e-5, atol=1e-5)


def test_scale_code_is_log_grid_and_normalisation_is_exactly_invertible():
    rng = np.random.default_rng(1)
    for modality, std in (("ecg", 0.8), ("eeg", 25.0)):
        w = rng.standard_normal((50, 256)) * std
        code = scale_code(w, modality)
        s = scale_value(code, modality)
        # within half a grid step (1/32 octave) of the true std
        assert np.all(np.abs(np.log2(s / w.std(1))) <= 1 / 32 + 1e-9)
        x, code2 = normalise(w, modality)
        assert np.array_equal(code, code2)
        np.testing.assert_allclose(x * s[:, None], w, rtol=1e-5)


def test_scale_code_saturates_instead_of_wrapping():
    assert scale_code(np.zeros((1, 256)), "ecg")[0] == 0
    assert scale_code(np.full((1, 256), 1e9) * np.r_[1, -1].repeat(128), "eeg")[0] == 255
