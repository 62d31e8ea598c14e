"""Training and evaluation inputs for the classifiers, from real recordings.

* rhythm: CinC 2017 training split (its seeded `calib` part held back for LAQ/LAP decisions and
  the learning-rate schedule), MIT-BIH DS1 rhythm segments (10-s crops inside one annotated
  rhythm: ``(N`` → N, ``(AFIB`` → A, any other rhythm → O), the CinC records again as the codec
  reconstructs them at each level, and synthetic lead-off / noise crops labelled noisy;
* beat: MIT-BIH DS1 beats with AAMI labels, cut around the annotated R peak with ±2-sample
  jitter (the streaming detector's spread), from the original and the reconstructed signal.

Every signal goes through the shared causal front end first (`frontend.filter_record`), as in the
pipeline. Codec reconstructions are computed once and cached under ``runs/clf-cache`` keyed by
the codec weights' hash.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from wardmodels.classifier import (BEAT_CLASSES, BEAT_POST, BEAT_PRE, FS, RHYTHM_CLASSES,
                                   RHYTHM_SAMPLES, aami_labels, beat_context, beat_inputs, beat_scales, beat_waves,
                                   rr_context, rr_features,
                                   rhythm_input)
from wardmodels.frontend import WINDOW, filter_record
from wardstream import datasets as ds

log = logging.getLogger(__name__)
CACHE = Path(__file__).resolve().parent.parent / "runs" / "clf-cache"
CALIB_FRACTION = 0.1
MIT_RHYTHM = {"(N": "N", "(AFIB": "A"}


# --------------------------------------------------------------------------- codec round trip
def reconstruct(signals: list[np.ndarray], model_id: int, level: int, batch: int = 4096,
                encoder: str = "fp32") -> list[np.ndarray]:
    """Filtered signals -> what the cloud decodes at ``level`` (consecutive 2-s windows; a tail
    shorter than a window is dropped). ``encoder``: the float reference or the int8 edge encoder."""
    from wardmodels.runtime import load_deployed

    codec = load_deployed(model_id)
    wins = [s[: len(s) // WINDOW * WINDOW].reshape(-1, WINDOW) for s in signals]
    allw = np.concatenate(wins) if wins else np.zeros((0, WINDOW), np.float32)
    out = np.zeros_like(allw, dtype=np.float32)
    for i in range(0, len(allw), batch):
        codes, idx = codec.encode("ecg", allw[i:i + batch], level, encoder=encoder)
        out[i:i + batch] = codec.decode({"ecg": idx, "eeg": None}, {"ecg": codes, "eeg": None})["ecg"]
    res, k = [], 0
    for w in wins:
        res.append(out[k:k + len(w)].ravel())
        k += len(w)
    return res


def _codec_key(model_id: int, level: int = 1) -> str:
    """The weights a reconstruction at ``level`` depends on: the codec, and for a Dynamic-Deep
    level (beyond the codec's own stages) also the level chains and adapters."""
    from wardmodels.runtime import manifest

    for e in manifest():
        if e["model_id"] == model_id:
            key = Path(e["codec"]).stem
            if level > e.get("stages", 2):
                if not e.get("dd"):
                    raise ValueError(f"codec model {model_id} has no level {level}")
                key += "-" + Path(e["dd"]).stem
            return key
    raise ValueError(f"no codec model {model_id}")


def cached_reconstruct(tag: str, signals: list[np.ndarray], model_id: int, level: int) -> list[np.ndarray]:
    path = CACHE / f"{tag}-{_codec_key(model_id, level)}-L{level}.npz"
    if path.exists():
        with np.load(path) as z:
            flat, lens = z["x"], z["n"]
        if len(lens) == len(signals):
            return np.split(flat, np.cumsum(lens)[:-1])
    rec = reconstruct(signals, model_id, level)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.concatenate(rec) if rec else np.zeros(0, np.float32), n=np.array([len(r) for r in rec]))
    return rec


# --------------------------------------------------------------------------- rhythm
def draw_cinc_calib(train_records: np.ndarray) -> np.ndarray:
    """The draw the ``calib`` names come from: a seeded 10 % of the shared archive's training
    split, in its order -> which of ``train_records`` it holds."""
    rng = np.random.default_rng(7)
    calib = np.zeros(len(train_records), bool)
    calib[rng.permutation(len(calib))[: int(round(CALIB_FRACTION * len(calib)))]] = True
    return calib


def cinc_split(data_dir: Path, part: str) -> ds.CincSet:
    """``fit`` / ``calib``: the CinC training split divided into the records of the project's
    ``calib`` part (by name, `datasets.cinc_split_names`; drawn by `draw_cinc_calib`) and the others;
    ``val``/``all`` as `datasets.load_cinc` (``test`` means ``val`` here: the records held out from
    training)."""
    if part in ("fit", "calib"):
        tr = ds.load_cinc(data_dir, "train")
        calib = np.isin(tr.records, sorted(ds.cinc_split_names()["calib"]))
        keep = calib if part == "calib" else ~calib
        return ds.CincSet(tr.records[keep], tr.labels[keep], [s for s, k in zip(tr.signals, keep) if k])
    return ds.load_cinc(data_dir, "val" if part == "test" else part)


def crop_ends(length: int, step: int = 2 * FS) -> np.ndarray:
    """Where the crops of `crops_for_record` end (sample index after their last sample): every
    whole 2-s window end from 10 s on; a record shorter than 10 s: one crop, to its last whole
    window (or its end when it has none)."""
    n = length // step * step
    if n < RHYTHM_SAMPLES:
        return np.array([n if n else length])
    return np.arange(RHYTHM_SAMPLES, n + 1, step)


def crops_for_record(x: np.ndarray, step: int = 2 * FS) -> np.ndarray:
    """The crops the pipeline classifies over a record: the last 10 s at every 2-s window end
    (a record shorter than 10 s: one zero-padded crop). A streaming model's crops at the same
    times: `stream_rhythm.crops_for_record`."""
    ends = crop_ends(len(x), step)
    if ends[0] < RHYTHM_SAMPLES:
        return rhythm_input(x[None, :ends[0]])
    return rhythm_input(x[ends[:, None] - RHYTHM_SAMPLES + np.arange(RHYTHM_SAMPLES)])


def record_proba(clf, signals: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per record: softmax averaged over the pipeline's crops (`crops_for_record`), and each
    crop's softmax."""
    if getattr(clf.model.cfg, "causal", False):  # one pass per record gives every crop's decision
        import torch

        from wardmodels.stream_rhythm import record_logits

        clf.model.eval()
        per = [torch.softmax(torch.from_numpy(q), dim=1).numpy() for q in record_logits(clf.model, signals)]
        return (np.stack([q.mean(0) for q in per]) if per else np.zeros((0, len(RHYTHM_CLASSES)))), per
    crops = [crops_for_record(s) for s in signals]
    p = clf.proba(np.concatenate(crops)) if crops else np.zeros((0, len(RHYTHM_CLASSES)))
    per, k = [], 0
    for c in crops:
        per.append(p[k:k + len(c)])
        k += len(c)
    return (np.stack([q.mean(0) for q in per]) if per else np.zeros((0, len(RHYTHM_CLASSES)))), per


def mit_rhythm_crops(data_dir: Path, records: list[str], stride_s: float = 5.0, causal: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """10-s crops inside one annotated rhythm episode; ``causal``: the streaming model's crops
    ending at the same window boundaries (their history may lie in the episode before)."""
    from wardmodels import stream_rhythm

    xs, ys = [], []
    for r in records:
        rec = ds.load_mitdb(data_dir, r)
        x = filter_record(rec.ecg_mv)
        xn = stream_rhythm.stream_normalise(x) if causal else None
        bounds = np.append(rec.rhythm_times_s, len(x) / FS)
        for k, lab in enumerate(rec.rhythm_labels):
            cls = MIT_RHYTHM.get(lab, "O")
            a, b = int(bounds[k] * FS) + 2 * FS, int(bounds[k + 1] * FS)
            for s in range(a, b - RHYTHM_SAMPLES, int(stride_s * FS)):
                if causal:
                    e = -(-(s + RHYTHM_SAMPLES) // WINDOW) * WINDOW  # the next window boundary
                    if e > len(xn) or e > b:
                        continue
                    xs.append(stream_rhythm.stream_crops(xn, [e])[0])
                else:
                    xs.append(x[s:s + RHYTHM_SAMPLES])
                ys.append(RHYTHM_CLASSES.index(cls))
    n = stream_rhythm.STREAM_CROP if causal else RHYTHM_SAMPLES
    if not xs:
        return np.zeros((0, n), np.float32), np.zeros(0, np.int64)
    return (np.stack(xs) if causal else rhythm_input(np.stack(xs))), np.array(ys)


class RhythmData:
    """Per epoch: ``crops_per_record`` random 10-s crops of every fit record (original or
    reconstructed), a draw of MIT-BIH DS1 rhythm crops, and synthetic noisy crops.

    A reconstructed crop is what a bed's buffer holds: with ``mix_levels`` half of them take each
    2-s window at its own level (drawn from the original and every level in ``levels``, as a
    device under the Dynamic-Deep policy sends them), the other half one level throughout.
    ``artefact_share``: that share of the non-noisy crops carries muscle or motion artefacts
    (`add_artefacts`), labels kept."""

    artefact_share, artefacts = 0.0, None

    def __init__(self, data_dir: Path, codec_model: int | None = 2, levels=(1, 2), mit_per_epoch: int = 800,
                 synthetic_per_epoch: int = 120, recon_share: float = 0.5, crops_per_record: int = 1,
                 mix_levels: bool = False, causal: bool = False, artefact_share: float = 0.0):
        if causal and mix_levels:
            raise ValueError("mixed-level crops are not implemented for the streaming (causal) model")
        if not 0.0 <= artefact_share <= 1.0:
            raise ValueError(f"artefact_share is a share of the crops, in [0, 1]: got {artefact_share}")
        if artefact_share and causal:
            raise ValueError("artefact crops are not implemented for the streaming (causal) model")
        self.causal = causal
        fit = cinc_split(data_dir, "fit")
        self.signals = [filter_record(s) for s in fit.signals]
        self.labels = np.array([RHYTHM_CLASSES.index(v) for v in fit.labels])
        self.recon = []
        self.levels = tuple(levels) if codec_model else ()
        if codec_model:
            for lv in self.levels:
                self.recon.append(cached_reconstruct("cinc-fit", self.signals, codec_model, lv))
        self.mit_x, self.mit_y = mit_rhythm_crops(data_dir, ds.DS1, causal=causal)
        if causal:  # every version normalised once, as the stream normalises it
            from wardmodels.stream_rhythm import stream_normalise

            self.signals = [stream_normalise(s) for s in self.signals]
            self.recon = [[stream_normalise(r) for r in rec] for rec in self.recon]
        self.crops_per_record = max(1, int(crops_per_record))
        self.mit_per_epoch = mit_per_epoch * self.crops_per_record
        self.synthetic_per_epoch = synthetic_per_epoch * self.crops_per_record
        self.recon_share = recon_share if self.recon else 0.0
        self.mix_levels = bool(mix_levels and self.recon)
        self.artefact_share = float(artefact_share)
        self.artefacts = artefact_bank() if self.artefact_share else None

    def summary(self) -> dict:
        return {"cinc_fit_records": len(self.signals),
                "cinc_fit_labels": {c: int((self.labels == i).sum()) for i, c in enumerate(RHYTHM_CLASSES)},
                "mit_ds1_crops": {c: int((self.mit_y == i).sum()) for i, c in enumerate(RHYTHM_CLASSES)},
                "reconstruction_levels": list(self.levels), "crops_per_record": self.crops_per_record,
                "mix_levels": self.mix_levels, **({"causal": True} if self.causal else {}),
                **({"artefact_share": self.artefact_share} if self.artefact_share else {})}

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(RHYTHM_CLASSES)).astype(np.float64)

    def epoch_size(self) -> int:
        """Crops per `epoch` (what a per-batch learning-rate schedule counts)."""
        return len(self.labels) * self.crops_per_record + self.mit_per_epoch + self.synthetic_per_epoch

    def _mixed_crop(self, rng: np.random.Generator, i: int) -> np.ndarray:
        """A crop whose 2-s windows each come from their own version (original or a level)."""
        n = len(self.recon[0][i])  # whole windows only: every level has the same length
        versions = [self.signals[i][:n]] + [r[i] for r in self.recon]
        nwin = n // WINDOW
        lv = rng.integers(0, len(versions), nwin)
        if n <= RHYTHM_SAMPLES:
            s, m = 0, n
        else:
            s, m = int(rng.integers(0, n - RHYTHM_SAMPLES + 1)), RHYTHM_SAMPLES
        pos = s + np.arange(m)
        stack = np.stack(versions)
        return stack[lv[pos // WINDOW], pos]

    def _causal_crop(self, rng: np.random.Generator, i: int) -> np.ndarray:
        """A streaming-model crop of record ``i`` (original or one level) ending at one of the
        pipeline's decision times, drawn at random."""
        from wardmodels.stream_rhythm import decision_ends, stream_crops

        src = self.signals[i]
        if self.recon and rng.random() < self.recon_share and len(self.recon[0][i]) >= WINDOW:
            src = self.recon[rng.integers(len(self.recon))][i]
        ends = decision_ends(len(src))
        if not len(ends):
            ends = np.array([WINDOW])
            src = np.concatenate([np.zeros(WINDOW - len(src), np.float32), src])
        return stream_crops(src, [ends[rng.integers(len(ends))]])[0]

    def epoch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for i, y in enumerate(self.labels):
            for _ in range(self.crops_per_record):
                if self.causal:
                    xs.append(self._causal_crop(rng, i))
                    ys.append(y)
                    continue
                src = self.signals[i]
                if self.recon and rng.random() < self.recon_share and len(self.recon[0][i]) >= WINDOW:
                    if self.mix_levels and rng.random() < 0.5:
                        xs.append(rhythm_input(self._mixed_crop(rng, i)[None])[0])
                        ys.append(y)
                        continue
                    src = self.recon[rng.integers(len(self.recon))][i]
                if len(src) > RHYTHM_SAMPLES:
                    s = rng.integers(0, len(src) - RHYTHM_SAMPLES + 1)
                    src = src[s:s + RHYTHM_SAMPLES]
                xs.append(rhythm_input(src[None])[0])
                ys.append(y)
        if len(self.mit_y) and self.mit_per_epoch:
            pick = rng.integers(0, len(self.mit_y), self.mit_per_epoch)
            xs.extend(self.mit_x[pick])
            ys.extend(self.mit_y[pick])
        xs.extend(synthetic_noisy(rng, self.synthetic_per_epoch, causal=self.causal))
        ys.extend([RHYTHM_CLASSES.index("~")] * self.synthetic_per_epoch)
        x = np.stack(xs).astype(np.float32)
        y = np.array(ys)
        # augmentation: lead polarity, additive noise on a fifth of the crops
        x *= np.where(rng.random(len(x)) < 0.5, -1.0, 1.0)[:, None].astype(np.float32)
        noisy = rng.random(len(x)) < 0.2
        k = int(noisy.sum())
        x[noisy] += (rng.uniform(0.02, 0.3, (k, 1)) * rng.standard_normal((k, x.shape[1]))).astype(np.float32)
        order = rng.permutation(len(y))
        x, y = x[order], y[order]
        if self.artefacts is not None:
            add_artefacts(rng, x, y, self.artefacts, self.artefact_share)
        return x, y


ARTEFACT_SNR_DB = (3.0, 20.0)
ARTEFACT_MUSCLE_SHARE = 0.6


def artefact_bank(n: int = 3000, seed: int = 123) -> dict[str, np.ndarray]:
    """Unit-power snippets (``n`` of each kind, one rhythm crop long) of the artefacts a wearable
    picks up over a rhythm the label still names, as the front end passes them:

    * ``muscle``: EMG-like bursts, white noise band-passed from 15–25 Hz up to 60 Hz (4th-order
      Butterworth) and amplitude-modulated at 0.1–1 Hz;
    * ``motion``: electrode motion, 3–11 Gaussian transients of 40–250 ms plus a 0.1–1 Hz drift.

    Each goes through the causal front end (2 s of settling dropped), then zero mean, unit power.
    Deliberately other generators than the robustness evaluation's (`wardstream.eval_robust`)."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(seed)
    m = RHYTHM_SAMPLES + 2 * FS
    t = np.arange(m) / FS
    bank = {}
    for kind in ("muscle", "motion"):
        out = []
        for _ in range(n):
            if kind == "muscle":
                lo = rng.uniform(15, 25)
                z = sosfilt(butter(4, [lo, 60], "bandpass", fs=FS, output="sos"), rng.standard_normal(m))
                z = z * (0.4 + np.abs(np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 6.3))))
            else:
                z = np.zeros(m)
                for c in rng.uniform(0, m, rng.integers(3, 12)):
                    w = rng.uniform(0.04, 0.25) * FS
                    z += rng.normal(0, 1) * np.exp(-0.5 * ((np.arange(m) - c) / w) ** 2)
                z += rng.uniform(0.2, 1) * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 6.3))
            f = filter_record(z.astype(np.float32))[2 * FS:].astype(np.float64)
            f -= f.mean()
            out.append((f / max(f.std(), 1e-9)).astype(np.float32))
        bank[kind] = np.stack(out)
    return bank


def add_artefacts(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, bank: dict[str, np.ndarray],
                  share: float) -> np.ndarray:
    """In place: on a ``share`` of the crops not labelled noisy, add a ``bank`` artefact (muscle
    with probability `ARTEFACT_MUSCLE_SHARE`, else motion) at an SNR drawn uniformly from
    `ARTEFACT_SNR_DB` against the crop's own power, then renormalise as `rhythm_input` does (but
    in float64: calling `rhythm_input`, float32, changes the crops in the last bits, and the
    committed `clf-rhythm-912868549b81` was trained with this arithmetic). The label is kept: AF
    under muscle noise is still AF. Returns the indices changed."""
    pick = np.flatnonzero((rng.random(len(x)) < share) & (y != RHYTHM_CLASSES.index("~")))
    for i in pick:
        kind = "muscle" if rng.random() < ARTEFACT_MUSCLE_SHARE else "motion"
        snr = rng.uniform(*ARTEFACT_SNR_DB)
        nz = bank[kind][rng.integers(len(bank[kind]))]
        v = x[i] + nz * np.sqrt(10 ** (-snr / 10)) * x[i].std()
        v = v - v.mean()
        x[i] = np.clip(v / max(v.std(), 1e-3), -20, 20)
    return pick


def synthetic_noisy(rng: np.random.Generator, n: int, causal: bool = False) -> list[np.ndarray]:
    """Crops with no ECG in them: lead-off (flat with a little noise), electrode-motion-like
    low-frequency wander, broadband noise. ``causal``: streaming-model crops (20 s of it)."""
    from wardmodels import stream_rhythm

    out = []
    m = stream_rhythm.STREAM_CROP if causal else RHYTHM_SAMPLES
    t = np.arange(m) / FS
    for _ in range(n):
        kind = rng.integers(3)
        if kind == 0:
            x = rng.normal(0, 0.002, m)
        elif kind == 1:
            x = sum(rng.uniform(0.1, 1) * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t + rng.uniform(0, 6.3)) for _ in range(3))
            x = x + rng.normal(0, 0.05, m)
        else:
            x = rng.normal(0, 1, m)
        f = filter_record(x.astype(np.float32))
        out.append(stream_rhythm.stream_normalise(f) if causal else rhythm_input(f[None])[0])
    return out


# --------------------------------------------------------------------------- beats
def beat_table(signal: np.ndarray, beat_samples: np.ndarray, labels: np.ndarray | None,
               fs: int = FS) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(inputs (N,2,112), `beat_context` (N,6), AAMI class index or -1) for every beat of a record;
    RR context and templates from all the given beats."""
    feats = beat_context(beat_samples, fs)
    waves = beat_inputs(beat_waves(signal, beat_samples, fs), beat_samples, fs)
    y = None
    if labels is not None:
        y = aami_labels(labels)
    return waves, feats, y


class BeatData:
    """MIT-BIH DS1 beats (original + reconstructions), cut on the fly with jitter."""

    JITTER = 2

    def __init__(self, data_dir: Path, records: list[str] = ds.DS1, codec_model: int | None = 2, levels=(1, 2)):
        sigs, beats, labels, feats, scales, tmpl = [], [], [], [], [], []
        recs = [ds.load_mitdb(data_dir, r) for r in records]
        filtered = [filter_record(r.ecg_mv) for r in recs]
        versions = [filtered]
        if codec_model:
            versions += [cached_reconstruct("mit-" + "-".join(records[:1]) + f"-{len(records)}", filtered, codec_model, lv)
                         for lv in levels]
        offset = 0
        for v in versions:
            for r, x in zip(recs, v):
                b = np.round(r.beat_times_s * FS).astype(np.int64)
                keep_b = b < len(x) - BEAT_POST
                pre, post, local, long = rr_context(b, FS)
                f = rr_features(pre, post, local, long)
                y = aami_labels(r.beat_symbols)
                ok = keep_b & (y >= 0) & (b >= BEAT_PRE)
                sigs.append(x)
                beats.append(b[ok] + offset)
                labels.append(y[ok])
                feats.append(f[ok])
                scales.append(beat_scales(x, b[ok]))
                inp = beat_inputs(beat_waves(x, b), b)
                tmpl.append(inp[ok, 0] - inp[ok, 1])
                offset += len(x)
        self.signal = np.concatenate(sigs).astype(np.float32)
        self.beats = np.concatenate(beats)
        self.labels = np.concatenate(labels)
        self.feats = np.concatenate(feats)
        self.scales = np.concatenate(scales)  # per record, so no scale window spans two records
        self.templates = np.concatenate(tmpl)  # each beat's own-patient template (previous beats)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(BEAT_CLASSES)).astype(np.float64)

    def summary(self) -> dict:
        c = self.class_counts()
        return {"beats": int(len(self.labels)), **{k: int(v) for k, v in zip(BEAT_CLASSES, c)}}

    def batch(self, rng: np.random.Generator, idx: np.ndarray, morph_aug: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``morph_aug``: the share of beats whose shape is changed as another patient's might be
        (`morph_augment`), the beat and its template alike."""
        pos = self.beats[idx] + rng.integers(-self.JITTER, self.JITTER + 1, len(idx))
        waves = beat_waves(self.signal, pos, scales=self.scales[idx])
        tmpl = self.templates[idx]
        if morph_aug > 0:
            waves, tmpl = morph_augment(rng, waves, tmpl, morph_aug)
        gain = np.where(rng.random(len(idx)) < 0.5, 1.0, rng.uniform(0.8, 1.25, len(idx)))[:, None].astype(np.float32)
        waves = np.stack([waves * gain, (waves - tmpl) * gain], axis=1)
        return waves, self.feats[idx], self.labels[idx]


def morph_augment(rng: np.random.Generator, waves: np.ndarray, tmpl: np.ndarray, share: float,
                  stretch: tuple[float, float] = (0.75, 1.4)) -> tuple[np.ndarray, np.ndarray]:
    """A patient-level change of beat shape applied to a beat and its own template alike: a time
    stretch about the R peak (a wider or narrower QRS, as in bundle-branch block) and a random
    smoothing. The absolute shape then varies between "patients" while the difference between a
    beat and its patient's usual beat keeps its meaning — so the model leans on that difference,
    not on how a DS1 patient's normal beat looked."""
    n, m = waves.shape
    pick = rng.random(n) < share
    k = int(pick.sum())
    if not k:
        return waves, tmpl
    s = np.exp(rng.uniform(np.log(stretch[0]), np.log(stretch[1]), k))[:, None]
    src = np.clip(BEAT_PRE + (np.arange(m)[None, :] - BEAT_PRE) / s, 0, m - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, m - 1)
    fr = (src - lo).astype(np.float32)
    rows = np.arange(k)[:, None]

    def warp(x):
        return x[rows, lo] * (1 - fr) + x[rows, hi] * fr

    w, t = warp(waves[pick]), warp(tmpl[pick])
    a = rng.uniform(0.0, 0.5, k)[:, None].astype(np.float32)  # smoothing by a 3-tap kernel [a, 1, a]

    def smooth(x):
        p = np.pad(x, ((0, 0), (1, 1)), mode="edge")
        return (a * p[:, :-2] + p[:, 1:-1] + a * p[:, 2:]) / (1 + 2 * a)

    waves, tmpl = waves.copy(), tmpl.copy()
    waves[pick], tmpl[pick] = smooth(w), smooth(t)
    return waves, tmpl
