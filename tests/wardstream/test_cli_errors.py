"""Every command that reads recordings says in one line what is missing, with exit code 2, when the
data directory lacks it — no traceback (before, `eval codec` on a directory holding only Bonn printed
one; the check sat in each command's branch, and some had none)."""

import pytest

from wardstream.cli import main

COMMANDS = [
    ["eval", "codec", "--split", "test"],
    ["eval", "qrs", "--split", "test"],
    ["eval", "classifier", "--dataset", "cinc2017", "--split", "test"],
    ["eval", "dynamic-deep", "--split", "all"],
    ["eval", "alarms", "--split", "test"],
    ["cost", "--beds", "2"],
    ["train", "codec", "--steps", "1"],
    ["bench", "firmware", "--pairs", "1"],
    ["export", "wire-tables", "--model-id", "5"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_a_command_on_a_directory_without_its_recordings_fails_in_one_line(argv, tmp_path, capsys):
    (tmp_path / "bonn").mkdir()  # a directory of the layout holding none of what these commands read
    assert main([*argv, "--data-dir", str(tmp_path)]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path) in err[0], cap.err
    assert "Traceback" not in cap.err and cap.out == ""


def _mitdb_dir(tmp_path, records):
    from wardstream.settings import default_data_dir

    src = default_data_dir()
    if not all((src / "mitdb" / f"{r}.hea").exists() for r in records):
        pytest.skip(f"recordings not found under {src}")
    d = tmp_path / "sub"
    (d / "mitdb").mkdir(parents=True)
    for r in records:
        for ext in ("hea", "dat", "atr"):
            (d / "mitdb" / f"{r}.{ext}").symlink_to(src / "mitdb" / f"{r}.{ext}")
    return d


def test_eval_qrs_scores_the_records_present_and_alarms_say_when_none_is_left(tmp_path, capsys):
    """`eval qrs --split all` needed all 48 records (it stopped at the first missing one); `eval
    alarms` on a directory holding only paced records (left out) failed with "max() arg is an empty
    sequence"."""
    import json

    d = _mitdb_dir(tmp_path, ["102"])  # paced: its QRS complexes are scored, its beats and alarms are not
    out = tmp_path / "qrs.json"
    assert main(["eval", "qrs", "--split", "all", "--data-dir", str(d), "--json", str(out)]) == 0
    q = json.loads(out.read_text())
    assert q["records"] == 1 and q["beats"] > 2000 and q["sensitivity"] > 0.99
    capsys.readouterr()
    assert main(["eval", "qrs", "--split", "test", "--data-dir", str(d)]) == 2
    assert capsys.readouterr().err.startswith("error: no MIT-BIH records of split 'test'")
    assert main(["eval", "alarms", "--split", "all", "--data-dir", str(d)]) == 2
    assert "paced ones excluded" in capsys.readouterr().err


BAD_ARGUMENTS = [
    (["eval", "codec", "--split", "all", "--level", "7"], "error: --level 7: the levels of codec"),
    (["eval", "classifier", "--dataset", "mitdb", "--split", "all", "--level", "0"], "level 0 sends windows raw"),
    (["eval", "codec", "--split", "all", "--model-id", "99"], "error: no deployed codec with model id 99"),
    (["eval", "dynamic-deep", "--split", "all", "--model-id", "99"], "error: no deployed codec with model id 99"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGUMENTS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_ARGUMENTS])
def test_a_bad_level_or_model_is_refused_before_any_work(argv, message, tmp_path, capsys):
    """Before, `eval codec --level 7` and `eval classifier --dataset mitdb --level 0` ran the whole
    evaluation and then stopped on a KeyError / ValueError traceback; an unknown model id printed one."""
    d = _mitdb_dir(tmp_path, ["100"])
    assert main([*argv, "--data-dir", str(d)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("bound", ["-1", "nan", "inf", "x"])
def test_a_bound_must_be_a_finite_number_at_least_zero(bound, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "dynamic-deep", "--bound", bound])
    assert e.value.code == 2 and "is not a task-error bound" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["sim", "--beds", "0"], ["sim", "--first-bed", "-3"], ["sim", "--duration", "-5"],
                                  ["sim", "--speed", "0"], ["demo", "--beds", "0"], ["demo", "--workers", "0"],
                                  ["demo", "--duration", "nan"], ["bench", "pipeline", "--beds", "x"],
                                  ["eval", "classifier", "--max-records", "0"], ["eval", "codec", "--max-records", "0"]],
                         ids=lambda a: " ".join(a))
def test_ward_sizes_and_times_are_checked_before_anything_starts(argv, capsys):
    """`demo --beds 0` started the services and workers, then stopped on a TypeError; `sim --speed 0`
    and `--duration -5` went on to the broker."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "is not a" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["sim", "--beds", "1", "--duration", "1"], ["control", "bound", "0.3"],
                                  ["control", "show"]], ids=lambda a: " ".join(a[:2]))
def test_without_a_broker_a_command_says_where_it_looked(argv, capsys, caplog):
    """They printed a traceback (and asyncio's "Unclosed AIOKafkaProducer"): the client that could
    not start is closed, and the error names the broker."""
    import gc

    assert main([*argv, "--kafka", "127.0.0.1:1"]) == 2
    gc.collect()  # an unclosed client says so when it is collected
    err = capsys.readouterr().err
    assert "error: no broker at 127.0.0.1:1" in err and "Traceback" not in err
    assert "Unclosed" not in caplog.text


def test_report_on_a_directory_that_is_not_a_run_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path} is not a run directory") and "Traceback" not in err


def test_split_all_is_every_record_a_directory_holds_whatever_its_name(tmp_path):
    """``--split all`` means every record present: a held-out directory's records need not carry
    MIT-BIH's names (they were dropped by `eval codec`, `eval qrs` and `eval classifier`, which
    took the 48 names and kept those present)."""
    import json

    from wardstream import datasets as ds
    from wardstream.settings import default_data_dir

    src = default_data_dir() / "mitdb"
    if not (src / "100.hea").exists():
        pytest.skip(f"recordings not found under {src}")
    d = tmp_path / "held-out"
    (d / "mitdb").mkdir(parents=True)
    (d / "mitdb" / "900.hea").write_text((src / "100.hea").read_text().replace("100", "900"))
    for ext in ("dat", "atr"):
        (d / "mitdb" / f"900.{ext}").symlink_to(src / f"100.{ext}")
    for ext in ("hea", "dat", "atr"):  # a paced record: scored for QRS, left out of beat work
        (d / "mitdb" / f"102.{ext}").symlink_to(src / f"102.{ext}")
    assert ds.mitdb_records(d, "all") == ["102", "900"] and ds.mitdb_records(d, "all", paced=False) == ["900"]
    assert ds.mitdb_records(d, "test") == [] and ds.mitdb_records(tmp_path / "nothing", "all") == []
    out = tmp_path / "qrs.json"
    assert main(["eval", "qrs", "--split", "all", "--data-dir", str(d), "--json", str(out)]) == 0
    q = json.loads(out.read_text())
    assert [r["record"] for r in q["per_record"]] == ["102", "900"] and q["sensitivity"] > 0.99


@pytest.mark.parametrize("argv", [["dashboards", "check", "--influx-url", "http://127.0.0.1:9"],
                                  ["dashboards", "--influx-url", "http://127.0.0.1:9", "check"]])
def test_dashboards_takes_the_connection_options_before_or_after_its_action(argv, monkeypatch):
    """`dashboards check --influx-url …` was "unrecognized arguments" (only `dashboards --influx-url … check` worked)."""
    from wardstream import cli

    seen = {}
    monkeypatch.setattr(cli, "_dispatch", lambda ap, a, s, argv: seen.setdefault("url", s.influx_url) and 0)
    assert main(argv) == 0 and seen["url"] == "http://127.0.0.1:9"


def test_checking_a_level_leaves_the_callers_thread_count(monkeypatch):
    """`eval classifier` checks its level on the codec before its work: loading the codec for the
    check must not leave the classifier's process on the evaluation workers' one thread."""
    import torch

    from wardmodels import DD_MODEL
    from wardstream import eval_codec
    from wardstream.eval_codec import check_level

    monkeypatch.setattr(eval_codec, "_CODECS", {})  # loaded afresh, as in a new process

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        check_level(1, None, DD_MODEL)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
