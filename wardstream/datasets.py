"""Loaders for the real recordings (layout of ``../shared/data/README.md``), resampled to 128 Hz.

Every loader takes a data directory and fails with `DataMissing` naming what it looked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

FS = 128

DS1 = ["101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201",
       "203", "205", "207", "208", "209", "215", "220", "223", "230"]
DS2 = ["100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213",
       "214", "219", "221", "222", "228", "231", "232", "233", "234"]
PACED = ["102", "104", "107", "217"]
ALL_MITDB = sorted(DS1 + DS2 + PACED)

# annotation symbols that mark a beat (WFDB convention)
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


class DataMissing(FileNotFoundError):
    pass


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataMissing(f"{what} not found at {path}. Pass --data-dir pointing at a directory "
                          "with the shared layout (see ../shared/data/README.md), or set "
                          "WARDSTREAM_DATA_DIR.")
    return path


def resample(x: np.ndarray, fs_in: float, fs_out: int = FS) -> np.ndarray:
    frac = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(x, frac.numerator, frac.denominator, axis=-1)


@dataclass(frozen=True)
class MitRecord:
    name: str
    ecg_mv: np.ndarray  # float32[n], MLII (first channel) at 128 Hz
    beat_times_s: np.ndarray  # float64[m]
    beat_symbols: np.ndarray  # str[m]
    rhythm_times_s: np.ndarray
    rhythm_labels: np.ndarray
    fs: int = FS


def mitdb_split(split: str) -> list[str]:
    if split == "test":
        return list(DS2)
    if split == "train":
        return list(DS1)
    if split == "all":
        return list(ALL_MITDB)
    raise ValueError(f"unknown split {split!r}; choose from test, train, all")


def load_mitdb(data_dir: Path, record: str) -> MitRecord:
    import wfdb

    base = _need(Path(data_dir) / "mitdb", "MIT-BIH directory (mitdb/)")
    _need(base / f"{record}.hea", f"MIT-BIH record {record}")
    rec = wfdb.rdrecord(str(base / record))
    ann = wfdb.rdann(str(base / record), "atr")
    fs_in = float(rec.fs)
    ecg = resample(rec.p_signal[:, 0].astype(np.float64), fs_in).astype(np.float32)
    syms = np.asarray(ann.symbol)
    t = np.asarray(ann.sample) / fs_in
    is_beat = np.isin(syms, list(BEAT_SYMBOLS))
    aux = np.asarray([a.strip("\x00").strip() for a in ann.aux_note])
    is_rhythm = (syms == "+") & (aux != "")
    return MitRecord(record, ecg, t[is_beat], syms[is_beat], t[is_rhythm], aux[is_rhythm])


def mitdb_records_present(data_dir: Path) -> list[str]:
    base = Path(data_dir) / "mitdb"
    return sorted(p.stem for p in base.glob("*.hea"))


def mitdb_records(data_dir: Path, split: str, paced: bool = True) -> list[str]:
    """The records of ``split`` that ``data_dir`` holds: DS2 (``test``) or DS1 (``train``) present, or
    (``all``) every record present, whatever its name (a held-out directory's own records);
    ``paced=False`` leaves the paced ones out (beat and rhythm work)."""
    present = mitdb_records_present(data_dir)
    names = present if split == "all" else [r for r in mitdb_split(split) if r in set(present)]
    return [r for r in names if paced or r not in PACED]


@dataclass(frozen=True)
class EegmatRecording:
    name: str
    eeg_uv: np.ndarray  # float32[4, n]: F3, F4, C3, C4
    ecg_mv: np.ndarray  # float32[n]
    fs: int = FS


def load_eegmat(data_dir: Path, subjects: range | list[int] | None = None) -> list[EegmatRecording]:
    path = _need(Path(data_dir) / "eegmat" / "eegmat_128hz.npz", "eegmat archive")
    out = []
    with np.load(path) as z:
        fs = int(z["fs"]) if "fs" in z.files else FS
        if fs != FS:
            raise ValueError(f"eegmat archive is at {fs} Hz, expected {FS}")
        for key in sorted(k for k in z.files if k.startswith("Subject")):
            sub = int(key[7:9])
            if subjects is not None and sub not in subjects:
                continue
            arr = z[key].astype(np.float32)
            out.append(EegmatRecording(key, arr[:4], arr[4]))
    if not out:
        raise DataMissing(f"no eegmat recordings for subjects {subjects} in {path}")
    return out


# --------------------------------------------------------------------------- CinC 2017
CINC_LABELS = ("N", "A", "O", "~")


@dataclass(frozen=True)
class CincSet:
    records: np.ndarray  # str[n]
    labels: np.ndarray  # str[n], one of CINC_LABELS
    signals: list[np.ndarray]  # float32 mV at 128 Hz, one per record
    fs: int = FS


CINC_SPLIT = Path(__file__).with_name("cinc2017_split.json")


@lru_cache(maxsize=1)
def cinc_split_names() -> dict[str, frozenset[str]]:
    """The names of the CinC records in the project's ``val`` (test) and ``calib`` parts, drawn once
    from the shared archive (`draw_cinc_val`, `wardmodels.clf_data.draw_cinc_calib`) and kept by name."""
    d = json.loads(CINC_SPLIT.read_text())
    return {k: frozenset(d[k]) for k in ("val", "calib")}


def draw_cinc_val(records: np.ndarray, labels: np.ndarray, seed: int = 2017, val_fraction: float = 0.2) -> np.ndarray:
    """The draw the ``val`` names come from (a seeded, label-stratified 20 % of the shared archive):
    which of ``records`` it holds out."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(records), bool)
    for lbl in np.unique(labels):
        idx = np.flatnonzero(labels == lbl)
        idx = idx[np.argsort(records[idx])]
        pick = rng.permutation(len(idx))[: int(round(val_fraction * len(idx)))]
        val[idx[pick]] = True
    return val


def load_cinc(data_dir: Path, split: str = "all") -> CincSet:
    """CinC 2017 records of ``split``: ``val`` (the records of the project's held-out split,
    `cinc_split_names`, that the archive holds) / ``train`` (the others), or ``all`` (every record
    present — also any held-out set of this layout). By name, so that an archive holding a subset
    of the shared records splits them as the shared archive does (a draw over a subset held out
    training records, and scored them as a test split)."""
    path = _need(Path(data_dir) / "cinc2017" / "cinc2017_128hz.npz", "CinC 2017 archive")
    with np.load(path, allow_pickle=False) as z:
        ecg, offsets = z["ecg_uv"], z["offsets"].astype(np.int64)
        rec, lab = z["record"].astype(str), z["label"].astype(str)
        fs = int(z["fs"]) if "fs" in z.files else FS
    if fs != FS:
        raise ValueError(f"CinC archive is at {fs} Hz, expected {FS}")
    if len(offsets) == len(rec):  # start offsets only
        offsets = np.append(offsets, len(ecg))
    keep = np.arange(len(rec))
    if split in ("train", "val"):
        val = np.isin(rec, sorted(cinc_split_names()["val"]))
        keep = np.flatnonzero(val if split == "val" else ~val)
    elif split not in ("all", "test"):
        raise ValueError(f"unknown split {split!r}; choose from train, val, all")
    sigs = [ecg[offsets[i]:offsets[i + 1]].astype(np.float32) / 1000.0 for i in keep]
    return CincSet(rec[keep], lab[keep], sigs)


# --------------------------------------------------------------------------- Bonn
def load_bonn(data_dir: Path, sets: str = "ZO") -> list[np.ndarray]:
    """Bonn EEG segments of the given sets, resampled 173.61 -> 128 Hz (original units, ~µV)."""
    path = _need(Path(data_dir) / "bonn" / "bonn_eeg.npz", "Bonn EEG archive")
    with np.load(path, allow_pickle=False) as z:
        eeg, st, fs = z["eeg"], z["set"].astype(str), float(z["fs"])
    pick = np.isin(st, list(sets))
    if not pick.any():
        raise DataMissing(f"no Bonn segments of sets {sets!r} in {path}")
    return [resample(eeg[i].astype(np.float64), fs).astype(np.float32) for i in np.flatnonzero(pick)]
