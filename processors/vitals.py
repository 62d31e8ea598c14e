"""Per-window vitals from beats and signals: heart rate, HRV, ECG signal quality, EEG band powers."""

from __future__ import annotations

import numpy as np
from processors.dsp import welch_psd

EEG_BANDS = {"delta": (0.5, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0),
             "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}


def clean_rr(rr_s: np.ndarray) -> np.ndarray:
    """Keep physiologically plausible RR intervals (0.25–2.5 s) that differ by < 25 % from
    the median of their neighbours (drops ectopic and missed-beat artefacts before HRV)."""
    rr = rr_s[(rr_s >= 0.25) & (rr_s <= 2.5)]
    if rr.size < 3:
        return rr
    med = np.median(rr)
    return rr[np.abs(rr - med) < 0.25 * med]


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def hrv(beat_times_s, now_s: float, span_s: float = 60.0) -> dict[str, float]:
    """Heart rate (last 10 s) and SDNN/RMSSD (sliding ``span_s``), from beat times in seconds.

    Plain Python on purpose: a minute holds under 200 beats, where numpy's per-call overhead
    costs more than the arithmetic.
    """
    out: dict[str, float] = {}
    b = [float(t) for t in beat_times_s if t > now_s - span_s]
    if len(b) >= 3:
        rr = [y - x for x, y in zip(b, b[1:])]
        rr = [r for r in rr if 0.25 <= r <= 2.5]
        if len(rr) >= 3:
            med = _median(rr)
            rr = [r for r in rr if abs(r - med) < 0.25 * med]
        if len(rr) >= 2:
            mean = sum(rr) / len(rr)
            out["sdnn_ms"] = (sum((r - mean) ** 2 for r in rr) / (len(rr) - 1)) ** 0.5 * 1000
            d2 = [(y - x) ** 2 for x, y in zip(rr, rr[1:])]
            out["rmssd_ms"] = (sum(d2) / len(d2)) ** 0.5 * 1000 if len(rr) >= 3 else 0.0
    recent = [t for t in b if t > now_s - 10.0]
    if len(recent) >= 2:
        med = _median([y - x for x, y in zip(recent, recent[1:])])
        out["hr_bpm"] = 60.0 / med
        out["rr_ms"] = med * 1000
    return out


def ecg_quality(ecg_mv: np.ndarray, fs: int) -> float:
    """Signal-quality index in [0, 1] for one window.

    0 for a flat line (lead-off: peak-to-peak < 50 µV) or a clipped/NaN window; otherwise the
    share of power in the QRS band (5–15 Hz) relative to 5–40 Hz, scaled so that a clean ECG
    (share ≥ 0.5) reads 1 and broadband noise reads near 0.
    """
    x = np.asarray(ecg_mv, np.float64)
    if not np.all(np.isfinite(x)):
        return 0.0
    if np.ptp(x) < 0.05:
        return 0.0
    run = np.max(np.diff(np.flatnonzero(np.diff(x) != 0), prepend=0), initial=0)
    if run > fs // 4:  # a quarter second stuck at one value: saturated or dropped out
        return 0.0
    f, p = welch_psd(x - x.mean(), fs, min(x.size, 128))
    band = p[(f >= 5) & (f <= 15)].sum()
    total = p[(f >= 5) & (f <= 40)].sum()
    if total <= 0:
        return 0.0
    return float(np.clip(band / total / 0.5, 0.0, 1.0))


def eeg_band_powers(eeg_uv: np.ndarray, fs: int) -> dict[str, float]:
    """Absolute band powers (µV²) of one window via Welch (1-s segments)."""
    x = np.nan_to_num(np.asarray(eeg_uv, np.float64))
    f, p = welch_psd(x - x.mean(), fs, min(x.size, fs))
    df = f[1] - f[0]
    return {name: float(p[(f >= lo) & (f < hi)].sum() * df) for name, (lo, hi) in EEG_BANDS.items()}


def ecg_quality_batch(ecg_mv: np.ndarray, fs: int) -> np.ndarray:
    """`ecg_quality` for ``float[N x n]`` windows at once (same result, one set of numpy calls)."""
    x = np.asarray(ecg_mv, np.float64)
    finite = np.isfinite(x).all(axis=1)
    x = np.where(np.isfinite(x), x, 0.0)
    flat = np.ptp(x, axis=1) < 0.05
    d = np.diff(x, axis=1) != 0
    # longest run without change, per row
    n = x.shape[1]
    idx = np.where(d, np.arange(1, n)[None, :], 0)
    last_change = np.maximum.accumulate(idx, axis=1)
    run = (np.arange(1, n)[None, :] - last_change).max(axis=1, initial=0)
    stuck = run > fs // 4
    f, p = welch_psd(x - x.mean(axis=1, keepdims=True), fs, min(n, 128))
    band = p[:, (f >= 5) & (f <= 15)].sum(axis=1)
    total = p[:, (f >= 5) & (f <= 40)].sum(axis=1)
    q = np.clip(np.divide(band, total, out=np.zeros_like(band), where=total > 0) / 0.5, 0.0, 1.0)
    q[~finite | flat | stuck | (total <= 0)] = 0.0
    return q


def eeg_band_powers_batch(eeg_uv: np.ndarray, fs: int) -> dict[str, np.ndarray]:
    """`eeg_band_powers` for ``float[N x n]`` windows at once."""
    x = np.nan_to_num(np.asarray(eeg_uv, np.float64))
    f, p = welch_psd(x - x.mean(axis=1, keepdims=True), fs, min(x.shape[1], fs))
    df = f[1] - f[0]
    return {name: p[:, (f >= lo) & (f < hi)].sum(axis=1) * df for name, (lo, hi) in EEG_BANDS.items()}
