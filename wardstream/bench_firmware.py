"""`wardstream bench firmware`: the C edge encoder built for a Cortex-M7 and run under QEMU.

Builds `firmware/m7/` (startup, semihosting, the encoder of `firmware/encoder/`) with
arm-none-eabi-gcc for QEMU's mps2-an500 board, exports the devices' encoder as its parameter blob,
encodes real window pairs (ECG of MIT-BIH DS2 records, EEG of eegmat test subjects, normalised as
the devices normalise them) on the emulated core, and checks every index against the Python
integer spec (`wardmodels.int8`). QEMU counts instructions (``-icount shift=0``, read through
SysTick), not cycles: the millisecond figure assumes one instruction per cycle at 480 MHz and
is an estimate, not a measurement on silicon (the M7 dual-issues some pairs; flash wait states
and cache misses cost cycles QEMU does not model).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

M7_HZ = 480_000_000


def real_pairs(data_dir: Path, pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(ECG, EEG) normalised windows, ``pairs`` of each, drawn from held-out recordings."""
    from wardmodels.frontend import WINDOW, filter_record, normalise
    from wardstream import datasets as ds

    rng = np.random.default_rng(seed)
    records, subjects = ds.DS2[:4], range(24, 27)
    ecg = np.concatenate([filter_record(ds.load_mitdb(data_dir, r).ecg_mv)[2560:2560 + 60 * WINDOW].reshape(-1, WINDOW)
                          for r in records])
    eeg = np.concatenate([filter_record(c)[1280:1280 + 30 * WINDOW].reshape(-1, WINDOW)
                          for rec in ds.load_eegmat(data_dir, subjects=subjects) for c in rec.eeg_uv[:2]])
    e = ecg[rng.choice(len(ecg), pairs, replace=len(ecg) < pairs)]
    g = eeg[rng.choice(len(eeg), pairs, replace=len(eeg) < pairs)]
    return (normalise(e, "ecg")[0], normalise(g, "eeg")[0],
            f"MIT-BIH records {', '.join(records)} (2 min each), eegmat subjects {subjects[0]}-{subjects[-1]} (F3, F4)")


def on_m7(edge, ecg: np.ndarray, eeg: np.ndarray) -> dict:
    """Encode window pairs with the C encoder on the emulated Cortex-M7 and check them against
    ``edge`` (the Python spec): agreement, instructions, sizes."""
    from wardmodels.firmware import blob, build_m7, run_m7

    data = blob(edge)
    with tempfile.TemporaryDirectory() as tmp:
        built = build_m7(Path(tmp))
        e_idx, g_idx, instr, ram = run_m7(built["elf"], data, ecg, eeg, Path(tmp) / "run")
    pair = instr.sum(1)

    def stats(v: np.ndarray) -> dict:
        return {"mean": float(v.mean()), "min": int(v.min()), "max": int(v.max())}

    return {
        "target": "QEMU mps2-an500 (Cortex-M7), -O2", "window_pairs": len(ecg),
        "index_agreement_with_python_spec": {"ecg": float((e_idx == edge.encode("ecg", ecg)).mean()),
                                             "eeg": float((g_idx == edge.encode("eeg", eeg)).mean())},
        "instructions_per_window": {"ecg": stats(instr[:, 0]), "eeg": stats(instr[:, 1])},
        "instructions_per_window_pair": stats(pair),
        "encode_ms_per_pair_at_480mhz_one_instruction_per_cycle": float(pair.mean()) / M7_HZ * 1e3,
        "duty_cycle_of_a_2s_window_at_480mhz": float(pair.mean()) / M7_HZ / 2.0,
        "code_bytes": built["text_bytes"],
        "parameter_blob_bytes": len(data),
        "ram_bytes_beside_the_stack": ram,
        "note": "instructions, not cycles: QEMU does not model the M7's pipeline, caches or wait states",
    }


def bench(settings, pairs: int = 40, model_id: int | None = None) -> dict:
    from wardmodels import runtime

    mid = model_id if model_id is not None else settings.codec_model
    codec = runtime.load_deployed(mid)
    ecg, eeg, source = real_pairs(settings.data_dir, pairs)
    return {"model_id": mid, "windows": source, **on_m7(codec.edge, ecg, eeg)}
