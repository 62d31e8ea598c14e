"""Patient-wise folds inside DS1 for choosing a beat recipe without looking at DS2."""

import numpy as np

from wardmodels.beat_cv import fold_records, score_records
from wardmodels.classifier import aami_labels
from wardstream import datasets as ds


def test_folds_partition_ds1_by_patient_and_each_holds_ectopic_beats(data_dir):
    groups = fold_records(data_dir, 4)
    flat = [r for g in groups for r in g]
    assert sorted(flat) == sorted(ds.DS1) and len(set(flat)) == len(flat)
    assert not set(flat) & set(ds.DS2)
    for g in groups:
        y = np.concatenate([aami_labels(ds.load_mitdb(data_dir, r).beat_symbols) for r in g])
        assert (y == 2).sum() > 100 and (y == 1).sum() > 20, g
    assert fold_records(data_dir, 4) == groups  # deterministic


def test_scoring_counts_every_classified_beat_of_the_held_out_records(data_dir):
    class Always:  # a classifier that calls everything ventricular: the scorer must say so
        def proba(self, w, f):
            p = np.zeros((len(w), 4), np.float32)
            p[:, 2] = 1
            return p

    conf, rows = score_records(Always(), data_dir, ["119"])
    y = aami_labels(ds.load_mitdb(data_dir, "119").beat_symbols)
    assert conf[:, 2].sum() == conf.sum()  # every beat in the "called V" column
    assert (y >= 0).sum() - 2 <= conf.sum() <= (y >= 0).sum()  # all but beats at the record's very end
    assert rows[0]["N_called_V"] == conf[0, 2] == conf[0].sum() > 1000
    assert rows[0]["V_found"] == rows[0]["V"] == conf[2].sum() > 400
