"""Regenerate the golden frames (run only on a deliberate wire-format change):
``python tests/golden/make_golden.py``. The tests check that today's encoder reproduces them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from stream import vqcode, wire
from stream.wire import RAW_LEVEL, REGISTRY, Channel, CodecSpec, Frame, LevelSpec, Modality, encode_frame

HERE = Path(__file__).parent


def F32(x: float) -> float:
    """Side information travels as float32 at the raw level: use representable values."""
    return float(np.float32(x))
TEST_KEY = b"golden-test-key-not-a-secret"


def _section_model(stages: list[tuple[int, int]], classes: int = 2) -> vqcode.SectionModel:
    """Synthetic static u8 tables (skewed, deterministic) for (positions, K) stages: context
    tables with ``classes`` classes, or a single row with 0."""
    scale = vqcode.u8_from_counts((1 + np.arange(256)) % 17 + (np.arange(256) == 120) * 500)[0]
    out = []
    for pos, k in stages:
        rows = max(1, classes + (classes > 0))
        counts = np.stack([(k - np.arange(k)) ** (2 + r) for r in range(rows)]).astype(float)
        ctx = (np.arange(k) % classes).astype(np.uint8) if classes else np.zeros(0, np.uint8)
        out.append((pos, ctx, vqcode.u8_from_counts(counts)))
    return vqcode.SectionModel.from_freqs(scale, out)


# model 8: two levels with one-byte scale codes and coding tables (flag bit 6): level 1 two
# stages of 8 positions (K = 64), level 2 one stage of 4 (K = 32)
CODED_LEVELS = {0: RAW_LEVEL, 1: LevelSpec(1, 16, 64, side="scale8"), 2: LevelSpec(2, 4, 32, side="scale8")}
CODED_TABLES = {(int(m), 1): _section_model([(8, 64), (8, 64)]) for m in Modality} | {
    (int(m), 2): _section_model([(4, 32)], classes=0) for m in Modality}
TEST_REGISTRY = {**REGISTRY, 7: CodecSpec(7, "golden-vq", {0: RAW_LEVEL, 1: LevelSpec(1, 32, 1024),
                                                         2: LevelSpec(2, 8, 256)}),
                 8: CodecSpec(8, "golden-coded", CODED_LEVELS, CODED_TABLES)}


def frames() -> dict[str, tuple[Frame, bytes | None]]:
    t = np.arange(256)
    ecg = (1000 * np.sin(2 * np.pi * t / 128)).astype(np.int16)
    eeg = (200 * np.cos(2 * np.pi * 10 * t / 128)).astype(np.int16)
    raw = Frame(42, 7, 1_700_000_000_000_000, 128, 256, 0,
                (Channel(Modality.ECG, 0, F32(0.001), 0.0, ecg), Channel(Modality.EEG, 0, F32(0.1), 0.0, eeg)))
    vq = Frame(3, 123456, 1_700_000_002_000_000, 128, 256, 7,
               (Channel(Modality.ECG, 1, 0.5, -0.25, (np.arange(32) * 31 % 1024).astype(np.uint16)),
                Channel(Modality.EEG, 2, 12.0, 1.5, (np.arange(8) * 37 % 256).astype(np.uint16))))
    # an audited window: the device's predicted task error and the ECG its encoder saw (raw)
    audited = Frame(3, 123457, 1_700_000_004_000_000, 128, 256, 7, vq.channels, wire.pred_value(9),
                    Channel(Modality.ECG, 0, F32(0.001), 0.0, ecg))
    # the same at the raw level lossless-coded (`stream.lossless`), with a noisy ECG, and an
    # audited window whose reference is lossless-coded
    noisy = (ecg + np.random.default_rng(0).integers(-40, 41, 256)).astype(np.int16)
    raw_ll = Frame(42, 8, 1_700_000_002_000_000, 128, 256, 0,
                   (Channel(Modality.ECG, 0, F32(0.001), 0.0, noisy), Channel(Modality.EEG, 0, F32(0.1), 0.0, eeg)),
                   lossless=True)
    audited_ll = Frame(3, 123458, 1_700_000_006_000_000, 128, 256, 7, vq.channels, wire.pred_value(9),
                       Channel(Modality.ECG, 0, F32(0.001), 0.0, noisy), lossless=True)
    v1 = {"raw_ecg_eeg": (raw, None), "raw_signed": (raw, TEST_KEY), "vq_levels": (vq, None),
          "vq_audited": (audited, TEST_KEY), "raw_lossless": (raw_ll, None),
          "vq_audited_lossless": (audited_ll, TEST_KEY)}
    out = {name: (replace(f, version=1), key) for name, (f, key) in v1.items()}
    # the same windows in the compact wire format v2 (what devices send by default), and one
    # frame of another geometry (flag bit 4: fs and n_samp on the wire) with a single modality
    for name in ("raw_signed", "vq_levels", "vq_audited", "raw_lossless", "vq_audited_lossless"):
        f, key = v1[name]
        out[f"v2_{name}"] = (replace(f, version=2), key)
    odd = Frame(9, 1, 1_700_000_000_000_000, 250, 500, 7,
                (Channel(Modality.EEG, 2, 3.0, -1.0, (np.arange(8) * 11 % 256).astype(np.uint16)),), version=2)
    out["v2_geometry"] = (odd, None)
    # entropy-coded sections (flag bit 6): ECG level 1 with the prediction in its level byte and
    # EEG level 2; and an audited window (lossless reference, signed) with the ECG coded and the
    # EEG raw
    ecg_idx = np.array([0, 1, 0, 2, 5, 0, 1, 3, 0, 0, 7, 1, 0, 2, 63, 0], np.uint16)
    coded = Frame(5, 77, 1_700_000_010_000_000, 128, 256, 8,
                  (Channel(Modality.ECG, 1, 120.0, 0.0, ecg_idx),
                   Channel(Modality.EEG, 2, 97.0, 0.0, np.array([0, 3, 31, 1], np.uint16))),
                  wire.pred_value(7), version=2, coded=True)
    coded_audit = Frame(5, 78, 1_700_000_012_000_000, 128, 256, 8,
                        (Channel(Modality.ECG, 2, 255.0, 0.0, np.array([1, 0, 0, 2], np.uint16)),
                         Channel(Modality.EEG, 0, F32(0.1), 0.0, eeg)),
                        wire.pred_value(9), Channel(Modality.ECG, 0, F32(0.001), 0.0, noisy), lossless=True,
                        version=2, coded=True)
    out["v2_coded"] = (coded, None)
    out["v2_coded_audited"] = (coded_audit, TEST_KEY)
    # the same as devices send it since 2026-12-06: the reference with the id of the predictor that
    # made the prediction (flag bit 7), before the coded stream
    out["v2_coded_audited_predictor"] = (replace(coded_audit, predictor_id="7001013349ae"), TEST_KEY)
    # a level-picking device's raw ECG window right after a codec-level one (since 2026-12-06): the
    # raw section carries the device's front-end state before the window (``mods`` bit 4), the EEG
    # coded at level 2
    state = (F32(0.0123), F32(-0.5), F32(3.25e-3), F32(-1.0e-4))
    out["v2_raw_state"] = (Frame(5, 79, 1_700_000_014_000_000, 128, 256, 8,
                                 (Channel(Modality.ECG, 0, F32(0.001), 0.0, noisy, zi=state),
                                  Channel(Modality.EEG, 2, 97.0, 0.0, np.array([0, 3, 31, 1], np.uint16))),
                                 0.0, lossless=True, version=2, coded=True), TEST_KEY)
    return out


if __name__ == "__main__":
    for name, (frame, key) in frames().items():
        (HERE / f"{name}.bin").write_bytes(encode_frame(frame, key, registry=TEST_REGISTRY))
        print(name)
