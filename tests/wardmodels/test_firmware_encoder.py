"""The C edge encoder (`firmware/encoder/`) against the integer spec it implements
(`wardmodels.int8`): the same indices and the same projection z, bit for bit, for the deployed
encoder of both modalities — on real windows, on windows that saturate every clamp, on silence —
and a clear refusal of a malformed parameter blob. Compiled here with the host's C compiler, the
flags the firmware uses (C11, no fused multiply-add, every warning an error)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wardmodels.firmware import blob

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "firmware" / "encoder"
POSITIONS, D = 32, 64


@pytest.fixture(scope="module")
def host_encode(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (./ward test installs Debian's gcc)"
    out = tmp_path_factory.mktemp("fw") / "host_encode"
    subprocess.run([cc, "-O2", "-std=c11", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-o", str(out),
                    str(SRC / "host_encode.c"), str(SRC / "ws_encoder.c"), "-lm"], check=True)
    return out


@pytest.fixture(scope="module")
def blob_path(codec, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("fw") / "edge.wse"
    p.write_bytes(blob(codec.edge))
    return p


def run_c(exe: Path, blob_file: Path, modality: str, x: np.ndarray, stages: int = 2):
    out = subprocess.run([str(exe), str(blob_file), modality, str(stages)],
                         input=np.ascontiguousarray(x, "<f4").tobytes(), capture_output=True, check=True)
    rows = np.frombuffer(out.stdout, "<i2").reshape(len(x), stages * POSITIONS + D * POSITIONS)
    idx = rows[:, :stages * POSITIONS].view("<u2").reshape(len(x), stages, POSITIONS)
    return idx.astype(np.int64), rows[:, stages * POSITIONS:].reshape(len(x), D, POSITIONS).astype(np.int64)


def _windows(ecg_windows, eeg_windows) -> dict[str, np.ndarray]:
    from wardmodels.frontend import normalise

    rng = np.random.default_rng(11)
    edge_cases = np.concatenate([
        np.zeros((1, 256), np.float32),                                    # silence
        np.full((1, 256), 1e6, np.float32), np.full((1, 256), -1e6, np.float32),  # the input clamp
        (rng.standard_normal((6, 256)) * 40).astype(np.float32),           # inner clamps
        rng.standard_normal((20, 256)).astype(np.float32),
    ])
    return {"ecg": np.concatenate([normalise(ecg_windows, "ecg")[0], edge_cases]),
            "eeg": np.concatenate([normalise(eeg_windows[0], "eeg")[0], edge_cases])}


@pytest.mark.parametrize("modality", ["ecg", "eeg"])
def test_the_c_encoder_gives_the_int8_specs_indices_and_z_bit_for_bit(host_encode, blob_path, codec, modality,
                                                                      ecg_windows, eeg_windows):
    x = _windows(ecg_windows, eeg_windows)[modality]
    ref = codec.edge.modalities[modality]
    z_ref = ref.run(x)
    idx_ref = ref.search(z_ref)
    idx, z = run_c(host_encode, blob_path, modality, x)
    assert np.array_equal(z, z_ref), f"z differs at {np.argwhere(z != z_ref)[:5].tolist()}"
    assert np.array_equal(idx, idx_ref), f"indices differ at {np.argwhere(idx != idx_ref)[:5].tolist()}"
    assert (np.abs(x) * ref.inv_sx > 32767).any() and len(np.unique(idx_ref[:, 0])) > 50  # clamps, the codebook
    one, _ = run_c(host_encode, blob_path, modality, x[:5], stages=1)  # level 2: stage 1 only
    assert np.array_equal(one[:, 0], idx_ref[:5, 0])


def test_a_malformed_blob_is_refused_with_the_part_that_is_wrong(host_encode, blob_path, tmp_path):
    good = blob_path.read_bytes()
    x = np.zeros((1, 256), np.float32).tobytes()
    for name, data, says in (("truncated", good[:-4096], "codebook"), ("magic", b"XXXX" + good[4:], "not a WSE1"),
                             ("trailing", good + b"\0" * 8, "trailing bytes")):
        p = tmp_path / name
        p.write_bytes(data)
        r = subprocess.run([str(host_encode), str(p), "ecg", "2"], input=x, capture_output=True)
        assert r.returncode == 2 and says in r.stderr.decode(), (name, r.stderr)
    r = subprocess.run([str(host_encode), str(blob_path), "emg", "2"], input=x, capture_output=True)
    assert r.returncode == 2 and "no modality emg" in r.stderr.decode()


def test_the_cortex_m7_build_encodes_bit_for_bit_under_qemu(codec, ecg_windows, eeg_windows, tmp_path):
    """The same encoder cross-compiled for a Cortex-M7 (hard-float FPv5, the firmware's flags) and
    run on QEMU's mps2-an500 board, fed and read back through semihosting: every index equals
    the Python spec's, and each encode reports its instruction count."""
    from wardmodels.firmware import build_m7, run_m7
    from wardmodels.frontend import normalise

    ecg = np.concatenate([normalise(ecg_windows[:10], "ecg")[0], np.full((1, 256), 1e6, np.float32)])
    eeg = np.concatenate([normalise(eeg_windows[0][:10], "eeg")[0], np.full((1, 256), -1e6, np.float32)])
    built = build_m7(tmp_path / "build")
    e, g, instr, ram = run_m7(built["elf"], blob(codec.edge), ecg, eeg, tmp_path / "run")
    assert np.array_equal(e, codec.edge.encode("ecg", ecg)) and np.array_equal(g, codec.edge.encode("eeg", eeg))
    assert (instr > 0).all() and ram["scratch"] > 0 and built["text_bytes"] < 65536
