"""Patient-wise cross-validation of the beat-classifier recipe inside MIT-BIH DS1.

DS2 is the inter-patient test set and must not choose a recipe. DS1 is all the training data
there is, so a recipe is compared here by training on some DS1 patients and scoring the others:
the DS1 records (paced ones excluded; DS1 has none) are dealt into ``folds`` groups, largest
S + V counts first, round-robin, so every fold holds some ectopic beats; each fold is scored by a
model trained on the other folds, at the annotated R peaks, and the confusions are pooled.

`wardstream eval beat-cv --folds 4 --epochs 6 --json PATH` prints the pooled AAMI sensitivity and
PPV, each fold's, and the normal beats called ventricular per record (where the false alarms come
from). The numbers are of the recipe, not of the deployed model (which is trained on all of DS1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from wardmodels.classifier import BEAT_CLASSES, aami_labels
from wardstream import datasets as ds

log = logging.getLogger(__name__)


def fold_records(data_dir: Path, folds: int) -> list[list[str]]:
    """DS1 dealt into ``folds`` groups by descending S + V count (deterministic)."""
    counts = {}
    for r in ds.DS1:
        y = aami_labels(ds.load_mitdb(data_dir, r).beat_symbols)
        counts[r] = int(((y == 1) | (y == 2)).sum())
    order = sorted(ds.DS1, key=lambda r: (-counts[r], r))
    return [sorted(order[i::folds]) for i in range(folds)]


def score_records(clf, data_dir: Path, records: list[str]) -> tuple[np.ndarray, list[dict]]:
    """Pooled 4x4 confusion at the annotated beats of ``records``, and per-record counts."""
    from wardstream.eval_classifier import annotated_beats, confusion

    conf = np.zeros((4, 4), np.int64)
    rows = []
    for name in records:
        _, _, _, lab, ok, pred = annotated_beats(clf, data_dir, name)
        c = confusion(lab[ok], pred[ok], 4)
        conf += c
        rows.append({"record": name, "confusion": c.tolist(), "N_called_V": int(c[0, 2]),
                     "S": int(c[1].sum()), "S_found": int(c[1, 1]), "V": int(c[2].sum()), "V_found": int(c[2, 2])})
    return conf, rows


def cross_validate(data_dir: Path, folds: int = 4, epochs: int = 6, seed: int = 0, threads: int = 2,
                   codec_model: int | None = 2, out_dir: Path | None = None, morph_aug: float = 0.0) -> dict:
    from wardmodels.train_classifier import RUNS, load_classifier, train_beat
    from wardstream.eval_classifier import class_scores

    data_dir = Path(data_dir)
    groups = fold_records(data_dir, folds)
    out_dir = Path(out_dir or RUNS / "beat-cv")
    pooled = np.zeros((4, 4), np.int64)
    fold_rows, per_record = [], []
    for k, held in enumerate(groups):
        train = [r for r in ds.DS1 if r not in held]
        log.info("beat CV fold %d/%d: held out %s", k + 1, folds, held)
        res = train_beat(data_dir, epochs, seed=seed, threads=threads, out_dir=out_dir, codec_model=codec_model,
                         records=train, morph_aug=morph_aug)
        clf = load_classifier(Path(res["weights"]))
        conf, rows = score_records(clf, data_dir, held)
        pooled += conf
        per_record += rows
        fold_rows.append({"fold": k + 1, "held_out": held, "weights": Path(res["weights"]).name,
                          **class_scores(conf, BEAT_CLASSES)})
    return {"protocol": f"DS1 patient-wise {folds}-fold cross-validation at the annotated beats",
            "folds": folds, "epochs": epochs, "seed": seed, "codec_model": codec_model, "morph_aug": morph_aug,
            **class_scores(pooled, BEAT_CLASSES), "confusion": pooled.tolist(),
            "by_fold": fold_rows, "per_record": per_record}
