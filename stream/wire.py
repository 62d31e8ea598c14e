"""Wire formats v1 and v2: one binary frame per bed per 2-s window.

Devices send v2 (the compact form, `WIRE_VERSION`) unless told otherwise
(``WARDSTREAM_WIRE_VERSION=1``); the cloud reads both, told apart by the first byte.

Layout of v1 (all integers big-endian)::

    header   magic  "WDST"                      4 B
             version u8 (=1)                    1 B
             flags   u8 (bit 0: HMAC tag, bit 1: predicted error,
                         bit 2: audit reference, bit 3: raw sections
                         lossless-coded)            1 B
             bed_id  u32                        4 B
             seq     u32 (per device, +1/window) 4 B
             t_start i64 (µs since epoch, device clock, first sample) 8 B
             fs      u16 (Hz)                   2 B
             n_samp  u16 (samples per window)   2 B
             model   u16 (codec model id)       2 B
             n_mod   u8                         1 B      -> 29 B
    n_mod x  modality u8 (0 ECG, 1 EEG)         1 B
             level   u8 (0 = raw int16)         1 B
             count   u16 (samples or indices)   2 B
             side    raw: gain, offset as 2 x f32; VQ levels: 2 x f16 (gain, offset)
                     or, for levels declared ``side="scale8"``, one u8 scale code
             payload raw: count x i16, or with flag bit 3 a u16 byte length and the
                     samples lossless-coded (`stream.lossless`: polynomial predictor,
                     Rice codes); VQ: count indices bit-packed MSB-first at
                     ceil(log2 K) bits, zero padded to a byte
    pred     u8, if flag bit 1: the device's predicted task error of the ECG at the level it
             sent, code c = round(32 * ln(1 + error)) (0..254; error = exp(c / 32) - 1)
    ref      if flag bit 2 (audit windows): the ECG window as the encoder saw it (after the
             device's front end) as one raw section: modality 0, level 0, count, f32 gain and
             offset, count x i16 (lossless-coded with flag bit 3, as above) — what the
             cloud compares its reconstruction with
    crc32    u32 over every byte before it      4 B
    hmac     16 B truncated HMAC-SHA256 over every byte before it (if flag)

Layout of v2, the compact form (big-endian; every field the cloud can infer is left out:
the 4-byte magic, the per-section modality and count, a 16-bit model id, microseconds)::

    header   tag     u8 (=0xD2: "format 2")     1 B
             flags   u8 (bits 0-3 as in v1; bit 4: explicit geometry, fs u16 and n_samp u16
                         follow the modality mask; without it fs = 128 Hz, n_samp = 256;
                         bit 5: the predicted error travels in the ECG level byte;
                         bit 6: sections entropy-coded, below;
                         bit 7: the predictor id, below)  1 B
             bed_id  u32                        4 B
             seq     u32                        4 B
             t_start u48 (ms since epoch, device clock, first sample; a device rounds its
                         clock to the millisecond)  6 B
             model   u8 (codec model id)        1 B
             mods    u8 bit mask of the modalities present (bit 0 ECG, bit 1 EEG), at least
                         one; their sections follow in ascending modality order; bit 4 + m:
                         modality m's raw section carries its front end's state, below  1 B  -> 18 B
             [fs u16, n_samp u16 if flag bit 4]
    per modality present:
             level   u8; with flag bit 5, the ECG's byte is level (bits 0-2) | pred code << 3
                         (bits 3-7: the code of `pred` below, 0..31)   1 B
             side    as in v1
             state   only at the raw level, with the modality's bit 4 + m in ``mods``: the state of
                     the device's causal band-pass (`wardmodels.frontend.StreamFilter`, two
                     second-order sections, direct form II transposed) before the window's first
                     sample, 4 x f32 (z0, z1 of section 1, then of section 2)  16 B. A device
                     that picks its level sends it on a raw window that follows a codec-level
                     one: the cloud has not seen the raw input since, and filtering this window
                     from rest would be off by as much as a codec level (6-12 % relative RMS,
                     median); with it the cloud's band-passed window is the device's, up to the
                     raw level's quantisation
             payload as in v1; the count is implied: n_samp samples at the raw level, the
                     level's own number of indices otherwise
    pred     as in v1 (flag bit 1); a device sends it in the ECG level byte instead (flag bit 5,
             never both) whenever it fits there — ECG level < 8 and code < 32, i.e. a predicted
             error up to exp(31/32) - 1 = 1.63; a device that picks its level sends a VQ level
             only when its prediction is under its bound (the deployed ones are 0.51 and 0.72),
             so its frames carry their prediction at no cost in bytes
    ref      if flag bit 2: side (2 x f32) and payload of a raw ECG section (no level byte)
    pred_id  if flag bit 7 (only with a predicted error): 6 B, the first 12 hex digits of the
             sha256 of the device's error predictor file (its name, ``predictor-<hex>.npz``,
             `wardmodels.predictor.Predictor.digest`): which predictor made the prediction, so the
             cloud's audit scores the task error that predictor was trained on. Devices send it
             with every audit reference (6 bytes per audited window, nothing otherwise)
    coded    if flag bit 6 (set only when the codec model has coding tables for one of the frame's
             sections): each such section is its level byte alone in place, and its scale code
             and indices are coded here, in modality order, as one arithmetic-coded stream that
             runs to the CRC (`stream.vqcode`, the model's static tables; `stream.arith`); the
             frame's other sections keep their plain form
    crc32, hmac as in v1

A level-2 ECG+EEG frame of the deployed codec is 107 bytes in v1 and 90 in v2; an ECG
section at the Dynamic-Deep levels 1-5 is 69 / 37 / 19 / 12 / 9 bytes in v1 and
66 / 34 / 16 / 9 / 6 in v2 (and so are they with the device's prediction packed in).

Physical value of a raw sample = offset + gain * code. For VQ levels, gain and
offset are the de-normalisation (std, mean) the decoder applies; a ``scale8`` level carries
only the codec's one-byte scale code, exposed as ``Channel.gain`` (an integer 0..255) with
``offset`` 0 — the codec maps it to a scale (`wardmodels.frontend.scale_value`).

`encode_frame` and `decode_frame` are pure functions; every malformed input raises
a specific `FrameError` subclass whose ``reason`` is a short stable code used for
dead-letter accounting.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import math
import struct
import zlib
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Callable, Mapping

import numpy as np

from stream import lossless as lossless_code
from stream import vqcode

MAGIC = b"WDST"
VERSION = 1  # the version byte of a v1 frame (after its magic)
TAG_V2 = 0xD2  # the first byte of a v2 frame
VERSIONS = (1, 2)
WIRE_VERSION = 2  # what devices send unless configured otherwise (Settings.wire_version)
FLAG_HMAC = 0x01
FLAG_PRED = 0x02
FLAG_REF = 0x04
FLAG_LOSSLESS = 0x08
FLAG_GEOMETRY = 0x10  # v2 only: fs and n_samp follow the header (else 128 Hz, 256 samples)
FLAG_PRED_IN_LEVEL = 0x20  # v2 only: the predicted error is bits 3-7 of the ECG level byte
FLAG_CODED = 0x40  # v2 only: sections with coding tables travel as one entropy-coded stream
FLAG_PREDICTOR = 0x80  # v2 only: the predictor id follows the audit reference
KNOWN_FLAGS = FLAG_HMAC | FLAG_PRED | FLAG_REF | FLAG_LOSSLESS
KNOWN_FLAGS_V2 = KNOWN_FLAGS | FLAG_GEOMETRY | FLAG_PRED_IN_LEVEL | FLAG_CODED | FLAG_PREDICTOR
PREDICTOR_ID_BYTES = 6  # flag bit 7: the predictor file's 12-hex-digit hash
STATE_MASK_SHIFT = 4  # v2 ``mods`` bit 4 + m: modality m's raw section carries its front end's state
_STATE = struct.Struct(">4f")  # that state: two second-order sections' (z0, z1), as f32
STATE_BYTES = _STATE.size
PACKED_LEVEL_BITS = 3  # flag bit 5: the ECG level in the low 3 bits of its byte, the code above
PACKED_PRED_MAX = (1 << (8 - PACKED_LEVEL_BITS)) - 1  # the largest code that fits there (31)
DEFAULT_FS, DEFAULT_N_SAMPLES = 128, 256
PRED_STEPS = 32.0  # predicted-error code steps per unit of ln(1 + error)
AUDIT_WINDOWS = 5  # an audit burst: this many consecutive windows carry the reference (10 s)
HMAC_LEN = 16
CRC_LEN = 4
_HEADER = struct.Struct(">4sBBIIqHHHB")
_MOD_HEAD = struct.Struct(">BBH")
_SIDE_F32 = struct.Struct(">ff")
_SIDE_F16 = struct.Struct(">ee")
_SIDE_U8 = struct.Struct(">B")
_LEN16 = struct.Struct(">H")
SIDE_KINDS = ("f16x2", "scale8")
HEADER_SIZE = _HEADER.size  # v1
_HEADER_V2 = struct.Struct(">BBII6sBB")
_GEOMETRY = struct.Struct(">HH")
HEADER_SIZE_V2 = _HEADER_V2.size
MAX_T_MS_V2 = 2**48 - 1
MAX_SAMPLES = 8192


class Modality(IntEnum):
    ECG = 0
    EEG = 1


def _section_head_size(version: int) -> int:
    """v1: modality, level, count (4 B); v2: the level byte alone."""
    if version not in VERSIONS:
        raise ValueError(f"wire version {version} is not one of {VERSIONS}")
    return _MOD_HEAD.size if version == 1 else 1


def frame_overhead(version: int = WIRE_VERSION, fs: int = DEFAULT_FS, n_samples: int = DEFAULT_N_SAMPLES) -> int:
    """Bytes of a frame outside its sections, without HMAC: header and CRC."""
    if version not in VERSIONS:
        raise ValueError(f"wire version {version} is not one of {VERSIONS}")
    if version == 1:
        return HEADER_SIZE + CRC_LEN
    geometry = 0 if (fs, n_samples) == (DEFAULT_FS, DEFAULT_N_SAMPLES) else _GEOMETRY.size
    return HEADER_SIZE_V2 + geometry + CRC_LEN


# --------------------------------------------------------------------------- errors
class FrameError(ValueError):
    """A frame that cannot be accepted. ``reason`` is a stable dead-letter code."""

    reason = "malformed"


class TruncatedFrame(FrameError):
    reason = "truncated"


class BadMagic(FrameError):
    reason = "bad_magic"


class UnsupportedVersion(FrameError):
    reason = "bad_version"


class BadChecksum(FrameError):
    reason = "bad_crc"


class BadSignature(FrameError):
    reason = "bad_hmac"


class MissingSignature(FrameError):
    reason = "missing_hmac"


class UnknownModel(FrameError):
    reason = "unknown_model"


class UnknownLevel(FrameError):
    reason = "unknown_level"


class UnknownModality(FrameError):
    reason = "unknown_modality"


class IndexOutOfRange(FrameError):
    reason = "index_out_of_range"


class BadLength(FrameError):
    reason = "bad_length"


class BadCoding(FrameError):
    reason = "bad_coding"


# --------------------------------------------------------------------------- codecs
@dataclass(frozen=True)
class LevelSpec:
    """One compression level: raw int16 samples, or ``n_indices`` codes from a K-entry codebook."""

    level: int
    n_indices: int = 0  # 0 for the raw level
    codebook_size: int = 0
    side: str = "f16x2"  # VQ levels: "f16x2" (gain, offset) or "scale8" (one scale code)

    def __post_init__(self):
        if self.side not in SIDE_KINDS:
            raise ValueError(f"unknown side kind {self.side!r}; known: {SIDE_KINDS}")

    @property
    def raw(self) -> bool:
        return self.n_indices == 0

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size))) if not self.raw else 16

    def payload_bytes(self, n_samples: int) -> int:
        if self.raw:
            return 2 * n_samples
        return (self.n_indices * self.bits + 7) // 8

    def section_bytes(self, n_samples: int, version: int = WIRE_VERSION) -> int:
        """Bytes one modality takes in a frame of wire ``version`` at this level: its section
        header, side information and payload (the frame adds `frame_overhead` once)."""
        return _section_head_size(version) + self.side_struct().size + self.payload_bytes(n_samples)

    def side_struct(self) -> struct.Struct:
        if self.raw:
            return _SIDE_F32
        return _SIDE_U8 if self.side == "scale8" else _SIDE_F16

    def pack_side(self, gain: float, offset: float) -> bytes:
        if not self.raw and self.side == "scale8":
            code = int(gain)
            if code != gain or not 0 <= code <= 255 or offset != 0:
                raise BadLength(f"level {self.level} carries a scale code 0..255 and no offset, "
                                f"got gain={gain} offset={offset}")
            return _SIDE_U8.pack(code)
        return self.side_struct().pack(gain, offset)

    def unpack_side(self, buf: bytes, pos: int) -> tuple[float, float]:
        if not self.raw and self.side == "scale8":
            return float(_SIDE_U8.unpack_from(buf, pos)[0]), 0.0
        return self.side_struct().unpack_from(buf, pos)


RAW_LEVEL = LevelSpec(level=0)


@dataclass(frozen=True)
class CodecSpec:
    """What a codec model id means on the wire: its levels per modality (same for both)."""

    model_id: int
    name: str
    levels: Mapping[int, LevelSpec] = field(default_factory=lambda: {0: RAW_LEVEL})
    # (modality, level) -> how its section is entropy-coded (flag bit 6, `stream.vqcode`); a
    # codec without tables for a section cannot send it coded
    coding: Mapping[tuple[int, int], "vqcode.SectionModel"] = field(default_factory=dict)

    def level(self, level: int) -> LevelSpec:
        try:
            return self.levels[level]
        except KeyError:
            raise UnknownLevel(f"model {self.model_id} ({self.name}) has no level {level}; "
                               f"known: {sorted(self.levels)}") from None

    def section_model(self, modality: int, level: int) -> "vqcode.SectionModel":
        try:
            return self.coding[(int(modality), int(level))]
        except KeyError:
            raise BadCoding(f"model {self.model_id} ({self.name}) has no coding tables for "
                            f"{Modality(modality).name} level {level}") from None

    def codes(self, modality: int, level: int) -> bool:
        """Whether a section at this level can be sent entropy-coded."""
        return level != 0 and (int(modality), int(level)) in self.coding


RAW_MODEL_ID = 0
REGISTRY: dict[int, CodecSpec] = {RAW_MODEL_ID: CodecSpec(RAW_MODEL_ID, "raw-int16")}


def register_codec(spec: CodecSpec) -> None:
    """Make a codec model id known to encode/decode. Level 0 must be the raw level."""
    if spec.levels.get(0) != RAW_LEVEL:
        raise ValueError("every codec must keep level 0 as raw int16")
    for (mod, level), m in spec.coding.items():
        lv = spec.level(level)
        if lv.raw or lv.side != "scale8" or m.n_indices != lv.n_indices \
                or any(st.codebook_size != lv.codebook_size for st in m.stages):
            raise ValueError(f"model {spec.model_id}: the coding tables of modality {mod} level {level} do not "
                             "match the level (scale8 side, its indices, its codebook)")
    REGISTRY[spec.model_id] = spec


# --------------------------------------------------------------------------- frame
@dataclass(frozen=True)
class Channel:
    """One modality's payload in a frame.

    ``data`` is ``int16[n_samples]`` at the raw level, ``uint16[n_indices]`` otherwise.
    """

    modality: Modality
    level: int
    gain: float
    offset: float
    data: np.ndarray
    # bytes of this section on the wire (set by `decode_frame`; a lossless-coded raw section's
    # size depends on its samples); not part of equality
    # (an entropy-coded section's: its level byte and its share of the frame's coded stream, in
    # eighths of a byte)
    wire_bytes: float | None = field(default=None, compare=False)
    # v2, raw level only: the device's front-end filter state before the window's first sample
    # (4 floats, f32 on the wire; ``mods`` bit 4 + m), sent on a raw window after codec-level ones
    # so that the cloud filters it as the device did (`processors.bed.front_end`)
    zi: tuple[float, ...] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Channel):
            return NotImplemented
        return (self.modality == other.modality and self.level == other.level
                and self.gain == other.gain and self.offset == other.offset and self.zi == other.zi
                and self.data.dtype == other.data.dtype and np.array_equal(self.data, other.data))

    def physical(self) -> np.ndarray:
        """Raw level only: samples in physical units (float32)."""
        if self.level != 0:
            raise ValueError("physical() needs the raw level; VQ levels need the codec decoder")
        return (self.offset + self.gain * self.data.astype(np.float32)).astype(np.float32)


@dataclass(frozen=True)
class Frame:
    bed_id: int
    seq: int
    t_start_us: int
    fs: int
    n_samples: int
    model_id: int
    channels: tuple[Channel, ...]
    pred_error: float | None = None  # the device's predicted task error (quantised on the wire)
    reference: Channel | None = None  # audit windows: the ECG as the encoder saw it, raw
    lossless: bool = False  # raw sections (and the reference) lossless-coded on the wire
    # the wire format it is sent in (decode_frame: the one it came in); not part of equality
    version: int = field(default=WIRE_VERSION, compare=False)
    # v2: the sections its codec has coding tables for go entropy-coded (flag bit 6,
    # `stream.vqcode`); like ``version``, how it travels, not part of equality
    coded: bool = field(default=False, compare=False)
    # v2, with a predicted error: the id of the predictor that made it (12 hex digits, the hash in
    # its file name; flag bit 7) — devices send it with their audit references
    predictor_id: str | None = None

    def channel(self, modality: Modality) -> Channel | None:
        for ch in self.channels:
            if ch.modality == modality:
                return ch
        return None

    @property
    def window_end_us(self) -> int:
        return self.t_start_us + (self.n_samples * 1_000_000) // self.fs


def audit_period_windows(every_s: float, fs: int = DEFAULT_FS, n_samples: int = DEFAULT_N_SAMPLES) -> int:
    """``WARDSTREAM_AUDIT_EVERY_S`` in windows (0: no audits)."""
    return int(round(every_s * fs / n_samples)) if every_s > 0 else 0


def in_burst(seq: int, bed_id: int, every_windows: int) -> bool:
    """Whether window ``seq`` of a bed is in an audit burst, the bursts of a bed repeating every
    ``every_windows`` windows (0: never) and the beds spread over that period."""
    if every_windows <= 0:
        return False
    phase = (bed_id * 37) % every_windows
    return (seq + phase) % every_windows < AUDIT_WINDOWS


PRED_BYTES = 1  # flag bit 1: the predicted task error, one byte per frame that carries it


def _codes(errors):
    """Wire codes of predicted task errors (scalar or array; checked by `pred_code`)."""
    return np.minimum(254, np.round(PRED_STEPS * np.log1p(errors)))


def pred_packs(ecg_level, code, version: int = WIRE_VERSION):
    """Whether a frame sends its predicted-error ``code`` inside its ECG level byte (flag bit 5);
    elementwise on arrays."""
    lv = np.asarray(ecg_level)
    return (version == 2) & (lv >= 0) & (lv < (1 << PACKED_LEVEL_BITS)) & (np.asarray(code) <= PACKED_PRED_MAX)


def pred_extra_bytes(ecg_levels, pred_errors, version: int = WIRE_VERSION) -> np.ndarray:
    """Per frame, the bytes its predicted task error adds to it beyond its sections: 0 where it
    is packed into the ECG level byte (`pred_packs`), else `PRED_BYTES` — what `encode_frame`
    emits, vectorised for the offline accounting (`wardstream eval dynamic-deep`, `cost`)."""
    codes = _codes(np.asarray(pred_errors, np.float64))
    return np.where(pred_packs(ecg_levels, codes, version), 0, PRED_BYTES)


def pred_code(error: float) -> int:
    """Wire code of a predicted task error (see the module docstring)."""
    if not math.isfinite(error) or error < 0:
        raise BadLength(f"predicted error must be finite and >= 0, got {error}")
    return int(_codes(float(error)))


def pred_value(code: int) -> float:
    return math.expm1(code / PRED_STEPS)


def _raw_payload(data: np.ndarray, n_samples: int, lossless: bool) -> bytes:
    data = np.asarray(data)
    if data.shape != (n_samples,):
        raise BadLength(f"raw payload has {data.shape} samples, window is {n_samples}")
    if not lossless:
        return data.astype(">i2").tobytes()
    coded = lossless_code.encode(data)
    return _LEN16.pack(len(coded)) + coded


def _read_raw(buf: bytes, pos: int, end: int, n_samples: int, lossless: bool, what: str) -> tuple[np.ndarray, int]:
    """A raw payload at ``pos`` -> (int16 samples, position after it)."""
    if not lossless:
        if pos + 2 * n_samples > end:
            raise TruncatedFrame(f"{what} payload runs past the frame body")
        return np.frombuffer(buf, ">i2", count=n_samples, offset=pos).astype(np.int16), pos + 2 * n_samples
    if pos + _LEN16.size > end:
        raise TruncatedFrame(f"{what} payload length runs past the frame body")
    (nbytes,) = _LEN16.unpack_from(buf, pos)
    pos += _LEN16.size
    if pos + nbytes > end:
        raise TruncatedFrame(f"{what} lossless payload runs past the frame body")
    data = lossless_code.decode(buf[pos:pos + nbytes], n_samples, lambda m: BadLength(f"{what}: {m}"))
    return data, pos + nbytes


def raw_section_bytes(samples: np.ndarray, lossless: bool, version: int = WIRE_VERSION, state: bool = False) -> int:
    """Bytes a modality's raw section takes on the wire for these int16 samples (lossless-coded:
    they depend on the samples); ``state``: with its front end's state (v2, `STATE_BYTES`)."""
    return _section_head_size(version) + _SIDE_F32.size + (STATE_BYTES if state else 0) \
        + len(_raw_payload(samples, len(samples), lossless))


def pack_state(zi) -> tuple[float, ...]:
    """A front-end filter state (2 x 2 floats, `wardmodels.frontend.StreamFilter.zi`) as a raw
    section carries it: 4 values rounded to f32."""
    z = np.asarray(zi, np.float64).ravel()
    if z.size != 4 or not np.isfinite(z).all() or (np.abs(z) > np.finfo(np.float32).max).any():
        raise BadLength(f"a front-end state is 4 finite f32 values, got {z.tolist()}")
    return tuple(float(v) for v in z.astype(np.float32))


def reference_bytes(samples: np.ndarray, lossless: bool, version: int = WIRE_VERSION) -> int:
    """Bytes an audit reference (flag bit 2) of these int16 samples adds to its frame; in v2 with
    the predictor id a device sends beside it (flag bit 7, `device_sim.ward.Device`)."""
    return (_MOD_HEAD.size if version == 1 else PREDICTOR_ID_BYTES) + _SIDE_F32.size \
        + len(_raw_payload(samples, len(samples), lossless))


def is_predictor_id(s) -> bool:
    """Whether ``s`` is a predictor id: 12 lower-case hex digits (the control topic's
    ``ward-<id>`` keys and ``wardstream control --predictor`` use the same form)."""
    return isinstance(s, str) and len(s) == 2 * PREDICTOR_ID_BYTES and all(c in "0123456789abcdef" for c in s)


def predictor_id_bytes(predictor_id: str) -> bytes:
    """The wire form of a predictor id (flag bit 7): 12 lower-case hex digits -> 6 bytes."""
    if not is_predictor_id(predictor_id):
        raise BadLength(f"a predictor id is {2 * PREDICTOR_ID_BYTES} lower-case hex digits, got {predictor_id!r}")
    return bytes.fromhex(predictor_id)


def _raw_section(ch: Channel, n_samples: int, lossless: bool, version: int) -> bytes:
    """The audit reference: v1 with its modality head, v2 side and payload only."""
    head = _MOD_HEAD.pack(int(ch.modality), 0, n_samples) if version == 1 else b""
    return head + _SIDE_F32.pack(ch.gain, ch.offset) + _raw_payload(ch.data, n_samples, lossless)


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers at ``bits`` bits each, MSB first, zero padded."""
    idx = np.asarray(indices, dtype=np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    bitmat = ((idx[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bitmat.reshape(-1)).tobytes()


def unpack_indices(buf: bytes, count: int, bits: int) -> np.ndarray:
    bitarr = np.unpackbits(np.frombuffer(buf, dtype=np.uint8))
    used = bitarr[: count * bits].reshape(count, bits).astype(np.uint32)
    if bitarr[count * bits:].any():
        raise BadLength("non-zero padding bits after the packed indices")
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.uint32))
    return (used @ weights).astype(np.uint16)


def _spec(model_id: int, registry: Mapping[int, CodecSpec]) -> CodecSpec:
    try:
        return registry[model_id]
    except KeyError:
        raise UnknownModel(f"unknown codec model id {model_id}; known: {sorted(registry)}") from None


def encode_frame(frame: Frame, hmac_key: bytes | None = None,
                 registry: Mapping[int, CodecSpec] = REGISTRY) -> bytes:
    """Serialise ``frame``; raises `FrameError` for a frame that could not be decoded again."""
    spec = _spec(frame.model_id, registry)
    if not (0 < frame.n_samples <= MAX_SAMPLES) or frame.fs <= 0:
        raise BadLength(f"impossible window: fs={frame.fs} n_samples={frame.n_samples}")
    if len({ch.modality for ch in frame.channels}) != len(frame.channels):
        raise BadLength("a modality appears twice")
    if frame.reference is not None and (frame.reference.modality != Modality.ECG or frame.reference.level != 0):
        raise BadLength("the audit reference is the ECG at the raw level")
    version = frame.version
    if frame.predictor_id is not None and (version != 2 or frame.pred_error is None):
        raise BadLength("a predictor id travels only in wire v2, with a predicted error")
    pred_id = predictor_id_bytes(frame.predictor_id) if frame.predictor_id is not None else b""
    coded = frame.coded and version == 2 and any(spec.codes(ch.modality, ch.level) for ch in frame.channels)
    code = pred_code(frame.pred_error) if frame.pred_error is not None else None
    ecg = frame.channel(Modality.ECG)
    packed = code is not None and ecg is not None and bool(pred_packs(ecg.level, code, version))
    flags = ((FLAG_HMAC if hmac_key else 0) | (FLAG_PRED if code is not None and not packed else 0)
             | (FLAG_PRED_IN_LEVEL if packed else 0)
             | (FLAG_REF if frame.reference is not None else 0) | (FLAG_LOSSLESS if frame.lossless else 0)
             | (FLAG_CODED if coded else 0) | (FLAG_PREDICTOR if pred_id else 0))
    coded_models, coded_sections = [], []
    if version == 1:
        out = bytearray(_HEADER.pack(MAGIC, VERSION, flags, frame.bed_id, frame.seq, frame.t_start_us,
                                     frame.fs, frame.n_samples, frame.model_id, len(frame.channels)))
    elif version == 2:
        out = _header_v2(frame, flags)
    else:
        raise UnsupportedVersion(f"wire version {version} is not one of {VERSIONS}")
    for ch in frame.channels:
        lv = spec.level(ch.level)
        data = np.asarray(ch.data)
        if ch.zi is not None and (version != 2 or not lv.raw):
            raise BadLength("a front-end state travels only in wire v2, on a raw section")
        if lv.raw:
            payload = (b"" if ch.zi is None else _STATE.pack(*pack_state(ch.zi))) \
                + _raw_payload(data, frame.n_samples, frame.lossless)
        else:
            if data.shape != (lv.n_indices,):
                raise BadLength(f"level {lv.level} carries {lv.n_indices} indices, got {data.shape}")
            if data.size and (int(data.min()) < 0 or int(data.max()) >= lv.codebook_size):
                raise IndexOutOfRange(f"index outside codebook of {lv.codebook_size}")
            if coded and spec.codes(ch.modality, ch.level):
                scale = lv.pack_side(ch.gain, ch.offset)[0]  # validates the scale code
                coded_models.append(spec.section_model(ch.modality, ch.level))
                coded_sections.append((scale, data))
                payload = None
            else:
                payload = pack_indices(data, lv.bits)
        if version == 1:
            out += _MOD_HEAD.pack(int(ch.modality), ch.level, data.shape[0])
        else:
            if not 0 <= ch.level <= 255:
                raise UnknownLevel(f"level {ch.level} does not fit a byte")
            out.append(ch.level | (code << PACKED_LEVEL_BITS) if packed and ch.modality == Modality.ECG
                       else ch.level)
        if payload is None:  # coded: scale and indices go into the stream at the end
            continue
        out += lv.pack_side(ch.gain, ch.offset)
        out += payload
    if code is not None and not packed:
        out.append(code)
    if frame.reference is not None:
        out += _raw_section(frame.reference, frame.n_samples, frame.lossless, version)
    out += pred_id
    if coded_models:
        out += vqcode.encode_sections(coded_models, coded_sections)[0]
    out += struct.pack(">I", zlib.crc32(out))
    if hmac_key:
        out += _hmac.new(hmac_key, bytes(out), hashlib.sha256).digest()[:HMAC_LEN]
    return bytes(out)


def encode_as_sent(frame: Frame, hmac_key: bytes | None = None, coded: bool = True,
                   registry: Mapping[int, CodecSpec] = REGISTRY) -> tuple[bytes, Frame]:
    """A frame as a device sends it: with ``coded``, its sections entropy-coded (flag bit 6) when
    that comes out shorter, else bit-packed -> (bytes, the frame as sent)."""
    buf = encode_frame(frame, hmac_key, registry)
    if coded:
        c = replace(frame, coded=True)
        cbuf = encode_frame(c, hmac_key, registry)
        if len(cbuf) < len(buf):
            return cbuf, c
    return buf, frame


def _header_v2(frame: Frame, flags: int) -> bytearray:
    if frame.t_start_us % 1000 or not 0 <= frame.t_start_us // 1000 <= MAX_T_MS_V2:
        raise BadLength(f"wire v2 carries the window start in whole milliseconds since the epoch "
                        f"(0..2^48-1); got {frame.t_start_us} µs")
    if not 0 <= frame.model_id <= 255:
        raise UnknownModel(f"wire v2 carries the model id in one byte; got {frame.model_id}")
    mods = [int(ch.modality) for ch in frame.channels]
    if not mods or mods != sorted(mods):
        raise BadLength(f"wire v2 sends at least one modality, in ascending order; got {mods}")
    geometry = (frame.fs, frame.n_samples) != (DEFAULT_FS, DEFAULT_N_SAMPLES)
    if geometry:
        flags |= FLAG_GEOMETRY
    out = bytearray(_HEADER_V2.pack(TAG_V2, flags, frame.bed_id, frame.seq,
                                    (frame.t_start_us // 1000).to_bytes(6, "big"), frame.model_id,
                                    sum(1 << m for m in mods)
                                    | sum(1 << (STATE_MASK_SHIFT + int(ch.modality))
                                          for ch in frame.channels if ch.zi is not None)))
    if geometry:
        out += _GEOMETRY.pack(frame.fs, frame.n_samples)
    return out


def peek_bed_id(buf: bytes) -> int | None:
    """The bed id of a frame without validating it (for keying dead letters), or None."""
    if len(buf) >= 10 and buf[:4] == MAGIC:
        return struct.unpack_from(">I", buf, 6)[0]
    if len(buf) >= 6 and buf[0] == TAG_V2:
        return struct.unpack_from(">I", buf, 2)[0]
    return None


def _read_header_v1(buf: bytes) -> tuple:
    """(version, flags, bed, seq, t_start µs, fs, n_samples, model, n_mod, None, header bytes)."""
    if len(buf) < HEADER_SIZE + CRC_LEN:
        raise TruncatedFrame(f"{len(buf)} bytes is shorter than header + crc")
    magic, v, flags, bed_id, seq, t_start, fs, n_samples, model_id, n_mod = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BadMagic(f"magic {magic!r} is neither {MAGIC!r} (v1) nor {TAG_V2:#04x} (v2)")
    if v != VERSION:
        raise UnsupportedVersion(f"wire version {v} after the v1 magic is not supported (this build "
                                 f"reads {VERSION} there, and v2 frames)")
    if flags & ~KNOWN_FLAGS:
        raise UnsupportedVersion(f"unknown flag bits {flags:#04x}")
    return 1, flags, bed_id, seq, t_start, fs, n_samples, model_id, n_mod, None, HEADER_SIZE


def _read_header_v2(buf: bytes) -> tuple:
    """As `_read_header_v1`, with the modalities of the mask (ascending) in place of None."""
    if len(buf) < HEADER_SIZE_V2 + CRC_LEN:
        raise TruncatedFrame(f"{len(buf)} bytes is shorter than a v2 header + crc")
    _, flags, bed_id, seq, t_ms, model_id, mask = _HEADER_V2.unpack_from(buf, 0)
    if flags & ~KNOWN_FLAGS_V2:
        raise UnsupportedVersion(f"unknown flag bits {flags:#04x}")
    head = HEADER_SIZE_V2
    fs, n_samples = DEFAULT_FS, DEFAULT_N_SAMPLES
    if flags & FLAG_GEOMETRY:
        if len(buf) < head + _GEOMETRY.size + CRC_LEN:
            raise TruncatedFrame("v2 geometry runs past the frame")
        fs, n_samples = _GEOMETRY.unpack_from(buf, head)
        head += _GEOMETRY.size
    state, mask = mask >> STATE_MASK_SHIFT, mask & ((1 << STATE_MASK_SHIFT) - 1)
    if mask == 0:
        raise BadLength("a v2 frame with no modality")
    if mask >> len(Modality) or state >> len(Modality):
        raise UnknownModality(f"modality mask {(state << STATE_MASK_SHIFT) | mask:#04x}")
    if state & ~mask:
        raise BadLength(f"a front-end state flagged for a modality the frame lacks (mask {(state << STATE_MASK_SHIFT) | mask:#04x})")
    mods = [m for m in Modality if mask >> int(m) & 1]
    return (2, flags, bed_id, seq, int.from_bytes(t_ms, "big") * 1000, fs, n_samples, model_id, len(mods),
            (mods, [bool(state >> int(m) & 1) for m in mods]), head)


def decode_frame(buf: bytes, hmac_key_for: Callable[[int], bytes | None] | None = None,
                 require_hmac: bool = False,
                 registry: Mapping[int, CodecSpec] = REGISTRY) -> Frame:
    """Parse and validate one frame.

    Parameters
    ----------
    buf : the frame bytes, exactly one frame.
    hmac_key_for : bed id -> key, or None when the device has no key.
    require_hmac : reject frames without a tag (devices must sign).
    """
    buf = bytes(buf)
    (version, flags, bed_id, seq, t_start, fs, n_samples, model_id, n_mod, mods,
     head) = _read_header_v2(buf) if buf[:1] == bytes([TAG_V2]) else _read_header_v1(buf)
    mods, has_state = mods if mods is not None else (None, None)
    body_end = len(buf) - CRC_LEN - (HMAC_LEN if flags & FLAG_HMAC else 0)
    if body_end < head:
        raise TruncatedFrame("frame too short for its trailer")
    (crc,) = struct.unpack_from(">I", buf, body_end)
    if zlib.crc32(buf[:body_end]) != crc:
        raise BadChecksum(f"crc32 mismatch for bed {bed_id} seq {seq}")
    key = hmac_key_for(bed_id) if hmac_key_for else None
    if flags & FLAG_HMAC:
        if key is None:
            raise BadSignature(f"frame from bed {bed_id} is signed but no key is known for it")
        tag = buf[body_end + CRC_LEN:]
        want = _hmac.new(key, buf[:body_end + CRC_LEN], hashlib.sha256).digest()[:HMAC_LEN]
        if not _hmac.compare_digest(tag, want):
            raise BadSignature(f"hmac mismatch for bed {bed_id} seq {seq}")
    elif require_hmac or key is not None:
        raise MissingSignature(f"frame from bed {bed_id} is not signed")
    if fs == 0 or n_samples == 0 or n_samples > MAX_SAMPLES:
        raise BadLength(f"impossible window: fs={fs} n_samples={n_samples}")
    if n_mod == 0 or n_mod > len(Modality):
        raise BadLength(f"impossible modality count {n_mod}")
    spec = _spec(model_id, registry)
    pos = head
    channels: list[Channel] = []
    coded_at: list[int] = []  # positions in ``channels`` of the sections in the coded stream
    pred = None
    if flags & FLAG_PRED_IN_LEVEL:
        if flags & FLAG_PRED:
            raise BadLength("the predicted error is flagged both in the ECG level byte and after the sections")
        if Modality.ECG not in mods:
            raise BadLength("the predicted error is flagged in the ECG level byte of a frame without ECG")
    for i in range(n_mod):
        start = pos
        if mods is None:  # v1: the section says its modality, level and count
            if pos + _MOD_HEAD.size > body_end:
                raise TruncatedFrame("modality header runs past the frame body")
            mod, level, count = _MOD_HEAD.unpack_from(buf, pos)
            pos += _MOD_HEAD.size
            try:
                modality = Modality(mod)
            except ValueError:
                raise UnknownModality(f"modality {mod}") from None
            if any(c.modality == modality for c in channels):
                raise BadLength(f"modality {modality.name} appears twice")
        else:  # v2: the modality comes from the header's mask, the count from the level
            if pos + 1 > body_end:
                raise TruncatedFrame("level byte runs past the frame body")
            modality, level, count = mods[i], buf[pos], None
            pos += 1
            if flags & FLAG_PRED_IN_LEVEL and modality == Modality.ECG:
                pred = pred_value(level >> PACKED_LEVEL_BITS)
                level &= (1 << PACKED_LEVEL_BITS) - 1
        lv = spec.level(level)
        zi = None
        if has_state is not None and has_state[i] and not lv.raw:
            raise BadLength(f"a front-end state flagged for {modality.name} at codec level {level}")
        want_count = n_samples if lv.raw else lv.n_indices
        if count is not None and count != want_count:
            raise BadLength(f"{modality.name} level {level} declares {count} values, expected {want_count}")
        if flags & FLAG_CODED and spec.codes(modality, level):
            coded_at.append(len(channels))
            channels.append(Channel(modality, level, 0.0, 0.0, np.zeros(0, np.uint16), pos - start))
            continue
        side = lv.side_struct()
        if pos + side.size > body_end:
            raise TruncatedFrame("side information runs past the frame body")
        gain, offset = lv.unpack_side(buf, pos)
        pos += side.size
        if not (math.isfinite(gain) and math.isfinite(offset)):
            raise BadLength(f"{modality.name} side information is not finite")
        if lv.raw:
            if has_state is not None and has_state[i]:
                if pos + STATE_BYTES > body_end:
                    raise TruncatedFrame(f"{modality.name} front-end state runs past the frame body")
                zi = _STATE.unpack_from(buf, pos)
                pos += STATE_BYTES
                if not all(math.isfinite(v) for v in zi):
                    raise BadLength(f"{modality.name} front-end state is not finite")
            data, pos = _read_raw(buf, pos, body_end, n_samples, bool(flags & FLAG_LOSSLESS), modality.name)
        else:
            nbytes = lv.payload_bytes(n_samples)
            if pos + nbytes > body_end:
                raise TruncatedFrame(f"{modality.name} payload runs past the frame body")
            chunk = buf[pos:pos + nbytes]
            pos += nbytes
            data = unpack_indices(chunk, want_count, lv.bits)
            if data.size and int(data.max()) >= lv.codebook_size:
                raise IndexOutOfRange(f"{modality.name} index {int(data.max())} >= {lv.codebook_size}")
        channels.append(Channel(modality, level, float(gain), float(offset), data, pos - start, zi))
    if flags & FLAG_PRED:
        if pos + 1 > body_end:
            raise TruncatedFrame("predicted error runs past the frame body")
        if buf[pos] == 255:
            raise BadLength("predicted-error code 255 is reserved")
        pred = pred_value(buf[pos])
        pos += 1
    reference = None
    if flags & FLAG_REF:
        ref_head = _MOD_HEAD.size if version == 1 else 0
        if pos + ref_head + _SIDE_F32.size > body_end:
            raise TruncatedFrame("audit reference runs past the frame body")
        if version == 1:
            mod, level, count = _MOD_HEAD.unpack_from(buf, pos)
            if mod != Modality.ECG or level != 0 or count != n_samples:
                raise BadLength(f"audit reference must be raw ECG of {n_samples} samples "
                                f"(modality {mod}, level {level}, count {count})")
        gain, offset = _SIDE_F32.unpack_from(buf, pos + ref_head)
        if not (math.isfinite(gain) and math.isfinite(offset)):
            raise BadLength("audit reference side information is not finite")
        data, pos = _read_raw(buf, pos + ref_head + _SIDE_F32.size, body_end, n_samples,
                              bool(flags & FLAG_LOSSLESS), "audit reference")
        reference = Channel(Modality.ECG, 0, float(gain), float(offset), data)
    predictor_id = None
    if flags & FLAG_PREDICTOR:
        if pred is None:
            raise BadLength("a predictor id (flag bit 7) on a frame without a predicted error")
        if pos + PREDICTOR_ID_BYTES > body_end:
            raise TruncatedFrame("predictor id runs past the frame body")
        predictor_id = buf[pos:pos + PREDICTOR_ID_BYTES].hex()
        pos += PREDICTOR_ID_BYTES
    if coded_at:
        models = [spec.section_model(channels[i].modality, channels[i].level) for i in coded_at]
        stream = buf[pos:body_end]
        try:
            decoded, bits = vqcode.decode_sections(models, stream)
        except ValueError as e:
            raise BadCoding(f"coded sections: {e}") from None
        bits[-1] += 8 * len(stream) - sum(bits)  # the stream's zero padding: its last section's
        for i, (scale, data), b in zip(coded_at, decoded, bits):
            ch = channels[i]
            channels[i] = Channel(ch.modality, ch.level, float(scale), 0.0, data, ch.wire_bytes + b / 8)
        pos = body_end
    elif flags & FLAG_CODED:
        raise BadCoding("flag bit 6 (coded sections) on a frame with no section its codec has coding tables for")
    if pos != body_end:
        raise BadLength(f"{body_end - pos} unexpected bytes after the last modality")
    return Frame(bed_id, seq, t_start, fs, n_samples, model_id, tuple(channels), pred, reference,
                 bool(flags & FLAG_LOSSLESS), version, bool(flags & FLAG_CODED), predictor_id)


def raw_bits(frame: Frame) -> int:
    """Bits the window would take as uncompressed 16-bit samples, all modalities."""
    return 16 * frame.n_samples * len(frame.channels)
