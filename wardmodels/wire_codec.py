"""The deployed codec on the wire: codec specs for `stream.wire`, the edge's per-device encoder,
and the worker's batch decoder.

Wire meaning of a deployed codec's model id (see `wardmodels.runtime`): level 0 raw int16;
level ``L >= 1`` carries ``(stages - L + 1) * 32`` indices of ``ceil(log2 K)`` bits, stage-major,
with a one-byte scale code as its only side information (``side="scale8"``).
"""

from __future__ import annotations

import numpy as np

from stream.wire import RAW_LEVEL, Channel, CodecSpec, Frame, FrameError, LevelSpec, Modality, register_codec
from wardmodels import runtime
from wardmodels.frontend import StreamFilter

MOD_NAME = {Modality.ECG: "ecg", Modality.EEG: "eeg"}


def spec_for(entry: dict) -> CodecSpec:
    stages, pos, k = entry["stages"], entry["positions"], entry["codebook_size"]
    levels = {0: RAW_LEVEL}
    for level in range(1, stages + 1):
        levels[level] = LevelSpec(level, (stages - level + 1) * pos, k, side="scale8")
    return CodecSpec(entry["model_id"], f"{entry['variant']}-{entry['codec']}", levels)


def register_deployed() -> list[int]:
    """Make every deployed codec's model id known to the wire format; returns the ids."""
    ids = []
    for entry in runtime.manifest():
        register_codec(spec_for(entry))
        ids.append(entry["model_id"])
    return ids


class CodecEncoder:
    """One device's edge encoder: its own causal filters, the shared integer encoder."""

    def __init__(self, model_id: int, level: int, encoder: str = "int8"):
        self.codec = runtime.load_deployed(model_id)
        self.codec.stages_for(level)  # validates
        self.model_id, self.level, self.encoder = model_id, level, encoder
        self.name = f"{self.codec.name} level {level}"
        self.filters = {m: StreamFilter() for m in MOD_NAME.values()}

    def channels(self, ecg: np.ndarray, eeg: np.ndarray | None) -> tuple[Channel, ...]:
        return encode_many([self], [ecg], [eeg])[0]


def encode_many(encoders: list[CodecEncoder], ecgs: list, eegs: list) -> list[tuple[Channel, ...]]:
    """One window per device, each through its own filters, the integer encoder run once per
    (codec, level, modality) group — what a simulator of many devices needs to keep up."""
    out: list[list[Channel]] = [[] for _ in encoders]
    for mod, xs in ((Modality.ECG, ecgs), (Modality.EEG, eegs)):
        name = MOD_NAME[mod]
        groups: dict[tuple, list[int]] = {}
        filtered = {}
        for i, (enc, x) in enumerate(zip(encoders, xs)):
            if x is None:
                continue
            filtered[i] = enc.filters[name](np.nan_to_num(np.asarray(x, np.float64)))
            groups.setdefault((id(enc.codec), enc.level, enc.encoder), []).append(i)
        for members in groups.values():
            enc = encoders[members[0]]
            codes, idx = enc.codec.encode(name, np.stack([filtered[i] for i in members]), enc.level,
                                          enc.encoder)
            for j, i in enumerate(members):
                out[i].append(Channel(mod, enc.level, float(codes[j]), 0.0, idx[j]))
    return [tuple(o) for o in out]


class NoDecoder(FrameError):
    reason = "no_decoder"


def decode_frames(frames: list[Frame]) -> list[dict[Modality, np.ndarray] | FrameError]:
    """Reconstruct the codec channels of many frames in as few model calls as possible.

    Frames are grouped by (model id, level per modality, which modalities); each group is one
    batched decode. Raw channels are passed through. A frame whose model has no weights here
    yields a `NoDecoder` in its place.
    """
    out: list[dict | FrameError | None] = [None] * len(frames)
    groups: dict[tuple, list[int]] = {}
    for i, f in enumerate(frames):
        sig = {ch.modality: ch.physical() for ch in f.channels if ch.level == 0}
        coded = tuple(sorted((int(ch.modality), ch.level) for ch in f.channels if ch.level != 0))
        out[i] = sig
        if coded:
            groups.setdefault((f.model_id, coded), []).append(i)
    for (model_id, coded), members in groups.items():
        try:
            codec = runtime.load_deployed(model_id)
        except runtime.WeightsError as exc:
            for i in members:
                out[i] = NoDecoder(f"model {model_id}: {exc}")
            continue
        idx, codes = {"ecg": None, "eeg": None}, {"ecg": None, "eeg": None}
        present = {Modality(m) for m, _ in coded}
        for mod in present:
            name = MOD_NAME[mod]
            chans = [frames[i].channel(mod) for i in members]
            idx[name] = np.stack([c.data for c in chans])
            codes[name] = np.array([int(c.gain) for c in chans], np.uint8)
        rec = codec.decode(idx, codes)
        for j, i in enumerate(members):
            for mod in present:
                out[i][mod] = rec[MOD_NAME[mod]][j]
    return out
