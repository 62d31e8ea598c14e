"""The signal front end shared by the edge encoder and the cloud decoder (numpy only).

Both sides must agree on it bit for bit, so it lives in one place:

* a causal 0.5–40 Hz Butterworth band-pass (order 4, second-order sections) run continuously
  on the device, its state carried from window to window — a live stream cannot use a
  zero-phase filter;
* per-window scale normalisation whose only side information is one byte per modality: the
  window's standard deviation rounded to a log2 grid of 1/16 octave. The device divides by the
  *quantised* scale, so the decoder's multiplication by the same value is an exact inverse
  and the byte costs no reconstruction error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.signal import butter, sosfilt, sosfilt_zi

FS = 128
WINDOW = 256
BAND_HZ = (0.5, 40.0)
SCALE_STEPS_PER_OCTAVE = 16
SCALE_BITS = 8
# log2 of the smallest representable window std, per modality (ECG in mV, EEG in µV);
# 256 codes at 1/16 octave cover 16 octaves: ECG 1 µV..64 mV, EEG 0.06..4096 µV.
SCALE_LOG2_MIN = {"ecg": -10.0, "eeg": -4.0}


@lru_cache(maxsize=None)
def band_sos(fs: int = FS) -> np.ndarray:
    return butter(2, BAND_HZ, btype="bandpass", fs=fs, output="sos")


def filter_record(x: np.ndarray, fs: int = FS) -> np.ndarray:
    """Causal band-pass over a whole recording, started at rest on its first sample."""
    sos = band_sos(fs)
    x = np.asarray(x, dtype=np.float64)
    zi = sosfilt_zi(sos) * x[0]
    y, _ = sosfilt(sos, x, zi=zi)
    return y.astype(np.float32)


@dataclass
class StreamFilter:
    """The same causal band-pass, one window at a time (the device's view). ``limit``: the
    device's input range; samples beyond it are clipped before the filter, so one glitch (an
    infinity, an absurd value) cannot leave the filter's state infinite or NaN for good."""

    fs: int = FS
    zi: np.ndarray | None = field(default=None, repr=False)
    limit: float = np.inf

    def __call__(self, x: np.ndarray) -> np.ndarray:
        sos = band_sos(self.fs)
        x = np.clip(np.asarray(x, dtype=np.float64), -self.limit, self.limit)
        if self.zi is None:
            self.zi = sosfilt_zi(sos) * x[0]
        y, self.zi = sosfilt(sos, x, zi=self.zi)
        return y.astype(np.float32)


def scale_code(windows: np.ndarray, modality: str) -> np.ndarray:
    """uint8 code of each window's standard deviation (last axis)."""
    std = np.asarray(windows, dtype=np.float64).std(axis=-1)
    lo = SCALE_LOG2_MIN[modality]
    code = np.round((np.log2(np.maximum(std, 1e-30)) - lo) * SCALE_STEPS_PER_OCTAVE)
    return np.clip(code, 0, 2 ** SCALE_BITS - 1).astype(np.uint8)


def scale_value(code: np.ndarray | int, modality: str) -> np.ndarray:
    """The scale a code stands for (what both sides divide / multiply by)."""
    lo = SCALE_LOG2_MIN[modality]
    return np.exp2(lo + np.asarray(code, dtype=np.float64) / SCALE_STEPS_PER_OCTAVE).astype(np.float32)


def normalise(windows: np.ndarray, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """(windows / quantised scale, scale codes)."""
    code = scale_code(windows, modality)
    return (np.asarray(windows, np.float32) / scale_value(code, modality)[..., None]), code
