"""Signal sources for simulated wearables: one 2-s window of ECG (mV) and EEG (µV) at a time.

* `SyntheticBed`: per-bed heart rate and variability; beat morphologies from neurokit2's ECGSYN
  model (generated once per process); rhythm episodes: sinus, atrial-fibrillation-like (irregular
  RR, no P wave, fibrillatory baseline) and ectopic (premature wide ventricular beats with a
  compensatory pause); baseline wander, muscle noise and occasional lead-off (flat line plus
  noise). EEG: neurokit2 1/f noise plus waxing and waning alpha. The true beat times are kept
  (``true_beats_s``) so tests can score the pipeline against them.
* `MitdbReplay` / `EegmatReplay`: real recordings from a data directory, at 128 Hz, looped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

FS = 128
WINDOW = 256


@lru_cache(maxsize=1)
def _templates() -> dict[str, np.ndarray]:
    """One normal beat (with P wave) from ECGSYN at 60 bpm, R peak at index ``R_AT``, mV."""
    import neurokit2 as nk

    x = nk.ecg_simulate(duration=12, sampling_rate=512, heart_rate=60, heart_rate_std=0,
                        method="ecgsyn", random_state=7)
    x = np.asarray(x, np.float64)
    # take the beat around the 6th R peak: R is the maximum within each 1-s period
    r = 5 * 512 + int(np.argmax(x[5 * 512:6 * 512]))
    beat = x[r - 300: r + 400]  # 0.59 s before, 0.78 s after R at 512 Hz
    beat = beat - np.linspace(beat[0], beat[-1], beat.size)
    beat /= beat.max()
    normal = beat[::4].copy()  # 128 Hz, R at index 75
    no_p = normal.copy()
    no_p[:60] *= 0.1  # atrial fibrillation: no organised P wave
    # premature ventricular beat: wide, no P wave, opposite polarity T
    t = np.arange(normal.size) - 75
    pvc = -1.3 * np.exp(-0.5 * (t / 5.0) ** 2) + 0.6 * np.exp(-0.5 * ((t - 9) / 6.0) ** 2) \
        + 0.35 * np.exp(-0.5 * ((t - 40) / 12.0) ** 2)
    return {"N": normal, "A": no_p, "V": pvc}


R_AT = 75


@dataclass
class SyntheticBed:
    """A simulated patient. Windows are produced in order with `next_window()`."""

    bed_id: int
    seed: int = 0
    hr_bpm: float = 0.0
    amplitude_mv: float = 0.0
    t: int = 0  # samples emitted so far
    true_beats_s: list[float] = field(default_factory=list)
    rhythm: str = "sinus"
    _ecg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _eeg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _gen_t: int = 0  # samples generated so far
    _next_beat: float = 0.5

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng((self.seed, self.bed_id))
        if not self.hr_bpm:
            self.hr_bpm = float(self.rng.uniform(50, 110))
        if not self.amplitude_mv:
            self.amplitude_mv = float(self.rng.uniform(0.6, 2.0))
        self._next_beat = float(self.rng.uniform(0.2, 1.0))

    def _generate(self, seconds: float = 30.0) -> None:
        import neurokit2 as nk

        n = int(seconds * FS)
        rng = self.rng
        ecg = np.zeros(n + 2 * FS)
        start = self._gen_t
        # choose the rhythm of this chunk
        u = rng.uniform()
        self.rhythm = "af" if u < 0.08 else "ectopic" if u < 0.2 else "sinus"
        tmpl = _templates()
        t_beat = self._next_beat
        end_s = (start + n) / FS
        rr_base = 60.0 / self.hr_bpm
        resp_phase = rng.uniform(0, 2 * np.pi)
        while t_beat < end_s:
            kind = "N"
            if self.rhythm == "af":
                kind = "A"
                rr = rr_base * 0.8 * rng.uniform(0.55, 1.45)
            else:
                rr = rr_base * (1 + 0.04 * np.sin(2 * np.pi * 0.25 * t_beat + resp_phase)
                                + 0.02 * rng.standard_normal())
                if self.rhythm == "ectopic" and rng.uniform() < 0.15:
                    kind = "V"
            idx = int(round(t_beat * FS)) - start
            shape = tmpl[kind] * self.amplitude_mv
            lo = idx - R_AT
            a, b = max(lo, 0), min(lo + shape.size, ecg.size)
            if b > a:
                ecg[a:b] += shape[a - lo: b - lo]
            self.true_beats_s.append(t_beat)
            if kind == "V":  # premature beat, then a compensatory pause
                self.true_beats_s[-1] = t_beat - 0.35 * rr
                ecg[a:b] -= shape[a - lo: b - lo]
                lo2 = lo - int(0.35 * rr * FS)
                a2, b2 = max(lo2, 0), min(lo2 + shape.size, ecg.size)
                if b2 > a2:
                    ecg[a2:b2] += shape[a2 - lo2: b2 - lo2]
                rr *= 1.35
            t_beat += max(rr, 0.3)
        self._next_beat = t_beat
        ecg = ecg[:n]
        tt = (start + np.arange(n)) / FS
        ecg += 0.15 * self.amplitude_mv * np.sin(2 * np.pi * 0.3 * tt + resp_phase)  # wander
        ecg += 0.02 * rng.standard_normal(n)  # muscle / electronics
        if self.rhythm == "af":
            ecg += 0.05 * np.sin(2 * np.pi * rng.uniform(5, 8) * tt)  # fibrillatory waves
        # occasional lead-off: 4-10 s of flat line with noise, no beats seen
        if rng.uniform() < 0.05:
            off = int(rng.uniform(4, 10) * FS)
            at = int(rng.uniform(0, n - off))
            ecg[at:at + off] = 0.005 * rng.standard_normal(off)
            t0, t1 = (start + at) / FS, (start + at + off) / FS
            self.true_beats_s = [b for b in self.true_beats_s if not (t0 <= b < t1)]
        eeg = 12.0 * np.asarray(nk.signal_noise(duration=seconds, sampling_rate=FS, beta=1.0,
                                                 random_state=int(rng.integers(2**31))))[:n]
        alpha_env = np.clip(np.sin(2 * np.pi * 0.1 * tt + resp_phase), 0, None)
        eeg += 20.0 * alpha_env * np.sin(2 * np.pi * rng.uniform(9, 11) * tt)
        self._ecg = np.concatenate([self._ecg, ecg])
        self._eeg = np.concatenate([self._eeg, eeg])
        self._gen_t += n
        # keep only the last 5 min of true beats
        cut = (self.t / FS) - 300
        if self.true_beats_s and self.true_beats_s[0] < cut:
            self.true_beats_s = [b for b in self.true_beats_s if b >= cut]

    def prime(self) -> None:
        """Generate ahead (and build the shared templates) before the device clock starts."""
        if self._ecg.size < WINDOW:
            self._generate(float(self.rng.uniform(20, 40)))

    def next_window(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(ecg_mv float32[256], eeg_uv float32[256])``."""
        while self._ecg.size < WINDOW:
            self._generate(float(self.rng.uniform(20, 40)))
        ecg, eeg = self._ecg[:WINDOW], self._eeg[:WINDOW]
        self._ecg, self._eeg = self._ecg[WINDOW:], self._eeg[WINDOW:]
        self.t += WINDOW
        return ecg.astype(np.float32), eeg.astype(np.float32)


class MitdbReplay:
    """Loop a loaded MIT-BIH record (MLII, 128 Hz; `wardstream.datasets.load_mitdb`); no EEG."""

    def __init__(self, record, start_s: float = 0.0):
        self.record = record
        self.pos = int(start_s * FS) % self.record.ecg_mv.size

    def next_window(self) -> tuple[np.ndarray, np.ndarray | None]:
        x = self.record.ecg_mv
        if self.pos + WINDOW > x.size:
            self.pos = 0
        w = x[self.pos:self.pos + WINDOW]
        self.pos += WINDOW
        return w.astype(np.float32), None


class EegmatReplay:
    """Loop an eegmat recording: simultaneous ECG (mV) and one EEG channel (µV)."""

    def __init__(self, rec, channel: int = 0, start_s: float = 0.0):
        self.rec = rec
        self.channel = channel
        self.pos = int(start_s * FS) % rec.ecg_mv.size

    def next_window(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.rec.ecg_mv.size
        if self.pos + WINDOW > n:
            self.pos = 0
        sl = slice(self.pos, self.pos + WINDOW)
        self.pos += WINDOW
        return self.rec.ecg_mv[sl].astype(np.float32), self.rec.eeg_uv[self.channel, sl].astype(np.float32)
