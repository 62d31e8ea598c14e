import numpy as np
from scipy.signal import filtfilt, sosfiltfilt, welch

from processors.dsp import bandpass_ba, bandpass_sos, filtfilt_ba, filtfilt_sos, welch_psd


def test_filtfilt_matches_scipy():
    x = np.random.default_rng(0).standard_normal(640)
    sos, zi = bandpass_sos(5.0, 18.0, 128)
    assert np.allclose(filtfilt_sos(sos, zi, x, 21), sosfiltfilt(sos, x, padlen=21), atol=1e-10)


def test_welch_matches_scipy():
    x = np.random.default_rng(1).standard_normal(256)
    for nperseg in (128, 256, 100):
        f1, p1 = welch_psd(x, 128, nperseg)
        f2, p2 = welch(x, fs=128, nperseg=nperseg)
        assert np.allclose(f1, f2) and np.allclose(p1, p2)


def test_filtfilt_ba_matches_scipy_and_the_sos_form():
    x = np.random.default_rng(2).standard_normal(576)
    b, a, zi = bandpass_ba(5.0, 18.0, 128)
    y = filtfilt_ba(b, a, zi, x, 21)
    assert np.allclose(y, filtfilt(b, a, x, padlen=21), atol=1e-10)
    sos, szi = bandpass_sos(5.0, 18.0, 128)
    assert np.allclose(y, filtfilt_sos(sos, szi, x, 21), atol=1e-9)
