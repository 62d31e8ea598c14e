"""Dynamic-Deep: predictor training data, calibration and `wardstream eval dynamic-deep`.

Every record is analysed once per codec (`wardmodels.predictor.analyse_record`: int8 edge
features, every level's reconstruction, the rhythm classifier and QRS detector on each) and
cached under ``runs/dd-cache``. Splits, by patient:

* ``train`` (predictor fit): MIT-BIH DS1 records 1–16 and the first 1,500 CinC ``fit`` records;
* ``calib`` (conformal calibration, deployed-bound choice): DS1 records 17–22 and CinC ``calib``;
* ``test``: MIT-BIH DS2 and the CinC held-out split; ``all``: every MIT-BIH record (paced ones
  excluded) and every CinC record of the directory — any directory of the shared layout.

Compression gain counts every bit of the ECG section of a frame (modality, level tag, count,
scale code, payload; raw: 2 x f32 side + the window's lossless-coded samples as devices send
them, or int16 samples with ``raw_lossless=False``) against 16-bit samples, plus what a device
that picks its level adds to its frames (its predicted error: no byte in wire v2, which packs it
into the ECG level byte when it fits, else one) and, under audits, the reference ECG of the burst
windows. The oracle and the fixed levels send neither.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.wire import WIRE_VERSION, pred_extra_bytes
from wardmodels import DD_MODEL
from wardmodels.predictor import LEVELS, RecordAnalysis, TaskWeights, analyse_record, choose_levels, chosen_error
from wardstream.threads import one_thread

log = logging.getLogger(__name__)

CACHE = Path(__file__).resolve().parent.parent / "runs" / "dd-cache"
TRAIN_CINC = 1500
N_DS1_TRAIN = 16


@dataclass
class Part:
    name: str
    records: list[RecordAnalysis]
    source: list[str]  # "mitdb" / "cinc" per record
    labels: list[str | None]  # CinC rhythm label per record (None for MIT-BIH)
    recon: list[np.ndarray | None]  # CinC only: (6, n*256) float16, original + levels 1..5

    def stack(self, attr: str, mask: str | None = None) -> np.ndarray:
        rows = [getattr(r, attr) for r, s in zip(self.records, self.source) if mask is None or s == mask]
        return np.concatenate(rows) if rows else np.zeros((0,))

    def features(self, n_in: int) -> np.ndarray:
        """Every window's predictor input, for a predictor with ``n_in`` inputs."""
        return np.concatenate([r.features(n_in) for r in self.records])

    def mask(self, source: str) -> np.ndarray:
        """Which windows come from ``source`` ("mitdb" / "cinc")."""
        return np.concatenate([np.full(len(r.feats), s == source) for r, s in zip(self.records, self.source)])

    def groups(self) -> np.ndarray:
        """The record (patient) each window belongs to."""
        return np.concatenate([np.full(len(r.feats), i) for i, r in enumerate(self.records)])

    def errors(self, w: TaskWeights, mask: str | None = None) -> np.ndarray:
        rows = [r.error(w) for r, s in zip(self.records, self.source) if mask is None or s == mask]
        return np.concatenate(rows) if rows else np.zeros((0, len(LEVELS)))


def section_bits(codec, level: int, n_samples: int = 256, version: int | None = None) -> int:
    """Bits of an ECG section at ``level`` in wire format ``version`` (default: what devices send)."""
    from stream.wire import REGISTRY, WIRE_VERSION
    from wardmodels.wire_codec import register_deployed

    register_deployed()
    return 8 * REGISTRY[codec.model_id].level(level).section_bytes(n_samples, version or WIRE_VERSION)


def _signals(data_dir: Path, split: str, filtered: bool = True):
    from wardmodels.clf_data import cinc_split
    from wardmodels.frontend import filter_record
    from wardstream import datasets as ds

    if split == "train":
        mit = ds.DS1[:N_DS1_TRAIN]
        cinc = cinc_split(data_dir, "fit")
        cinc = ds.CincSet(cinc.records[:TRAIN_CINC], cinc.labels[:TRAIN_CINC], cinc.signals[:TRAIN_CINC])
    elif split == "calib":
        mit, cinc = ds.DS1[N_DS1_TRAIN:], cinc_split(data_dir, "calib")
    elif split in ("test", "all"):
        # held-out evaluation on any directory of the shared layout, a subset of the databases or
        # records included: the split's MIT-BIH records present, and CinC when its archive is there
        mit = ds.mitdb_records(data_dir, split, paced=False)
        has_cinc = (Path(data_dir) / "cinc2017" / "cinc2017_128hz.npz").exists()
        cinc = cinc_split(data_dir, split) if has_cinc else ds.CincSet(np.array([], str), np.array([], str), [])
        if not mit and not len(cinc.records):
            raise ds.DataMissing(f"no MIT-BIH records (paced ones excluded) or CinC records of split {split!r} "
                                 f"under {data_dir} (CinC's test split: the project's held-out records, by name; "
                                 "--split all scores every record of another set)")
    else:
        raise ValueError(f"unknown split {split!r}; choose from train, calib, test, all")
    f = filter_record if filtered else (lambda x: x)
    out = []
    for r in mit:
        out.append(("mitdb", r, None, f(ds.load_mitdb(data_dir, r).ecg_mv)))
    for r, lab, s in zip(cinc.records, cinc.labels, cinc.signals):
        out.append(("cinc", str(r), str(lab), f(s)))
    return out


def _part_signals(part: Part, data_dir: Path, split: str, filtered: bool = True) -> list[np.ndarray]:
    """The ECG of each record of an analysed ``part``, in its order (a record shorter than one
    window is not in a part); an error when the data directory no longer matches the cache."""
    sigs = [x for _, _, _, x in _signals(data_dir, split, filtered=filtered) if len(x) // 256 >= 1]
    if len(sigs) != len(part.records):
        raise RuntimeError(f"{split}: {len(sigs)} records in the data, {len(part.records)} in the cache")
    return sigs


def _ecg_window_bits(data_dir: Path, split: str, part: Part, filtered: bool, size, windows=None) -> np.ndarray:
    """Per window of ``part``: 8 x ``size(int16 samples)`` of its ECG at the raw level's gain
    (`wardmodels.wire_codec.raw_channel`), or 0 where ``windows`` (bool per window) is False."""
    from stream.wire import Modality
    from wardmodels.wire_codec import raw_channel

    sigs = _part_signals(part, data_dir, split, filtered)
    n = sum(len(r.feats) for r in part.records)
    want = np.ones(n, bool) if windows is None else np.asarray(windows, bool)
    out = np.zeros(n, np.float64)
    k = 0
    for r, x in zip(part.records, sigs):
        for j in np.flatnonzero(want[k:k + len(r.feats)]):
            out[k + j] = 8 * size(raw_channel(Modality.ECG, x[j * 256:(j + 1) * 256]).data)
        k += len(r.feats)
    return out


def raw_level_bits(data_dir: Path, split: str, part: Part, version: int | None = None) -> np.ndarray:
    """Per window of ``part``, the bits of its ECG section at the raw level as a device sends it
    lossless-coded (`stream.lossless`; the unfiltered ECG at the raw level's 1 µV per LSB): what a
    window the policy sends raw really costs (plain int16: `section_bits(codec, 0)` = 4,192)."""
    from stream.wire import WIRE_VERSION, raw_section_bytes

    v = version or WIRE_VERSION
    return _ecg_window_bits(data_dir, split, part, False, lambda d: raw_section_bytes(d, True, v))


def coded_level_bits(data_dir: Path, split: str, part: Part, codec, shorter: bool = True) -> np.ndarray | None:
    """Per window of ``part`` and VQ level 1..5, the bits of its ECG section as a device sends it
    entropy-coded (wire v2 flag bit 6, `stream.vqcode`, the model's committed tables): the level
    byte, then the scale code and indices as a stream of their own, its ending included (in a
    frame the sections share one stream and the frame pads it to a byte, ≤ 7 bits per frame,
    counted with the frame's header and CRC) — or, with ``shorter``, the bit-packed section where
    that is shorter, as a device sends its frame coded only when it comes out shorter
    (`device_sim.ward.Device`; an ECG-only frame). None when the model has no tables for every level.
    The device's integer encoder runs on every window at every level once per data directory,
    split and table file (cached beside the analysis)."""
    from stream import vqcode
    from stream.wire import REGISTRY, Modality
    from wardmodels.frontend import normalise
    from wardmodels.wire_codec import register_deployed

    register_deployed()
    spec = REGISTRY[codec.model_id]
    tables = codec.entry.get("wire_tables")
    if not tables or any(not spec.codes(Modality.ECG, L) for L in LEVELS):
        return None
    key = _cache_key(codec, data_dir, split)
    path = key.with_name(f"{key.stem}-wirebits-{Path(tables).stem.rsplit('-', 1)[-1]}.npz")
    n = sum(len(r.feats) for r in part.records)
    plain = np.array([8 * spec.level(L).section_bytes(256, 2) for L in LEVELS], np.float64)
    if path.exists():
        out = np.load(path)["bits"]
        if out.shape == (n, len(LEVELS)):
            return np.minimum(out, plain[None, :]) if shorter else out
    models = [spec.section_model(Modality.ECG, L) for L in LEVELS]
    sigs = _part_signals(part, data_dir, split)
    out, k = np.zeros((n, len(LEVELS))), 0
    for r, x in zip(part.records, sigs):
        m = len(r.feats)
        xn, codes = normalise(x[: m * 256].reshape(m, 256), "ecg")
        idx, _ = codec.analyse("ecg", xn, codes)
        for j, L in enumerate(LEVELS):
            for t in range(m):
                out[k + t, j] = 8 + vqcode.coded_bits(models[j], codes[t], idx[L][t])
        k += m
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, bits=out)
    return np.minimum(out, plain[None, :]) if shorter else out


def _key_parts(codec, data_dir: Path, split: str) -> tuple[str, str, str]:
    """(everything an analysis depends on but the rhythm classifier, the classifier, its tag)."""
    import hashlib

    from wardmodels.clf_runtime import classifier_manifest, compute_dtype

    # the analysis holds the rhythm classifier's outputs: its weights and arithmetic are in the key
    # (on one thread, `one_thread`: bf16 outputs depend on the thread count)
    clf = f"{classifier_manifest().get('rhythm', {}).get('packed')}|{compute_dtype()}|1 thread"
    # and the QRS errors and task features come from the pipeline's detector: its source too
    import processors.qrs

    qrs = hashlib.sha256(Path(processors.qrs.__file__).read_bytes()).hexdigest()[:12]
    head = f"{Path(data_dir).resolve()}|{split}|{codec.entry.get('dd')}|{codec.entry.get('dd_edge')}|"
    base = hashlib.sha256(f"{head}{qrs}".encode()).hexdigest()[:12]
    tag = hashlib.sha256(f"{head}{clf}|{qrs}".encode()).hexdigest()[:12]
    return base, clf, tag


def _cache_key(codec, data_dir: Path, split: str) -> Path:
    return CACHE / f"{split}-{_key_parts(codec, data_dir, split)[2]}.npz"


def _note_key(path: Path, base: str, clf: str) -> None:
    """Beside an analysis, what it was made from (``<analysis>.json``): the key without the
    classifier (``base``, `_key_parts`), so that another rhythm classifier can start from it (`_donor`)."""
    note = path.with_suffix(".json")
    if not note.exists():
        note.write_text(json.dumps({"base": base, "rhythm": clf}) + "\n")


def _donor(split: str, base: str) -> Path | None:
    """A cached analysis of the same split, codec and detector (``base``), made with another rhythm classifier."""
    for note in sorted(CACHE.glob(f"{split}-*.json")):
        try:
            ok = json.loads(note.read_text()).get("base") == base
        except (OSError, ValueError):
            continue
        if ok and note.with_suffix(".npz").exists():
            return note.with_suffix(".npz")
    return None


def _rescore_rhythm(part: Part, data_dir: Path, split: str, codec, clf) -> None:
    """Replace the rhythm classifier's outputs (and so the task error's KL) of an analysis, every
    record through every level again as `predictor.analyse_record` computes them; the QRS part,
    the features and the task and decode features do not depend on the classifier and stay."""
    from wardmodels.predictor import kl_rows, window_crops

    sigs = _part_signals(part, data_dir, split)
    for k, (r, x) in enumerate(zip(part.records, sigs)):
        n = len(r.feats)
        x = x[: n * 256]
        r.p_orig = clf.proba(window_crops(x, n))
        for j, rec in enumerate(_recons(codec, x)):
            r.p_level[j] = clf.proba(window_crops(rec, n))
            r.kl[:, j] = kl_rows(r.p_orig, r.p_level[j])
        if k % 200 == 0:
            log.info("%s: rhythm classifier's outputs of %d/%d records", split, k + 1, len(sigs))


@one_thread()
def load_part(data_dir: Path, split: str, model_id: int = DD_MODEL, keep_recon: bool = True, decode: bool = False,
              rhythm: bool = False, beat: bool = False) -> Part:
    """Analyse (or load from the cache) every record of ``split``; ``decode``: make sure the
    decode check's features are there (a cache from before them gets them added: every level
    decoded again, ~20 min for the train part on one core); ``rhythm``: also the device's small
    rhythm model's (`wardmodels.edge_rhythm`, cached beside the analysis per edge model); ``beat``:
    also the task error's beat term (`predictor.beat_term`, cached beside it per beat model)."""
    part = _load_part(data_dir, split, model_id, keep_recon, decode)
    if rhythm:
        _attach_rhythm(part, data_dir, split, model_id)
    if beat:
        _attach_beat(part, data_dir, split, model_id)
    return part


def part_for(data_dir: Path, split: str, model_id: int, predictor, keep_recon: bool = True) -> Part:
    """`load_part` with whatever the predictor reads (decode check, small rhythm model) and its
    task error needs (the beat term)."""
    from wardmodels.dd_edge import reads_decode, reads_rhythm

    return load_part(data_dir, split, model_id, keep_recon, decode=reads_decode(predictor.n_in),
                     rhythm=reads_rhythm(predictor.n_in), beat=bool(predictor.weights.beat))


def _load_part(data_dir: Path, split: str, model_id: int, keep_recon: bool, decode: bool) -> Part:
    from wardmodels.clf_runtime import load_deployed_classifier
    from wardmodels.runtime import load_deployed

    codec = load_deployed(model_id)
    base, clf_tag, tag = _key_parts(codec, data_dir, split)
    path = CACHE / f"{split}-{tag}.npz"  # `_cache_key`
    donor = None if path.exists() else _donor(split, base)
    if path.exists() or donor is not None:
        part = _load(path if donor is None else donor, split)
        if donor is not None:  # another rhythm classifier's analysis: only its outputs change
            import shutil

            _rescore_rhythm(part, data_dir, split, codec, load_deployed_classifier("rhythm"))
            _save(path, part)
            for side in CACHE.glob(f"{donor.stem}-*.npz"):  # the device's coded bits, its small rhythm model
                shutil.copyfile(side, CACHE / f"{path.stem}{side.name[len(donor.stem):]}")
        _note_key(path, base, clf_tag)
        if any(r.task is None for r in part.records):  # cached before the task features existed
            _attach_task(part, data_dir, split)
            _save(path, part)
        if decode and any(r.decode is None for r in part.records):  # ... or the decode check's
            _attach_decode(part, data_dir, split, codec)
            _save(path, part)
        return part
    clf = load_deployed_classifier("rhythm")
    recs, source, labels, recon = [], [], [], []
    sigs = _signals(data_dir, split)
    total = max(1, sum(len(x) for _, _, _, x in sigs))  # samples: records differ 60-fold in length
    t0 = last = time.monotonic()
    done = 0
    for k, (src, name, lab, x) in enumerate(sigs):
        a = analyse_record(codec, clf, x)
        done += len(x)
        now = time.monotonic()
        if k == 0 or now - last >= 30 or k + 1 == len(sigs):  # progress every 30 s, with an estimate
            last = now
            eta = (now - t0) * (total - done) / done if 0 < done < total else 0.0
            log.info("%s: %d/%d records analysed (%.0f %% of the signal) in %.0f s%s", split, k + 1, len(sigs),
                     100 * done / total, now - t0,
                     "" if not eta else f", about {eta / 60:.0f} min to go" if eta >= 90 else f", about {eta:.0f} s to go")
        if a is None:
            continue
        recs.append(a)
        source.append(src)
        labels.append(lab)
        rc = None
        if keep_recon and src == "cinc":
            n = len(a.feats)
            rc = np.concatenate([x[None, : n * 256], _recons(codec, x[: n * 256])]).astype(np.float16)
        recon.append(rc)
    part = Part(split, recs, source, labels, recon)
    _save(path, part)
    _note_key(path, base, clf_tag)
    return part


def _attach_task(part: Part, data_dir: Path, split: str) -> None:
    from wardmodels.dd_edge import task_features

    sigs = _part_signals(part, data_dir, split)
    for r, x in zip(part.records, sigs):
        r.task = task_features(x)
        if len(r.task) != len(r.feats):
            raise RuntimeError(f"{split}: a record's windows do not match its cached analysis")


def _attach_decode(part: Part, data_dir: Path, split: str, codec) -> None:
    from wardmodels.dd_edge import decode_features

    sigs = _part_signals(part, data_dir, split)
    for k, (r, x) in enumerate(zip(part.records, sigs)):
        n = len(r.feats)
        x = x[: n * 256]
        r.decode = decode_features(x, _recons(codec, x))
        if k % 200 == 0:
            log.info("%s: decode check of %d/%d records", split, k + 1, len(sigs))


def _attach_rhythm(part: Part, data_dir: Path, split: str, model_id: int) -> None:
    """Every record's `edge_rhythm.rhythm_features` (the device's small rhythm model on the last
    10 s of the original and of every level), from ``<analysis cache>-rhythm-<edge model>.npz`` or
    computed (every level decoded again) and cached there."""
    from wardmodels.edge_rhythm import rhythm_features
    from wardmodels.runtime import load_deployed

    codec = load_deployed(model_id)
    if codec.edge_rhythm is None:
        raise SystemExit(f"codec model {model_id} has no edge rhythm model; run wardstream train dynamic-deep "
                         "--phase edge-rhythm")
    tag = Path(codec.edge_rhythm.name).stem.rsplit("-", 1)[-1]
    _attach_side(part, data_dir, split, codec, "rhythm", tag, lambda x, rc: rhythm_features(codec.edge_rhythm, x, rc),
                 "small rhythm model")


def _attach_beat(part: Part, data_dir: Path, split: str, model_id: int) -> None:
    """Every record's `predictor.beat_term` (the deployed beat classifier on the original and every
    level), from ``<analysis cache>-beat-<beat model>.npz`` or computed (every level decoded
    again; 1.5 / 4 / 4 min for calib / train / test, 2026-12-06) and cached there."""
    import hashlib

    from wardmodels.clf_runtime import classifier_manifest, compute_dtype, load_deployed_classifier
    from wardmodels.predictor import beat_term
    from wardmodels.runtime import load_deployed

    codec = load_deployed(model_id)
    clf = load_deployed_classifier("beat")
    # the beat model's weights, its second stage and its arithmetic are in the side file's name
    beat_entry = json.dumps(classifier_manifest().get("beat", {}), sort_keys=True)
    tag = hashlib.sha256(f"{beat_entry}|{clf.name}|{compute_dtype()}".encode()).hexdigest()[:12]
    _attach_side(part, data_dir, split, codec, "beat", tag, lambda x, rc: beat_term(clf, x, rc), "beat term")


def _attach_side(part: Part, data_dir: Path, split: str, codec, attr: str, tag: str, compute, what: str) -> None:
    """Every record's ``attr`` (an array per window) from the file beside the analysis,
    ``<analysis cache>-<attr>-<tag>.npz``, or computed by ``compute(x, reconstructions at every
    level)`` and cached there."""
    path = _cache_key(codec, data_dir, split)
    side = path.with_name(f"{path.stem}-{attr}-{tag}.npz")
    lens = [len(r.feats) for r in part.records]
    if side.exists():
        z = np.load(side)
        if list(z["lens"]) == lens:
            for r, v in zip(part.records, np.split(z[attr], np.cumsum(lens)[:-1])):
                setattr(r, attr, v)
            return
    sigs = _part_signals(part, data_dir, split)
    for k, (r, x) in enumerate(zip(part.records, sigs)):
        x = x[: len(r.feats) * 256]
        setattr(r, attr, compute(x, _recons(codec, x)))
        if k % 200 == 0:
            log.info("%s: %s of %d/%d records", split, what, k + 1, len(sigs))
    side.parent.mkdir(parents=True, exist_ok=True)
    np.savez(side, lens=np.array(lens), **{attr: np.concatenate([getattr(r, attr) for r in part.records])})


def _recons(codec, x: np.ndarray) -> np.ndarray:
    """Filtered ECG of one record (n * 256) -> its reconstructions at levels 1..5 (one analysis)."""
    from wardmodels.frontend import normalise
    from wardmodels.predictor import level_reconstructions

    n = len(x) // 256
    xn, codes = normalise(x.reshape(n, 256), "ecg")
    idx, _ = codec.analyse("ecg", xn, codes)
    return level_reconstructions(codec, idx, codes)


def _save(path: Path, p: Part) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lens = np.array([len(r.feats) for r in p.records])
    arrays = {k: np.concatenate([getattr(r, k) for r in p.records]) for k in ("feats", "kl", "qrs", "p_orig")}
    arrays["p_level"] = np.concatenate([r.p_level for r in p.records], axis=1)
    for k in ("task", "decode"):
        if all(getattr(r, k) is not None for r in p.records):
            arrays[k] = np.concatenate([getattr(r, k) for r in p.records])
    rl = [r for r in p.recon if r is not None]
    arrays["recon"] = np.concatenate(rl, axis=1) if rl else np.zeros((6, 0), np.float16)
    np.savez(path, lens=lens, source=np.array(p.source), labels=np.array([x or "" for x in p.labels]), **arrays)


def _load(path: Path, split: str) -> Part:
    z = np.load(path)
    lens = z["lens"]
    cut = np.cumsum(lens)[:-1]
    parts = {k: np.split(z[k], cut) for k in ("feats", "kl", "qrs", "p_orig")}
    pl = np.split(z["p_level"], cut, axis=1)
    task, dec = (np.split(z[k], cut) if k in z.files else [None] * len(lens) for k in ("task", "decode"))
    recs = [RecordAnalysis(parts["feats"][i], parts["kl"][i], parts["qrs"][i], parts["p_orig"][i], pl[i], task[i],
                           dec[i]) for i in range(len(lens))]
    source = [str(s) for s in z["source"]]
    labels = [str(s) or None for s in z["labels"]]
    recon, k = [], 0
    rc = z["recon"]
    for n, s in zip(lens, source):
        if s == "cinc" and rc.shape[1]:
            recon.append(rc[:, k:k + n * 256])
            k += n * 256
        else:
            recon.append(None)
    return Part(split, recs, source, labels, recon)


# --------------------------------------------------------------------------- F1 on reconstructions
def cinc_f1(part: Part, levels_per_record: list[np.ndarray] | None, clf) -> float | None:
    """Record-level CinC F1 (mean of N, A, O) with each window at its chosen level (None: the
    original signal); None when ``part`` holds no CinC record (a directory with MIT-BIH alone)."""
    from wardmodels.train_classifier import cinc_f1 as f1_of

    ys, pred = cinc_decisions(part, levels_per_record, clf)
    f1 = float(f1_of(ys, pred)) if len(ys) else float("nan")
    return f1 if np.isfinite(f1) else None


def f1_loss_upper(ys: np.ndarray, pred_orig: np.ndarray, pred_recon: np.ndarray, confidence: float,
                  resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(F1 on originals − F1 on reconstructions, its upper ``confidence`` bound by a paired
    bootstrap over records): how much F1 the policy may cost on new records of the same kind."""
    from wardmodels.train_classifier import cinc_f1 as f1_of

    point = float(f1_of(ys, pred_orig) - f1_of(ys, pred_recon))
    rng = np.random.default_rng(seed)
    loss = np.empty(resamples)
    for i in range(resamples):
        b = rng.integers(0, len(ys), len(ys))
        loss[i] = f1_of(ys[b], pred_orig[b]) - f1_of(ys[b], pred_recon[b])
    return point, float(np.quantile(loss, confidence))


def cinc_decisions(part: Part, levels_per_record: list[np.ndarray] | None, clf) -> tuple[np.ndarray, np.ndarray]:
    """(label, the rhythm model's record-level decision) per CinC record of ``part``, each window
    at its chosen level (None: the original signal)."""
    from wardmodels.classifier import RHYTHM_CLASSES
    from wardmodels.clf_data import record_proba

    sigs, ys = [], []
    j = 0
    for r, s, lab, rc in zip(part.records, part.source, part.labels, part.recon):
        if s != "cinc":
            continue
        if levels_per_record is None:
            x = rc[0].astype(np.float32)
        else:
            lv = levels_per_record[j]
            w = rc.reshape(6, -1, 256)
            x = w[lv, np.arange(len(lv))].ravel().astype(np.float32)
        j += 1
        sigs.append(x)
        ys.append(RHYTHM_CLASSES.index(lab))
    p, _ = record_proba(clf, sigs)
    return np.array(ys), p.argmax(1)


# --------------------------------------------------------------------------- policy scoring
def violations_by_source(part: Part, levels: np.ndarray, err: np.ndarray, bound: float) -> dict[str, float]:
    """The violation rate of the windows of each source present in ``part``."""
    return {src: float((chosen_error(levels[m], err[m]) > bound).mean())
            for src in ("mitdb", "cinc") if (m := part.mask(src)).any()}


def gains(levels: np.ndarray, bits, raw_bits: np.ndarray | None = None,
          extra_bits: np.ndarray | float = 0.0) -> tuple[float, float]:
    """(mean of per-window gains — the paper's statistic, total raw bits / total bits sent);
    ``bits``: per level the section's fixed size ({level: bits}), or per window and level
    ((N, 1 + levels), `per_window_bits`: entropy-coded sections); ``raw_bits``: per window, what it
    costs at the raw level (lossless-coded), else the fixed size; ``extra_bits``: what else the
    window's frame carries for its ECG (the predicted-error byte of a device that picks its level,
    an audit reference), per window or the same for all."""
    if isinstance(bits, np.ndarray):
        b = bits[np.arange(len(levels)), levels].astype(np.float64)
    else:
        b = np.array([bits[int(L)] for L in range(0, len(LEVELS) + 1)], np.float64)[levels]
    if raw_bits is not None:
        b = np.where(levels == 0, raw_bits, b)
    b = b + extra_bits
    return float((4096.0 / b).mean()), float(4096.0 * len(b) / b.sum())


def per_window_bits(bits: dict[int, int], coded: np.ndarray | None, n: int):
    """The fixed section sizes, or with ``coded`` ((N, levels): each window's entropy-coded ECG
    section at every VQ level, `coded_level_bits`) a per-window table for `gains` (N, 1 + levels)."""
    if coded is None:
        return bits
    if coded.shape != (n, len(LEVELS)):
        raise ValueError(f"coded bits {coded.shape} for {n} windows")
    return np.concatenate([np.full((n, 1), float(bits[0])), coded], axis=1)


def rows(bits, m):
    """``bits`` (a per-level dict or a per-window table) for the windows ``m`` selects."""
    return bits[m] if isinstance(bits, np.ndarray) else bits


def oracle_levels(err: np.ndarray, bound: float) -> np.ndarray:
    """The feedback-aware oracle: the highest level whose real error is under the bound."""
    lv = np.zeros(len(err), np.int64)
    for j, L in enumerate(LEVELS):
        lv[err[:, j] <= bound] = L
    return lv


def score(pred, err, bits, predictor, bound: float, raw_bits: np.ndarray | None = None,
          pred_bits=0.0) -> dict:
    """The predictor's choices at ``bound`` against the oracle's; ``pred_bits``: what each of the
    device's frames carries besides its section, a number or ``f(pred, levels)`` per window
    (`device_pred_bits`: the predicted error it sends; the oracle, which is told the real error,
    sends none)."""
    lv = predictor.choose(pred, bound)
    real = chosen_error(lv, err)
    olv = oracle_levels(err, bound)
    g_mean, g_agg = gains(lv, bits, raw_bits, pred_bits(pred, lv) if callable(pred_bits) else pred_bits)
    o_mean, o_agg = gains(olv, bits, raw_bits)
    return {"bound": bound, "slack": predictor.slack(bound), "mean_compression_gain": g_mean,
            "aggregate_compression_gain": g_agg, "violation_rate": float((real > bound).mean()),
            "mean_real_error": float(real.mean()),
            "level_histogram": {str(L): int((lv == L).sum()) for L in range(0, len(LEVELS) + 1)},
            "oracle_mean_gain": o_mean, "oracle_aggregate_gain": o_agg,
            "oracle_gain_fraction": g_mean / o_mean if o_mean else None,
            "oracle_aggregate_fraction": g_agg / o_agg if o_agg else None}, lv


def device_pred_bits(version: int | None = None):
    """``f(pred, levels)``: per window, the bits that the predicted error a device sends with the
    level it chose adds to its frame — ``expm1`` of its prediction at a VQ level, 0 at the raw
    one, as `wardmodels.wire_codec` sends it; 0 bits where wire ``version`` (default: what devices
    send) packs it into the ECG level byte, else 8 (`stream.wire.pred_extra_bytes`)."""
    v = version or WIRE_VERSION

    def bits(pred: np.ndarray, levels: np.ndarray) -> np.ndarray:
        at = np.concatenate([np.zeros((len(pred), 1)), pred], 1)[np.arange(len(levels)), levels]
        sent = np.where(levels > 0, np.expm1(np.maximum(at, 0.0)), 0.0)
        return 8.0 * pred_extra_bytes(levels, sent, v)
    return bits


# what every frame of a device that picks its level carries for its predicted error, in the wire
# format devices send
PRED_BITS = device_pred_bits()


def record_starts(part: Part) -> np.ndarray:
    """Per window of ``part``: whether it is its record's first (a device's stream starts there)."""
    lens = [len(r.feats) for r in part.records]
    out = np.zeros(sum(lens), bool)
    out[np.cumsum([0] + lens[:-1]).astype(np.int64)[np.asarray(lens) > 0]] = True
    return out


def front_state_bits(levels: np.ndarray, starts: np.ndarray, version: int | None = None) -> np.ndarray:
    """Per window, the bits of the front end's state that a device picking its level sends with a
    raw window following a codec-level one of its stream (wire v2, `stream.wire.STATE_BYTES`;
    ``starts``: `record_starts`), so that the cloud filters it as the device did."""
    from stream.wire import STATE_BYTES

    levels = np.asarray(levels)
    if (version or WIRE_VERSION) != 2:
        return np.zeros(len(levels))
    prev = np.concatenate([[0], levels[:-1]])
    return 8.0 * STATE_BYTES * ((levels == 0) & (prev > 0) & ~np.asarray(starts, bool))


def device_frame_bits(starts: np.ndarray, version: int | None = None):
    """``f(pred, levels)``: per window, what a device picking its level adds to its frame beside its
    ECG section — the predicted error (`device_pred_bits`) and, on a raw window after a codec-level
    one, the front end's state (`front_state_bits`); ``starts`` aligned with the windows scored."""
    pb = device_pred_bits(version)

    def bits(pred: np.ndarray, levels: np.ndarray) -> np.ndarray:
        return pb(pred, levels) + front_state_bits(levels, starts, version)
    return bits


# windows whose real error one audit observes: the worker scores the last window of each 10-s burst
# (`processors.audit`: only it has 10 s of original for the rhythm classifier)
AUDIT_SPAN = 1


def audit_corrected_levels(part: Part, predictor, bound: float, every: int, span: int = AUDIT_SPAN) -> np.ndarray:
    """Levels each bed would send if the cloud observed the real error of ``span`` windows every
    ``every`` windows and sent the bed a slack offset back — what `processors.audit.update_slack`
    and the devices' control-topic reader do, offline.

    What an audit can observe is the real error at the level the device chose, beside the
    prediction the device sent for it; the offset is `processors.audit.slack_offset` of the
    residuals ``log1p(real) - predicted`` of the bed's last audited VQ windows, and applies from
    the window after the audit. A bed whose errors the predictor underestimates gets a larger
    slack; a bed it predicts well keeps ~0."""
    from processors.audit import RESIDUALS_KEPT, slack_offset

    lam = predictor.slack(bound)
    out = []
    for r in part.records:
        p, e = predictor.predict(r.features(predictor.n_in)), r.error(predictor.weights)
        lv = np.zeros(len(p), np.int64)
        res: list[float] = []
        delta, start = 0.0, 0
        for end in list(range(every, len(p), every)) + [len(p)]:
            lv[start:end] = choose_levels(p[start:end] + predictor.offsets, bound, lam + delta)
            audited = np.arange(max(start, end - span), end)
            vq = audited[lv[audited] > 0]
            res = (res + (np.log1p(e[vq, lv[vq] - 1]) - p[vq, lv[vq] - 1]).tolist())[-RESIDUALS_KEPT:]
            delta = slack_offset(res)
            start = end
        out.append(lv)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def audit_burst_windows(part: Part, every: int) -> np.ndarray:
    """Per window of ``part``: whether it carries an audit reference in `audit_corrected_levels`'
    schedule — the `stream.wire.AUDIT_WINDOWS` windows before each audit whose correction applies
    to later windows (a record's last, partial period sends none)."""
    from stream.wire import AUDIT_WINDOWS

    out = []
    for r in part.records:
        m = np.zeros(len(r.feats), bool)
        for end in range(every, len(m), every):
            m[max(0, end - AUDIT_WINDOWS):end] = True
        out.append(m)
    return np.concatenate(out) if out else np.zeros(0, bool)


def reference_bits(data_dir: Path, split: str, part: Part, windows: np.ndarray, lossless: bool = True,
                   version: int | None = None) -> np.ndarray:
    """Per window of ``part``: the bits of the audit reference it carries (0 where ``windows`` is
    False) — the ECG window after the device's front end at the raw level, lossless-coded as devices
    send it (`device_sim.ward.Device`, `stream.wire.reference_bytes`)."""
    from stream.wire import WIRE_VERSION, reference_bytes

    v = version or WIRE_VERSION
    return _ecg_window_bits(data_dir, split, part, True, lambda d: reference_bytes(d, lossless, v), windows)


def _split_levels(part: Part, lv: np.ndarray, source: str = "cinc") -> list[np.ndarray]:
    out, k = [], 0
    for r, s in zip(part.records, part.source):
        n = len(r.feats)
        if s == source:
            out.append(lv[k:k + n])
        k += n
    return out


BOUND_GRID = np.round(np.geomspace(0.05, 3.0, 24), 4)


def _device_predictor(x: np.ndarray, y: np.ndarray, weights: TaskWeights = TaskWeights(), alpha: float = 0.0,
                      hidden: int = 16, seed: int = 0, quantile: float | None = None):
    """An MLP fitted on (x, y) as the device holds it (float16 weights), slack table still empty."""
    from wardmodels.predictor import Predictor, fit_mlp

    pred = Predictor(*fit_mlp(x, y, hidden=hidden, seed=seed, quantile=quantile), weights, alpha, BOUND_GRID,
                     np.zeros(len(BOUND_GRID)), {})
    return Predictor.from_bytes(pred.to_bytes())


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int, hidden: int = 16, seed: int = 0,
                quantile: float | None = None) -> np.ndarray:
    """Predictions of each window by an MLP fitted without its patient's fold (``k`` folds of whole
    patients, seeded), through the device's float16 weights."""
    if k < 2:
        raise ValueError("cross-fit needs at least 2 folds")
    ug = np.unique(groups)
    fold_of = np.random.default_rng(seed).permutation(len(ug)) % k
    fold = fold_of[np.searchsorted(ug, groups)]
    out = np.zeros((len(x), y.shape[1]), np.float32)
    for f in range(k):
        m = fold == f
        out[m] = _device_predictor(x[~m], y[~m], hidden=hidden, seed=seed, quantile=quantile).predict(x[m])
    return out


OFFSET_GRID = np.round(np.arange(-0.6, 0.61, 0.1), 2)


def select_offsets(pred: np.ndarray, err: np.ndarray, groups: np.ndarray, bits: dict, raw_bits: np.ndarray | None,
                   bound: float, alpha: float, delta: float | None, sweeps: int = 2) -> tuple[np.ndarray, dict]:
    """Per-level offsets on the predictions (where the violation budget is spent), by coordinate
    ascent over `OFFSET_GRID` on held-out predictions (out-of-fold): at ``bound``, with the slack
    each candidate calibrates to on the same rows, maximise the aggregate gain + mean gain / 10
    among the candidates that lose neither against no offsets. Returns (offsets, the scores)."""
    from wardmodels.predictor import calibrate, choose_levels

    def run(offs):
        lam = calibrate(pred + offs[None, :], err, np.array([bound]), alpha, groups=groups, delta=delta)[0]
        if not np.isfinite(lam):
            return None
        lv = choose_levels(pred + offs[None, :], bound, lam)
        g_mean, g_agg = gains(lv, bits, raw_bits, PRED_BITS(pred, lv))  # as `score` counts the policy's frames
        return {"mean_compression_gain": g_mean, "aggregate_compression_gain": g_agg, "slack": float(lam),
                "violation_rate": float((chosen_error(lv, err) > bound).mean())}

    offs = np.zeros(len(LEVELS))
    base = run(offs)
    if base is None:
        return offs, {"none": base}
    best = base
    for _ in range(sweeps):
        for j in range(len(LEVELS)):
            for d in OFFSET_GRID:
                o = offs.copy()
                o[j] = d
                r = run(o)
                if r is None or r["mean_compression_gain"] < base["mean_compression_gain"] \
                        or r["aggregate_compression_gain"] < base["aggregate_compression_gain"]:
                    continue
                if (r["aggregate_compression_gain"] + r["mean_compression_gain"] / 10
                        > best["aggregate_compression_gain"] + best["mean_compression_gain"] / 10 + 1e-12):
                    best, offs = r, o
    return offs, {"none": base, "selected": best}


@one_thread()
def train_predictor(data_dir: Path, model_id: int = DD_MODEL, alpha: float = 0.05, weights: TaskWeights = TaskWeights(),
                    hidden: int = 16, f1_tolerance: float = 0.01, seed: int = 0,
                    quantile: float | None = None, patient_delta: float | None = None,
                    task_features: bool = True, cross_fit: int | None = None,
                    level_offsets: bool = False, offset_bound: float | None = None,
                    decode_check: bool = False, per_source: bool = False,
                    f1_confidence: float | None = None, rhythm_check: bool = False, deploy: bool = True,
                    out_dir: Path | None = None) -> dict:
    """Phase 3: fit the predictor on ``train``, calibrate it on ``calib`` over `BOUND_GRID`, pick
    the deployed bound (the largest whose calib CinC F1 on reconstructions stays within
    ``f1_tolerance`` of the originals), save it and record it in the manifest — or, without
    ``deploy``, only save it (in ``out_dir``, default ``runs/predictors``): a file that
    `eval dynamic-deep --predictor PATH` and ``WARDSTREAM_DD_PREDICTOR=PATH`` devices can use.

    ``weights.beat`` > 0 adds the beat term to the task error (`predictor.beat_term`). Each kind
    keeps its own weights: the worker's audit scores with those of the predictor its ward runs
    (`processors.audit.task_weights`, ``WARDSTREAM_DD_PREDICTOR``).

    ``cross_fit`` (K): the calibration pool also holds out-of-fold predictions of the ``train``
    part (K folds of whole patients, each predicted by an MLP fitted on the other folds, as the
    device would compute it); the deployed MLP is still the one fitted on all of ``train``.

    ``level_offsets`` (needs ``cross_fit``): per-level offsets chosen on the out-of-fold rows of
    ``train`` at ``offset_bound`` (default: the bound deployed before) by `select_offsets`, then
    calibrated like everything else.

    ``decode_check`` (needs ``task_features``): the predictor also reads the device's decode check
    (`dd_edge.DecodeCheck`: every level decoded on the device, its QRS detector run on each).

    ``rhythm_check`` (needs ``decode_check``): and the device's small rhythm model's KL per level
    (`wardmodels.edge_rhythm`: the original's and every level's last 10 s).

    ``per_source``: the violation condition must hold on the MIT-BIH and the CinC windows of the
    pool each on their own (`predictor.calibrate`'s strata), not only on their mix.

    ``f1_confidence`` (e.g. 0.8): the deployed bound is the largest bound of the grid whose upper
    ``f1_confidence`` bound of the F1 loss (paired bootstrap over the calib records,
    `f1_loss_upper`) is within ``f1_tolerance`` — instead of the largest bound whose point F1 loss
    is within it, which picks a lucky bound of a curve that is noisy at ~1,300 records."""
    from wardmodels import runtime
    from wardmodels.clf_runtime import load_deployed_classifier
    from wardmodels.dd_edge import predictor_inputs
    from wardmodels.predictor import calibrate
    from wardmodels.train_classifier import cinc_f1 as f1_of

    if decode_check and not task_features:
        raise ValueError("the decode check reads the task stream's beats: it needs the task features")
    if rhythm_check and not decode_check:
        raise ValueError("the small rhythm model reads the decode check's reconstructions: it needs the decode check")
    beat = bool(weights.beat)
    tr = load_part(data_dir, "train", model_id, keep_recon=False, decode=decode_check, rhythm=rhythm_check, beat=beat)
    ca = load_part(data_dir, "calib", model_id, decode=decode_check, rhythm=rhythm_check, beat=beat)
    n_in = predictor_inputs(task_features, decode_check, rhythm_check)
    x, y = tr.features(n_in), tr.errors(weights)
    # the device holds float16 weights: calibrate what it will compute
    pred = _device_predictor(x, y, weights, alpha, hidden=hidden, seed=seed, quantile=quantile)
    pc, ec = pred.predict(ca.features(n_in)), ca.errors(weights)
    pool_p, pool_e, pool_g = pc, ec, ca.groups()
    pool_s = ca.mask("mitdb")
    bits = {L: section_bits(runtime.load_deployed(model_id), L) for L in range(0, len(LEVELS) + 1)}
    offset_meta = None
    if level_offsets and not cross_fit:
        raise ValueError("level offsets are chosen on out-of-fold predictions: they need cross_fit")
    if cross_fit:
        oof = out_of_fold(x, y, tr.groups(), cross_fit, hidden=hidden, seed=seed, quantile=quantile)
        if level_offsets:
            ob = float(offset_bound if offset_bound is not None else runtime.load_deployed(model_id).predictor.meta["deployed_bound"])
            offs, scores = select_offsets(oof, y, tr.groups(), bits, raw_level_bits(data_dir, "train", tr),
                                          ob, alpha, patient_delta)
            pred.offsets = offs.astype(np.float32)
            offset_meta = {"bound": ob, "offsets": pred.offsets.tolist(), "grid": OFFSET_GRID.tolist(),
                           "chosen_on": f"{cross_fit}-fold out-of-fold train", "scores": scores}
            log.info("level offsets %s at bound %.4f: %s", pred.offsets, ob, scores)
        pool_p, pool_e = np.concatenate([pc, oof]), np.concatenate([ec, y])
        pool_g = np.concatenate([pool_g, tr.groups() + pool_g.max() + 1])
        pool_s = np.concatenate([pool_s, tr.mask("mitdb")])
    pred.lams = calibrate(pool_p + pred.offsets[None, :], pool_e, BOUND_GRID, alpha, groups=pool_g, delta=patient_delta,
                          strata=pool_s if per_source else None)
    clf = load_deployed_classifier("rhythm")
    ys, d_orig = cinc_decisions(ca, None, clf)
    f1_orig = f1_of(ys, d_orig)
    # the curve's gains count what a device sends, as `evaluate` does: each window's entropy-coded
    # section where the model has wire tables, the raw level lossless-coded (the bound the F1 rule
    # picks does not depend on them)
    cb = coded_level_bits(data_dir, "calib", ca, runtime.load_deployed(model_id))
    curve_bits, curve_raw = per_window_bits(bits, cb, len(pc)), raw_level_bits(data_dir, "calib", ca)
    rows, deployed = [], None
    for b in BOUND_GRID:
        if not np.isfinite(pred.slack(b)):
            continue
        sc, lv = score(pc, ec, curve_bits, pred, float(b), curve_raw, pred_bits=PRED_BITS)
        _, d_rec = cinc_decisions(ca, _split_levels(ca, lv), clf)
        sc["f1_cinc_reconstructed"] = f1_of(ys, d_rec)
        sc["f1_loss"], sc["f1_loss_upper"] = f1_loss_upper(ys, d_orig, d_rec, f1_confidence or 0.9)
        sc["violation_rate_by_source"] = violations_by_source(ca, lv, ec, float(b))
        rows.append(sc)
        if (sc["f1_cinc_reconstructed"] >= f1_orig - f1_tolerance if f1_confidence is None
                else sc["f1_loss_upper"] <= f1_tolerance):
            deployed = float(b)
        log.info("calib bound %.3f: gain %.1f violations %.3f %s F1 %.3f (loss %.4f, upper %.4f)", b,
                 sc["mean_compression_gain"], sc["violation_rate"], sc["violation_rate_by_source"],
                 sc["f1_cinc_reconstructed"], sc["f1_loss"], sc["f1_loss_upper"])
    pred.meta = {"deployed_bound": deployed, "f1_tolerance": f1_tolerance, "calib_f1_original": f1_orig,
                 "train_windows": int(len(x)), "calib_windows": int(len(pc)), "hidden": hidden,
                 "loss": "mse" if quantile is None else f"pinball q={quantile}",
                 "features": "distortion + history" + (" + task (TaskStream)" if task_features else "")
                 + (" + decode check (DecodeCheck)" if decode_check else "")
                 + (" + small rhythm model (edge_rhythm.RhythmCheck, "
                    f"{runtime.load_deployed(model_id).entry.get('edge_rhythm')})" if rhythm_check else ""),
                 "calibration": ("conformal" if patient_delta is None
                                 else f"conformal + patient bootstrap, upper {1 - patient_delta:g} bound")
                 + (f"; pool: calib + {cross_fit}-fold out-of-fold train" if cross_fit else "; pool: calib")
                 + ("; per source (MIT-BIH, CinC)" if per_source else ""),
                 "bound_rule": ("largest bound with calib F1 loss <= tolerance" if f1_confidence is None
                                else f"largest bound with the upper {f1_confidence:g} paired-bootstrap bound of "
                                     "the calib F1 loss <= tolerance"),
                 "calibration_windows": int(len(pool_p)),
                 "calib_curve_bits": ("entropy-coded sections (wire flag bit 6), " if cb is not None
                                      else "bit-packed sections, ") + "raw level lossless-coded",
                 **({"level_offsets": offset_meta} if offset_meta else {}),
                 "seed": seed, "calib_curve": [{k: v for k, v in r.items() if k != "level_histogram"} for r in rows]}
    if not deploy:
        path = pred.save(out_dir or CACHE.parent / "predictors")
        return {"predictor": str(path), "deployed": False, "deployed_bound": deployed, "calib_f1_original": f1_orig,
                "alpha": alpha, "task_weights": weights.as_meta(), "predictor_bytes": pred.nbytes(),
                "calib_curve": rows}
    path = pred.save(runtime.WEIGHTS_DIR)
    entries = runtime.manifest()
    for e in entries:
        if e["model_id"] == model_id and rhythm_check:  # the opt-in predictors, beside the default one
            e["predictor_rhythm"] = path.name
            e["predictor_rhythm_bytes"] = pred.nbytes()
            e["deployed_bound_rhythm"] = deployed
        elif e["model_id"] == model_id and decode_check:
            e["predictor_decode"] = path.name
            e["predictor_decode_bytes"] = pred.nbytes()
            e["deployed_bound_decode"] = deployed
        elif e["model_id"] == model_id:
            e["predictor"] = path.name
            e["predictor_bytes"] = pred.nbytes()
            e["deployed_bound"] = deployed
            e["alpha"] = alpha
    runtime.MANIFEST.write_text(json.dumps({"codecs": entries}, indent=2) + "\n")
    runtime.load_deployed.cache_clear()
    return {"predictor": path.name, "deployed_bound": deployed, "calib_f1_original": f1_orig,
            "alpha": alpha, "predictor_bytes": pred.nbytes(), "calib_curve": rows}


@one_thread()
def evaluate(data_dir: Path, split: str = "test", bound: float | None = None, model_id: int = DD_MODEL,
             png: Path | None = None, audit_every: int | None = None, raw_lossless: bool = True,
             wire_version: int | None = None, predictor: str = "default", coded: bool = True) -> dict:
    from scipy.stats import pearsonr

    from stream.wire import WIRE_VERSION

    from wardmodels.clf_runtime import load_deployed_classifier
    from wardmodels.runtime import load_deployed

    codec = load_deployed(model_id)
    if codec.predictor is None:
        raise SystemExit(f"codec model {model_id} has no predictor; run wardstream train dynamic-deep --phase predictor")
    pr = codec.predictor_of(predictor)
    bound = float(bound if bound is not None else pr.meta["deployed_bound"])
    part = part_for(data_dir, split, model_id, pr)
    feats, err = part.features(pr.n_in), part.errors(pr.weights)
    pred = pr.predict(feats)
    wire_version = wire_version or WIRE_VERSION
    fixed = {L: section_bits(codec, L, version=wire_version) for L in range(0, len(LEVELS) + 1)}
    cb = coded_level_bits(data_dir, split, part, codec) if coded and wire_version == 2 else None
    bits = per_window_bits(fixed, cb, len(pred))
    rb = raw_level_bits(data_dir, split, part, wire_version) if raw_lossless else None
    clf = load_deployed_classifier("rhythm")
    starts = record_starts(part)
    pred_bits = device_frame_bits(starts, wire_version)
    head, lv = score(pred, err, bits, pr, bound, rb, pred_bits)
    real_chosen = np.log1p(chosen_error(lv, err))
    pred_chosen = np.concatenate([np.zeros((len(pred), 1)), pred], 1)[np.arange(len(lv)), lv]
    vq = lv > 0
    out = {"split": split, "data_dir": str(data_dir), "model_id": model_id, "predictor": predictor,
           "predictor_features": pr.meta.get("features"), "bound": bound,
           "alpha": pr.alpha, "task_weights": pr.weights.as_meta(),
           "windows": int(len(lv)), "records": len(part.records),
           "windows_by_source": {s: int(sum(len(r.feats) for r, t in zip(part.records, part.source) if t == s))
                                 for s in ("mitdb", "cinc")},
           "wire_version": wire_version,
           "bits_per_window_by_level": {str(k): v for k, v in fixed.items()},
           # entropy-coded sections (wire flag bit 6): mean bits of every window's ECG section at each level
           "vq_coding": ("entropy-coded (stream.vqcode, " + codec.entry["wire_tables"] + ")") if cb is not None
           else "bit-packed",
           **({"coded_bits_per_window_by_level": {str(L): float(cb[:, j].mean()) for j, L in enumerate(LEVELS)}}
              if cb is not None else {}),
           # what the predicted error sent with each window adds (0 where wire v2 packs it in the level byte)
           "predicted_error_bits_per_window": float(device_pred_bits(wire_version)(pred, lv).mean()),
           # the front end's state with each raw window after a codec-level one (wire v2 ``mods`` bit 4)
           "front_state_bits_per_window": float(front_state_bits(lv, starts, wire_version).mean()),
           "raw_level": {"coding": "lossless (stream.lossless)" if rb is not None else "int16",
                         "mean_bits_all_windows": float(rb.mean()) if rb is not None else float(fixed[0]),
                         # None: no window was sent raw
                         "mean_bits_windows_sent_raw": float(fixed[0]) if rb is None else
                         float(rb[lv == 0].mean()) if (lv == 0).any() else None},
           **head,
           "predicted_vs_real": float(pearsonr(pred.ravel(), np.log1p(err).ravel())[0]),
           "predicted_vs_real_chosen_level": float(pearsonr(pred_chosen[vq], real_chosen[vq])[0]) if vq.sum() > 2 else None,
           "f1_cinc_original": cinc_f1(part, None, clf),
           "f1_cinc_reconstructed": cinc_f1(part, _split_levels(part, lv), clf)}
    for src in ("mitdb", "cinc"):
        m = part.mask(src)
        if m.any():
            sc, _ = score(pred[m], err[m], rows(bits, m), pr, bound, None if rb is None else rb[m],
                          device_frame_bits(starts[m], wire_version))
            out[f"by_source_{src}"] = {k: sc[k] for k in ("mean_compression_gain", "aggregate_compression_gain",
                                                          "violation_rate", "level_histogram", "oracle_gain_fraction")}
    for L in LEVELS:
        out.setdefault("fixed_levels", {})[str(L)] = {
            "gain": gains(np.full(len(pred), L), bits)[0], "violation_rate": float((err[:, L - 1] > bound).mean()),
            "mean_error": float(err[:, L - 1].mean())}
    if audit_every:
        from processors.audit import AUDIT_QUANTILE

        alv = audit_corrected_levels(part, pr, bound, audit_every)
        by_src = violations_by_source(part, alv, err, bound)
        burst = audit_burst_windows(part, audit_every)
        ref = reference_bits(data_dir, split, part, burst, raw_lossless, wire_version)
        g_mean, g_agg = gains(alv, bits, rb, pred_bits(pred, alv) + ref)
        out["audit_correction"] = {
            "every_windows": audit_every, "span_windows": AUDIT_SPAN, "quantile": AUDIT_QUANTILE,
            "note": "per-bed slack offset from audited residuals at the chosen level, as the worker "
                    "sends it (processors.audit.update_slack), simulated offline on the cached analysis",
            "mean_compression_gain": g_mean, "aggregate_compression_gain": g_agg,
            "reference_windows": int(burst.sum()),
            "reference_bits_per_window": float(ref.sum() / len(ref)) if len(ref) else 0.0,
            "violation_rate": float((chosen_error(alv, err) > bound).mean()),
            "violation_rate_mitdb": by_src.get("mitdb"), "violation_rate_cinc": by_src.get("cinc"),
            "f1_cinc_reconstructed": cinc_f1(part, _split_levels(part, alv), clf),
            "level_histogram": {str(L): int((alv == L).sum()) for L in range(0, len(LEVELS) + 1)}}
    curve = []
    for b in BOUND_GRID:
        if not np.isfinite(pr.slack(b)):
            continue
        sc, lvb = score(pred, err, bits, pr, float(b), rb, pred_bits)
        sc["violation_rate_by_source"] = violations_by_source(part, lvb, err, float(b))
        sc["f1_cinc_reconstructed"] = cinc_f1(part, _split_levels(part, lvb), clf)
        curve.append({k: v for k, v in sc.items() if k != "level_histogram"})
    out["curve"] = curve
    if png:
        plot_curve(out, Path(png))
        out["curve_png"] = str(png)
    return out


def plot_curve(res: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = res["curve"]
    b = [r["bound"] for r in c]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(b, [r["mean_compression_gain"] for r in c], "o-", label="Dynamic-Deep (mean per window)")
    ax[0].plot(b, [r["aggregate_compression_gain"] for r in c], "s-", label="Dynamic-Deep (total bits)")
    ax[0].plot(b, [r["oracle_mean_gain"] for r in c], "--", label="oracle (mean per window)")
    ax[0].axvline(res["bound"], color="grey", lw=0.8)
    ax[0].set_xscale("log")
    ax[0].set_xlabel("task-error bound")
    ax[0].set_ylabel("compression gain vs 16-bit")
    ax[0].legend(fontsize=8)
    ax[1].plot(b, [r["mean_real_error"] for r in c], "o-", label="mean real error")
    ax[1].plot(b, [r["violation_rate"] for r in c], "s-", label="violation rate")
    if res["f1_cinc_original"] is not None:  # None: no CinC record in the directory
        ax[1].plot(b, [r["f1_cinc_reconstructed"] for r in c], "^-", label="CinC F1 (reconstructed)")
        ax[1].axhline(res["f1_cinc_original"], color="green", lw=0.8, ls=":", label="CinC F1 (original)")
    ax[1].axhline(res["alpha"], color="red", lw=0.8, ls=":", label="alpha")
    ax[1].set_xscale("log")
    ax[1].set_xlabel("task-error bound")
    ax[1].legend(fontsize=8)
    fig.suptitle(f"Dynamic-Deep on {res['split']} ({res['windows']} windows)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
