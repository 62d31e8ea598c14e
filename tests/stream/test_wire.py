import random
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import wire
from stream.wire import (BadChecksum, BadLength, BadMagic, BadSignature, Channel, CodecSpec, Frame,
                         FrameError, IndexOutOfRange, MissingSignature, Modality, TruncatedFrame,
                         UnknownLevel, UnknownModel, UnknownModality, UnsupportedVersion,
                         decode_frame, encode_frame)
from tests.golden.make_golden import HERE, TEST_KEY, TEST_REGISTRY, frames

GOLDEN = frames()


def _recrc(b: bytearray) -> bytes:
    """Fix the CRC after a deliberate edit, so the test reaches the check behind it."""
    body = bytes(b[:-4])
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_frames_are_stable(name):
    frame, key = GOLDEN[name]
    golden = (HERE / f"{name}.bin").read_bytes()
    assert encode_frame(frame, key, registry=TEST_REGISTRY) == golden
    got = decode_frame(golden, hmac_key_for=lambda bed: key, registry=TEST_REGISTRY)
    assert got == frame


def test_golden_sizes_count_every_bit():
    # raw: 29 header + 2 x (4 + 8 side + 512) + 4 crc
    assert len((HERE / "raw_ecg_eeg.bin").read_bytes()) == 29 + 2 * (4 + 8 + 512) + 4
    assert len((HERE / "raw_signed.bin").read_bytes()) == 29 + 2 * (4 + 8 + 512) + 4 + 16
    # VQ: 32 indices x 10 bits = 40 B, 8 x 8 bits = 8 B, float16 side info
    assert len((HERE / "vq_levels.bin").read_bytes()) == 29 + (4 + 4 + 40) + (4 + 4 + 8) + 4


def test_lossless_raw_sections_halve_a_noisy_window():
    plain, _ = GOLDEN["raw_ecg_eeg"]
    coded = (HERE / "raw_lossless.bin").read_bytes()
    assert len(coded) < 0.5 * len((HERE / "raw_ecg_eeg.bin").read_bytes())
    got = _dec(coded)
    assert got.lossless and got.channel(Modality.EEG) == plain.channel(Modality.EEG)
    # each section's size on the wire is known after decoding (the bandwidth metrics use it)
    assert sum(c.wire_bytes for c in got.channels) == len(coded) - 29 - 4
    assert [c.wire_bytes for c in _dec(RAW).channels] == [524, 524]
    assert [wire.raw_section_bytes(c.data, True, version=1) for c in got.channels] == [c.wire_bytes for c in got.channels]
    assert wire.raw_section_bytes(plain.channel(Modality.ECG).data, False, version=1) == 524
    assert wire.raw_section_bytes(plain.channel(Modality.ECG).data, False) == 521  # v2: no modality/count
    # the audited window's reference: the same samples, fewer bytes
    a, b = _dec(VQ_AUDITED, hmac_key_for=lambda bed: TEST_KEY), \
        _dec((HERE / "vq_audited_lossless.bin").read_bytes(), hmac_key_for=lambda bed: TEST_KEY)
    assert b.lossless and b.channels == a.channels and b.pred_error == a.pred_error
    assert len((HERE / "vq_audited_lossless.bin").read_bytes()) < len(VQ_AUDITED) - 200


@pytest.mark.parametrize("name,start,min_rejected", [
    ("raw_lossless", 29, 100),  # v1: the lossless sections
    ("v2_raw_lossless", 0, 100), ("v2_vq_levels", 0, 5), ("v2_geometry", 0, 5),  # v2: every byte (index flips are valid frames)
    ("v2_coded", 0, 5),  # the coded stream: a flip decodes to other indices or fails its re-coding
    ("v2_coded_audited_predictor", 0, 5),  # the predictor id between the reference and the coded stream
    ("v2_raw_state", 0, 5),  # the raw ECG's front-end state between its side information and its samples
])
def test_mutations_are_frame_errors_or_whole_frames(name, start, min_rejected):
    """Every bit flip and every cut from ``start`` on (CRC made valid again) is either rejected
    with a FrameError or parses to a whole frame (which then round-trips)."""
    coded = (HERE / f"{name}.bin").read_bytes()
    rng = random.Random(3)
    rejected = 0
    for i in range(start, len(coded) - 4):
        b = bytearray(coded)
        b[i] ^= 1 << rng.randrange(8)
        try:
            f = _dec(_recrc(b))
        except FrameError as exc:
            assert exc.reason
            rejected += 1
            continue
        assert all(ch.data.shape == (f.n_samples,) for ch in f.channels if ch.level == 0)
        assert _dec(encode_frame(f, registry=TEST_REGISTRY)) == f
    for cut in range(start, len(coded) - 4, 3):
        with pytest.raises(FrameError):
            _dec(_recrc(bytearray(coded[:cut] + coded[-4:])) if cut >= 4 else coded[:cut])
    assert rejected >= min_rejected


def test_physical_units():
    frame, _ = GOLDEN["raw_ecg_eeg"]
    ecg = frame.channel(Modality.ECG)
    assert ecg.physical()[32] == pytest.approx(1.0, abs=1e-3)  # 1000 LSB x 1 µV = 1 mV


@st.composite
def any_frame(draw):
    n = draw(st.sampled_from([64, 256, 257, 512]))
    mods = draw(st.lists(st.sampled_from(list(Modality)), min_size=1, max_size=2, unique=True))
    version = draw(st.sampled_from(wire.VERSIONS))
    model = 8 if version == 2 and draw(st.booleans()) else 7  # 8: scale codes, coding tables
    chans = []
    for m in mods:
        level = draw(st.sampled_from([0, 1, 2]))
        if level == 0:
            data = np.array(draw(st.lists(st.integers(-32768, 32767), min_size=n, max_size=n)), np.int16)
            gain = draw(st.floats(0.0009765625, 1024.0, width=32))
            off = draw(st.floats(-1e3, 1e3, width=32))
        else:
            lv = TEST_REGISTRY[model].levels[level]
            data = np.array(draw(st.lists(st.integers(0, lv.codebook_size - 1),
                                          min_size=lv.n_indices, max_size=lv.n_indices)), np.uint16)
            if model == 8:
                gain, off = draw(st.integers(0, 255)), 0.0
            else:
                gain = draw(st.floats(0.5, 100, width=16))
                off = draw(st.floats(-100, 100, width=16))
        chans.append(Channel(m, level, float(gain), float(off), data))
    if version == 1:
        t_us = draw(st.integers(-(2**63), 2**63 - 1))
    else:  # v2: whole milliseconds, unsigned 48 bits; sections in modality order
        t_us = 1000 * draw(st.integers(0, wire.MAX_T_MS_V2))
        chans.sort(key=lambda c: c.modality)
    return Frame(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)),
                 t_us, draw(st.sampled_from([128, 1, 65535])) if version == 2 else draw(st.integers(1, 65535)),
                 n, model, tuple(chans), lossless=draw(st.booleans()), version=version,
                 coded=model == 8 and draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(any_frame(), st.one_of(st.none(), st.binary(min_size=1, max_size=64)))
def test_round_trip(frame, key):
    buf = encode_frame(frame, key, registry=TEST_REGISTRY)
    got = decode_frame(buf, hmac_key_for=lambda bed: key, registry=TEST_REGISTRY)
    assert got == frame and got.version == frame.version
    assert got.coded == (frame.coded and any(c.level for c in frame.channels))
    # every section knows its bytes on the wire, and they add up to the frame
    overhead = wire.frame_overhead(frame.version, frame.fs, frame.n_samples) + (wire.HMAC_LEN if key else 0)
    extra = (frame.pred_error is not None) + (0 if frame.reference is None else 1)
    assert extra or sum(c.wire_bytes for c in got.channels) == len(buf) - overhead


@pytest.mark.parametrize("bits", [1, 3, 8, 10, 13, 16])
def test_pack_unpack_indices(bits):
    rng = np.random.default_rng(bits)
    idx = rng.integers(0, 2**bits, size=37)
    packed = wire.pack_indices(idx, bits)
    assert len(packed) == (37 * bits + 7) // 8
    assert np.array_equal(wire.unpack_indices(packed, 37, bits), idx)


RAW = (HERE / "raw_ecg_eeg.bin").read_bytes()
VQ = (HERE / "vq_levels.bin").read_bytes()
SIGNED = (HERE / "raw_signed.bin").read_bytes()
VQ_AUDITED = (HERE / "vq_audited.bin").read_bytes()


def _dec(b, **kw):
    return decode_frame(b, registry=TEST_REGISTRY, **kw)


def test_truncated():
    for cut in (0, 3, 20, 33, len(RAW) - 5, len(RAW) - 1):
        with pytest.raises(TruncatedFrame if cut < 33 else (TruncatedFrame, BadChecksum)):
            _dec(RAW[:cut])


def test_bad_magic_and_version():
    b = bytearray(RAW)
    b[:4] = b"WDSX"
    with pytest.raises(BadMagic):
        _dec(bytes(b))
    b = bytearray(RAW)
    b[4] = 2
    with pytest.raises(UnsupportedVersion):
        _dec(bytes(b))
    b = bytearray(RAW)
    b[5] = 0x80  # unknown flag bit
    with pytest.raises(UnsupportedVersion):
        _dec(bytes(b))


def test_bad_crc():
    b = bytearray(RAW)
    b[100] ^= 1
    with pytest.raises(BadChecksum):
        _dec(bytes(b))


def test_hmac():
    assert _dec(SIGNED, hmac_key_for=lambda bed: TEST_KEY).bed_id == 42
    with pytest.raises(BadSignature):
        _dec(SIGNED, hmac_key_for=lambda bed: b"another key")
    with pytest.raises(BadSignature):
        _dec(SIGNED)  # signed, but no key known for the device
    forged = bytearray(SIGNED)
    forged[-1] ^= 1
    with pytest.raises(BadSignature):
        _dec(bytes(forged), hmac_key_for=lambda bed: TEST_KEY)
    with pytest.raises(MissingSignature):
        _dec(RAW, require_hmac=True)
    with pytest.raises(MissingSignature):
        _dec(RAW, hmac_key_for=lambda bed: TEST_KEY)  # the device has a key: it must sign


def test_unknown_model_level_modality():
    b = bytearray(RAW)
    b[26:28] = struct.pack(">H", 999)
    with pytest.raises(UnknownModel):
        _dec(_recrc(b))
    b = bytearray(RAW)
    b[29 + 1] = 9  # ECG level 9
    with pytest.raises(UnknownLevel):
        _dec(_recrc(b))
    b = bytearray(RAW)
    b[29] = 5  # modality 5
    with pytest.raises(UnknownModality):
        _dec(_recrc(b))


def test_index_out_of_range():
    # level 2 has a 256-entry codebook at 8 bits: every byte value is in range; build an
    # out-of-range 10-bit index for level 1 (K=1024 -> 10 bits holds 0..1023) with a K=1000 spec
    reg = {**TEST_REGISTRY, 7: wire.CodecSpec(7, "k1000", {0: wire.RAW_LEVEL, 1: wire.LevelSpec(1, 32, 1000),
                                                          2: wire.LevelSpec(2, 8, 256)})}
    b = bytearray(VQ)
    b[29 + 8] = 0xFF  # first index's top 8 bits -> >= 1020
    with pytest.raises(IndexOutOfRange):
        decode_frame(_recrc(b), registry=reg)
    frame, _ = GOLDEN["vq_levels"]
    bad = Frame(frame.bed_id, frame.seq, frame.t_start_us, frame.fs, frame.n_samples, 7,
                (Channel(Modality.ECG, 1, 1.0, 0.0, np.full(32, 1024, np.uint16)),))
    with pytest.raises(IndexOutOfRange):
        encode_frame(bad, registry=TEST_REGISTRY)


def test_impossible_lengths():
    b = bytearray(RAW)
    b[24:26] = struct.pack(">H", 0)  # n_samples 0
    with pytest.raises(BadLength):
        _dec(_recrc(b))
    b = bytearray(RAW)
    b[28] = 3  # three modalities
    with pytest.raises(BadLength):
        _dec(_recrc(b))
    b = bytearray(RAW)
    b[29 + 2:29 + 4] = struct.pack(">H", 255)  # declared count != window
    with pytest.raises(BadLength):
        _dec(_recrc(b))
    with pytest.raises(BadLength):
        _dec(_recrc(bytearray(RAW[:-4] + b"\x00\x00" + RAW[-4:])))  # trailing bytes
    b = bytearray(RAW)
    b[29 + 4 + 8 + 512] = 0  # second modality also ECG
    with pytest.raises(BadLength):
        _dec(_recrc(b))
    b = bytearray(VQ)
    b[29 + 4 + 4 + 39] |= 0x01  # padding bit after 32 x 10 bits is set... (320 bits: no padding)
    _dec(_recrc(b))  # 320 bits fill 40 bytes exactly, so this is a valid index change


@pytest.mark.parametrize("version", [1, 2])
def test_fuzz_never_raises_anything_but_frame_error(version):
    rng = random.Random(1234 + version)
    names = ["raw_ecg_eeg", "vq_levels", "raw_signed"] if version == 1 else sorted(V2)
    seeds = [((HERE / f"{n}.bin").read_bytes(), GOLDEN[n][1]) for n in names]
    for i in range(3000 if version == 1 else 2000):
        seed, key = rng.choice(seeds)
        b = bytearray(seed)
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(4)
            if op == 0 and b:
                b[rng.randrange(len(b))] = rng.randrange(256)
            elif op == 1:
                del b[rng.randrange(len(b) + 1):]
            elif op == 2:
                b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
            elif op == 3 and len(b) > 8:
                b = bytearray(_recrc(b))
        try:
            _dec(bytes(b), hmac_key_for=lambda bed: key)
        except FrameError as exc:
            assert exc.reason


SCALE8 = {7: wire.CodecSpec(7, "scale8-test", {0: wire.RAW_LEVEL,
                                                1: wire.LevelSpec(1, 64, 256, side="scale8"),
                                                2: wire.LevelSpec(2, 32, 256, side="scale8")})}


def test_scale8_level_is_one_byte_of_side_information():
    idx = np.arange(64, dtype=np.uint16) * 3 % 256
    f = Frame(3, 9, 10**15, 128, 256, 7, (Channel(Modality.ECG, 1, 117.0, 0.0, idx),
                                          Channel(Modality.EEG, 2, 3.0, 0.0, idx[:32])))
    buf = wire.encode_frame(f, registry=SCALE8)
    # v2 header 18 + 2 x (level byte + side 1) + 64 B + 32 B of 8-bit indices + crc
    assert len(buf) == wire.HEADER_SIZE_V2 + 2 * (1 + 1) + 64 + 32 + 4 == 122
    assert wire.decode_frame(buf, registry=SCALE8) == f
    # v1: header 29 + 2 x (modality head 4 + side 1) + the same payloads + crc
    buf1 = wire.encode_frame(replace(f, version=1), registry=SCALE8)
    assert len(buf1) == wire.HEADER_SIZE + 2 * (4 + 1) + 64 + 32 + 4 == 139
    assert wire.decode_frame(buf1, registry=SCALE8) == f
    assert [SCALE8[7].level(L).section_bytes(256, v) for L in (1, 2) for v in (1, 2)] == [69, 66, 37, 34]


@pytest.mark.parametrize("gain,offset", [(1.5, 0.0), (256.0, 0.0), (-1.0, 0.0), (3.0, 0.5)])
def test_scale8_rejects_what_one_byte_cannot_carry(gain, offset):
    f = Frame(3, 9, 0, 128, 256, 7, (Channel(Modality.ECG, 2, gain, offset, np.zeros(32, np.uint16)),))
    with pytest.raises(BadLength):
        wire.encode_frame(f, registry=SCALE8)


AUDITED, AUDITED_BYTES = GOLDEN["vq_audited"][0], (HERE / "vq_audited.bin").read_bytes()


def test_audited_frame_counts_its_bytes_and_round_trips():
    # VQ frame + 1 byte of predicted error + a raw ECG section (4 + 8 + 512) + crc + hmac
    assert len(AUDITED_BYTES) == 29 + (4 + 4 + 40) + (4 + 4 + 8) + 1 + (4 + 8 + 512) + 4 + 16
    got = decode_frame(AUDITED_BYTES, hmac_key_for=lambda bed: TEST_KEY, registry=TEST_REGISTRY)
    assert got.pred_error == pytest.approx(np.expm1(9 / 32))
    assert got.reference == AUDITED.reference and got.channels == AUDITED.channels


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("lossless", [False, True])
def test_reference_and_prediction_bytes_are_what_they_add_to_a_frame(version, lossless):
    # what the cost model and `eval dynamic-deep` add per audited window and per predicted error
    ref = wire.Channel(Modality.ECG, 0, 0.001, 0.0, np.rint(400 * np.sin(np.arange(256) / 9)).astype(np.int16))
    base = Frame(3, 1, 0, 128, 256, 7, AUDITED.channels, None, None, lossless, version)
    plain = len(encode_frame(base, registry=TEST_REGISTRY))
    pred = len(encode_frame(replace(base, pred_error=0.2), registry=TEST_REGISTRY))
    # in v2 a device sends its predictor's id with the reference (flag bit 7)
    pid = "7001013349ae" if version == 2 else None
    both = len(encode_frame(replace(base, pred_error=0.2, reference=ref, predictor_id=pid), registry=TEST_REGISTRY))
    assert pred - plain == (wire.PRED_BYTES if version == 1 else 0)  # v2 packs it in the ECG level byte
    assert pred - plain == wire.pred_extra_bytes(AUDITED.channels[0].level, 0.2, version)
    assert both - pred == wire.reference_bytes(ref.data, lossless, version)
    if not lossless:  # v1 repeats the modality head, v2 adds the predictor id; f32 gain and offset; int16 samples
        assert both - pred == (4 if version == 1 else 6) + 8 + 2 * 256
    else:
        assert both - pred < 8 + 2 * 256


@pytest.mark.parametrize("err", [0.0, 0.013, 0.3, 1.7, 50.0, 1e9])
def test_predicted_error_code_is_within_half_a_step(err):
    code = wire.pred_code(err)
    assert 0 <= code <= 254
    if code < 254:
        assert abs(np.log1p(wire.pred_value(code)) - np.log1p(err)) <= 0.5 / wire.PRED_STEPS + 1e-12
    else:
        assert wire.pred_value(254) <= err * 1.02


def test_predicted_error_must_be_a_non_negative_number():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(BadLength):
            encode_frame(Frame(3, 1, 0, 128, 256, 7, AUDITED.channels, bad), registry=TEST_REGISTRY)


def test_audit_extension_rejects_what_it_cannot_mean():
    unsigned = encode_frame(AUDITED, registry=TEST_REGISTRY)
    pred_at = 29 + (4 + 4 + 40) + (4 + 4 + 8)
    b = bytearray(unsigned)
    b[pred_at] = 255  # reserved code
    with pytest.raises(BadLength, match="reserved"):
        _dec(_recrc(b))
    b = bytearray(unsigned)
    b[pred_at + 1] = 1  # the reference claims to be EEG
    with pytest.raises(BadLength, match="audit reference"):
        _dec(_recrc(b))
    b = bytearray(unsigned)
    b[5] &= ~wire.FLAG_REF  # the reference bytes are then unexplained
    with pytest.raises(BadLength, match="unexpected bytes"):
        _dec(_recrc(b))
    b = bytearray(unsigned[:-4])[:-100]  # cut inside the reference
    with pytest.raises(TruncatedFrame, match="audit reference"):
        _dec(_recrc(b + b"\0\0\0\0"))
    with pytest.raises(BadLength, match="raw level"):
        encode_frame(Frame(3, 1, 0, 128, 256, 7, AUDITED.channels, None,
                           Channel(Modality.EEG, 0, 0.1, 0.0, np.zeros(256, np.int16))), registry=TEST_REGISTRY)


# --------------------------------------------------------------------------- wire format v2
V2 = {name: (HERE / f"{name}.bin").read_bytes() for name in GOLDEN if name.startswith("v2_")}


def test_v2_golden_sizes_count_every_bit():
    # header 18 (tag, flags, bed, seq, 48-bit ms, model byte, modality mask) + sections + crc
    assert len(V2["v2_vq_levels"]) == 18 + (1 + 4 + 40) + (1 + 4 + 8) + 4 == len(VQ) - 17
    assert len(V2["v2_raw_signed"]) == 18 + 2 * (1 + 8 + 512) + 4 + 16 == len(SIGNED) - 17
    # the audit reference loses its modality head too, and the prediction rides in the ECG level byte
    assert len(V2["v2_vq_audited"]) == 18 + (1 + 4 + 40) + (1 + 4 + 8) + (8 + 512) + 4 + 16
    # another window geometry travels in 4 bytes after the header (flag bit 4)
    assert len(V2["v2_geometry"]) == 18 + 4 + (1 + 4 + 8) + 4
    g = _dec(V2["v2_geometry"])
    assert (g.fs, g.n_samples, g.version) == (250, 500, 2) and g.channels[0].modality == Modality.EEG


@pytest.mark.parametrize("name", ["raw_signed", "vq_levels", "vq_audited", "raw_lossless", "vq_audited_lossless"])
def test_v1_and_v2_carry_the_same_frame(name):
    key = GOLDEN[name][1]
    a = _dec((HERE / f"{name}.bin").read_bytes(), hmac_key_for=lambda bed: key)
    b = _dec(V2[f"v2_{name}"], hmac_key_for=lambda bed: key)
    assert a == b and (a.version, b.version) == (1, 2)
    assert a.reference == b.reference and a.pred_error == b.pred_error
    assert [c.wire_bytes for c in a.channels] == [c.wire_bytes + 3 for c in b.channels]
    assert wire.peek_bed_id(V2[f"v2_{name}"]) == a.bed_id


@pytest.mark.parametrize("at,value,error", [
    (1, 0x80, BadLength),  # a predictor id (flag bit 7) on a frame without a predicted error
    (1, 0x40, wire.BadCoding),  # coded sections, but the codec has no coding tables
    (17, 0, BadLength),  # no modality
    (17, 0b101, UnknownModality),  # a modality this build does not know
    (16, 99, UnknownModel),
    (18, 9, UnknownLevel),  # ECG level 9
    (17, 0b01, BadLength),  # the mask says ECG only: the EEG section's bytes are left over
    (17, 0b100011, BadLength),  # a front-end state for the EEG, a codec-level section
    (17, 0b100001, BadLength),  # a front-end state for a modality the frame lacks
    (17, 0b1000011, UnknownModality),  # a state bit for a modality this build does not know
])
def test_v2_header_fields_are_checked(at, value, error):
    b = bytearray(V2["v2_vq_levels"])
    b[at] = value
    with pytest.raises(error):
        _dec(_recrc(b))


def test_v2_rejects_what_it_cannot_mean():
    vq = V2["v2_vq_levels"]
    for cut in (0, 1, 10, 21, len(vq) - 5):
        with pytest.raises((TruncatedFrame, BadChecksum)):
            _dec(vq[:cut])
    with pytest.raises(BadMagic):
        _dec(b"\xd3" + vq[1:])
    frame, _ = GOLDEN["v2_vq_levels"]
    with pytest.raises(BadLength, match="milliseconds"):
        encode_frame(replace(frame, t_start_us=frame.t_start_us + 1), registry=TEST_REGISTRY)
    with pytest.raises(BadLength, match="milliseconds"):
        encode_frame(replace(frame, t_start_us=-1000), registry=TEST_REGISTRY)
    with pytest.raises(BadLength, match="ascending"):
        encode_frame(replace(frame, channels=frame.channels[::-1]), registry=TEST_REGISTRY)
    with pytest.raises(UnsupportedVersion):
        encode_frame(replace(frame, version=3), registry=TEST_REGISTRY)


# --------------------------------------------------------------------------- the prediction in the ECG level byte
@pytest.mark.parametrize("name", ["v2_vq_audited", "v2_vq_audited_lossless"])
def test_v2_frames_with_the_prediction_byte_still_decode(name):
    # what devices sent before flag bit 5: the same window, one byte longer
    legacy = (HERE / name.replace("v2_vq_audited", "v2_legacy_pred_byte")).with_suffix(".bin").read_bytes()
    packed = V2[name]
    assert len(legacy) == len(packed) + 1
    assert legacy[1] & wire.FLAG_PRED and not legacy[1] & wire.FLAG_PRED_IN_LEVEL
    assert packed[1] & wire.FLAG_PRED_IN_LEVEL and not packed[1] & wire.FLAG_PRED
    a, b = (_dec(x, hmac_key_for=lambda bed: TEST_KEY) for x in (legacy, packed))
    assert a == b and a.pred_error == b.pred_error == pytest.approx(np.expm1(9 / 32))
    assert a.reference == b.reference and [c.level for c in b.channels] == [1, 2]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("err", [0.0, 0.2, 0.5058, 1.0, 1.63, 1.65, 3.0, 1e6])
def test_the_prediction_costs_what_pred_extra_bytes_says_and_round_trips(version, level, err):
    ecg = GOLDEN["vq_levels"][0].channels[0] if level == 1 else (
        GOLDEN["vq_levels"][0].channels[1] if level == 2 else GOLDEN["raw_ecg_eeg"][0].channels[0])
    ecg = replace(ecg, modality=Modality.ECG)
    eeg = GOLDEN["vq_levels"][0].channels[1]
    base = Frame(5, 2, 1_700_000_000_000_000, 128, 256, 7, (ecg, eeg), None, None, False, version)
    plain = encode_frame(base, registry=TEST_REGISTRY)
    sent = encode_frame(replace(base, pred_error=err), registry=TEST_REGISTRY)
    assert len(sent) - len(plain) == wire.pred_extra_bytes(level, err, version)
    # packed exactly when the code fits 5 bits (v2): a prediction up to exp(31/32) - 1
    code = wire.pred_code(err)
    assert (len(sent) == len(plain)) == (version == 2 and code <= wire.PACKED_PRED_MAX)
    got = _dec(sent)
    assert replace(got, pred_error=None) == base and got.channel(Modality.ECG).level == level
    assert got.pred_error == pytest.approx(wire.pred_value(code))
    assert got.channel(Modality.ECG).wire_bytes == _dec(plain).channel(Modality.ECG).wire_bytes


def test_pred_extra_bytes_is_vectorised():
    lv = np.array([0, 1, 5, 2, 3])
    e = np.array([0.0, 0.4, 1.2, 2.0, 40.0])
    assert wire.pred_extra_bytes(lv, e, 2).tolist() == [0, 0, 0, 1, 1]
    assert wire.pred_extra_bytes(lv, e, 1).tolist() == [1] * 5


def test_the_packed_prediction_is_checked():
    packed = bytearray(encode_frame(GOLDEN["v2_vq_audited"][0], registry=TEST_REGISTRY))  # unsigned
    assert _dec(_recrc(packed)).pred_error == pytest.approx(np.expm1(9 / 32))
    packed[1] |= wire.FLAG_PRED
    with pytest.raises(BadLength, match="both"):  # flagged packed and as a byte
        _dec(_recrc(packed))
    # an EEG-only frame cannot carry the prediction in an ECG level byte
    odd = bytearray(V2["v2_geometry"])
    odd[1] |= wire.FLAG_PRED_IN_LEVEL
    with pytest.raises(BadLength, match="without ECG"):
        _dec(_recrc(odd))
    # a level byte whose low bits name a level the codec lacks
    vq = bytearray(V2["v2_vq_levels"])
    vq[1] |= wire.FLAG_PRED_IN_LEVEL
    vq[18] = 7 | (3 << 3)
    with pytest.raises(UnknownLevel):
        _dec(_recrc(vq))


# --------------------------------------------------------------------------- entropy-coded sections (flag bit 6)
def test_coded_sections_are_smaller_and_count_every_bit():
    frame, _ = GOLDEN["v2_coded"]
    buf = V2["v2_coded"]
    assert buf[1] & wire.FLAG_CODED and buf[1] & wire.FLAG_PRED_IN_LEVEL
    plain = encode_frame(replace(frame, coded=False), registry=TEST_REGISTRY)
    # plain: level byte + scale byte + 16 x 6 bits = 14 B (ECG), 1 + 1 + 4 x 5 bits -> 5 B (EEG)
    assert len(plain) == 18 + 14 + 5 + 4
    assert len(buf) < len(plain)
    got = _dec(buf)
    assert got == frame and got.coded and got.pred_error == pytest.approx(np.expm1(7 / 32))
    # each section: its level byte + its bits of the stream (the last one: the padding too)
    assert sum(c.wire_bytes for c in got.channels) == len(buf) - wire.frame_overhead(2)
    assert all(c.wire_bytes > 1 for c in got.channels)
    a, _ = GOLDEN["v2_coded_audited"]
    g = _dec(V2["v2_coded_audited"], hmac_key_for=lambda bed: TEST_KEY)
    assert g == a and g.reference == a.reference and g.channel(Modality.EEG).level == 0


def test_the_predictor_id_travels_with_the_reference_and_is_checked():
    a, _ = GOLDEN["v2_coded_audited_predictor"]
    buf = V2["v2_coded_audited_predictor"]
    assert buf[1] & wire.FLAG_PREDICTOR and len(buf) == len(V2["v2_coded_audited"]) + wire.PREDICTOR_ID_BYTES
    g = _dec(buf, hmac_key_for=lambda bed: TEST_KEY)
    assert g == a and g.predictor_id == "7001013349ae" and g.reference == a.reference
    assert _dec(V2["v2_coded_audited"], hmac_key_for=lambda bed: TEST_KEY).predictor_id is None
    # the six bytes sit after the reference, before the coded stream
    assert bytes.fromhex("7001013349ae") in buf
    for bad in (replace(a, version=1), replace(a, pred_error=None), replace(a, predictor_id="7001013349AE"),
                replace(a, predictor_id="7001013349"), replace(a, predictor_id="zz01013349ae")):
        with pytest.raises(BadLength):
            encode_frame(bad, TEST_KEY, registry=TEST_REGISTRY)
    # an unsigned copy cut inside the id, CRC made valid: an error, never a frame
    plain = encode_frame(replace(a, coded=False), registry=TEST_REGISTRY)
    at = plain.index(bytes.fromhex("7001013349ae"))
    with pytest.raises(FrameError):
        _dec(_recrc(bytearray(plain[:at + 3]) + b"\0\0\0\0"))


def test_a_raw_section_carries_the_devices_front_end_state():
    """A level-picking device's raw window after codec-level ones carries its band-pass state
    (``mods`` bit 4 + m, 16 bytes before the samples), so the cloud filters it as the device did."""
    a, key = GOLDEN["v2_raw_state"]
    buf = V2["v2_raw_state"]
    assert buf[17] == 0b10011  # ECG and EEG present, the ECG's state follows its side information
    g = _dec(buf, hmac_key_for=lambda bed: key)
    ecg = g.channel(Modality.ECG)
    assert g == a and ecg.zi == a.channels[0].zi and g.pred_error == 0.0
    without = replace(a, channels=(replace(a.channels[0], zi=None), a.channels[1]))
    plain = encode_frame(without, key, registry=TEST_REGISTRY)
    assert len(buf) == len(plain) + wire.STATE_BYTES and _dec(plain, hmac_key_for=lambda bed: key) != a
    assert ecg.wire_bytes == _dec(plain, hmac_key_for=lambda bed: key).channel(Modality.ECG).wire_bytes + 16
    assert ecg.wire_bytes == wire.raw_section_bytes(ecg.data, True, state=True)
    assert struct.pack(">4f", *a.channels[0].zi) in buf
    # only in v2, only on a raw section, four finite f32 values
    for bad in (replace(a, version=1, coded=False),
                replace(a, channels=(a.channels[0], replace(a.channels[1], zi=(0.0,) * 4))),
                replace(a, channels=(replace(a.channels[0], zi=(0.0, 1.0, float("nan"), 0.0)), a.channels[1])),
                replace(a, channels=(replace(a.channels[0], zi=(0.0, 1.0, 2.0)), a.channels[1])),
                replace(a, channels=(replace(a.channels[0], zi=(1e39, 0.0, 0.0, 0.0)), a.channels[1]))):
        with pytest.raises(BadLength):
            encode_frame(bad, key, registry=TEST_REGISTRY)
    unsigned = bytearray(encode_frame(replace(a, coded=False), registry=TEST_REGISTRY))
    at = unsigned.index(struct.pack(">4f", *a.channels[0].zi))
    with pytest.raises(BadLength):  # a state that is not finite
        _dec(_recrc(unsigned[:at] + struct.pack(">f", float("inf")) + unsigned[at + 4:]))
    with pytest.raises(FrameError):  # cut inside the state
        _dec(_recrc(unsigned[:at + 6] + b"\0\0\0\0"))


def test_coded_sections_are_checked():
    buf = bytearray(V2["v2_coded"])
    with pytest.raises(wire.BadCoding):  # a byte more in the stream: not how the encoder ends it
        _dec(_recrc(buf[:-4] + b"\x00" + buf[-4:]))
    with pytest.raises(wire.BadCoding):  # flag bit 6 on a codec without tables
        _dec(_recrc(bytearray([wire.TAG_V2, wire.FLAG_CODED]) + V2["v2_vq_levels"][2:]))
    frame, _ = GOLDEN["v2_coded"]
    # v1 has no coded form, nor has a codec without tables: the plain frame, no flag
    assert encode_frame(replace(frame, version=1), registry=TEST_REGISTRY) == \
        encode_frame(replace(frame, version=1, coded=False), registry=TEST_REGISTRY)
    vq, _ = GOLDEN["v2_vq_levels"]
    assert encode_frame(replace(vq, coded=True), registry=TEST_REGISTRY) == V2["v2_vq_levels"]
    # only the sections with tables are coded: EEG level 1 of model 8 has none here
    spec = TEST_REGISTRY[8]
    part = {**TEST_REGISTRY, 8: CodecSpec(8, spec.name, spec.levels, {(0, 1): spec.coding[(0, 1)]})}
    eeg1 = Channel(Modality.EEG, 1, 3.0, 0.0, frame.channels[0].data)
    mixed = replace(frame, channels=(frame.channels[0], eeg1))
    buf = encode_frame(mixed, registry=part)
    got = decode_frame(buf, registry=part)
    assert got == mixed and got.coded and got.channel(Modality.EEG).wire_bytes == 1 + 1 + 12
    with pytest.raises(FrameError):  # a reader whose model has no tables for the coded section
        decode_frame(buf, registry={**TEST_REGISTRY, 8: CodecSpec(8, spec.name, spec.levels)})
    with pytest.raises(BadLength):  # a coded level carries a scale code 0..255
        bad = replace(frame.channels[0], gain=0.5)
        encode_frame(replace(frame, channels=(bad, frame.channels[1])), registry=TEST_REGISTRY)
    # a raw-only frame sent "coded" carries no stream and no flag
    raw, _ = GOLDEN["v2_raw_signed"]
    assert encode_frame(replace(raw, coded=True), TEST_KEY, registry=TEST_REGISTRY) == V2["v2_raw_signed"]


def test_coding_tables_must_match_their_level():
    from tests.golden.make_golden import CODED_LEVELS, CODED_TABLES

    with pytest.raises(ValueError, match="do not match"):
        wire.register_codec(CodecSpec(250, "bad", CODED_LEVELS, {(0, 1): CODED_TABLES[(0, 2)]}))
    assert 250 not in wire.REGISTRY
