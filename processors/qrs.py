"""Streaming QRS detection with carried state (Pan-Tompkins-style adaptive thresholds).

``ecg_peaks_stream(ecg, fs, state) -> (state, beats)`` takes one window at a time, in order.
The state carries the last ``history_s`` seconds of signal, the adaptive signal/noise peak levels,
the recent RR intervals and the last sample already decided, so a beat that straddles a window
edge is found exactly once.

Latency: a sample is decided once ``lookahead_s`` (0.3 s) of signal after it has arrived, so a
beat in the last 0.3 s of a window is reported with the next window. Filtering is zero-phase over
the carried history plus the new window; the lookahead keeps decisions away from the filter's
trailing edge.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import find_peaks

from processors.dsp import bandpass_ba, filtfilt_ba


@dataclass
class QrsState:
    """Per-stream detector state. ``n_seen``: absolute index of the next sample."""

    fs: int = 128
    n_seen: int = 0
    decided_until: int = 0  # absolute index: candidates before it are decided
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    spk: float = 0.0  # running signal-peak level of the integrated feature
    npk: float = 0.0  # running noise-peak level
    last_beat: int = -1  # absolute sample index of the last beat
    last_slope: float = 0.0
    rr: list[int] = field(default_factory=list)  # last RR intervals, samples
    initialised: bool = False

    def to_dict(self) -> dict:
        return {"fs": self.fs, "n": self.n_seen, "d": self.decided_until,
                # float16 halves the state; clip so absurd inputs cannot become inf on restore
                "h": base64.b64encode(np.clip(self.history, -65000, 65000).astype("<f2").tobytes()).decode(),
                "spk": self.spk, "npk": self.npk, "lb": self.last_beat, "ls": self.last_slope,
                "rr": self.rr, "i": self.initialised}

    @classmethod
    def from_dict(cls, d: dict) -> "QrsState":
        return cls(fs=d["fs"], n_seen=d["n"], decided_until=d["d"],
                   history=np.frombuffer(base64.b64decode(d["h"]), dtype="<f2").astype(np.float32),
                   spk=d["spk"], npk=d["npk"], last_beat=d["lb"], last_slope=d["ls"],
                   rr=list(d["rr"]), initialised=d["i"])


@dataclass(frozen=True)
class Beats:
    """Detected beats: absolute sample indices (stream time) and the R amplitude (input units)."""

    samples: np.ndarray
    amplitudes: np.ndarray


HISTORY_S = 2.5
LOOKAHEAD_S = 0.3
REFRACTORY_S = 0.2
TWAVE_S = 0.36


FIDUCIAL_SNAP = 2  # samples: how far from the energy centroid the fiducial may snap to a peak


def fiducial_sample(band: np.ndarray) -> int:
    """Index of a beat's fiducial point in ``band`` (the 5-18 Hz band-passed QRS segment): the
    largest |deflection| within ``FIDUCIAL_SNAP`` samples of the segment's energy centroid.

    The centroid moves little when the waveform changes a little; the largest deflection of the
    whole segment (used before 2026-12-02) jumps between the R and S lobes of a biphasic or wide
    complex. Snapping to the nearest large deflection keeps the R-peak accuracy. Measured
    (`runs/` scratch, 2026-12-02), largest deflection → this: MIT-BIH DS2 against the annotations
    |Δt| mean 2.9 → 3.1 ms, p95 5.2 → 5.9 ms, RR-interval error p95 7.8 → 8.7 ms; beats moved by
    3 samples or more between the original and the Dynamic-Deep codec's reconstruction (records
    100, 119, 203, 208, 233, first 10 min) 2.0 → 0.5 % at level 1, 4.0 → 1.7 % at level 2,
    8.4 → 4.1 % at level 3; windows whose QRS error exceeds 0.3 there 10.3 → 2.0 % at level 2,
    24.7 → 11.9 % at level 3."""
    e = np.square(band, dtype=np.float64)
    tot = float(e.sum())
    if not tot > 0:
        return band.size // 2
    # summed in order (np.dot would hand it to BLAS, whose order is the library's): the firmware
    # (`firmware/encoder/ws_dd.c`) sums the same way and gets the same point
    c = int(round(float(np.cumsum(np.arange(band.size) * e)[-1]) / tot))
    lo, hi = max(0, c - FIDUCIAL_SNAP), min(band.size, c + FIDUCIAL_SNAP + 1)
    return lo + int(np.abs(band[lo:hi]).argmax())


def moving_average(v: np.ndarray, w: int) -> np.ndarray:
    """``np.convolve(v, np.ones(w) / w, mode="same")`` with each output summed from its earliest
    sample on: np.convolve's dot products go to BLAS, whose order of summation (and so the last
    bits) depends on the library and the CPU; this order is the same everywhere, and the
    firmware's (`firmware/encoder/ws_dd.c`)."""
    n, left = v.size, w - 1 - (w - 1) // 2
    pad = np.concatenate([np.zeros(left), np.asarray(v, np.float64), np.zeros(w - 1 - left)])
    c = 1.0 / w
    out = pad[0:n] * c
    for k in range(1, w):
        out = out + pad[k:k + n] * c
    return out


def _rr_mean(state: QrsState) -> float:
    last = state.rr[-8:]
    return sum(last) / len(last) if last else 0.0


def ecg_peaks_stream(ecg: np.ndarray, fs: int, state: QrsState | None = None,
                     lookahead_s: float = LOOKAHEAD_S, trace: list | None = None) -> tuple[QrsState, Beats]:
    """Feed one window of ECG (any units, float) and get the beats decided by it.

    Parameters
    ----------
    ecg : float[n] new samples, following on from the samples already fed.
    fs : sampling rate in Hz (the detector is tuned for 128 Hz, works from 100 Hz up).
    state : carried state, ``None`` to start a stream.
    trace : if given, ``(feature level, threshold)`` of every candidate peak decided by this
        window is appended to it (how close the decisions were: the edge's error predictor).

    Returns
    -------
    (state, beats) : the new state and the beats whose decision this window completed.
    """
    if state is None or state.fs != fs:
        state = QrsState(fs=fs)
    x_new = np.asarray(ecg, dtype=np.float32)
    if not np.isfinite(x_new).all():
        x_new = np.nan_to_num(x_new, nan=0.0, posinf=0.0, neginf=0.0)
    hist_len = int(HISTORY_S * fs)
    x = np.concatenate([state.history, x_new])
    base = state.n_seen - state.history.size  # absolute index of x[0]
    end = state.n_seen + x_new.size
    state.history = x[-hist_len:].copy()
    state.n_seen = end
    if x.size < int(0.5 * fs):
        return state, Beats(np.zeros(0, np.int64), np.zeros(0, np.float32))

    xc = x - x.mean()
    padlen = min(x.size - 1, 3 * 7)
    filt = filtfilt_ba(*bandpass_ba(5.0, 18.0, fs), xc, padlen=padlen)
    slope = np.empty_like(filt)
    slope[1:-1] = (filt[2:] - filt[:-2]) * 0.5
    slope[0] = filt[1] - filt[0]
    slope[-1] = filt[-1] - filt[-2]
    energy = slope * slope
    w = max(1, int(round(0.15 * fs)))
    mwi = moving_average(energy, w)

    refractory = int(REFRACTORY_S * fs)
    twave = int(TWAVE_S * fs)
    peaks, _ = find_peaks(mwi, distance=max(1, int(0.2 * fs)))
    limit = end - int(lookahead_s * fs)

    if not state.initialised:
        first = mwi[: min(mwi.size, 2 * fs)]
        state.spk = float(first.max()) / 3.0
        state.npk = float(first.mean()) / 2.0
        state.initialised = True

    out_s: list[int] = []
    out_a: list[float] = []
    half_qrs = max(1, int(0.08 * fs))

    def locate(p: int) -> tuple[int, float, float]:
        # fiducial point within 80 ms of the energy peak (zero-phase, so aligned): see
        # `fiducial_sample`. Amplitude: the largest deflection of the input against its local mean.
        lo, hi = max(0, p - half_qrs), min(x.size, p + half_qrs + 1)
        k = lo + fiducial_sample(filt[lo:hi])
        sl = float(np.abs(slope[lo:hi]).max())
        seg = x[lo:hi] - x[lo:hi].mean()
        return k, float(seg[int(np.abs(seg).argmax())]), sl

    def accept(p: int, level: float, weight: float) -> None:
        k, amp, sl = locate(p)
        absk = base + k
        if state.last_beat >= 0:
            rr = absk - state.last_beat
            if rr < refractory:
                return
            state.rr.append(int(rr))
            del state.rr[:-8]
        state.spk = weight * level + (1 - weight) * state.spk
        state.last_beat = absk
        state.last_slope = sl
        out_s.append(absk)
        out_a.append(amp)

    for p in peaks:
        ap = base + int(p)
        if ap < state.decided_until or ap > limit:
            continue
        thr1 = state.npk + 0.25 * (state.spk - state.npk)
        level = float(mwi[p])
        if trace is not None:
            trace.append((level, thr1))
        # search back for a missed beat when the gap is long
        rrm = _rr_mean(state)
        if state.last_beat >= 0 and rrm > 0 and ap - state.last_beat > 1.66 * rrm:
            lo_abs = state.last_beat + refractory
            hi_abs = ap - refractory
            cand = [q for q in peaks if lo_abs <= base + q <= hi_abs and base + q >= state.decided_until - 3 * fs]
            if cand:
                q = max(cand, key=lambda c: mwi[c])
                if mwi[q] > 0.5 * thr1:
                    accept(int(q), float(mwi[q]), 0.25)
        if level > thr1:
            if state.last_beat >= 0 and ap - state.last_beat < twave:
                _, _, sl = locate(int(p))
                if sl < 0.5 * state.last_slope or ap - state.last_beat < refractory:
                    state.npk = 0.125 * level + 0.875 * state.npk
                    continue
            accept(int(p), level, 0.125)
        else:
            state.npk = 0.125 * level + 0.875 * state.npk
    state.decided_until = max(state.decided_until, limit + 1)
    # a long silence (asystole, lead-off) lets the signal level decay so detection can resume
    if state.last_beat >= 0 and end - state.last_beat > 3 * fs:
        state.spk *= 0.5
    return state, Beats(np.asarray(out_s, np.int64), np.asarray(out_a, np.float32))


def detect_stream(ecg: np.ndarray, fs: int = 128, window: int = 256,
                  roundtrip: bool = True) -> np.ndarray:
    """Run the streaming detector over a recording in windows; beat times in seconds.

    ``roundtrip`` serialises the state between windows, as the worker does (its state lives in
    a changelogged table), so the evaluation scores exactly what the pipeline computes.
    """
    state = None
    beats = []
    n_full = ecg.size - ecg.size % window
    for start in range(0, n_full, window):
        if roundtrip and state is not None:
            state = QrsState.from_dict(state.to_dict())
        state, b = ecg_peaks_stream(ecg[start:start + window], fs, state)
        beats.append(b.samples)
    return np.concatenate(beats).astype(np.float64) / fs if beats else np.zeros(0)
