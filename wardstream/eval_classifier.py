"""`wardstream eval classifier`: the deployed (LAQ-packed) classifiers on recordings.

* ``--dataset cinc2017``: rhythm. ``test`` = the records held out from training (the seeded
  validation split), ``all`` = every record in the directory (any held-out set of the layout).
  Every record is causally band-passed as the pipeline does, cut into the crops the pipeline
  classifies (the last 10 s at every 2-s window end) and scored at two granularities: per record
  (softmax averaged over its crops — `f1_cinc`, `f1`, `accuracy`, `confusion`) and per decision
  (each crop against its record's label — `per_decision`). `f1_cinc_reconstructed` repeats the
  record-level score on what the codec reconstructs at the deployed level (int8 edge encoder),
  `reconstructed_by_level` at every level.
* ``--dataset mitdb``: beats (AAMI N/S/V/F, paced records excluded; ``test`` = DS2, inter-patient)
  at the annotated R peaks (`sensitivity`, `ppv`, `confusion` — the literature's protocol), at the
  pipeline's own streaming QRS detections (`detected_beats`: an annotated beat the detector misses
  counts against its class's sensitivity), and on codec reconstructions; plus rhythm per 10-s crop
  inside annotated rhythm episodes (`rhythm_crops`).
* ``--robustness`` (cinc2017): the rhythm model under noise, electrode motion and lead-off, and on
  eegmat's real ECG (`wardstream.eval_robust`).
* ``--sweep``: the papers' Table 1 on our model — fixed 1–8-bit weights and 10–90 % magnitude
  pruning over every layer of the FP32 source model (record-level F1 / macro F1 on the split).

A class absent from the records scored (a directory may hold a subset) has no sensitivity (None),
a class never called no PPV, one neither true nor called no F1; `f1_cinc` is then the mean over
the CinC classes that occur, listed in `f1_cinc_classes` (absent when all three do).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from wardmodels.classifier import BEAT_CLASSES, FS, RHYTHM_CLASSES, Classifier, aami_labels
from wardmodels.frontend import filter_record
from wardstream import datasets as ds

log = logging.getLogger(__name__)


def confusion(y: np.ndarray, p: np.ndarray, n: int) -> np.ndarray:
    c = np.zeros((n, n), np.int64)
    np.add.at(c, (y, p), 1)
    return c


def _ratio(num: np.ndarray, den: np.ndarray, names) -> dict:
    """Per class ``num / den`` rounded, None where ``den`` is 0 (undefined, not 0: a directory that
    holds a subset of the records may lack a class)."""
    return {n: (round(float(a / b), 4) if b else None) for n, a, b in zip(names, num, den)}


def class_scores(conf: np.ndarray, names) -> dict:
    """Sensitivity (None without a true instance), PPV (None without a call), F1 (None with
    neither) per class of a confusion matrix (rows true, columns called)."""
    tp = np.diag(conf).astype(float)
    return {"sensitivity": _ratio(tp, conf.sum(1), names), "ppv": _ratio(tp, conf.sum(0), names),
            "f1": _ratio(2 * tp, conf.sum(1) + conf.sum(0), names), "support": dict(zip(names, conf.sum(1).tolist()))}


def _rhythm_scores(y: np.ndarray, p: np.ndarray) -> dict:
    conf = confusion(y, p, 4)
    sc = class_scores(conf, RHYTHM_CLASSES)
    # the CinC score: mean F1 of N, A, O (unrounded) — of those that occur (true or called) in these records
    tp, den = 2 * np.diag(conf)[:3], conf.sum(1)[:3] + conf.sum(0)[:3]
    scored = [c for c, d in zip(RHYTHM_CLASSES[:3], den) if d]
    return {"f1_cinc": float(np.mean(tp[den > 0] / den[den > 0])) if scored else None,
            **({"f1_cinc_classes": scored} if len(scored) < 3 else {}),
            "f1": sc["f1"], "accuracy": float((y == p).mean()),
            "confusion": conf.tolist(), "sensitivity": sc["sensitivity"], "ppv": sc["ppv"], "n": int(len(y))}


def eval_cinc(clf: Classifier, data_dir: Path, split: str, level: int, codec_model: int,
              levels: list[int], encoder: str = "int8", max_records: int | None = None) -> dict:
    from wardmodels.clf_data import cinc_split, reconstruct, record_proba

    cs = cinc_split(data_dir, split)
    if not len(cs.records):
        raise ds.DataMissing(f"none of the CinC records under {data_dir} is in split {split!r} (the project's "
                             "held-out records, by name); --split all scores every record of another set")
    sig = [filter_record(s) for s in cs.signals][:max_records]
    y = np.array([RHYTHM_CLASSES.index(v) for v in cs.labels])[:max_records]
    rec, per = record_proba(clf, sig)
    out = {"dataset": "cinc2017", "split": split, "records": int(len(y)),
           "records_by_label": {c: int((y == i).sum()) for i, c in enumerate(RHYTHM_CLASSES)},
           **_rhythm_scores(y, rec.argmax(1))}
    yd = np.concatenate([np.full(len(q), t) for q, t in zip(per, y)])
    pd = np.concatenate([q.argmax(1) for q in per])
    out["per_decision"] = _rhythm_scores(yd, pd)
    by_level = {}
    for lv in levels:
        r = reconstruct(sig, codec_model, lv, encoder=encoder)
        # a record shorter than one window has no reconstruction: score it on its original
        r = [x if len(x) else s for x, s in zip(r, sig)]
        rp, _ = record_proba(clf, r)
        by_level[str(lv)] = _rhythm_scores(y, rp.argmax(1))
    out["reconstructed_by_level"] = {k: {kk: v[kk] for kk in ("f1_cinc", "f1_cinc_classes", "f1", "accuracy") if kk in v}
                                     for k, v in by_level.items()}
    if str(level) in by_level:
        out["f1_cinc_reconstructed"] = by_level[str(level)]["f1_cinc"]
    out["codec"] = {"model_id": codec_model, "level": level, "encoder": encoder}
    return out


def annotated_beats(clf, data_dir: Path, name: str):
    """A MIT-BIH record's filtered ECG at 128 Hz, its annotated beats (samples), their AAMI labels,
    which of them are scored (labelled, room for the beat window) and ``clf``'s class for each."""
    rec = ds.load_mitdb(data_dir, name)
    x = filter_record(rec.ecg_mv)
    b = np.round(rec.beat_times_s * FS).astype(np.int64)
    lab = aami_labels(rec.beat_symbols)
    ok = (lab >= 0) & (b < len(x) - 64)
    return rec, x, b, lab, ok, _beats_for(clf, x, b)


def _beats_for(clf: Classifier, x: np.ndarray, beats: np.ndarray) -> np.ndarray:
    from wardmodels.clf_data import beat_table

    w, f, _ = beat_table(x, beats, None)
    return clf.proba(w, f).argmax(1) if len(beats) else np.zeros(0, np.int64)


def eval_mitdb(clf: Classifier, rhythm: Classifier | None, data_dir: Path, split: str, level: int,
               codec_model: int, encoder: str = "int8", records: list[str] | None = None) -> dict:
    from wardmodels.clf_data import MIT_RHYTHM, reconstruct
    from wardstream.eval_qrs import detect_stream, match_indices

    names = records or ds.mitdb_records(data_dir, split, paced=False)
    present = set(ds.mitdb_records_present(data_dir))
    names = [r for r in names if r in present]
    if not names:
        raise ds.DataMissing(f"no MIT-BIH records of split {split!r} under {data_dir}/mitdb")
    tol = int(0.15 * FS)
    ya, pa, yr, pr_, yd, pd = [], [], [], [], [], []
    missed = np.zeros(4, np.int64)
    ry, rp = [], []
    per_record = []
    for name in names:
        rec, x, b, lab, ok, pred = annotated_beats(clf, data_dir, name)
        ya.append(lab[ok]), pa.append(pred[ok])
        xr = reconstruct([x], codec_model, level, encoder=encoder)[0]
        okr = ok & (b < len(xr) - 64)
        predr = _beats_for(clf, xr, b)
        yr.append(lab[okr]), pr_.append(predr[okr])
        det = np.round(detect_stream(xr) * FS).astype(np.int64)  # what the worker detects, on what it decodes
        m = match_indices(b, det, tol)
        pdet = _beats_for(clf, xr, det)
        hit = ok & (m >= 0)
        yd.append(lab[hit]), pd.append(pdet[m[hit]])
        np.add.at(missed, lab[ok & (m < 0)], 1)
        per_record.append({"record": name, "beats": int(ok.sum()),
                           "V": int((lab[ok] == 2).sum()), "S": int((lab[ok] == 1).sum()),
                           "V_detected_as_V": int(((lab[ok] == 2) & (pred[ok] == 2)).sum()),
                           "S_detected_as_S": int(((lab[ok] == 1) & (pred[ok] == 1)).sum()),
                           # every beat the model called V / S (the rest of them are its false calls)
                           "called_V": int((pred[ok] == 2).sum()), "called_S": int((pred[ok] == 1).sum())})
        if rhythm is not None:
            bounds = np.append(rec.rhythm_times_s, len(x) / FS)
            for k, lb in enumerate(rec.rhythm_labels):
                a, e = int(bounds[k] * FS) + 2 * FS, int(bounds[k + 1] * FS)
                for s in range(a, e - 10 * FS, 10 * FS):
                    rp.append(x[s:s + 10 * FS])
                    ry.append(RHYTHM_CLASSES.index(MIT_RHYTHM.get(lb, "O")))
    out = {"dataset": "mitdb", "split": split, "records": names}
    y, p = np.concatenate(ya), np.concatenate(pa)
    conf = confusion(y, p, 4)
    out.update(class_scores(conf, BEAT_CLASSES))
    out["confusion"] = conf.tolist()
    out["accuracy"] = float((y == p).mean())
    y2, p2 = np.concatenate(yr), np.concatenate(pr_)
    c2 = confusion(y2, p2, 4)
    out["reconstructed"] = {"codec": {"model_id": codec_model, "level": level, "encoder": encoder},
                            **class_scores(c2, BEAT_CLASSES), "confusion": c2.tolist()}
    y3, p3 = np.concatenate(yd), np.concatenate(pd)
    c3 = confusion(y3, p3, 4)
    sc3 = class_scores(c3, BEAT_CLASSES)
    tp3 = np.diag(c3)
    sc3["sensitivity"] = _ratio(tp3, c3.sum(1) + missed, BEAT_CLASSES)
    out["detected_beats"] = {"note": "streaming detector on reconstructions; missed beats count as misses",
                             **sc3, "missed_by_detector": dict(zip(BEAT_CLASSES, missed.tolist())),
                             "confusion": c3.tolist()}
    out["per_record"] = per_record
    if rhythm is not None and ry:
        from wardmodels.classifier import rhythm_input

        probs = rhythm.proba(rhythm_input(np.stack(rp)))
        ry_ = np.array(ry)
        out["rhythm_crops"] = _rhythm_scores(ry_, probs.argmax(1))
    return out


def sweep(kind: str, weights: Path, data_dir: Path, split: str) -> dict:
    """Fixed bit-widths 1..8 and pruning 10..90 % applied to every layer of the folded model."""
    import torch

    from wardmodels import compress
    from wardmodels.train_classifier import cinc_f1, f1_scores, load_classifier

    src = load_classifier(weights)
    folded = compress.fold_batchnorm(src.model)
    names = [n for n, _ in compress.quantizable(folded)]
    if kind == "rhythm":
        from wardmodels.clf_data import cinc_split, crops_for_record

        cs = cinc_split(data_dir, split)
        sig = [filter_record(s) for s in cs.signals]
        y = np.array([RHYTHM_CLASSES.index(v) for v in cs.labels])
        crops = [crops_for_record(s) for s in sig]
        bounds = np.cumsum([0] + [len(c) for c in crops])
        x = np.concatenate(crops)

        def metric(model):
            p = Classifier(model).proba(x)
            rec = np.stack([p[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
            return cinc_f1(y, rec.argmax(1))
    else:
        from wardmodels.clf_data import beat_table

        ws, fs_, ys = [], [], []
        for r in ds.mitdb_records(data_dir, split, paced=False):
            rec = ds.load_mitdb(data_dir, r)
            w, f, yy = beat_table(filter_record(rec.ecg_mv), np.round(rec.beat_times_s * FS).astype(np.int64),
                                  rec.beat_symbols)
            ws.append(w), fs_.append(f), ys.append(yy)
        w, f, y = np.concatenate(ws), np.concatenate(fs_), np.concatenate(ys)
        keep = y >= 0
        w, f, y = w[keep], f[keep], y[keep]

        def metric(model):
            p = Classifier(model).proba(w, f).argmax(1)
            return float(f1_scores(y, p, 4)[:3].mean())
    fp32 = compress.fp32_bits(src.model)
    rows = [{"setting": "fp32", "metric": metric(folded), "compression": 1.0}]
    for b in range(8, 0, -1):
        bits = dict.fromkeys(names, b)
        rows.append({"setting": f"{b}-bit", "metric": metric(compress.apply(folded, bits)),
                     "compression": fp32 / compress.model_bits(folded, bits)})
    for pct in range(10, 100, 10):
        rows.append({"setting": f"prune {pct}%", "metric": metric(compress.apply(folded, prune=dict.fromkeys(names, pct))),
                     "compression": None})
    for p_max in (30, 50, 70):
        lp = compress.lap_percentiles(folded, p_max)
        rows.append({"setting": f"LAP p_max {p_max}%", "metric": metric(compress.apply(folded, prune=lp)),
                     "compression": None, "mean_pruned_pct": float(np.mean(list(lp.values())))})
    torch.set_num_threads(torch.get_num_threads())
    return {"kind": kind, "weights": Path(weights).name, "split": split,
            "metric": "CinC F1 (record level)" if kind == "rhythm" else "macro F1 N/S/V",
            "rows": rows}


def evaluate(data_dir: Path, dataset: str, split: str, codec_model: int, level: int,
             encoder: str = "int8", max_records: int | None = None, weights: Path | None = None,
             robust: bool = False) -> dict:
    from wardmodels.clf_runtime import classifier_manifest, load_deployed_classifier
    from wardmodels.runtime import load_deployed
    from wardmodels.train_classifier import load_classifier

    man = classifier_manifest()
    levels = load_deployed(codec_model).levels
    if weights is not None and Path(weights).suffix == ".wpk":
        # a packed (LAQ) file, e.g. a candidate before it is deployed: scored as the deployed one is
        from wardmodels.clf_runtime import load_packed as load_classifier  # noqa: F811
    if dataset == "cinc2017":
        clf = load_classifier(weights) if weights else load_deployed_classifier("rhythm")
        out = eval_cinc(clf, data_dir, split, level, codec_model, levels, encoder, max_records)
        if robust:
            from wardstream.eval_robust import robustness

            out["robustness"] = robustness(clf, data_dir, split, max_records=max_records,
                                           codec=(codec_model, level, encoder))
        kind = "rhythm"
    elif dataset == "mitdb":
        clf = load_classifier(weights) if weights else load_deployed_classifier("beat")
        out = eval_mitdb(clf, load_deployed_classifier("rhythm") if "rhythm" in man else None,
                         data_dir, split, level, codec_model, encoder,
                         records=None if max_records is None else
                         ds.mitdb_records(data_dir, split, paced=False)[:max_records])
        kind = "beat"
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose cinc2017 or mitdb")
    out["model"] = clf.name
    if not weights and kind in man:
        e = man[kind]
        out.update({"model_bytes": e["model_bytes"], "fp32_bytes": e["fp32_bytes"],
                    "compression_ratio": e["compression_ratio"], "bits": e["bits"]})
        if getattr(clf, "stack", None) is not None:  # the beat CNN's second stage: its file, apart
            from wardmodels.runtime import WEIGHTS_DIR

            out["stack_bytes"] = (WEIGHTS_DIR / clf.stack.name).stat().st_size
    elif weights is not None and Path(weights).suffix == ".wpk":  # a candidate: its own sizes
        from wardmodels.compress import size_report
        from wardmodels.train_classifier import build

        out.update({**size_report(build(clf.model.cfg.to_dict()), Path(weights)), "bits": clf.meta.get("bits")})
    return out
