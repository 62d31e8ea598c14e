"""The C edge encoder (`firmware/encoder/`) against the integer spec it implements
(`wardmodels.int8`): the same indices and the same projection z, bit for bit, for the deployed
encoder of both modalities — on real windows, on windows that saturate every clamp, on silence —
and a clear refusal of a malformed parameter blob; the whole device (front end, encoder, the
Dynamic-Deep edge, the wire frame) against the simulated one, byte for byte. Compiled here with the
host's C compiler, the flags the firmware uses (C11, no fused multiply-add, every warning an
error)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from wardmodels.firmware import blob, build_host, device_blob

ROOT = Path(__file__).resolve().parents[2]
POSITIONS, D = 32, 64


@pytest.fixture(scope="module")
def host_encode(tmp_path_factory) -> Path:
    return build_host("host_encode.c", tmp_path_factory.mktemp("fw") / "host_encode")


@pytest.fixture(scope="module")
def blob_path(codec, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("fw") / "edge.wse"
    p.write_bytes(device_blob(codec))
    return p


def run_c(exe: Path, blob_file: Path, modality: str, x: np.ndarray, stages: int = 2):
    out = subprocess.run([str(exe), str(blob_file), modality, str(stages), "windows"],
                         input=np.ascontiguousarray(x, "<f4").tobytes(), capture_output=True, check=True)
    rows = np.frombuffer(out.stdout, "<i2").reshape(len(x), stages * POSITIONS + D * POSITIONS)
    idx = rows[:, :stages * POSITIONS].view("<u2").reshape(len(x), stages, POSITIONS)
    return idx.astype(np.int64), rows[:, stages * POSITIONS:].reshape(len(x), D, POSITIONS).astype(np.int64)


def _windows(ecg_windows, eeg_windows) -> dict[str, np.ndarray]:
    from wardmodels.frontend import normalise

    rng = np.random.default_rng(11)
    edge_cases = np.concatenate([
        np.zeros((1, 256), np.float32),                                    # silence
        np.full((1, 256), 1e6, np.float32), np.full((1, 256), -1e6, np.float32),  # the input clamp
        (rng.standard_normal((6, 256)) * 40).astype(np.float32),           # inner clamps
        rng.standard_normal((20, 256)).astype(np.float32),
    ])
    return {"ecg": np.concatenate([normalise(ecg_windows, "ecg")[0], edge_cases]),
            "eeg": np.concatenate([normalise(eeg_windows[0], "eeg")[0], edge_cases])}


@pytest.mark.parametrize("modality", ["ecg", "eeg"])
def test_the_c_encoder_gives_the_int8_specs_indices_and_z_bit_for_bit(host_encode, blob_path, codec, modality,
                                                                      ecg_windows, eeg_windows):
    x = _windows(ecg_windows, eeg_windows)[modality]
    ref = codec.edge.modalities[modality]
    z_ref = ref.run(x)
    idx_ref = ref.search(z_ref)
    idx, z = run_c(host_encode, blob_path, modality, x)
    assert np.array_equal(z, z_ref), f"z differs at {np.argwhere(z != z_ref)[:5].tolist()}"
    assert np.array_equal(idx, idx_ref), f"indices differ at {np.argwhere(idx != idx_ref)[:5].tolist()}"
    assert (np.abs(x) * ref.inv_sx > 32767).any() and len(np.unique(idx_ref[:, 0])) > 50  # clamps, the codebook
    one, _ = run_c(host_encode, blob_path, modality, x[:5], stages=1)  # level 2: stage 1 only
    assert np.array_equal(one[:, 0], idx_ref[:5, 0])


def _resealed(body: bytes) -> bytes:
    """A blob body (all but the trailer) with a trailer that matches it: corrupt on purpose, yet
    past the CRC, so the loader's own checks are what refuse it."""
    import struct
    import zlib

    return body + struct.pack("<II", zlib.crc32(body), 0)


def test_a_malformed_blob_is_refused_with_the_part_that_is_wrong(host_encode, blob_path, tmp_path):
    import struct

    good = blob_path.read_bytes()
    body = good[:-8]
    x = np.zeros((1, 256), np.float32).tobytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    nan_scale = bytearray(body)
    nan_scale[32:36] = struct.pack("<f", float("nan"))  # the ECG's input scale (inv_sx)
    for name, data, says in (("truncated", good[:-4096], "CRC mismatch"), ("a bit flipped", bytes(flipped), "CRC mismatch"),
                             ("magic", b"XXXX" + good[4:], "not a WSE1"), ("trailing", good + b"\0" * 8, "CRC mismatch"),
                             ("truncated, resealed", _resealed(body[:-4096]), "malformed blob"),
                             ("input scale NaN, resealed", _resealed(bytes(nan_scale)), "bad input scale"),
                             ("trailing, resealed", _resealed(body + b"\0" * 8), "trailing bytes")):
        p = tmp_path / name
        p.write_bytes(data)
        r = subprocess.run([str(host_encode), str(p), "ecg", "2", "windows"], input=x, capture_output=True)
        assert r.returncode == 2 and says in r.stderr.decode(), (name, r.stderr)
    r = subprocess.run([str(host_encode), str(blob_path), "emg", "2", "windows"], input=x, capture_output=True)
    assert r.returncode == 2 and "no modality emg" in r.stderr.decode()


def _raw_streams(data_dir, windows: int) -> dict[str, np.ndarray]:
    """Raw MIT-BIH 100 (mV) and eegmat subject 25's F3 (µV), cut into consecutive windows, with a
    lead-off stretch (flat), a window of noise from rail to rail and a NaN and an infinity in the ECG."""
    from wardstream.datasets import load_eegmat, load_mitdb

    ecg = np.asarray(load_mitdb(data_dir, "100").ecg_mv[: windows * 256], np.float64).copy()
    ecg[3 * 256: 5 * 256] = 0.0
    ecg[6 * 256: 7 * 256] = np.random.default_rng(3).uniform(-1e9, 1e9, 256)  # rail to rail, clipped to the input range
    ecg[8 * 256 + 7], ecg[8 * 256 + 9] = np.nan, np.inf  # a glitch must not poison the filter for good
    eeg = np.asarray(load_eegmat(data_dir, [25])[0].eeg_uv[0][: windows * 256], np.float64)
    return {"ecg": ecg.reshape(windows, 256), "eeg": eeg.reshape(windows, 256)}


@pytest.mark.parametrize("modality", ["ecg", "eeg"])
def test_the_c_device_chain_equals_the_simulated_device_from_raw_samples(host_encode, blob_path, codec, data_dir,
                                                                         modality):
    """Raw samples through the C front end (the causal band-pass as scipy's sosfilt computes it,
    numpy's standard deviation for the scale code) and the C encoder: the band-passed signal, the
    scale codes, the normalised windows and the indices all equal the simulated device's, bit for
    bit, over 3 minutes of one stream (a lead-off stretch, a saturated one clipped to the device's
    input range, a NaN and an infinity included)."""
    from wardmodels.firmware import python_device
    from wardmodels.frontend import normalise
    from wardmodels.wire_codec import device_filters

    raw = _raw_streams(data_dir, 90)[modality]
    out = subprocess.run([str(host_encode), str(blob_path), modality, "2", "raw"], input=raw.astype("<f8").tobytes(),
                         capture_output=True, check=True)
    rec = np.frombuffer(out.stdout, np.dtype([("y", "<f4", 256), ("code", "<u4"), ("x", "<f4", 256),
                                              ("idx", "<u2", 64)]))
    f = device_filters()[modality]
    y = np.stack([f(np.nan_to_num(w)) for w in raw])  # the simulated device's order: nan_to_num, then the filter
    x, codes = normalise(y, modality)
    assert len(rec) == len(raw)
    assert np.array_equal(rec["y"], y) and np.array_equal(rec["code"], codes) and np.array_equal(rec["x"], x)
    ref_codes, ref_idx = python_device(codec.edge, modality, raw)
    assert np.array_equal(ref_codes, codes)
    assert np.array_equal(rec["idx"].reshape(-1, 2, 32), ref_idx)
    assert len(np.unique(codes)) > 3  # the scale moved (lead-off, saturation, the signal itself)
    assert np.isfinite(y).all()  # the infinity in window 8 did not leave the filter's state infinite


@pytest.fixture(scope="module")
def host_device(tmp_path_factory) -> Path:
    return build_host("host_device.c", tmp_path_factory.mktemp("fw") / "host_device")


def _frames(stdout: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(stdout):
        n = int.from_bytes(stdout[i:i + 4], "little")
        out.append(stdout[i + 4:i + 4 + n])
        i += 4 + n
    return out


@pytest.mark.parametrize("level, tables, key", [(1, True, None), (2, True, None), (1, False, None),
                                               (1, True, b"device-secret-0123456789abcdef"), (2, False, bytes(range(100)))])
def test_a_c_device_sends_the_simulated_devices_frames_byte_for_byte(host_device, codec, data_dir, tmp_path,
                                                                     level, tables, key):
    """A whole device of the default configuration in C — front end, encoder at a fixed level,
    the v2 frame with its sections entropy-coded when that is shorter (the wire tables in the
    blob) or bit-packed (a blob without them), CRC, and with a device key the HMAC-SHA256 tag
    (keys shorter and longer than SHA-256's block) — against the simulator's device on the same
    raw streams: every frame byte for byte, and every one decodes (and verifies)."""
    from stream.wire import decode_frame
    from wardmodels.wire_codec import register_deployed
    from wardstream.bench_firmware import simulated_frames

    register_deployed()
    raw = _raw_streams(data_dir, 40)
    p = tmp_path / "dev.wse"
    p.write_bytes(device_blob(codec) if tables else blob(codec.edge))
    t0 = 1_800_000_000_000
    out = subprocess.run([str(host_device), str(p), str(level), "9", "5", str(t0), str(codec.model_id),
                          *([key.hex()] if key else [])],
                         input=np.stack([raw["ecg"], raw["eeg"]], 1).astype("<f8").tobytes(),
                         capture_output=True, check=True).stdout
    frames = _frames(out)
    ref = simulated_frames(codec, level, raw["ecg"], raw["eeg"], bed=9, seq0=5, t0_ms=t0, coded=tables, hmac_key=key)
    assert len(frames) == len(ref) == 40
    assert frames == ref
    coded = [bool(f[1] & 0x40) for f in frames]
    # with the tables most frames go coded; the window of rail-to-rail noise, whose indices the
    # tables did not expect, codes longer and goes bit-packed: both of the device's choices are checked
    assert (0 < sum(coded) < len(coded)) if tables else not any(coded)
    assert [decode_frame(f, hmac_key_for=(lambda bed: key) if key else None, require_hmac=bool(key)).seq
            for f in frames] == list(range(5, 45))
    assert all(bool(f[1] & 0x01) == bool(key) for f in frames)


def test_the_cortex_m7_build_runs_the_device_bit_for_bit_under_qemu(codec, data_dir, tmp_path):
    """The same device cross-compiled for a Cortex-M7 (hard-float FPv5, the firmware's flags) and
    run on QEMU's mps2-an500 board, fed and read back through semihosting: every scale code, index
    and frame byte equals the simulated device's, and each step reports its instruction count —
    a fixed-level device, the main job's device (level 1 with its predicted error, lossless raw,
    an audit burst) and one that picks its level per window."""
    from wardmodels.firmware import build_m7, python_device, run_m7
    from wardstream.bench_firmware import simulated_device, simulated_frames

    raw = _raw_streams(data_dir, 10)
    built = build_m7(tmp_path / "build")
    data = device_blob(codec)
    r = run_m7(built["elf"], data, raw["ecg"], raw["eeg"], tmp_path / "run", level=1, model_id=codec.model_id)
    for m in ("ecg", "eeg"):
        codes, idx = python_device(codec.edge, m, raw[m])
        assert np.array_equal(r[m][0], codes) and np.array_equal(r[m][1], idx), m
    assert r["frames"] == simulated_frames(codec, 1, raw["ecg"], raw["eeg"])
    plain_steps = [0, 1, 4, 5, 6]  # no task features or predictor without the Dynamic-Deep edge
    assert (r["instructions"][:, plain_steps] > 0).all() and (r["instructions"][:, 2:4] == 0).all()
    assert r["ram"]["scratch"] > 0 and built["text_bytes"] < 65536
    ecg, eeg = _ecg_eeg(data_dir, "203", 12)
    for cfg in ({"dd": 1, "level": 1, "eeg_level": 1, "lossless": True, "audit_every": 7, "bound": 0.0},
                {"dd": -1, "level": 1, "eeg_level": 2, "lossless": True, "audit_every": 0, "bound": 0.0}):
        r = run_m7(built["elf"], data, ecg, eeg, tmp_path / f"dd{cfg['dd']}", model_id=codec.model_id, dd=cfg["dd"],
                   eeg_level=cfg["eeg_level"], lossless=cfg["lossless"], audit_every=cfg["audit_every"])
        frames, levels, codes = simulated_device(codec, cfg, ecg, eeg)
        assert np.array_equal(r["levels"], levels) and np.array_equal(r["pred_codes"], codes), cfg
        assert r["frames"] == frames, cfg
        assert (r["instructions"] > 0).all()
        assert any(f[1] & 0x04 for f in frames) == bool(cfg["audit_every"])  # the audit burst's reference


@pytest.fixture(scope="module")
def host_arith(tmp_path_factory) -> Path:
    return build_host("host_arith.c", tmp_path_factory.mktemp("fw") / "host_arith")


def run_arith(exe: Path, freqs: np.ndarray, rows: np.ndarray, symbols: np.ndarray) -> tuple[bytes, int, int]:
    import struct

    inp = (struct.pack("<II", *freqs.shape) + np.ascontiguousarray(freqs, np.uint8).tobytes()
           + struct.pack("<I", len(rows)) + np.stack([rows, symbols], 1).astype("<u2").tobytes())
    out = subprocess.run([str(exe)], input=inp, capture_output=True, check=True).stdout
    bits, cost = struct.unpack("<II", out[:8])
    return out[8:], bits, cost


def test_the_c_arithmetic_coder_writes_the_python_coders_bits(host_arith):
    """`firmware/encoder/ws_arith.c` against `stream.arith.Encoder`: the same bytes, bit count
    and cost for 150 random streams (u8 tables of 2-299 symbols, several rows, skewed tables whose
    likely symbol repeats — long pending runs — and empty streams)."""
    from stream import arith

    rng = np.random.default_rng(5)
    for trial in range(150):
        k, n_rows = int(rng.integers(2, 300)), int(rng.integers(1, 5))
        freqs = rng.integers(1, 256, (n_rows, k)).astype(np.uint8)
        n = int(rng.integers(0, 400)) if trial else 0
        rows, symbols = rng.integers(0, n_rows, n), rng.integers(0, k, n)
        if trial % 3 == 1:
            freqs[:] = 1
            freqs[:, 7 % k] = 255
            symbols[:] = 7 % k
        cum = arith.cumulative(freqs.astype(np.int64))
        enc = arith.Encoder()
        for r, s in zip(rows.tolist(), symbols.tolist()):
            enc.put(cum[r].tolist(), s)
        cost = enc.cost()
        data, bits = enc.finish()
        assert run_arith(host_arith, freqs, rows, symbols) == (data, bits, cost), trial


def test_the_c_coder_codes_a_frames_sections_as_the_wire_does(host_arith, codec, ecg_windows, eeg_windows):
    """A frame's two level-1 sections (scale code, then every index with its stage's table) with
    the deployed codec's wire tables: the C coder's stream is the one `stream.vqcode` puts in the
    frame, byte for byte."""
    from stream.vqcode import encode_sections
    from stream.wire import REGISTRY, Modality
    from wardmodels.frontend import normalise
    from wardmodels.wire_codec import register_deployed

    register_deployed()
    coding = REGISTRY[codec.model_id].coding
    models = [coding[(int(Modality.ECG), 1)], coding[(int(Modality.EEG), 1)]]
    assert all(st.ctx_map.size == 0 for m in models for st in m.stages)  # single-row tables on the wire
    x_e, c_e = normalise(ecg_windows[:1], "ecg")
    x_g, c_g = normalise(eeg_windows[0][:1], "eeg")
    sections = [(int(c_e[0]), codec.edge.encode("ecg", x_e)[0].ravel()), (int(c_g[0]), codec.edge.encode("eeg", x_g)[0].ravel())]
    data, _ = encode_sections(models, sections)
    tables, rows, symbols = [], [], []
    for m, (scale, idx) in zip(models, sections):
        tables.append(np.diff(m.scale_cum))
        rows.append(len(tables) - 1)
        symbols.append(scale)
        k = 0
        for st in m.stages:
            tables.append(np.diff(st.cum[0]))
            rows += [len(tables) - 1] * st.positions
            symbols += idx[k:k + st.positions].tolist()
            k += st.positions
    freqs = np.stack(tables).astype(np.uint8)
    c_data, bits, _ = run_arith(host_arith, freqs, np.array(rows), np.array(symbols))
    assert c_data == data and (bits + 7) // 8 == len(data)


# --------------------------------------------------------------------------- the Dynamic-Deep edge
DD_RECORD = np.dtype([("level", "u1"), ("code", "u1"), ("features", "<f4", 29), ("pred", "<f4", 5)])


@pytest.fixture(scope="module")
def host_dd(tmp_path_factory) -> Path:
    return build_host("host_dd.c", tmp_path_factory.mktemp("fw") / "host_dd")


def run_host_dd(exe: Path, blob_file: Path, ecg: np.ndarray, eeg: np.ndarray, cfg: dict, bed: int, seq0: int, t0_ms: int,
                model_id: int):
    out = subprocess.run([str(exe), str(blob_file), str(cfg["bound"]), str(cfg["dd"]), str(cfg["eeg_level"]), str(bed),
                          str(seq0), str(t0_ms), str(model_id), str(int(cfg["lossless"])), str(cfg["audit_every"])],
                         input=np.stack([ecg, eeg], 1).astype("<f8").tobytes(), capture_output=True, check=True).stdout
    return _parse_dd(out)


def _parse_dd(out: bytes):
    """host_dd's output -> (frames, the edge's record per window)."""
    frames, recs, i = [], [], 0
    while i < len(out):
        n = int.from_bytes(out[i:i + 4], "little")
        frames.append(out[i + 4:i + 4 + n])
        i += 4 + n
        recs.append(np.frombuffer(out, DD_RECORD, count=1, offset=i)[0])
        i += DD_RECORD.itemsize
    return frames, np.array(recs, DD_RECORD)


def _ecg_eeg(data_dir, record: str, windows: int) -> tuple[np.ndarray, np.ndarray]:
    from wardstream.datasets import load_eegmat, load_mitdb

    ecg = np.asarray(load_mitdb(data_dir, record).ecg_mv[: windows * 256], np.float64).reshape(windows, 256)
    eeg = np.resize(np.asarray(load_eegmat(data_dir, [25])[0].eeg_uv[0], np.float64), windows * 256)
    return ecg, eeg.reshape(windows, 256)


@pytest.mark.parametrize("record, dd, lossless, audit_every, windows", [
    ("203", -1, True, 40, 150),   # picks its level per window: raw windows (lossless), VQ levels, audit bursts
    ("208", 1, True, 12, 80),     # the main job's device: level 1 and its predicted error
    ("105", 5, False, 0, 60),     # the coarsest level, raw sections not lossless
])
def test_a_c_device_with_the_dynamic_deep_edge_sends_the_simulated_devices_frames(host_dd, blob_path, codec, data_dir,
                                                                                  monkeypatch, record, dd, lossless,
                                                                                  audit_every, windows):
    """The Dynamic-Deep edge in C (`firmware/encoder/ws_dd.c`): every level's indices and the
    distortion features, their history, the streaming QRS detector's task features, the error
    predictor, the level chosen under the deployed bound (or a fixed level and its predicted
    error), raw windows lossless-coded and audit bursts — the predictor's 29 inputs, the levels,
    the predicted-error codes and every frame equal the simulated device's (the integer encoder)
    bit for bit, and every frame decodes."""
    from stream.wire import Modality, decode_frame, in_burst
    from wardmodels.predictor import Predictor
    from wardstream.bench_firmware import simulated_device

    seen = []
    predict = Predictor.predict

    def recording(self, feats):
        seen.append(np.array(feats))
        return predict(self, feats)

    monkeypatch.setattr(Predictor, "predict", recording)
    ecg, eeg = _ecg_eeg(data_dir, record, windows)
    cfg = {"dd": dd, "level": max(dd, 1), "eeg_level": 2 if dd < 0 else min(dd, codec.stages), "lossless": lossless,
           "audit_every": audit_every, "bound": 0.0}
    t0 = 1_800_000_000_000
    frames, rec = run_host_dd(host_dd, blob_path, ecg, eeg, cfg, 3, 11, t0, codec.model_id)
    ref, levels, codes = simulated_device(codec, cfg, ecg, eeg, bed=3, seq0=11, t0_ms=t0)
    assert len(frames) == len(ref) == windows
    assert np.array_equal(rec["features"], np.concatenate(seen)), "the predictor's inputs differ"
    assert np.array_equal(rec["level"], levels) and np.array_equal(rec["code"], codes)
    assert frames == ref
    decoded = [decode_frame(f) for f in frames]
    assert [f.seq for f in decoded] == list(range(11, 11 + windows))
    if dd < 0:  # the record exercises the choice: raw windows and several VQ levels
        assert (levels == 0).any() and len(set(levels.tolist()) - {0}) >= 2
        # a raw window right after a codec-level one carries the front end's state, no other does
        after = [k > 0 and levels[k] == 0 and levels[k - 1] > 0 for k in range(windows)]
        assert any(after)
        assert [f.channel(Modality.ECG).zi is not None for f in decoded] == after
    else:
        assert (levels == dd).all()
    # audit bursts: the windows `in_burst` names carry the ECG as the encoder saw it
    assert [f.reference is not None for f in decoded] == [in_burst(q, 3, audit_every) for q in range(11, 11 + windows)]
    assert any(f.reference is not None for f in decoded) == bool(audit_every)
    # with the reference, the id of the predictor that made the prediction (the blob's)
    assert [f.predictor_id for f in decoded] == [codec.predictor.digest if f.reference is not None else None
                                                 for f in decoded]


def test_a_version_4_blob_still_runs_and_sends_no_predictor_id(host_dd, blob_path, codec, data_dir, tmp_path):
    """Devices flashed before blob version 5 hold no predictor id: the loader reads them, and their
    audit frames are today's without flag bit 7 and its 6 bytes (the worker then audits them with
    the ward's predictor); a version 5 blob whose id padding is not zero is refused."""
    import struct

    from stream.wire import FLAG_PREDICTOR, PREDICTOR_ID_BYTES, decode_frame

    v5 = blob_path.read_bytes()
    assert struct.unpack_from("<i", v5, 4)[0] == 5 and v5[-16:-10] == bytes.fromhex(codec.predictor.digest)
    v4 = tmp_path / "v4.wse"
    v4.write_bytes(_resealed(v5[:4] + struct.pack("<i", 4) + v5[8:-16]))
    ecg, eeg = _ecg_eeg(data_dir, "208", 12)
    cfg = {"dd": 1, "level": 1, "eeg_level": 1, "lossless": True, "audit_every": 6, "bound": 0.0}
    new, _ = run_host_dd(host_dd, blob_path, ecg, eeg, cfg, 3, 0, 1_800_000_000_000, codec.model_id)
    old, _ = run_host_dd(host_dd, v4, ecg, eeg, cfg, 3, 0, 1_800_000_000_000, codec.model_id)
    with_id = [f[1] & FLAG_PREDICTOR != 0 for f in new]
    assert any(with_id) and not any(f[1] & FLAG_PREDICTOR for f in old)
    for a, b, has in zip(new, old, with_id):
        da, db = decode_frame(a), decode_frame(b)
        assert da.channels == db.channels and da.reference == db.reference and db.predictor_id is None
        assert len(a) - len(b) == (PREDICTOR_ID_BYTES if has else 0)
    bad = tmp_path / "pad.wse"
    bad.write_bytes(_resealed(v5[:-10] + b"\x01\x00"))
    r = subprocess.run([str(host_dd), str(bad), "0", "-1", "2", "1", "0", "0", "5", "1", "0"],
                       input=np.zeros(512, "<f8").tobytes(), capture_output=True)
    assert r.returncode == 2 and "predictor id padding" in r.stderr.decode(), r.stderr


def test_a_blob_without_the_dynamic_deep_part_is_refused_by_the_dd_device(host_dd, codec, tmp_path):
    p = tmp_path / "plain.wse"
    p.write_bytes(blob(codec.edge))
    r = subprocess.run([str(host_dd), str(p), "0", "-1", "2", "1", "0", "0", "5", "1", "0"],
                       input=np.zeros(512, "<f8").tobytes(), capture_output=True)
    assert r.returncode == 2 and "no Dynamic-Deep part" in r.stderr.decode()
    good = device_blob(codec)
    q = tmp_path / "cut.wse"
    q.write_bytes(_resealed(good[:-8][:-64]))  # past the CRC: the loader finds the missing part
    r = subprocess.run([str(host_dd), str(q), "0", "-1", "2", "1", "0", "0", "5", "1", "0"],
                       input=np.zeros(512, "<f8").tobytes(), capture_output=True)
    assert r.returncode == 2 and "QRS filter" in r.stderr.decode(), r.stderr


@pytest.fixture(scope="module")
def host_dd_sanitized(tmp_path_factory) -> Path:
    return build_host("host_dd.c", tmp_path_factory.mktemp("fw") / "host_dd_san",
                      ("-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"))


def _sanitizer_report(stderr: bytes) -> bool:
    err = stderr.decode(errors="replace")
    return "runtime error" in err or "Sanitizer" in err


def test_the_c_device_runs_clean_under_the_address_and_undefined_behaviour_sanitizers(codec, blob_path, data_dir,
                                                                                      host_dd_sanitized):
    """The whole device (the Dynamic-Deep edge choosing its level, and at a fixed level; lossless raw,
    audits, a key) built with AddressSanitizer and UndefinedBehaviorSanitizer, on windows with NaN,
    infinities, absurd values, silence and rail-to-rail noise: no report, every window framed."""
    exe = host_dd_sanitized
    ecg, eeg = _ecg_eeg(data_dir, "203", 60)
    ecg, eeg = ecg.copy(), eeg.copy()
    ecg[5, 10:20], ecg[9, :3], ecg[14, 100], ecg[20:22] = np.nan, np.inf, -np.inf, 1e12
    ecg[30:33], ecg[40] = 0.0, np.random.default_rng(1).uniform(-1e9, 1e9, 256)
    eeg[7, :5], eeg[30, 0], eeg[50:52] = np.nan, np.inf, 0.0
    for dd, eeg_level in ((-1, 2), (1, 1), (5, 2)):
        r = subprocess.run([str(exe), str(blob_path), "0", str(dd), str(eeg_level), "4", "0", "1800000000000",
                            str(codec.model_id), "1", "7", "00ff11"],
                           input=np.stack([ecg, eeg], 1).astype("<f8").tobytes(), capture_output=True)
        assert r.returncode == 0 and not _sanitizer_report(r.stderr) and not r.stderr, r.stderr.decode()[:2000]
        frames, _ = _parse_dd(r.stdout)
        assert len(frames) == 60


def test_a_corrupted_blob_past_its_crc_is_refused_or_runs_without_undefined_behaviour(blob_path, host_dd_sanitized,
                                                                                     tmp_path):
    """Blobs with 1–3 bytes changed and their CRC made to match (what only a faulty exporter could
    produce), half of the changes in the headers at either end: the sanitized device refuses each
    (exit 2, the part named) or runs it, never with a sanitizer report."""
    body = blob_path.read_bytes()[:-8]
    rng = np.random.default_rng(7)
    raw = np.random.default_rng(1).standard_normal((3, 2, 256)).astype("<f8").tobytes()
    codes = []
    for i in range(40):
        b = bytearray(body)
        for _ in range(int(rng.integers(1, 4))):
            ends = rng.random() < 0.5
            pos = int(rng.choice([rng.integers(0, 256), rng.integers(len(b) - 4096, len(b))]) if ends
                      else rng.integers(0, len(b)))
            b[pos] ^= 1 << int(rng.integers(0, 8))
        p = tmp_path / "fz.wse"
        p.write_bytes(_resealed(bytes(b)))
        r = subprocess.run([str(host_dd_sanitized), str(p), "0", "-1", "2", "1", "0", "1800000000000", "5", "1", "3",
                            "00ff"], input=raw, capture_output=True)
        assert r.returncode in (0, 1, 2) and not _sanitizer_report(r.stderr), (i, r.stderr.decode()[:2000])
        codes.append(r.returncode)
    assert codes.count(2) >= 2 and codes.count(0) >= 10, codes  # both outcomes exercised
