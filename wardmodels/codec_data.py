"""Training windows for the codec, drawn from real recordings (never from a test split).

* ECG: MIT-BIH DS1 (MLII) and the CinC 2017 training split;
* EEG with its simultaneous ECG: eegmat subjects 00–23 (each of F3, F4, C3, C4 is a channel);
* EEG alone: Bonn sets Z and O.

Every record is causally band-passed once (`frontend.filter_record`), its first 2 s dropped
(filter start-up), and windows are cut at random offsets each batch, then scale-normalised
exactly as the device does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wardmodels.frontend import WINDOW, filter_record, normalise
from wardstream import datasets as ds

SETTLE = 2 * ds.FS
FLAT_ECG_MV = 0.02  # eegmat recordings whose ECG is a lead-off trace (see the data README)


class Pool:
    """Records concatenated into one array; uniform random windows over all valid offsets."""

    def __init__(self, records: list[np.ndarray]):
        recs = [r[SETTLE:] for r in records if len(r) >= SETTLE + WINDOW]
        if not recs:
            raise ValueError("no record is long enough for a window")
        self.data = np.concatenate(recs).astype(np.float32)
        lens = np.array([len(r) for r in recs])
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        # valid start offsets of every record, as one index space
        self.valid = np.concatenate([s + np.arange(n - WINDOW + 1) for s, n in zip(starts, lens)])

    def __len__(self) -> int:
        return len(self.valid)

    def starts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.valid[rng.integers(0, len(self.valid), n)]

    def cut(self, starts: np.ndarray) -> np.ndarray:
        return self.data[starts[:, None] + np.arange(WINDOW)]


@dataclass
class PairPool:
    """Simultaneous ECG and EEG (eegmat): the same start offsets cut both."""

    ecg: Pool
    eeg: list[Pool]  # one pool per EEG channel, aligned with ecg


def mit_signals(data_dir: Path, records: list[str] | None = None) -> list[np.ndarray]:
    """MIT-BIH ``records`` (default: all of DS1), band-passed as on the device."""
    return [filter_record(ds.load_mitdb(data_dir, r).ecg_mv) for r in (ds.DS1 if records is None else records)]


class CodecData:
    def __init__(self, data_dir: Path, paired_fraction: float = 0.4, mit_share: float = 0.6,
                 mit_records: list[str] | None = None, cinc_part: str = "train"):
        """``mit_records``: the MIT-BIH records (default: all of DS1); ``cinc_part``: ``train`` (the
        whole CinC training split) or ``fit`` (without the seeded `calib` part, `clf_data.cinc_split`)."""
        from wardmodels.clf_data import cinc_split

        data_dir = Path(data_dir)
        mit = mit_signals(data_dir, mit_records)
        cinc_set = ds.load_cinc(data_dir, "train") if cinc_part == "train" else cinc_split(data_dir, cinc_part)
        cinc = [filter_record(s) for s in cinc_set.signals]
        self.mit, self.cinc = Pool(mit), Pool(cinc)
        eegmat = ds.load_eegmat(data_dir, subjects=range(0, 24))
        ecg_pairs, eeg_pairs, eeg_alone = [], [[] for _ in range(4)], []
        for rec in eegmat:
            ecg = filter_record(rec.ecg_mv)
            eeg = [filter_record(c) for c in rec.eeg_uv]
            if ecg[SETTLE:].std() < FLAT_ECG_MV:
                eeg_alone.extend(eeg)
                continue
            ecg_pairs.append(ecg)
            for c in range(4):
                eeg_pairs[c].append(eeg[c])
        self.pairs = PairPool(Pool(ecg_pairs), [Pool(p) for p in eeg_pairs])
        bonn = [filter_record(s) for s in ds.load_bonn(data_dir, "ZO")]
        self.eeg_alone = Pool(eeg_alone + bonn + [c for p in eeg_pairs for c in p])
        self.paired_fraction, self.mit_share = paired_fraction, mit_share

    def summary(self) -> dict:
        return {"mit_ds1_windows": len(self.mit), "cinc_train_windows": len(self.cinc),
                "eegmat_pair_offsets": len(self.pairs.ecg), "eeg_alone_offsets": len(self.eeg_alone)}

    def batch(self, rng: np.random.Generator, n: int, codes: bool = False):
        """-> ({'ecg','eeg'}: float32 (n, 256) normalised, paired: bool (n,)); ``codes``: and
        ({'ecg','eeg'}: the windows' scale codes (n,)) third."""
        n_pair = int(round(self.paired_fraction * n))
        n_solo = n - n_pair
        st = self.pairs.ecg.starts(rng, n_pair)
        ecg_p = self.pairs.ecg.cut(st)
        chan = rng.integers(0, 4, n_pair)
        eeg_p = np.stack([self.pairs.eeg[c].cut(s[None])[0] for c, s in zip(chan, st)]) \
            if n_pair else np.zeros((0, WINDOW), np.float32)
        n_mit = int(round(self.mit_share * n_solo))
        ecg_s = np.concatenate([self.mit.cut(self.mit.starts(rng, n_mit)),
                                self.cinc.cut(self.cinc.starts(rng, n_solo - n_mit))])
        eeg_s = self.eeg_alone.cut(self.eeg_alone.starts(rng, n_solo))
        ecg = np.concatenate([ecg_p, ecg_s])
        eeg = np.concatenate([eeg_p, eeg_s])
        paired = np.concatenate([np.ones(n_pair, bool), np.zeros(n_solo, bool)])
        x_ecg, c_ecg = normalise(ecg, "ecg")
        x_eeg, c_eeg = normalise(eeg, "eeg")
        x = {"ecg": np.clip(x_ecg, -20, 20), "eeg": np.clip(x_eeg, -20, 20)}
        return (x, paired, {"ecg": c_ecg, "eeg": c_eeg}) if codes else (x, paired)
