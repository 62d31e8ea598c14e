"""The deployed codec through the wire format, as a device and a worker use it."""

import shutil

import numpy as np
import pytest

from stream.wire import CodecSpec, Frame, LevelSpec, RAW_LEVEL, decode_frame, encode_frame, register_codec
from wardmodels import runtime
from wardmodels.frontend import StreamFilter
from wardmodels.wire_codec import CodecEncoder, NoDecoder, decode_frames, register_deployed
from wardstream.datasets import load_eegmat, load_mitdb


def _prd(ref, rec):
    return 100 * np.sqrt(((ref - rec) ** 2).sum() / (ref ** 2).sum())


@pytest.fixture(scope="module")
def model_id():
    ids = register_deployed()
    assert ids
    return ids[0]


def test_device_frames_decode_to_the_signal(data_dir, model_id):
    ecg = load_mitdb(data_dir, "100").ecg_mv[: 40 * 256]
    eeg_rec = load_eegmat(data_dir, [25])[0]
    eeg = eeg_rec.eeg_uv[0][: 40 * 256]
    out = {}
    for level in (1, 2):
        enc = CodecEncoder(model_id, level)
        frames = []
        for w in range(40):
            chans = enc.channels(ecg[w * 256:(w + 1) * 256], eeg[w * 256:(w + 1) * 256])
            buf = encode_frame(Frame(1, w, w * 2_000_000, 128, 256, model_id, chans))
            frames.append(decode_frame(buf))
        out[level] = (len(buf), decode_frames(frames))
    ref = {"ecg": StreamFilter()(ecg), "eeg": StreamFilter()(eeg)}
    for level, (nbytes, rec) in out.items():
        for mod, name in ((0, "ecg"), (1, "eeg")):
            got = np.concatenate([r[list(r)[mod]] for r in rec])
            # the first 5 windows hold the filter start-up; trained weights, not noise, must decode
            prd = _prd(ref[name][5 * 256:], got[5 * 256:])
            assert prd < (25 if name == "ecg" else 45), (level, name, prd)
    assert out[2][0] < out[1][0]  # level 2 sends fewer bits


def test_batched_decode_equals_one_by_one(data_dir, model_id):
    ecg = load_mitdb(data_dir, "100").ecg_mv[: 6 * 256]
    frames = []
    for level in (1, 2):
        enc = CodecEncoder(model_id, level)
        for w in range(3):
            frames.append(Frame(1, w, 0, 128, 256, model_id, enc.channels(ecg[w * 256:(w + 1) * 256], None)))
    together = decode_frames(frames)
    for f, t in zip(frames, together):
        alone = decode_frames([f])[0]
        for k in alone:
            np.testing.assert_allclose(alone[k], t[k], rtol=1e-4, atol=1e-5)


def test_model_without_weights_is_a_no_decoder_error():
    register_codec(CodecSpec(99, "no-weights", {0: RAW_LEVEL, 1: LevelSpec(1, 32, 256, side="scale8")}))
    from stream.wire import Channel, Modality

    f = Frame(1, 0, 0, 128, 256, 99, (Channel(Modality.ECG, 1, 100.0, 0.0, np.zeros(32, np.uint16)),))
    res = decode_frames([decode_frame(encode_frame(f))])[0]
    assert isinstance(res, NoDecoder) and res.reason == "no_decoder"


def test_committed_weights_match_their_names(tmp_path):
    entries = runtime.manifest()
    assert entries
    for e in entries:
        runtime.verify_hash(runtime.WEIGHTS_DIR / e["codec"])
        runtime.verify_hash(runtime.WEIGHTS_DIR / e["edge"])
    src = runtime.WEIGHTS_DIR / entries[0]["codec"]
    bad = tmp_path / src.name
    shutil.copy(src, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(runtime.WeightsError):
        runtime.verify_hash(bad)


def test_entropy_coded_frames_carry_the_same_sections_in_fewer_bytes(data_dir):
    """Wire model 5's committed coding tables (`wardmodels.wire_tables`): every level of both
    modalities travels coded (flag bit 6), decodes to the very indices and scale codes of the
    bit-packed frame, costs fewer bytes on real windows, and fits the device beside the encoder."""
    from dataclasses import replace

    from stream.wire import REGISTRY, Modality
    from wardmodels import DD_MODEL
    from wardmodels.wire_tables import device_bytes

    register_deployed()
    codec = runtime.load_deployed(DD_MODEL)
    spec = REGISTRY[DD_MODEL]
    assert all(spec.codes(m, L) for m in Modality for L in codec.levels)
    # the device holds trunk + chains + the default predictor + these tables within 480,000 bytes
    tables = device_bytes(spec.coding)
    assert tables == sum(codec.entry["wire_tables_bytes"].values())
    assert codec.entry["encoder_bytes"] + codec.entry["predictor_bytes"] + tables <= 480_000
    ecg = load_mitdb(data_dir, "100").ecg_mv[: 12 * 256]
    eeg = load_eegmat(data_dir, [25])[0].eeg_uv[0][: 12 * 256]
    for level in codec.levels:
        enc = CodecEncoder(DD_MODEL, level)
        plain = coded = 0
        for w in range(12):
            f = Frame(1, w, w * 2_000_000, 128, 256, DD_MODEL,
                      enc.channels(ecg[w * 256:(w + 1) * 256], eeg[w * 256:(w + 1) * 256]))
            a, b = encode_frame(f), encode_frame(replace(f, coded=True))
            fa, fb = decode_frame(a), decode_frame(b)
            assert fb == fa == f and fb.coded and not fa.coded
            assert sum(c.wire_bytes for c in fb.channels) == len(b) - 22  # v2 header + CRC
            plain, coded = plain + len(a), coded + len(b)
        assert coded < plain, (level, coded, plain)
