"""`wardstream bench firmware`: the C edge encoder built for a Cortex-M7 and run under QEMU.

Builds `firmware/m7/` (startup, semihosting, the front end and encoder of `firmware/encoder/`)
with arm-none-eabi-gcc for QEMU's mps2-an500 board, exports the devices' encoder as its parameter
blob, streams raw held-out recordings (an ECG of MIT-BIH DS2, an EEG channel of an eegmat test
subject) through the device chain on the emulated core — causal band-pass, scale code, integer
encoder — and checks every scale code and index against what the simulated device computes
(`wardmodels.firmware.python_device`). QEMU counts instructions (``-icount shift=0``, read through
SysTick), not cycles: the millisecond figure assumes one instruction per cycle at 480 MHz and
is an estimate, not a measurement on silicon (the M7 dual-issues some pairs; flash wait states
and cache misses cost cycles QEMU does not model).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

M7_HZ = 480_000_000


def real_streams(data_dir: Path, windows: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A raw ECG stream and a raw EEG stream of held-out recordings, ``windows`` windows each
    (N, 256): what two sensors of a device deliver."""
    from wardmodels.frontend import WINDOW
    from wardstream import datasets as ds

    n = windows * WINDOW
    ecg = ds.load_mitdb(data_dir, "100").ecg_mv[:n]
    eeg = ds.load_eegmat(data_dir, subjects=[24])[0].eeg_uv[0][:n]
    if len(ecg) < n or len(eeg) < n:
        raise ValueError(f"{windows} windows are longer than the recordings")
    return (np.asarray(ecg, np.float64).reshape(windows, WINDOW), np.asarray(eeg, np.float64).reshape(windows, WINDOW),
            f"MIT-BIH record 100 and eegmat subject 24 (F3), the first {windows} windows of each, raw")


def on_m7(edge, ecg_raw: np.ndarray, eeg_raw: np.ndarray) -> dict:
    """The device chain in C (front end + encoder) on the emulated Cortex-M7, checked against the
    simulated device (`wardmodels.firmware.python_device`): agreement, instructions, sizes."""
    from wardmodels.firmware import blob, build_m7, python_device, run_m7

    data = blob(edge)
    with tempfile.TemporaryDirectory() as tmp:
        built = build_m7(Path(tmp))
        r = run_m7(built["elf"], data, ecg_raw, eeg_raw, Path(tmp) / "run")
    instr = r["instructions"]  # (N, modality, [front end, encode])
    agree = {}
    for m, raw in (("ecg", ecg_raw), ("eeg", eeg_raw)):
        codes, idx = python_device(edge, m, raw)
        agree[m] = {"scale_codes": float((r[m][0] == codes).mean()), "indices": float((r[m][1] == idx).mean())}
    pair = instr.sum((1, 2))

    def stats(v: np.ndarray) -> dict:
        return {"mean": float(v.mean()), "min": int(v.min()), "max": int(v.max())}

    return {
        "target": "QEMU mps2-an500 (Cortex-M7), -O2", "window_pairs": len(ecg_raw),
        "agreement_with_the_simulated_device": agree,
        "instructions_per_window": {m: {"front_end": stats(instr[:, j, 0]), "encode": stats(instr[:, j, 1])}
                                    for j, m in enumerate(("ecg", "eeg"))},
        "instructions_per_window_pair": stats(pair),
        "ms_per_pair_at_480mhz_one_instruction_per_cycle": float(pair.mean()) / M7_HZ * 1e3,
        "duty_cycle_of_a_2s_window_at_480mhz": float(pair.mean()) / M7_HZ / 2.0,
        "code_bytes": built["text_bytes"],
        "parameter_blob_bytes": len(data),
        "ram_bytes_beside_the_stack": r["ram"],
        "note": "instructions, not cycles: QEMU does not model the M7's pipeline, caches or wait states",
    }


def bench(settings, pairs: int = 40, model_id: int | None = None) -> dict:
    from wardmodels import runtime

    mid = model_id if model_id is not None else settings.codec_model
    codec = runtime.load_deployed(mid)
    ecg, eeg, source = real_streams(settings.data_dir, pairs)
    return {"model_id": mid, "windows": source, **on_m7(codec.edge, ecg, eeg)}
