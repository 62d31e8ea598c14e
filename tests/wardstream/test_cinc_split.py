"""The CinC split by name: the committed names are the project's seeded draws on the shared archive,
and an archive holding a subset of those records splits them as the shared one does (a draw over the
subset held out training records and scored them as its test split)."""

import numpy as np
import pytest

from wardstream import datasets as ds
from wardstream.settings import default_data_dir


@pytest.fixture(scope="module")
def shared():
    d = default_data_dir()
    if not (d / "cinc2017" / "cinc2017_128hz.npz").exists():
        pytest.skip(f"no CinC archive under {d}")
    return d


def test_the_committed_names_are_the_draws_on_the_shared_archive(shared):
    from wardmodels.clf_data import draw_cinc_calib

    a, names = ds.load_cinc(shared, "all"), ds.cinc_split_names()
    val = ds.draw_cinc_val(a.records, a.labels)
    assert set(a.records[val]) == names["val"] and len(names["val"]) == 1364
    train = a.records[~val]
    assert set(train[draw_cinc_calib(train)]) == names["calib"] and len(names["calib"]) == 546
    assert not names["val"] & names["calib"]


def _archive(path, src, pick):
    a = ds.load_cinc(src, "all")
    sigs = [np.rint(a.signals[i] * 1000).astype(np.int16) for i in pick]
    (path / "cinc2017").mkdir(parents=True)
    np.savez(path / "cinc2017" / "cinc2017_128hz.npz", ecg_uv=np.concatenate(sigs),
             offsets=np.cumsum([0] + [len(s) for s in sigs[:-1]]), record=a.records[pick],
             label=a.labels[pick], fs=128)
    return a.records[pick]


def test_a_subset_of_the_shared_records_splits_as_the_shared_archive(shared, tmp_path):
    from wardmodels.clf_data import cinc_split

    names = ds.cinc_split_names()
    a = ds.load_cinc(shared, "all")
    kind = np.array(["val" if r in names["val"] else "calib" if r in names["calib"] else "fit" for r in a.records])
    pick = np.sort(np.concatenate([np.flatnonzero(kind == k)[:n] for k, n in (("val", 6), ("calib", 4), ("fit", 10))]))
    recs = _archive(tmp_path, shared, pick)
    assert list(ds.load_cinc(tmp_path, "val").records) == [r for r in recs if r in names["val"]]
    assert len(ds.load_cinc(tmp_path, "train").records) == 14
    assert list(cinc_split(tmp_path, "calib").records) == [r for r in recs if r in names["calib"]]
    assert len(cinc_split(tmp_path, "fit").records) == 10
    # the records of another archive are none of the project's held-out ones: `all` scores them
    other = tmp_path / "other"
    (other / "cinc2017").mkdir(parents=True)
    z = dict(np.load(tmp_path / "cinc2017" / "cinc2017_128hz.npz"))
    z["record"] = np.array([f"B{i:05d}" for i in range(len(recs))])
    np.savez(other / "cinc2017" / "cinc2017_128hz.npz", **z)
    assert len(ds.load_cinc(other, "val").records) == 0 and len(ds.load_cinc(other, "all").records) == 20


def test_a_test_split_of_none_of_the_held_out_records_is_refused(shared, tmp_path, capsys):
    """Another set's records (other names) have no test split here: the evaluations say to score
    them with --split all (before, eval classifier stopped on an IndexError, eval dynamic-deep on
    "need at least one array to concatenate")."""
    from wardstream.cli import main

    a = ds.load_cinc(shared, "all")
    pick = np.flatnonzero(~np.isin(a.records, sorted(ds.cinc_split_names()["val"])))[:3]
    _archive(tmp_path, shared, pick)  # three training records: none held out
    capsys.readouterr()
    for argv in (["eval", "classifier", "--dataset", "cinc2017"], ["eval", "dynamic-deep"]):
        assert main([*argv, "--split", "test", "--data-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "--split all" in err and "Traceback" not in err
