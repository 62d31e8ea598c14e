"""`wardstream bench firmware`: the C edge encoder built for a Cortex-M7 and run under QEMU.

Builds `firmware/m7/` (startup, semihosting, the front end, encoder, arithmetic coder and frame of
`firmware/encoder/`) with arm-none-eabi-gcc for QEMU's mps2-an500 board, exports the devices'
codec as its parameter blob (with the wire tables, the Dynamic-Deep chain and the error
predictor), streams raw held-out recordings (an ECG of MIT-BIH DS2, an EEG channel of an eegmat
test subject) through the device the settings configure (`configured_device`; by default the
deployed Dynamic-Deep codec at level 1 with its predicted task error) on the emulated core —
causal band-pass, scale code, integer encoder, every Dynamic-Deep level and the predictor's
features, the QRS detector, the predictor and the level choice, the v2 frame entropy-coded when
shorter — and checks every scale code, index, level, predicted error and frame byte against the
simulator's device (`device_sim.ward.Device`). QEMU counts instructions (``-icount shift=0``, read through
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


def configured_device(settings, codec) -> dict:
    """The device the simulator runs with ``settings`` (`device_sim.firmware.device_options`), as
    the firmware's options: ``dd`` None, -1 or the fixed level sent with its predicted error; raw
    sections lossless-coded or not; audit bursts every ``audit_every`` windows."""
    from device_sim.firmware import device_options
    from stream.wire import audit_period_windows

    if settings.wire_version != 2:
        raise ValueError("the firmware sends wire format v2 only (WARDSTREAM_WIRE_VERSION=2)")
    o = device_options(codec, settings.level_policy, settings.codec_level, settings.dd_bound, settings.eeg_level,
                       settings.dd_predictor)
    return {**o, "lossless": bool(settings.raw_lossless),
            "audit_every": audit_period_windows(settings.audit_every_s) if o["dd"] is not None else 0}


def plain_device(level: int) -> dict:
    """A fixed-level device without the Dynamic-Deep edge (no predicted error, no audits)."""
    return {"dd": None, "level": level, "eeg_level": level, "lossless": False, "audit_every": 0, "bound": 0.0}


def simulated_device(codec, cfg: dict, ecg_raw: np.ndarray, eeg_raw: np.ndarray, bed: int = 1, seq0: int = 0,
                     t0_ms: int = 1_800_000_000_000, coded: bool = True,
                     hmac_key: bytes | None = None) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """What the simulator's device (`device_sim.ward.Device`, the integer encoder, wire v2,
    sections entropy-coded when shorter unless ``coded`` is off, signed with ``hmac_key`` if given)
    configured as ``cfg`` (`configured_device`) sends for these raw windows -> (frames, ECG levels,
    predicted-error codes; 255 where a frame carries none)."""
    from device_sim.ward import Device
    from stream.wire import pred_code
    from wardmodels.wire_codec import CodecEncoder, DynamicEncoder, register_deployed

    register_deployed()

    class Replay:
        k = 0

        def next_window(self):
            self.k += 1
            return ecg_raw[self.k - 1], eeg_raw[self.k - 1]

    if cfg["dd"] is None:
        enc = CodecEncoder(codec.model_id, cfg["level"], "int8")
    else:
        bound = cfg["bound"] or float(codec.predictor.meta["deployed_bound"])
        enc = DynamicEncoder(codec.model_id, bound if cfg["dd"] < 0 else 0.0, cfg["eeg_level"], "int8",
                             fixed_level=None if cfg["dd"] < 0 else cfg["dd"])
    dev = Device(bed, Replay(), t0_ms * 1000, enc, hmac_key=hmac_key, seq=seq0, coded=coded,
                 lossless=cfg["lossless"], audit_every=cfg["audit_every"])
    frames, levels, codes = [], [], []
    for _ in range(len(ecg_raw)):
        frames.append(dev.next_frame()[0])
        levels.append(cfg["level"] if cfg["dd"] is None else enc.last_level)
        pred = getattr(enc, "last_pred", None)
        codes.append(255 if pred is None else pred_code(pred))
    return frames, np.array(levels), np.array(codes)


def simulated_frames(codec, level: int, ecg_raw: np.ndarray, eeg_raw: np.ndarray, bed: int = 1, seq0: int = 0,
                     t0_ms: int = 1_800_000_000_000, coded: bool = True, hmac_key: bytes | None = None) -> list[bytes]:
    """The frames a fixed-level device without the Dynamic-Deep edge sends (`simulated_device`)."""
    return simulated_device(codec, plain_device(level), ecg_raw, eeg_raw, bed, seq0, t0_ms, coded, hmac_key)[0]


def on_m7(codec, ecg_raw: np.ndarray, eeg_raw: np.ndarray, cfg: dict | None = None) -> dict:
    """A device configured as ``cfg`` (default: the plain level-1 device) in C (front end,
    encoder, the Dynamic-Deep edge if configured, wire frame) on the emulated Cortex-M7, checked
    against the simulated device: scale codes, indices, levels, predicted errors and frames;
    instructions per step, sizes."""
    from wardmodels.firmware import STEPS, build_m7, device_blob, python_device, run_m7

    cfg = cfg or plain_device(1)
    data = device_blob(codec)
    with tempfile.TemporaryDirectory() as tmp:
        built = build_m7(Path(tmp))
        r = run_m7(built["elf"], data, ecg_raw, eeg_raw, Path(tmp) / "run", level=cfg["level"], model_id=codec.model_id,
                   dd=cfg["dd"], eeg_level=cfg["eeg_level"], lossless=cfg["lossless"], audit_every=cfg["audit_every"],
                   bound=cfg["bound"])
    frames, levels, codes = simulated_device(codec, cfg, ecg_raw, eeg_raw)
    agree = {}
    for m, raw in (("ecg", ecg_raw), ("eeg", eeg_raw)):
        c, idx = python_device(codec.edge, m, raw)
        st = 2 if (m == "ecg" and cfg["dd"] is not None) else codec.stages_for(cfg["eeg_level"] if m == "eeg" else cfg["level"])
        agree[m] = {"scale_codes": float((r[m][0] == c).mean()), "indices": float((r[m][1][:, :st] == idx[:, :st]).mean())}
    agree["frames_byte_identical"] = float(np.mean([a == b for a, b in zip(r["frames"], frames)]))
    if cfg["dd"] is not None:
        agree["ecg_levels"] = float((r["levels"] == levels).mean())
        agree["predicted_error_codes"] = float((r["pred_codes"] == codes).mean())
    instr = r["instructions"]
    pair = instr.sum(1)

    def stats(v: np.ndarray) -> dict:
        return {"mean": float(v.mean()), "min": int(v.min()), "max": int(v.max())}

    steps = {name: stats(instr[:, i]) for i, name in enumerate(STEPS)
             if cfg["dd"] is not None or name not in ("ecg_task_features", "ecg_predict_and_choose")}
    return {
        "target": "QEMU mps2-an500 (Cortex-M7), -O2",
        "device": {**cfg, "dd": {None: "none (fixed level, no predicted error)", -1: "picks the ECG level per window"}
                   .get(cfg["dd"], f"sends level {cfg['dd']} with its predicted task error")},
        "window_pairs": len(ecg_raw),
        "agreement_with_the_simulated_device": agree,
        "ecg_levels_sent": {str(L): int((r["levels"] == L).sum()) for L in range(6)} if cfg["dd"] is not None else None,
        "instructions_per_window": steps,
        "instructions_per_window_pair": stats(pair),
        "frame_bytes": stats(np.array([len(f) for f in r["frames"]])),
        "ms_per_pair_at_480mhz_one_instruction_per_cycle": float(pair.mean()) / M7_HZ * 1e3,
        "duty_cycle_of_a_2s_window_at_480mhz": float(pair.mean()) / M7_HZ / 2.0,
        "code_bytes": built["text_bytes"],
        # the bench's .bss less the buffer it reads the blob into (a device keeps the blob in flash)
        "static_ram_bytes_without_the_blob": built["bss_bytes"] - r["blob_buffer"],
        "parameter_blob_bytes": len(data),
        "ram_bytes_beside_the_stack": r["ram"],
        "note": "instructions, not cycles: QEMU does not model the M7's pipeline, caches or wait states",
    }


def bench(settings, pairs: int = 40, model_id: int | None = None) -> dict:
    """The device the simulator runs with ``settings`` (`configured_device`; the defaults: the
    deployed Dynamic-Deep codec at level 1 with its predicted error) on the emulated M7."""
    from wardmodels import runtime

    mid = model_id if model_id is not None else settings.codec_model
    codec = runtime.load_deployed(mid)
    ecg, eeg, source = real_streams(settings.data_dir, pairs)
    return {"model_id": mid, "windows": source, **on_m7(codec, ecg, eeg, configured_device(settings, codec))}
