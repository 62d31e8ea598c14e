"""Hash-named files: every committed model file's name ends in the first 12 hex digits of the
sha256 of its bytes (``<stem>-<digest>.<ext>``), written by `write_hashed` and checked on every
load by `verify_hash`, so a file that is not what its name says is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGITS = 12


class WeightsError(RuntimeError):
    pass


def write_hashed(out_dir: Path, stem: str, blob: bytes, suffix: str) -> Path:
    """Write ``blob`` as ``out_dir/<stem>-<sha256[:12]><suffix>`` (the folder made if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}-{hashlib.sha256(blob).hexdigest()[:DIGITS]}{suffix}"
    path.write_bytes(blob)
    return path


def verify_hash(path: Path) -> Path:
    """The name ends in the first 12 hex digits of the file's sha256; refuse anything else."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} is missing")
    want = path.stem.rsplit("-", 1)[-1]
    got = hashlib.sha256(path.read_bytes()).hexdigest()[: len(want)]
    if len(want) < 8 or got != want:
        raise WeightsError(f"{path.name}: content hash {got} does not match its name")
    return path
