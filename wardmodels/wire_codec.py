"""The deployed codec on the wire: codec specs for `stream.wire`, the edge's per-device encoder,
and the worker's batch decoder.

Wire meaning of a deployed codec's model id (see `wardmodels.runtime`): level 0 raw int16;
level ``L`` in 1..stages carries ``(stages - L + 1) * 32`` indices of ``ceil(log2 K)`` bits,
stage-major; a Dynamic-Deep model's levels 3..5 carry 16, 8 and 4 indices of their own
codebooks (``dd_levels`` in the manifest); every VQ level has a one-byte scale code as its only
side information (``side="scale8"``).

`DynamicEncoder` is a device that picks its level per window (`encode_dynamic`).
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
    for level, d in entry.get("dd_levels", {}).items():  # Dynamic-Deep levels (wardmodels.dynamic)
        levels[int(level)] = LevelSpec(int(level), d["indices"], d["codebook_size"], side="scale8")
    coding = {}
    if entry.get("wire_tables"):  # entropy-coded sections (wire flag bit 6)
        from wardmodels.wire_tables import load_models

        coding = load_models(runtime.WEIGHTS_DIR / entry["wire_tables"], entry)
    return CodecSpec(entry["model_id"], f"{entry['variant']}-{entry['codec']}", levels, coding)


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
        self.filters = device_filters()
        # a fidelity hold (the control topic's ``hold-`` key: an open alarm's, or a clinician's
        # request): the highest ECG level the device may send, 0 raw; None: no hold
        self.max_level: int | None = None
        self.last_level: int | None = None  # the ECG level of the last window sent

    def channels(self, ecg: np.ndarray, eeg: np.ndarray | None) -> tuple[Channel, ...]:
        return encode_many([self], [ecg], [eeg])[0]


RAW_GAINS = {"ecg": 0.001, "eeg": 0.1}  # level 0: 1 µV / 0.1 µV per LSB (as the raw-only devices)
# a device's input range (ECG mV, EEG µV): what its raw level can carry; its front end clips to it
INPUT_LIMITS = {m: 32767 * g for m, g in RAW_GAINS.items()}


def device_filters() -> dict:
    """A device's causal band-pass per modality, clipping its input to `INPUT_LIMITS`."""
    return {m: StreamFilter(limit=INPUT_LIMITS[m]) for m in MOD_NAME.values()}


def raw_channel(mod: Modality, x: np.ndarray, zi=None) -> Channel:
    """One modality at the raw level (int16 at the fixed gain of ``RAW_GAINS``); ``zi``: the
    device's front-end state before the window (`StreamFilter.zi`), to send with it (wire v2)."""
    from stream.wire import pack_state

    gain = RAW_GAINS[MOD_NAME[mod]]
    q = np.clip(np.rint(np.nan_to_num(np.asarray(x, np.float64)) / gain), -32768, 32767).astype(np.int16)
    return Channel(mod, 0, gain, 0.0, q, zi=None if zi is None else pack_state(zi))


class DynamicEncoder:
    """A device that picks its ECG level per window (Dynamic-Deep): the highest-gain level whose
    calibrated predicted task error is under the device's bound (`wardmodels.predictor`), raw
    when none is; EEG at a fixed level (there is no EEG task model to bound). ``bound`` and
    ``slack_offset`` (the cloud's per-bed correction from its audits, added to the calibrated
    slack) can be changed at any time (the control topic); they apply from the next window."""

    def __init__(self, model_id: int, bound: float, eeg_level: int = 2, encoder: str = "int8",
                 fixed_level: int | None = None, predictor: str = "default"):
        from wardmodels.dd_edge import FEATURES, N_LEVELS, DecodeCheck, TaskStream, reads_decode, reads_rhythm, reads_task
        from wardmodels.edge_rhythm import RhythmCheck

        self.codec = runtime.load_deployed(model_id)
        if self.codec.predictor is None or self.codec.chains is None:
            raise ValueError(f"codec model {model_id} has no Dynamic-Deep predictor")
        # "default"; "decode": the predictor that also reads the device's own decode of every level;
        # "rhythm": and the device's small rhythm model on every level's last 10 s
        self.predictor = self.codec.predictor_of(predictor)
        self.predictor_id = self.predictor.digest  # sent with the audit references (wire flag bit 7)
        if reads_rhythm(self.predictor.n_in) and self.codec.edge_rhythm is None:
            raise ValueError(f"codec model {model_id} has a rhythm predictor but no edge rhythm model (edge_rhythm)")
        if eeg_level:
            self.codec.stages_for(eeg_level)
        self.model_id, self.bound, self.eeg_level = model_id, float(bound), eeg_level
        self.slack_offset = 0.0
        # a fidelity hold (the control topic's ``hold-`` key, set by the worker while an alarm is
        # open): the highest ECG level the device may send; None: no hold
        self.max_level: int | None = None
        # "int8": the integer specification the firmware implements; "fp32": the float network on
        # the same grid (7x faster here; level choices agree on 99.5 % of windows, record 100)
        self.encoder = encoder
        # fixed_level: send that level always, but still predict its task error (the frame's
        # predicted-error field, which the cloud's audit compares with what it observes)
        if fixed_level is not None and fixed_level not in range(0, N_LEVELS + 1):
            raise ValueError(f"level {fixed_level} is not one of the Dynamic-Deep levels 0..{N_LEVELS}")
        self.fixed_level = fixed_level
        self.name = (f"{self.codec.name} level {fixed_level} (error predicted)" if fixed_level is not None
                     else f"{self.codec.name} dynamic (bound {bound})")
        self.filters = device_filters()
        self.history = np.zeros((0, FEATURES), np.float32)
        # the device's own QRS detector on its filtered ECG, when the predictor reads it
        n_in = self.predictor.n_in
        self.task = TaskStream() if reads_task(n_in) else None
        # the device's own decode of every level and a QRS detector on each, when the predictor reads it
        self.check = DecodeCheck() if reads_decode(n_in) else None
        # ring buffers of the last 10 s of the original and every level, when it runs the small rhythm model
        self.rhythm = RhythmCheck() if reads_rhythm(n_in) else None
        self.last_level: int | None = None
        self.last_pred: float | None = None  # predicted task error of the level last sent
        self.last_filtered: np.ndarray | None = None  # the last ECG window as the encoder saw it

    def channels(self, ecg: np.ndarray, eeg: np.ndarray | None) -> tuple[Channel, ...]:
        return encode_many([self], [ecg], [eeg])[0]


def _encode_dynamic(encoders: list[DynamicEncoder], ecgs: list, eegs: list) -> list[list[Channel]]:
    from wardmodels.dd_edge import HISTORY, N_LEVELS, edge_features, reads_decode, reads_rhythm, with_history
    from wardmodels.frontend import normalise
    from wardmodels.predictor import level_reconstructions

    out: list[list[Channel]] = [[] for _ in encoders]
    by_codec: dict[tuple, list[int]] = {}
    filtered, zi_before = {}, {}
    for i, (enc, x) in enumerate(zip(encoders, ecgs)):
        if x is None:
            continue
        zi_before[i] = enc.filters["ecg"].zi  # sosfilt returns a new state: this one stays as it is
        filtered[i] = enc.filters["ecg"](np.nan_to_num(np.asarray(x, np.float64)))
        by_codec.setdefault((id(enc.codec), enc.encoder, id(enc.predictor)), []).append(i)
    for members in by_codec.values():
        codec, pr = encoders[members[0]].codec, encoders[members[0]].predictor
        xn, codes = normalise(np.stack([filtered[i] for i in members]), "ecg")
        idx, f = codec.analyse("ecg", xn, codes, encoders[members[0]].encoder)
        hist, task, dec, rhy = [], [], [], None
        for j, i in enumerate(members):
            enc = encoders[i]
            hist.append(with_history(f[j:j + 1], enc.history)[0])
            enc.history = np.concatenate([enc.history, f[j:j + 1]])[-HISTORY:]
            if enc.task is not None:
                task.append(enc.task.step(filtered[i]))
        n_in = pr.n_in
        if reads_decode(n_in):  # every level decoded as the task error defines it (the ECG alone)
            recon = level_reconstructions(codec, idx, codes).reshape(N_LEVELS, len(members), -1)
            dec = [encoders[i].check.step(encoders[i].task.last_beats, recon[:, j]) for j, i in enumerate(members)]
            if reads_rhythm(n_in):  # the small rhythm model on the six crops of every device, one batch
                crops = np.stack([encoders[i].rhythm.crops(filtered[i], recon[:, j]) for j, i in enumerate(members)])
                rhy = codec.edge_rhythm.features(crops)
        feats = edge_features(np.stack(hist), np.stack(task) if task else None, n_in, np.stack(dec) if dec else None,
                              rhy)
        pred = pr.predict(feats)
        bounds = np.array([encoders[i].bound for i in members])
        lam = np.array([pr.slack(encoders[i].bound) + encoders[i].slack_offset for i in members])
        caps = np.array([N_LEVELS if encoders[i].max_level is None else encoders[i].max_level for i in members])
        levels = pr.choose(pred, bounds, lam, max_level=caps)
        for j, i in enumerate(members):
            fixed = encoders[i].fixed_level
            L = int(levels[j]) if fixed is None else min(fixed, int(caps[j]))
            # a raw window after a codec-level one carries the front end's state (wire v2): the
            # cloud has not seen the raw input since and could not continue the filter itself
            after_codec = encoders[i].last_level not in (None, 0) and zi_before[i] is not None
            encoders[i].last_level = L
            encoders[i].last_pred = 0.0 if L == 0 else max(0.0, float(np.expm1(pred[j, L - 1])))
            encoders[i].last_filtered = filtered[i]
            if L == 0:
                out[i].append(raw_channel(Modality.ECG, ecgs[i],
                                          zi_before[i] if after_codec else None))
            else:
                out[i].append(Channel(Modality.ECG, L, float(codes[j]), 0.0, idx[L][j]))
    groups: dict[tuple, list[int]] = {}
    eeg_f = {}
    for i, (enc, x) in enumerate(zip(encoders, eegs)):
        if x is None:
            continue
        if enc.eeg_level == 0:
            out[i].append(raw_channel(Modality.EEG, x))
            continue
        eeg_f[i] = enc.filters["eeg"](np.nan_to_num(np.asarray(x, np.float64)))
        groups.setdefault((id(enc.codec), enc.eeg_level, enc.encoder), []).append(i)
    for members in groups.values():  # one encoder call per group, as for fixed-level devices
        enc = encoders[members[0]]
        codes, idx = enc.codec.encode("eeg", np.stack([eeg_f[i] for i in members]), enc.eeg_level, enc.encoder)
        for j, i in enumerate(members):
            out[i].append(Channel(Modality.EEG, enc.eeg_level, float(codes[j]), 0.0, idx[j]))
    return out


def encode_many(encoders: list, ecgs: list, eegs: list) -> list[tuple[Channel, ...]]:
    """One window per device, each through its own filters, the integer encoder run once per
    (codec, level, modality) group — what a simulator of many devices needs to keep up.
    `DynamicEncoder` devices are analysed together and each picks its own level."""
    out: list[list[Channel]] = [[] for _ in encoders]
    dyn = [i for i, e in enumerate(encoders) if isinstance(e, DynamicEncoder)]
    if dyn:
        res = _encode_dynamic([encoders[i] for i in dyn], [ecgs[i] for i in dyn], [eegs[i] for i in dyn])
        for i, r in zip(dyn, res):
            out[i] = r
    fixed = [i for i, e in enumerate(encoders) if not isinstance(e, DynamicEncoder)]
    if not fixed:
        return [tuple(o) for o in out]
    if dyn:
        sub = encode_many([encoders[i] for i in fixed], [ecgs[i] for i in fixed], [eegs[i] for i in fixed])
        for i, r in zip(fixed, sub):
            out[i] = list(r)
        return [tuple(o) for o in out]
    for mod, xs in ((Modality.ECG, ecgs), (Modality.EEG, eegs)):
        name = MOD_NAME[mod]
        groups: dict[tuple, list[int]] = {}
        filtered = {}
        for i, (enc, x) in enumerate(zip(encoders, xs)):
            if x is None:
                continue
            level = enc.level
            if mod == Modality.ECG and enc.max_level is not None:
                level = min(level, enc.max_level)  # a fidelity hold caps the ECG level
            zi = enc.filters[name].zi  # before the window (sosfilt returns a new state)
            filtered[i] = enc.filters[name](np.nan_to_num(np.asarray(x, np.float64)))
            if mod == Modality.ECG:
                after_codec = enc.last_level not in (None, 0) and zi is not None
                enc.last_level = level
                if level == 0:  # held to raw: as a Dynamic-Deep device sends it (`_encode_dynamic`)
                    out[i].append(raw_channel(mod, x, zi if after_codec else None))
                    continue
            groups.setdefault((id(enc.codec), level, enc.encoder), []).append(i)
        for (_, level, _), members in groups.items():
            enc = encoders[members[0]]
            codes, idx = enc.codec.encode(name, np.stack([filtered[i] for i in members]), level,
                                          enc.encoder)
            for j, i in enumerate(members):
                out[i].append(Channel(mod, level, float(codes[j]), 0.0, idx[j]))
    return [tuple(o) for o in out]


class NoDecoder(FrameError):
    reason = "no_decoder"


def decode_frames(frames: list[Frame]) -> list[dict[Modality, np.ndarray] | FrameError]:
    """Reconstruct the codec channels of many frames in as few model calls as possible.

    Frames are grouped by model id; each group is one decoder pass whatever levels its frames
    carry (`DeployedCodec.decode_windows`). Raw channels are passed through. A frame whose model
    has no weights here yields a `NoDecoder` in its place.
    """
    out: list[dict | FrameError | None] = [None] * len(frames)
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        out[i] = {ch.modality: ch.physical() for ch in f.channels if ch.level == 0}
        if any(ch.level != 0 for ch in f.channels):
            groups.setdefault(f.model_id, []).append(i)
    for model_id, members in groups.items():
        try:
            codec = runtime.load_deployed(model_id)
        except runtime.WeightsError as exc:
            for i in members:
                out[i] = NoDecoder(f"model {model_id}: {exc}")
            continue
        idx: dict[str, list] = {name: [None] * len(members) for name in MOD_NAME.values()}
        codes: dict[str, list] = {name: [None] * len(members) for name in MOD_NAME.values()}
        for j, i in enumerate(members):
            for ch in frames[i].channels:
                if ch.level != 0:
                    idx[MOD_NAME[ch.modality]][j] = ch.data
                    codes[MOD_NAME[ch.modality]][j] = int(ch.gain)
        rec = codec.decode_windows(idx, codes)
        for j, i in enumerate(members):
            for mod, name in MOD_NAME.items():
                if rec[name][j] is not None:
                    out[i][mod] = rec[name][j]
    return out
