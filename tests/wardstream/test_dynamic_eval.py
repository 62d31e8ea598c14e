"""`wardstream eval dynamic-deep` and `wardstream cost` on a small directory of the shared layout
(held-out records only): every promised key, internally consistent, and the curve as a PNG."""

import json
import os

import numpy as np
import pytest

from wardmodels import DD_MODEL
from wardstream.settings import default_data_dir


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    src = default_data_dir()
    if not (src / "cinc2017" / "cinc2017_128hz.npz").exists() or not (src / "mitdb" / "100.hea").exists():
        pytest.skip(f"recordings not found under {src}")
    from wardstream.datasets import load_cinc

    d = tmp_path_factory.mktemp("held-out")
    (d / "mitdb").mkdir()
    for rec in ("100", "203"):  # 203: DS1, ventricular runs and AF; used by the zstd dictionary
        for ext in ("hea", "dat", "atr"):
            os.symlink(src / "mitdb" / f"{rec}.{ext}", d / "mitdb" / f"{rec}.{ext}")
    (d / "eegmat").mkdir()
    os.symlink(src / "eegmat" / "eegmat_128hz.npz", d / "eegmat" / "eegmat_128hz.npz")
    val = load_cinc(src, "val")
    pick = [int(np.flatnonzero(val.labels == lab)[k]) for lab in ("N", "A", "O", "~") for k in range(3)]
    sigs = [np.rint(val.signals[i] * 1000).astype(np.int16) for i in pick]
    (d / "cinc2017").mkdir()
    np.savez(d / "cinc2017" / "cinc2017_128hz.npz", ecg_uv=np.concatenate(sigs),
             offsets=np.cumsum([0] + [len(s) for s in sigs[:-1]]), record=val.records[pick],
             label=val.labels[pick], fs=128)
    return d


@pytest.fixture(scope="module")
def cinc_dir(small_dir, tmp_path_factory):
    """``small_dir``'s twelve CinC records alone (a subset of the databases, as a directory may be)."""
    d = tmp_path_factory.mktemp("cinc-only")
    (d / "cinc2017").mkdir()
    os.symlink(small_dir / "cinc2017" / "cinc2017_128hz.npz", d / "cinc2017" / "cinc2017_128hz.npz")
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from wardstream import eval_dynamic

    old = eval_dynamic.CACHE
    eval_dynamic.CACHE = tmp_path_factory.mktemp("dd-cache")
    yield eval_dynamic.CACHE
    eval_dynamic.CACHE = old


def test_eval_writes_every_key_consistently(small_dir, cache, tmp_path):
    from wardstream.cli import main

    out = tmp_path / "dd.json"
    assert main(["eval", "dynamic-deep", "--data-dir", str(small_dir), "--split", "all", "--json", str(out),
                 "--audit-every", "150", "--bit-packed"]) == 0
    d = json.loads(out.read_text())
    assert d["vq_coding"] == "bit-packed" and "coded_bits_per_window_by_level" not in d
    for key in ("mean_compression_gain", "level_histogram", "violation_rate", "predicted_vs_real",
                "f1_cinc_reconstructed", "curve", "oracle_gain_fraction", "aggregate_compression_gain"):
        assert key in d, key
    assert d["records"] == 2 + 12
    assert sum(d["level_histogram"].values()) == d["windows"]
    assert d["windows_by_source"]["mitdb"] == 2 * 902  # 30:05 at 128 Hz, whole windows
    assert 0 <= d["violation_rate"] <= 1 and 0 < d["oracle_gain_fraction"] <= 1.0 + 1e-9
    # gains follow from the histogram and the wire's bytes per level, plus what the predicted error
    # of a level-picking device adds to its frames: nothing in wire v2 at the deployed bound, where
    # it rides in the ECG level byte; windows sent raw at their lossless-coded size (each its own:
    # the mean of their gains is not the gain of their mean)
    assert d["wire_version"] == 2 and d["predicted_error_bits_per_window"] == 0
    bits = {int(k): v for k, v in d["bits_per_window_by_level"].items()}
    n = d["windows"]
    raw = d["raw_level"]
    assert raw["coding"].startswith("lossless") and 1000 < raw["mean_bits_all_windows"] < bits[0]
    vq_gain = sum(c * 4096 / bits[int(L)] for L, c in d["level_histogram"].items() if L != "0") / n
    n_raw = d["level_histogram"]["0"]
    if n_raw:
        raw_gain = (d["mean_compression_gain"] - vq_gain) * n / n_raw  # their mean gain
        assert 4096 / bits[0] < raw_gain and 4096 / raw_gain < 1.1 * raw["mean_bits_windows_sent_raw"]
    else:
        assert d["mean_compression_gain"] == pytest.approx(vq_gain)
    # and the front end's state (16 bytes) with each raw window that follows a codec-level one
    state = d["front_state_bits_per_window"] * n
    assert round(state) % 128 == 0 and 0 <= state <= 128 * n_raw
    total_bits = n_raw * raw["mean_bits_windows_sent_raw"] + state + sum(
        c * bits[int(L)] for L, c in d["level_histogram"].items() if L != "0")
    assert d["aggregate_compression_gain"] == pytest.approx(4096 * n / total_bits)
    assert d["aggregate_compression_gain"] <= d["mean_compression_gain"]
    assert -1 <= d["predicted_vs_real"] <= 1 and d["predicted_vs_real"] > 0.3
    assert len(d["curve"]) >= 5
    gains = [r["aggregate_compression_gain"] for r in d["curve"]]
    assert gains[0] <= gains[-1], "the loosest bound sends no more than the tightest"
    n_src = d["windows_by_source"]
    for r in d["curve"]:  # the per-source rates make up the overall one
        v = r["violation_rate_by_source"]
        assert set(v) == {"mitdb", "cinc"}
        assert r["violation_rate"] == pytest.approx((v["mitdb"] * n_src["mitdb"] + v["cinc"] * n_src["cinc"]) / n)
    assert (tmp_path / "dd.png").stat().st_size > 10_000
    audit = d["audit_correction"]  # the offline per-bed correction: same windows, its own levels
    assert sum(audit["level_histogram"].values()) == n and audit["every_windows"] == 150
    assert 0 <= audit["violation_rate"] <= 1
    # no CinC record lasts until its first audit: their levels, and so the F1, are the uncorrected ones
    assert audit["f1_cinc_reconstructed"] == d["f1_cinc_reconstructed"]
    # its gains count the reference ECG of every burst: 5 windows before each of the 6 audits of
    # the two half-hour MIT-BIH records (the 30-s CinC records end before their first)
    assert audit["reference_windows"] == 2 * 6 * 5
    per_ref = audit["reference_bits_per_window"] * n / audit["reference_windows"]
    assert 8 * (8 + 100) < per_ref < 8 * (8 + 2 + 512)  # f32 side + lossless-coded samples
    assert audit["aggregate_compression_gain"] < 4096 / (48 + 8 + audit["reference_bits_per_window"]) + 1e-9


def test_eval_runs_on_mitdb_alone_and_says_when_a_directory_holds_nothing_to_score(cache, tmp_path, capsys):
    """A directory of the shared layout may hold a subset of the databases and records: with one
    DS2 record and no CinC archive the test split is that record (no missing DS2 record or CinC
    archive is an error), and the CinC F1 keys say "none" rather than a score of 0; a directory with
    neither gets one line naming what is missing."""
    from wardstream.cli import main

    src = default_data_dir()
    if not (src / "mitdb" / "100.hea").exists():
        pytest.skip(f"recordings not found under {src}")
    d = tmp_path / "mitdb-only"
    (d / "mitdb").mkdir(parents=True)
    for rec in ("100", "101"):  # 100: DS2; 101: DS1, not in the test split
        for ext in ("hea", "dat", "atr"):
            os.symlink(src / "mitdb" / f"{rec}.{ext}", d / "mitdb" / f"{rec}.{ext}")
    out = tmp_path / "dd.json"
    assert main(["eval", "dynamic-deep", "--data-dir", str(d), "--split", "test", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["records"] == 1 and r["windows"] == r["windows_by_source"]["mitdb"] == 902
    assert r["f1_cinc_original"] is None and r["f1_cinc_reconstructed"] is None
    assert all(c["f1_cinc_reconstructed"] is None for c in r["curve"]) and "by_source_cinc" not in r
    assert r["mean_compression_gain"] > 1 and (tmp_path / "dd.png").stat().st_size > 10_000
    # raw windows counted as plain int16 (it crashed on the per-window table of coded sections)
    assert main(["eval", "dynamic-deep", "--data-dir", str(d), "--split", "test", "--raw-int16",
                 "--json", str(out)]) == 0
    r16 = json.loads(out.read_text())
    raw16 = r16["bits_per_window_by_level"]["0"]
    assert r16["raw_level"] == {"coding": "int16", "mean_bits_all_windows": raw16, "mean_bits_windows_sent_raw": raw16}
    assert r16["level_histogram"] == r["level_histogram"]
    empty = tmp_path / "ds1-only"
    (empty / "mitdb").mkdir(parents=True)
    for ext in ("hea", "dat", "atr"):
        os.symlink(src / "mitdb" / f"101.{ext}", empty / "mitdb" / f"101.{ext}")
    capsys.readouterr()
    assert main(["eval", "dynamic-deep", "--data-dir", str(empty), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no MIT-BIH records") and "CinC records" in err and str(empty) in err


def test_eval_counts_the_entropy_coded_sections_devices_send(small_dir, cache, tmp_path):
    """By default the devices' sections travel entropy-coded (wire flag bit 6): the same levels,
    errors and F1, fewer bits; each window's coded section is its own (the mean gain is the mean
    of their gains)."""
    from stream import vqcode
    from stream.wire import REGISTRY, Modality
    from wardmodels import DD_MODEL, runtime
    from wardmodels.frontend import normalise
    from wardstream import datasets as ds
    from wardstream.cli import main
    from wardmodels.frontend import filter_record

    outs = {}
    for name, extra in (("packed", ["--bit-packed"]), ("coded", [])):
        outs[name] = tmp_path / f"{name}.json"
        assert main(["eval", "dynamic-deep", "--data-dir", str(small_dir), "--split", "all", "--json",
                     str(outs[name]), *extra]) == 0
    p, c = (json.loads(outs[k].read_text()) for k in ("packed", "coded"))
    assert c["vq_coding"].startswith("entropy-coded") and c["level_histogram"] == p["level_histogram"]
    assert c["violation_rate"] == p["violation_rate"] and c["f1_cinc_reconstructed"] == p["f1_cinc_reconstructed"]
    fixed = {int(k): v for k, v in p["bits_per_window_by_level"].items()}
    coded = {int(k): v for k, v in c["coded_bits_per_window_by_level"].items()}
    assert all(coded[L] < fixed[L] for L in range(1, 6)), (coded, fixed)
    assert c["mean_compression_gain"] > p["mean_compression_gain"]
    assert c["oracle_mean_gain"] > p["oracle_mean_gain"]
    # one window by hand: its level-5 section as the device codes it
    codec = runtime.load_deployed(DD_MODEL)
    x = filter_record(ds.load_mitdb(small_dir, "100").ecg_mv)[: 3 * 256].reshape(3, 256)
    xn, codes = normalise(x, "ecg")
    idx, _ = codec.analyse("ecg", xn, codes)
    m = REGISTRY[DD_MODEL].section_model(Modality.ECG, 5)
    from wardstream.eval_dynamic import coded_level_bits, load_part

    part = load_part(small_dir, "all")
    assert part.records and len(part.records[0].feats) == 902  # record 100 comes first
    got = coded_level_bits(small_dir, "all", part, codec)
    for t in range(3):
        buf, bits = vqcode.encode_sections([m], [(int(codes[t]), idx[5][t])])
        assert got[t, 4] == 8 + bits[0] == 8 + vqcode.coded_bits(m, codes[t], idx[5][t])
        assert vqcode.decode_sections([m], buf)[0][0][0] == codes[t]


def _cache_without(small_dir, cache, key: str):
    """The analysis of ``small_dir`` as cached, then the same cache file without ``key``; returns
    each record's ``key`` array and the file."""
    from wardstream import eval_dynamic

    want = [getattr(r, key).copy() for r in eval_dynamic.load_part(small_dir, "all").records]
    (path,) = [p for p in cache.glob("all-*.npz") if p.stem.count("-") == 1]  # not a sidecar
    arrays = dict(np.load(path))
    del arrays[key]
    np.savez(path, **arrays)
    return want, path


def test_a_cache_from_before_the_task_features_gains_them(small_dir, cache):
    from wardstream import eval_dynamic

    want, path = _cache_without(small_dir, cache, "task")  # as cached before 2026-12-02
    again = eval_dynamic.load_part(small_dir, "all")
    assert len(again.records) == len(want)
    for r, w in zip(again.records, want):
        np.testing.assert_array_equal(r.task, w)
    assert "task" in np.load(path).files  # and the cache file has them from now on


def test_the_decode_predictor_is_scored_and_an_older_cache_gains_the_decode_check(small_dir, cache, tmp_path):
    from wardmodels.runtime import load_deployed
    from wardstream import eval_dynamic
    from wardstream.cli import main

    want, path = _cache_without(small_dir, cache, "decode")  # as cached before 2026-12-03
    out = tmp_path / "dd.json"
    assert main(["eval", "dynamic-deep", "--data-dir", str(small_dir), "--split", "all", "--predictor", "decode",
                 "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["predictor"] == "decode" and "decode check" in d["predictor_features"]
    assert d["bound"] == load_deployed(DD_MODEL).entry["deployed_bound_decode"]
    assert sum(d["level_histogram"].values()) == d["windows"]
    again = eval_dynamic.load_part(small_dir, "all")
    for r, w in zip(again.records, want):
        np.testing.assert_array_equal(r.decode, w)
    assert "decode" in np.load(path).files


def test_the_rhythm_predictor_is_scored_with_the_small_models_features_cached_beside(cinc_dir, cache, tmp_path):
    from wardmodels.runtime import load_deployed
    from wardstream import eval_dynamic
    from wardstream.cli import main

    # on the CinC records alone (on both MIT-BIH records too it took 83 s)
    out = tmp_path / "dd.json"
    assert main(["eval", "dynamic-deep", "--data-dir", str(cinc_dir), "--split", "all", "--predictor", "rhythm",
                 "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    entry = load_deployed(DD_MODEL).entry
    assert d["predictor"] == "rhythm" and entry["edge_rhythm"] in d["predictor_features"]
    assert d["bound"] == entry["deployed_bound_rhythm"]
    assert sum(d["level_histogram"].values()) == d["windows"]
    (side,) = cache.glob("all-*-rhythm-*.npz")
    first = [r.rhythm for r in eval_dynamic.load_part(cinc_dir, "all", rhythm=True).records]
    assert sum(len(f) for f in first) == d["windows"] and all(f.shape[1] == 5 for f in first)
    side.unlink()  # computed again: the same features as were cached, and cached again
    again = eval_dynamic.load_part(cinc_dir, "all", rhythm=True)
    for r, f in zip(again.records, first):
        np.testing.assert_array_equal(r.rhythm, f)
    assert side.exists()


def test_the_audit_scores_each_predictor_kind_with_its_own_task_weights():
    """Each predictor kind keeps its own task weights (the rhythm kind's has the beat term since
    2026-12-06), and the worker's audit uses those of the kind its ward runs — before, every kind
    had to keep the default predictor's weights because the audit knew only those."""
    from processors.audit import task_weights
    from wardmodels.predictor import TaskWeights
    from wardmodels.runtime import load_deployed

    codec = load_deployed(DD_MODEL)
    for kind in ("default", "decode", "rhythm"):
        assert task_weights(DD_MODEL, kind) == codec.predictor_of(kind).weights
    assert task_weights(DD_MODEL) == TaskWeights() and task_weights(DD_MODEL, "rhythm") == TaskWeights(beat=1.0)
    assert task_weights(0, "rhythm") == TaskWeights()  # raw: nothing predicted, the defaults


def test_cost_counts_the_entropy_coded_sections(small_dir, cache, tmp_path):
    """Devices send their sections entropy-coded (wire flag bit 6): the cost model prices the
    coded sections measured on held-out windows, plus a byte of stream padding per frame."""
    from wardstream.cli import main

    out = tmp_path / "cost.json"
    assert main(["cost", "--data-dir", str(small_dir), "--split", "all", "--beds", "200", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    o, dd, cm = d["options"], d["dynamic_deep"], d["coded_measured"]
    assert d["vq_coding"].startswith("entropy-coded") and cm["windows_per_modality"] == 2000
    plain = {1: 66, 2: 34, 3: 16, 4: 9, 5: 6}
    for m in ("ecg", "eeg"):
        assert all(1 < cm[m][str(L)] < plain[L] for L in (1, 2, 5)), cm[m]
    assert o["codec_L1"]["frame_bytes"] == pytest.approx(22 + cm["ecg"]["1"] + cm["eeg"]["1"] + 1, abs=0.01)
    sec = {0: dd["ecg_raw_section_bytes"], **{int(L): b for L, b in dd["ecg_section_bytes_by_level"].items()}}
    ecg = sum(share * sec[int(L)] for L, share in dd["ecg_level_mix"].items())
    assert o["dynamic_deep"]["frame_bytes"] == pytest.approx(
        22 + ecg + dd["audit"]["bytes_per_window"] + dd["front_state_bytes_per_frame"]
        + cm["eeg"][str(dd["eeg_level"])] + 1, abs=0.05)
    by_bytes = [o[k]["radio_bytes_per_bed_per_day"] for k in ("raw16", "zstd", "lossless", "codec_L1", "codec_L2")]
    assert by_bytes == sorted(by_bytes, reverse=True)


def test_cost_states_its_assumptions_and_compares_every_option(small_dir, cache, tmp_path, monkeypatch):
    from wardstream.cli import main

    monkeypatch.setenv("WARDSTREAM_WIRE_CODED", "0")  # bit-packed sections: the wire's fixed bytes per level
    out = tmp_path / "cost.json"
    assert main(["cost", "--data-dir", str(small_dir), "--split", "all", "--beds", "200", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["vq_coding"] == "bit-packed" and "coded_measured" not in d
    assert set(d["options"]) == {"raw16", "zstd", "lossless", "codec_L1", "codec_L2", "dynamic_deep"}
    o = d["options"]
    assert d["wire_version"] == 2 and d["frame_overhead_bytes"] == 18 + 4
    assert o["raw16"]["frame_bytes"] == 18 + 4 + 2 * 521
    assert o["raw16"]["radio_bytes_per_bed_per_day"] == 1064 * 43200
    by_bytes = [o[k]["radio_bytes_per_bed_per_day"] for k in ("raw16", "zstd", "lossless", "codec_L1", "codec_L2")]
    assert by_bytes == sorted(by_bytes, reverse=True)
    # the Dynamic-Deep frame is the measured ECG level mix priced at the wire's bytes per level
    # (raw: the measured lossless size of the windows sent raw), plus EEG at its fixed level,
    # plus header and CRC
    assert d["dynamic_deep"]["raw_coding"] == "lossless" and 100 < d["dynamic_deep"]["ecg_raw_section_bytes"] < 521
    sec = {0: d["dynamic_deep"]["ecg_raw_section_bytes"], 1: 66, 2: 34, 3: 16, 4: 9, 5: 6}
    mix = d["dynamic_deep"]["ecg_level_mix"]
    assert sum(mix.values()) == pytest.approx(1.0, abs=1e-3)
    ecg = sum(share * sec[int(L)] for L, share in mix.items())
    # its frames also carry the predicted error (in the ECG level byte: no byte in wire v2) and,
    # every 30 min (the default audit period: 900 windows), a 5-window burst of reference ECG
    au = d["dynamic_deep"]["audit"]
    assert d["dynamic_deep"]["predicted_error_bytes_per_frame"] == 0 and au["every_s"] == 1800
    assert 100 < au["reference_bytes"] < 8 + 2 + 512
    assert au["bytes_per_window"] == pytest.approx(au["reference_bytes"] * 5 / 900, abs=1e-3)
    # and 16 bytes of the front end's state with each raw window that follows a codec-level one
    st = d["dynamic_deep"]["front_state_bytes_per_frame"]
    assert 0 <= st <= 16 * mix["0"]
    assert o["dynamic_deep"]["frame_bytes"] == pytest.approx(
        22 + ecg + au["bytes_per_window"] + st + sec[d["dynamic_deep"]["eeg_level"]], abs=0.05)
    assert 0 < d["reduction_vs_raw"] < d["reduction_vs_raw_variable_costs"] < 1
    assert d["prices"]["noted"] and d["assumptions"]["broker_retention_days"] > 0
    # the worker's state changelog is priced as a fixed cost, from a measured state size
    cl = d["worker_state_changelog"]
    assert 1000 < cl["state_bytes_per_window"] < 10000
    assert o["raw16"]["usd_per_month"]["fixed"]["worker_state_changelog"] == pytest.approx(
        cl["broker_gb_per_month"] * d["prices"]["msk_serverless_data_in_per_gb"], rel=0.01)
    for opt in o.values():
        m = opt["usd_per_month"]
        assert m["total"] == pytest.approx(sum(m["variable"].values()) + sum(m["fixed"].values()), abs=0.05)
    # InfluxDB is priced from what the worker writes, measured per retention policy: the default
    # 32-Hz waveform strips (64 points per window, each with both modalities) dwarf the live measurements
    im = d["influxdb_measured"]
    assert im["waveform_hz"] == 32 and 400 < im["live_bytes_per_window"] < 3000
    assert 64 * 35 < im["strip_bytes_per_window"] < 64 * 80
    assert o["raw16"]["usd_per_month"]["fixed"]["influxdb_writes"] == pytest.approx(
        im["gb_written_per_month"] * 1000 * d["prices"]["influxdb_cloud_data_in_per_mb"], rel=0.01)
    assert o["raw16"]["influxdb_storage_gb"] == pytest.approx(sum(im["gb_stored_by_policy"].values()), abs=0.01)
    # the same ward without strips: InfluxDB is cheaper, the codec's share of the bill larger
    ns = d["without_waveform_strips"]
    fx = o["raw16"]["usd_per_month"]["fixed"]
    assert 0 < ns["influxdb_usd_per_month"] < 0.5 * (fx["influxdb_writes"] + fx["influxdb_storage"])
    assert d["reduction_vs_raw"] < ns["reduction_vs_raw"] < 1
    assert ns["total_usd_per_month"]["raw16"] - ns["total_usd_per_month"]["dynamic_deep"] == pytest.approx(
        o["raw16"]["usd_per_month"]["total"] - o["dynamic_deep"]["usd_per_month"]["total"], abs=0.02)


def test_influx_volume_follows_the_strip_rate():
    from wardstream.cost import worker_writes_per_window

    a, b = worker_writes_per_window(32, windows=12, beds=2), worker_writes_per_window(0, windows=12, beds=2)
    assert b["strip"] == 0 and a["live"] == b["live"] and a["strip"] > 3 * a["live"]


def test_f1_loss_upper_bound_is_paired_and_above_the_point_loss():
    """The bound rule's F1 loss: zero with identical decisions, its bootstrap upper bound at or
    above the point loss, and wider on fewer records."""
    from wardstream.eval_dynamic import f1_loss_upper

    rng = np.random.default_rng(0)
    ys = rng.integers(0, 4, 2000)
    orig = np.where(rng.random(2000) < 0.85, ys, rng.integers(0, 4, 2000))
    assert f1_loss_upper(ys, orig, orig, 0.9) == (0.0, 0.0)
    recon = np.where(rng.random(2000) < 0.05, rng.integers(0, 4, 2000), orig)
    point, upper = f1_loss_upper(ys, orig, recon, 0.9)
    assert 0.0 < point < upper < point + 0.03
    p_small, u_small = f1_loss_upper(ys[:200], orig[:200], recon[:200], 0.9)
    assert u_small - p_small > upper - point


def test_another_rhythm_model_rescores_the_cached_analysis(cinc_dir, cache, tmp_path, monkeypatch):
    """Deploying another rhythm classifier starts from the analysis cached with the first one: only
    the classifier's outputs (and with them the task error's KL) are computed again, to exactly what
    a fresh analysis with the new classifier gives; the QRS part and every feature are kept.
    (On the CinC records alone: the two MIT-BIH records' analysis three times over took 105 s.)"""
    from wardmodels import clf_runtime
    from wardmodels.runtime import load_deployed
    from wardstream import eval_dynamic

    first = eval_dynamic.load_part(cinc_dir, "all", rhythm=True)  # with a sidecar beside it
    donor = eval_dynamic._cache_key(load_deployed(DD_MODEL), cinc_dir, "all")
    assert donor.exists()
    assert donor.with_suffix(".json").exists()
    man = json.loads(clf_runtime.CLF_MANIFEST.read_text())
    assert man["rhythm"]["packed"] != "rhythm-laq-2869bfcf829a.wpk"
    man["rhythm"] = dict(man["rhythm"], packed="rhythm-laq-2869bfcf829a.wpk")  # the committed predecessor
    alt = tmp_path / "CLASSIFIERS.json"
    alt.write_text(json.dumps(man))
    monkeypatch.setattr(clf_runtime, "CLF_MANIFEST", alt)
    clf_runtime._load_deployed.cache_clear()
    path = eval_dynamic._cache_key(load_deployed(DD_MODEL), cinc_dir, "all")
    try:
        assert path != donor and not path.exists()
        rescored = eval_dynamic.load_part(cinc_dir, "all")
        assert path.exists() and path.with_suffix(".json").exists()
        sides = {p.name[len(donor.stem):] for p in cache.glob(f"{donor.stem}-*.npz")}
        assert sides and sides == {p.name[len(path.stem):] for p in cache.glob(f"{path.stem}-*.npz")}
        for p in [path, path.with_suffix(".json"), donor.with_suffix(".json")]:
            p.unlink()  # no donor now: a fresh analysis with the new classifier
        fresh = eval_dynamic.load_part(cinc_dir, "all")
    finally:
        clf_runtime._load_deployed.cache_clear()
        for p in cache.glob(f"{path.stem}*"):
            p.unlink()
    assert len(rescored.records) == len(fresh.records) == len(first.records)
    moved = 0
    for r, f, o in zip(rescored.records, fresh.records, first.records):
        for k in ("p_orig", "p_level", "kl"):
            np.testing.assert_array_equal(getattr(r, k), getattr(f, k))
        for k in ("qrs", "feats", "task"):
            np.testing.assert_array_equal(getattr(r, k), getattr(o, k))
        moved += int(not np.array_equal(r.kl, o.kl))
    assert moved == len(first.records)  # another model: every record's KL differs


def test_analyses_run_on_one_thread_whatever_the_process_count(small_dir, tmp_path, monkeypatch):
    """An analysis (and so the predictor fitted on it) must not depend on the machine's core count:
    the rhythm classifier's bf16 outputs do. Every record is analysed on one torch thread and
    one BLAS thread while the process runs on two, and the process gets its two back after."""
    import torch
    from threadpoolctl import threadpool_info

    from wardmodels import predictor
    from wardstream import eval_dynamic

    seen = []
    real = predictor.analyse_record

    def spy(codec, clf, x):
        seen.append((torch.get_num_threads(), max((p["num_threads"] for p in threadpool_info()
                                                   if p["user_api"] == "blas"), default=1)))
        return real(codec, clf, x[: 256 * 20])

    monkeypatch.setattr(eval_dynamic, "analyse_record", spy)
    monkeypatch.setattr(eval_dynamic, "CACHE", tmp_path / "dd-cache")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        part = eval_dynamic.load_part(small_dir, "all", keep_recon=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(part.records) == len(seen) == 2 + 12
    assert set(seen) == {(1, 1)}
    # the cache key says so: an analysis made before (on the process's threads) is not reused
    from wardmodels.runtime import load_deployed

    assert "|1 thread" in eval_dynamic._key_parts(load_deployed(DD_MODEL), small_dir, "all")[1]


def test_eval_scores_a_predictor_file_with_the_beat_term(cinc_dir, cache, tmp_path):
    """A predictor that is not deployed is scored from its file (`--predictor PATH`), with the task
    error its file names: here the deployed default predictor's MLP and slack with the beat term
    added (weight 1), so every window's real error is the plain one plus the beat term, which the
    evaluation computes and caches beside the analysis. Devices take the same path
    (WARDSTREAM_DD_PREDICTOR); a name that is neither a kind nor a file is refused. On the CinC
    records alone (their beats as the stream detects them)."""
    import dataclasses

    from wardmodels.predictor import TaskWeights
    from wardmodels.runtime import load_deployed
    from wardstream import eval_dynamic
    from wardstream.cli import main
    from wardstream.settings import Settings, from_env

    base = load_deployed(DD_MODEL).predictor
    pr = dataclasses.replace(base, weights=TaskWeights(1.0, 1.0, 1.0), meta=dict(base.meta))
    path = pr.save(tmp_path)
    outs = {}
    for name, kind in (("plain", "default"), ("beat", str(path))):
        out = tmp_path / f"{name}.json"
        assert main(["eval", "dynamic-deep", "--data-dir", str(cinc_dir), "--split", "all", "--json", str(out),
                     "--predictor", kind]) == 0
        outs[name] = json.loads(out.read_text())
    plain, beat = outs["plain"], outs["beat"]
    assert beat["task_weights"] == {"kl": 1.0, "qrs": 1.0, "beat": 1.0} and plain["task_weights"] == {"kl": 1.0, "qrs": 1.0}
    # the same predictions and slack, so the same levels; only the real error grows
    assert beat["level_histogram"] == plain["level_histogram"]
    assert beat["mean_compression_gain"] == plain["mean_compression_gain"]
    assert beat["mean_real_error"] > plain["mean_real_error"]
    assert beat["violation_rate"] >= plain["violation_rate"]
    part = eval_dynamic.load_part(cinc_dir, "all", beat=True)
    assert all(r.beat is not None and r.beat.shape == r.kl.shape for r in part.records)
    assert list(cache.glob("all-*-beat-*.npz"))
    assert sum(float(r.beat.sum()) for r in part.records) > 0
    # devices: the file is a valid WARDSTREAM_DD_PREDICTOR, a missing one is not
    assert from_env({"WARDSTREAM_DD_PREDICTOR": str(path)}).dd_predictor == str(path)
    with pytest.raises(ValueError, match="predictor file"):
        from_env({"WARDSTREAM_DD_PREDICTOR": str(tmp_path / "predictor-000000000000.npz")})
    assert main(["eval", "dynamic-deep", "--data-dir", str(cinc_dir), "--predictor", "nonsense"]) == 2
    assert Settings().dd_predictor == "default"
