"""docs/configuration.md lists every ``WARDSTREAM_*`` variable the code reads, with its default."""

from __future__ import annotations

import re
from pathlib import Path

from wardstream.settings import _ENV, SECRETS, Settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("stream", "device_sim", "processors", "wardstream", "wardmodels", "dashboards", "firmware")
# a full variable name: a wildcard in a message (``WARDSTREAM_ALARM_HOLD_*``) is not one
NAME = re.compile(r"\bWARDSTREAM_[A-Z0-9_]*[A-Z0-9]\b(?!_?\*)")
ROW = re.compile(r"^\| `(WARDSTREAM_[A-Z0-9_]+)` \| ([^|]*) \|")
PATHS = {"state_dir", "data_dir"}  # defaults that depend on where the project lies


def _documented() -> dict[str, str]:
    rows = {}
    for ln in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        m = ROW.match(ln)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is listed twice"
            rows[m.group(1)] = m.group(2).strip()
    return rows


def _read_by_code() -> set[str]:
    names = set()
    for top in PRODUCT:
        for f in (ROOT / top).rglob("*.py"):
            names |= set(NAME.findall(f.read_text()))
    return names


def _shown(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return "(empty)" if v == "" else str(v)


def test_every_variable_the_code_reads_is_documented_and_none_that_it_does_not():
    doc, code = _documented(), _read_by_code()
    assert len(code) > 50 and set(_ENV.values()) <= code
    assert sorted(code - set(doc)) == [], "add these to the table in docs/configuration.md"
    assert sorted(set(doc) - code) == [], "the code no longer reads these: drop them from the table"


def test_the_documented_defaults_are_the_settings_defaults():
    doc, s = _documented(), Settings()
    for name, var in _ENV.items():
        if name in PATHS:
            continue
        want = "(unset)" if name in SECRETS else _shown(getattr(s, name))
        assert doc[var] == want, f"{var}: docs/configuration.md says {doc[var]!r}, Settings has {want!r}"
