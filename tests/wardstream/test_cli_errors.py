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
