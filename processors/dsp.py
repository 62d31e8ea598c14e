"""Small DSP kernels for 2-s windows, with their constants cached per sampling rate.

scipy's ``welch`` and ``sosfiltfilt`` recompute windows and filter initial conditions on every
call; on 256-sample windows that set-up is most of the cost (measured 0.4 ms and 0.2 ms a call).
These give the same results with the constants computed once.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import butter, get_window, lfilter, lfilter_zi, sos2tf, sosfilt, sosfilt_zi


@lru_cache(maxsize=16)
def bandpass_sos(lo: float, hi: float, fs: int, order: int = 2) -> tuple[np.ndarray, np.ndarray]:
    sos = butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
    return sos, sosfilt_zi(sos)


def filtfilt_sos(sos: np.ndarray, zi: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """Zero-phase filtering with odd extension, as ``scipy.signal.sosfiltfilt``."""
    padlen = min(padlen, x.size - 1)
    if padlen > 0:
        ext = np.concatenate([2 * x[0] - x[padlen:0:-1], x, 2 * x[-1] - x[-2:-padlen - 2:-1]])
    else:
        ext = x
    y, _ = sosfilt(sos, ext, zi=zi * ext[0])
    y = y[::-1]
    y, _ = sosfilt(sos, y, zi=zi * y[0])
    y = y[::-1]
    return y[padlen:ext.size - padlen] if padlen > 0 else y


@lru_cache(maxsize=16)
def bandpass_ba(lo: float, hi: float, fs: int, order: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transfer-function form of `bandpass_sos` (safe at this low order) and its ``lfilter_zi``.

    ``lfilter`` costs a third of ``sosfilt`` per call on 2-s buffers (measured 11.6 vs 33.6 µs).
    """
    b, a = sos2tf(bandpass_sos(lo, hi, fs, order)[0])
    return b, a, lfilter_zi(b, a)


def filtfilt_ba(b: np.ndarray, a: np.ndarray, zi: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """Zero-phase filtering with odd extension, as ``scipy.signal.filtfilt`` (method "pad")."""
    padlen = min(padlen, x.size - 1)
    if padlen > 0:
        ext = np.concatenate([2 * x[0] - x[padlen:0:-1], x, 2 * x[-1] - x[-2:-padlen - 2:-1]])
    else:
        ext = x
    y, _ = lfilter(b, a, ext, zi=zi * ext[0])
    y = y[::-1]
    y, _ = lfilter(b, a, y, zi=zi * y[0])
    y = y[::-1]
    return y[padlen:ext.size - padlen] if padlen > 0 else y


@lru_cache(maxsize=16)
def _hann(n: int) -> tuple[np.ndarray, float]:
    w = get_window("hann", n)
    return w, float((w * w).sum())


def welch_psd(x: np.ndarray, fs: int, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Welch PSD (Hann, 50 % overlap, mean detrend per segment), as scipy's default.

    ``x`` is ``float[n]`` or ``float[N x n]`` (one PSD per row).
    """
    x = np.asarray(x, np.float64)
    n = x.shape[-1]
    nperseg = min(nperseg, n)
    step = nperseg // 2
    n_seg = 1 + (n - nperseg) // step
    idx = np.arange(nperseg)[None, :] + step * np.arange(n_seg)[:, None]
    seg = x[..., idx]  # [..., n_seg, nperseg]
    seg = seg - seg.mean(axis=-1, keepdims=True)
    w, wss = _hann(nperseg)
    spec = np.abs(np.fft.rfft(seg * w, axis=-1)) ** 2
    psd = spec.mean(axis=-2) / (fs * wss)
    if nperseg % 2 == 0:
        psd[..., 1:-1] *= 2
    else:
        psd[..., 1:] *= 2
    return np.fft.rfftfreq(nperseg, 1 / fs), psd
