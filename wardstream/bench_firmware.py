"""`wardstream bench firmware`: the C edge encoder built for a Cortex-M7 and run under QEMU.

Builds `firmware/m7/` (startup, semihosting, the front end, encoder, arithmetic coder and frame of
`firmware/encoder/`) with arm-none-eabi-gcc for QEMU's mps2-an500 board, exports the devices'
codec as its parameter blob (with the wire tables), streams raw held-out recordings (an ECG of
MIT-BIH DS2, an EEG channel of an eegmat test subject) through a device of the default
configuration on the emulated core — causal band-pass, scale code, integer encoder at the
configured level, the v2 frame entropy-coded when shorter — and checks every scale code, index
and frame byte against the simulator's device (`device_sim.ward.Device`). QEMU counts instructions (``-icount shift=0``, read through
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


def simulated_frames(codec, level: int, ecg_raw: np.ndarray, eeg_raw: np.ndarray, bed: int = 1, seq0: int = 0,
                     t0_ms: int = 1_800_000_000_000, coded: bool = True, hmac_key: bytes | None = None) -> list[bytes]:
    """The frames the simulator's device (`device_sim.ward.Device` with the integer encoder at a
    fixed ``level``, wire v2, sections entropy-coded when shorter unless ``coded`` is off, signed
    with ``hmac_key`` if given) sends for these raw windows."""
    from device_sim.ward import Device
    from wardmodels.wire_codec import CodecEncoder, register_deployed

    register_deployed()

    class Replay:
        k = 0

        def next_window(self):
            self.k += 1
            return ecg_raw[self.k - 1], eeg_raw[self.k - 1]

    dev = Device(bed, Replay(), t0_ms * 1000, CodecEncoder(codec.model_id, level, "int8"), hmac_key=hmac_key,
                 seq=seq0, coded=coded)
    return [dev.next_frame()[0] for _ in range(len(ecg_raw))]


def on_m7(codec, ecg_raw: np.ndarray, eeg_raw: np.ndarray, level: int = 1) -> dict:
    """A device of the default configuration in C (front end, encoder, wire frame) on the emulated
    Cortex-M7, checked against the simulated device: scale codes, indices and frames; instructions
    per step, sizes."""
    from wardmodels.firmware import build_m7, device_blob, python_device, run_m7

    data = device_blob(codec)
    with tempfile.TemporaryDirectory() as tmp:
        built = build_m7(Path(tmp))
        r = run_m7(built["elf"], data, ecg_raw, eeg_raw, Path(tmp) / "run", level=level, model_id=codec.model_id)
    stages = codec.stages_for(level)
    agree = {}
    for m, raw in (("ecg", ecg_raw), ("eeg", eeg_raw)):
        codes, idx = python_device(codec.edge, m, raw)
        agree[m] = {"scale_codes": float((r[m][0] == codes).mean()),
                    "indices": float((r[m][1][:, :stages] == idx[:, :stages]).mean())}
    frames = simulated_frames(codec, level, ecg_raw, eeg_raw)
    agree["frames_byte_identical"] = float(np.mean([a == b for a, b in zip(r["frames"], frames)]))
    instr = r["instructions"]  # (N, [ECG front end, ECG encode, EEG front end, EEG encode, frame])
    pair = instr.sum(1)

    def stats(v: np.ndarray) -> dict:
        return {"mean": float(v.mean()), "min": int(v.min()), "max": int(v.max())}

    return {
        "target": "QEMU mps2-an500 (Cortex-M7), -O2", "level": level, "window_pairs": len(ecg_raw),
        "agreement_with_the_simulated_device": agree,
        "instructions_per_window": {"ecg": {"front_end": stats(instr[:, 0]), "encode": stats(instr[:, 1])},
                                    "eeg": {"front_end": stats(instr[:, 2]), "encode": stats(instr[:, 3])},
                                    "frame": stats(instr[:, 4])},
        "instructions_per_window_pair": stats(pair),
        "frame_bytes": stats(np.array([len(f) for f in r["frames"]])),
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
    return {"model_id": mid, "windows": source, **on_m7(codec, ecg, eeg, settings.codec_level)}
