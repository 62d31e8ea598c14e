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


def hrv(beat_times_s: np.ndarray, now_s: float, span_s: float = 60.0) -> dict[str, float]:
    """Heart rate (last 10 s) and SDNN/RMSSD (sliding ``span_s``), from beat times in seconds."""
    out: dict[str, float] = {}
    b = beat_times_s[beat_times_s > now_s - span_s]
    if b.size >= 3:
        nn = clean_rr(np.diff(b))
        if nn.size >= 2:
            out["sdnn_ms"] = float(np.std(nn, ddof=1) * 1000)
            out["rmssd_ms"] = float(np.sqrt(np.mean(np.diff(nn) ** 2)) * 1000) if nn.size >= 3 else 0.0
    recent = b[b > now_s - 10.0]
    if recent.size >= 2:
        rr = np.diff(recent)
        out["hr_bpm"] = float(60.0 / np.median(rr))
        out["rr_ms"] = float(np.median(rr) * 1000)
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
