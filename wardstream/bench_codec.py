"""`wardstream bench codec`: cloud decode throughput and edge encode cost of the deployed codec.

Decode = scale lookup + codebook lookup + cross-modal attention + both decoders, for ECG+EEG
window pairs, batched as the worker batches them; ``torch`` threads as configured (default 2);
per level, and for a Dynamic-Deep codec also at mixed levels in one batch (`decode_windows`).
Encode = the integer edge encoder as specified in `wardmodels.int8`, run here in numpy — a
host-side cost, not a Cortex-M7 timing; the multiply-accumulate count is what firmware pays; and
(``encode_m7``) the same encoder in C on an emulated Cortex-M7, its instructions counted
(`wardstream.bench_firmware`; skipped with a reason without the ARM toolchain and QEMU).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from wardmodels.codec import MODALITIES, count_params


def _macs(model) -> int:
    """Multiply-accumulates of one modality's encoder per window (convolutions only)."""
    total, length = 0, 256
    for st in model.enc["ecg"].stages:
        down = st["down"].conv
        length = (length + 2 * (down.kernel_size[0] // 2) - down.kernel_size[0]) // 2 + 1
        total += down.weight.numel() * length
        total += 2 * st["res"].c1.conv.weight.numel() * length
    total += model.enc["ecg"].proj.weight.numel() * length
    return total


def _encode_m7(codec, pairs: int = 8) -> dict:
    """The device chain in C on an emulated Cortex-M7 (`wardstream bench firmware` streams real
    recordings; here white noise, ECG-sized in mV and EEG-sized in µV)."""
    from wardmodels.firmware import ToolchainMissing
    from wardstream.bench_firmware import on_m7

    rng = np.random.default_rng(0)
    try:
        return on_m7(codec, rng.standard_normal((pairs, 256)), 20 * rng.standard_normal((pairs, 256)))
    except ToolchainMissing as exc:
        return {"skipped": str(exc)}


def bench_raw_lossless(seconds: float = 5.0, windows: int = 32) -> dict:
    """The raw level as devices send it (`stream.lossless`): encode and decode time per window
    and the mean section size, on simulated beds' ECG and EEG windows as the device quantises them."""
    from device_sim.sources import SyntheticBed
    from stream import lossless
    from stream.wire import Modality, raw_section_bytes
    from wardmodels.wire_codec import raw_channel

    src = SyntheticBed(1, seed=0)
    data = []
    for _ in range(windows):
        ecg, eeg = src.next_window()
        data += [raw_channel(Modality.ECG, ecg).data, raw_channel(Modality.EEG, eeg).data]
    coded = [lossless.encode(d) for d in data]
    out = {"mean_section_bytes": {m: round(float(np.mean([raw_section_bytes(d, True) for d in data[i::2]])), 1)
                                  for i, m in enumerate(("ecg", "eeg"))},
           "plain_section_bytes": raw_section_bytes(data[0], False)}
    for name, fn in (("encode", lambda: [lossless.encode(d) for d in data]),
                     ("decode", lambda: [lossless.decode(c, len(d)) for c, d in zip(coded, data)])):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds or n == 0:
            fn()
            n += len(data)
        out[f"{name}_ms_per_window"] = round(1000 * (time.perf_counter() - t0) / n, 4)
    out["note"] = "one modality's 2-s window, numpy on this host, synthetic beds"
    return out


def bench(model_id: int | None = None, threads: int = 2, seconds: float = 5.0, batches=(1, 64, 256)) -> dict:
    from wardmodels import runtime

    torch.set_num_threads(threads)
    codec = runtime.load_deployed(model_id if model_id is not None else runtime.deployed_ids()[0])
    rng = np.random.default_rng(0)
    out = {"codec": codec.name, "threads": threads, "decode": {}}
    for level in codec.levels:
        n, k = codec.n_indices(level), codec.level_codebook_size(level)  # Dynamic-Deep levels too
        for b in batches:
            idx = {m: rng.integers(0, k, (b, n)).astype(np.uint16) for m in MODALITIES}
            codes = {m: rng.integers(60, 200, b).astype(np.uint8) for m in MODALITIES}
            codec.decode(idx, codes)  # warm up
            t0, pairs = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                codec.decode(idx, codes)
                pairs += b
            rate = pairs / (time.perf_counter() - t0)
            out["decode"][f"level{level}_batch{b}"] = round(rate, 1)
    out["decode_pairs_per_s"] = max(v for kk, v in out["decode"].items() if kk.startswith("level1_"))
    if len(codec.levels) > codec.stages:  # a Dynamic-Deep codec: the worker's batches mix levels
        eeg_level = 2 if 2 in codec.levels else codec.levels[0]
        for b in [b for b in batches if b > 1]:
            lv = rng.choice(codec.levels, b)  # ECG: every VQ level in equal shares; EEG at one level
            idx = {"ecg": [rng.integers(0, codec.level_codebook_size(L), codec.n_indices(L)).astype(np.uint16)
                           for L in lv],
                   "eeg": list(rng.integers(0, codec.codebook_size, (b, codec.n_indices(eeg_level))).astype(np.uint16))}
            codes = {m: list(rng.integers(60, 200, b).astype(np.uint8)) for m in MODALITIES}
            codec.decode_windows(idx, codes)
            t0, pairs = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                codec.decode_windows(idx, codes)
                pairs += b
            out["decode"][f"mixed_batch{b}"] = round(pairs / (time.perf_counter() - t0), 1)
        out["decode_mixed_note"] = (f"decode_windows, ECG levels {codec.levels} in equal shares per batch, "
                                    f"EEG at level {eeg_level}, as a Dynamic-Deep ward's worker decodes")
    x = {m: rng.standard_normal((64, 256)).astype(np.float32) for m in MODALITIES}
    if codec.edge is not None:
        for m in MODALITIES:
            codec.edge.encode(m, x[m][:1])
        t0 = time.perf_counter()
        reps = 0
        while time.perf_counter() - t0 < seconds:
            for m in MODALITIES:
                codec.edge.encode(m, x[m][:1])
            reps += 1
        out["encode_ms"] = round(1000 * (time.perf_counter() - t0) / reps, 3)
        out["encode_ms_note"] = "one ECG+EEG window pair, integer encoder in numpy on this host"
        out["encode_m7"] = _encode_m7(codec)
        out["encoder_int8_bytes"] = codec.edge.nbytes()
        out["entropy_tables_bytes"] = codec.edge.prior_nbytes()
    out["raw_lossless"] = bench_raw_lossless(seconds)
    out["encoder_macs_per_pair"] = 2 * _macs(codec.model)
    m = codec.model
    out["params"] = {
        "encoders": sum(count_params(m.enc[x]) for x in MODALITIES),
        "codebooks": sum(vq.embed.numel() for x in MODALITIES for vq in m.vq[x].stages),
        "attention": count_params(m.attn) if m.attn is not None else 0,
        "decoders": sum(count_params(d) for d in {id(m.dec[x]): m.dec[x] for x in MODALITIES}.values()),
    }
    out["cloud_fp32_bytes"] = 4 * (out["params"]["attention"] + out["params"]["decoders"]
                                   + out["params"]["codebooks"])
    return out
