"""The edge encoder's parameters as one blob the C firmware reads in place (`firmware/encoder/`).

``WSE1`` blob, little-endian; every array starts at a multiple of 8 bytes from the blob's start
(zero padding before it), so a device keeps the blob in flash and points into it::

    "WSE1"  u32 version = 1  u32 modalities  u32 0
    per modality:
      char name[8] (NUL-padded: "ecg", "eeg")
      i32 act_bits  i32 p  f32 inv_sx  i32 n_conv  i32 n_add  i32 n_cb  i32 K  i32 D
      per convolution (n_conv = 3 n_add + 1: each stage's stride-2, residual 1, residual 2, then the
      1x1 projection):
        i32 out_ch  i32 in_ch  i32 k  i32 stride
        [pad] i8 w[out_ch][in_ch][k]   [pad] i64 b[out_ch]   [pad] i32 m_pos[out_ch]   [pad] i8 shift[out_ch]
      per add:  [pad] i64 ma  i64 mb  i32 shift  i32 0
      per codebook stage:  [pad] i32 q  i32 0  [pad] i8 e[K][D]
      the front end (`wardmodels.frontend`): [pad] i32 n_sections  i32 steps_per_octave  f64 log2_min
        (version 4: f64 input_limit, `wire_codec.INPUT_LIMITS`: the input is clipped to it)
        [pad] f64 sos[n_sections][6]   [pad] f64 zi[n_sections][2] (the filter's state at rest for a
        unit input: `sosfilt_zi`)   [pad] f32 scale[256] (the value of each scale code, as
        `scale_value` rounds it)
      the wire tables of its level-1 section (`wardmodels.wire_tables`; level 2 codes with level
        1's first stage): [pad] i32 n_stages (0: sections travel bit-packed)  i32 k
        u8 scale_row[256]   per stage: i32 positions  u8 row[k]   (single-row u8 frequencies)
      version 4, the Dynamic-Deep level chain (`wardmodels.dd_edge.IntChain`; levels 3, 4, 5):
        [pad] i32 n_chain (0: none)  i32 p_in
        per chain layer: i32 out_ch  i32 in_ch  i32 k  i32 stride  i32 p_out  i32 q  i32 K  i32 0
          [pad] i8 w[out_ch][in_ch][k]  [pad] i64 b  [pad] i32 m_pos  [pad] i8 shift  [pad] i8 e[K][out_ch]
          [pad] i32 n_stages (0 or 1: the level's wire table)  i32 k  u8 scale_row[256]  i32 positions  u8 row[k]
    version 4, after the modalities, the edge error predictor (`wardmodels.predictor.Predictor`)
    and the constants of the device's QRS detector (`processors.qrs`, `wardmodels.dd_edge.TaskStream`):
      [pad] i32 n_in (0: none; then nothing follows)  i32 hidden  i32 n_levels  i32 n_bounds
      [pad] f32 mu[n_in]  sd[n_in]  w1[hidden][n_in]  b1[hidden]  w2[n_levels][hidden]  b2[n_levels]
        offsets[n_levels]
      [pad] f64 bounds[n_bounds]  lams[n_bounds]  deployed_bound
      [pad] f64 qrs_b[5]  qrs_a[5]  qrs_zi[4] (`processors.dsp.bandpass_ba(5, 18, 128)`)
      version 5: u8 predictor_id[6] (`Predictor.digest`, the hash in its file name, sent with the
        audit references: wire flag bit 7)  u8 0 0
    [pad to 8]
    from version 4: u32 crc32 of every byte before it (zlib's), u32 0 — the loader refuses a blob whose
    CRC does not match (parameters corrupted in flash or in transit)

The arithmetic is `wardmodels.int8`'s and `wardmodels.frontend`'s; the entropy coder's tables are
not in this blob (the C encoder produces indices; coding them is `wardmodels.entropy`'s, not yet
in C).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from wardmodels.int8 import Int8Encoder, Int8Modality

MAGIC = b"WSE1"
VERSION = 5  # 3: without the Dynamic-Deep part; 4: without the predictor's id (the C loader reads all three)


class _Blob:
    def __init__(self) -> None:
        self.b = bytearray()

    def pad(self) -> None:
        self.b += b"\0" * (-len(self.b) % 8)

    def i32(self, *vs: int) -> None:
        self.b += struct.pack(f"<{len(vs)}i", *vs)

    def array(self, a: np.ndarray, dtype: str) -> None:
        self.pad()
        self.b += np.ascontiguousarray(a, dtype=dtype).tobytes()


def _modality(out: _Blob, name: str, m: Int8Modality) -> None:
    if len(m.convs) != 3 * len(m.adds) + 1:
        raise ValueError(f"{name}: {len(m.convs)} convolutions for {len(m.adds)} stages")
    k, d = m.codebooks[0].shape
    out.b += name.encode().ljust(8, b"\0")[:8]
    out.i32(m.act_bits, m.p)
    out.b += struct.pack("<f", float(m.inv_sx))
    out.i32(len(m.convs), len(m.adds), len(m.codebooks), k, d)
    for c in m.convs:
        w = np.asarray(c["w"])
        out.i32(*w.shape, int(c["stride"]))
        out.array(w, "<i1")
        out.array(c["b"], "<i8")
        out.array(c["m_pos"], "<i4")
        out.array(c["shift"], "<i1")
    for a in m.adds:
        out.pad()
        out.b += struct.pack("<qqii", int(a["ma"]), int(a["mb"]), int(a["shift"]), 0)
    for cb, q in zip(m.codebooks, m.cb_exp):
        if cb.shape != (k, d):
            raise ValueError(f"{name}: codebook stages differ in shape")
        out.pad()
        out.i32(int(q), 0)
        out.array(cb, "<i1")


def _front_end(out: _Blob, name: str) -> None:
    from scipy.signal import sosfilt_zi

    from wardmodels.frontend import SCALE_BITS, SCALE_LOG2_MIN, SCALE_STEPS_PER_OCTAVE, band_sos, scale_value

    from wardmodels.wire_codec import INPUT_LIMITS

    sos = band_sos()
    out.pad()
    out.i32(len(sos), SCALE_STEPS_PER_OCTAVE)
    out.b += struct.pack("<dd", SCALE_LOG2_MIN[name], INPUT_LIMITS[name])
    out.array(sos, "<f8")
    out.array(sosfilt_zi(sos), "<f8")
    out.array(scale_value(np.arange(2 ** SCALE_BITS), name), "<f4")


def _wire_tables(out: _Blob, section) -> None:
    """``section``: the `stream.vqcode.SectionModel` of the modality's level 1, or None."""
    out.pad()
    if section is None:
        out.i32(0, 0)
        return
    if any(st.ctx_map.size or st.cum.shape[0] != 1 for st in section.stages):
        raise ValueError("the firmware codes single-row tables only (wire tables fitted with --context-classes 0)")
    k = section.stages[0].codebook_size
    out.i32(len(section.stages), k)
    out.b += np.diff(section.scale_cum).astype(np.uint8).tobytes()
    for st in section.stages:
        out.i32(st.positions)
        out.b += np.diff(st.cum[0]).astype(np.uint8).tobytes()


def _one_table(out: _Blob, section) -> None:
    """A Dynamic-Deep level's wire table: one stage of single-row u8 frequencies, or none."""
    out.pad()
    if section is None:
        out.i32(0, 0)
        return
    if len(section.stages) != 1 or section.stages[0].ctx_map.size or section.stages[0].cum.shape[0] != 1:
        raise ValueError("the firmware codes a chain level with one single-row stage only")
    st = section.stages[0]
    out.i32(1, st.codebook_size)
    out.b += np.diff(section.scale_cum).astype(np.uint8).tobytes()
    out.i32(st.positions)
    out.b += np.diff(st.cum[0]).astype(np.uint8).tobytes()


def _chain(out: _Blob, chain, mod_id: int, coding: dict | None) -> None:
    """``chain``: the modality's `wardmodels.dd_edge.IntChain`, or None."""
    out.pad()
    if chain is None:
        out.i32(0, 0)
        return
    out.i32(len(chain.convs), chain.p_in)
    for i, c in enumerate(chain.convs):
        w, cb = np.asarray(c["w"]), np.asarray(chain.codebooks[i])
        if cb.shape[1] != w.shape[0] or w.shape[2] != 3:
            raise ValueError("a chain layer is a 3-tap convolution whose width is its codebook's")
        out.i32(*w.shape, 2, int(c["p_out"]), int(chain.cb_exp[i]), cb.shape[0], 0)
        out.array(w, "<i1")
        out.array(c["b"], "<i8")
        out.array(c["m_pos"], "<i4")
        out.array(c["shift"], "<i1")
        out.array(cb, "<i1")
        _one_table(out, (coding or {}).get((mod_id, 3 + i)))


def _predictor(out: _Blob, pr) -> None:
    from processors.dsp import bandpass_ba

    out.pad()
    if pr is None:
        out.i32(0, 0, 0, 0)
        return
    out.i32(pr.n_in, pr.w1.shape[0], pr.w2.shape[0], len(pr.bounds))
    for a in (pr.mu, pr.sd, pr.w1, pr.b1, pr.w2, pr.b2):
        out.b += np.ascontiguousarray(a, "<f4").tobytes()
    out.array(pr.offsets, "<f4")
    out.array(pr.bounds, "<f8")
    out.array(pr.lams, "<f8")
    out.b += struct.pack("<d", float(pr.meta.get("deployed_bound", 0.0)))
    b, a, zi = bandpass_ba(5.0, 18.0, 128)
    if len(b) != 5 or len(a) != 5:
        raise ValueError("the QRS detector's band-pass is a 4th-order filter")
    out.array(np.concatenate([b, a, zi]), "<f8")
    out.b += bytes.fromhex(pr.digest) + bytes(2)


def blob(edge: Int8Encoder, coding: dict | None = None, modalities: tuple[str, ...] = ("ecg", "eeg"),
         chains: dict | None = None, predictor=None) -> bytes:
    """``coding``: the wire model's section tables (`stream.wire.CodecSpec.coding`: {(modality id,
    level): SectionModel}); without them the device sends its sections bit-packed. ``chains``
    ({modality: IntChain}) and ``predictor``: a Dynamic-Deep codec's edge part (version 4)."""
    out = _Blob()
    out.b += MAGIC
    out.b += struct.pack("<3I", VERSION, len(modalities), 0)
    for mod_id, name in enumerate(modalities):
        _modality(out, name, edge.modalities[name])
        _front_end(out, name)
        _wire_tables(out, (coding or {}).get((mod_id, 1)))
        _chain(out, (chains or {}).get(name), mod_id, coding)
    _predictor(out, predictor)
    out.pad()
    out.b += struct.pack("<II", zlib.crc32(bytes(out.b)), 0)  # the trailer: a corrupted blob is refused
    return bytes(out.b)


def device_blob(codec) -> bytes:
    """The blob of a deployed codec (`runtime.DeployedCodec`) with its wire tables."""
    from stream.wire import REGISTRY
    from wardmodels.wire_codec import register_deployed

    register_deployed()
    return blob(codec.edge, REGISTRY[codec.model_id].coding, chains=codec.chains, predictor=codec.predictor)


def export(codec, out: Path) -> dict:
    """`wardstream export firmware`: a deployed codec's device blob, and what it holds."""
    edge = codec.edge
    data = device_blob(codec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    chains = codec.chains or {}
    return {"blob": str(out), "bytes": len(data), "version": VERSION, "edge": codec.entry["edge"],
            "wire_tables": codec.entry.get("wire_tables"),
            "dynamic_deep": {"chains": codec.entry.get("dd_edge"), "predictor": codec.entry.get("predictor"),
                             "predictor_inputs": codec.predictor.n_in if codec.predictor is not None else None,
                             "deployed_bound": codec.predictor.meta.get("deployed_bound")
                             if codec.predictor is not None else None} if codec.chains is not None else None,
            "modalities": {m: {"convolutions": len(edge.modalities[m].convs),
                               "codebook_stages": len(edge.modalities[m].codebooks),
                               "chain_levels": len(chains[m].convs) if m in chains else 0} for m in ("ecg", "eeg")},
            "encoder_bytes_without_entropy_tables": edge.nbytes() - edge.prior_nbytes()}


# ------------------------------------------------------------------ the Cortex-M7 build, under QEMU

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
# the device's C sources (`firmware/encoder/`), what every build links
DEVICE_SOURCES = ("ws_encoder.c", "ws_arith.c", "ws_frame.c", "ws_sha256.c", "ws_lossless.c", "ws_dd.c", "ws_device.c",
                  "ws_control.c")
HOST_FLAGS = ["-O2", "-std=c11", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror"]
M7_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard", "-O2", "-std=c11",
            "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections",
            "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]
SYSTICK_HZ = 25_000_000  # the mps2 board clock SysTick counts; with -icount shift=0, 1 instruction = 1 ns
PAIR_RECORD = np.dtype([("idx", "<u2", (2, 64)), ("code", "u1", (2,)), ("frame_len", "<u2"), ("level", "u1"),
                        ("pred_code", "u1"), ("reserved", "<u2"), ("ticks", "<u4", (8,))])  # then frame_len bytes
STEPS = ("ecg_front_end", "ecg_encode", "ecg_task_features", "ecg_predict_and_choose", "eeg_front_end", "eeg_encode",
         "frame")


class ToolchainMissing(RuntimeError):
    pass


def _tool(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path is None:
        raise ToolchainMissing(f"{name} not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                               "qemu-system-arm (./ward bench firmware installs them)")
    return path


def build_host(harness: str, out: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile a host harness of `firmware/encoder/` (``host_device.c``, ``host_dd.c``, ...) with the
    device's sources and the firmware's flags (C11, no fused multiply-add, warnings as errors),
    plus ``extra_flags`` (say, the sanitizers)."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ToolchainMissing("a C compiler is needed (./ward test installs Debian's gcc)")
    src = FIRMWARE / "encoder"
    subprocess.run([cc, *HOST_FLAGS, *extra_flags, "-o", str(out), str(src / harness),
                    *(str(src / f) for f in DEVICE_SOURCES), "-lm"],
                   check=True, capture_output=True, text=True)
    return Path(out)


def build_m7(out_dir: Path) -> dict:
    """Compile `firmware/m7/bench_main.c` with the encoder for QEMU's mps2-an500 (Cortex-M7):
    -> {"elf": path, "text_bytes": code + constants, "bss_bytes": ...}."""
    import subprocess

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    elf = out_dir / "enc-m7.elf"
    m7 = FIRMWARE / "m7"
    subprocess.run([_tool("arm-none-eabi-gcc"), *M7_FLAGS, "-T", str(m7 / "link.ld"), "-o", str(elf),
                    str(m7 / "startup.c"), str(m7 / "bench_main.c"),
                    *(str(FIRMWARE / "encoder" / f) for f in DEVICE_SOURCES),
                    "-lm"],
                   check=True, capture_output=True, text=True)
    size = subprocess.run([_tool("arm-none-eabi-size"), "-A", str(elf)], check=True, capture_output=True, text=True).stdout
    sections = {ln.split()[0]: int(ln.split()[1]) for ln in size.splitlines() if ln.startswith(".")}
    return {"elf": elf, "text_bytes": sections.get(".text", 0) + sections.get(".isr_vector", 0),
            "bss_bytes": sections.get(".bss", 0)}


def run_m7(elf: Path, blob_bytes: bytes, ecg_raw: np.ndarray, eeg_raw: np.ndarray, work: Path, level: int = 1,
           bed: int = 1, seq0: int = 0, t0_ms: int = 1_800_000_000_000, model_id: int = 0,
           dd: int | None = None, eeg_level: int = 2, lossless: bool = False, audit_every: int = 0,
           bound: float = 0.0, timeout_s: float = 600) -> dict:
    """Run the device on the emulated Cortex-M7: two raw streams (ECG in mV, EEG in µV), cut into
    (N, 256) consecutive windows, through the front end, the encoder at a base codec ``level`` and
    the wire frame — or, with ``dd`` (-1: the level picked per window under ``bound``, 0 the
    blob's deployed one; 0..5: that ECG level with its predicted error), through the Dynamic-Deep
    edge (`firmware/encoder/ws_dd.h`), EEG at ``eeg_level`` -> {"ecg": (scale codes (N,), indices
    (N, 2, 32): the level's stages first; a Dynamic-Deep device: level 1's), "eeg": the same,
    "frames": [bytes] (N), "levels", "pred_codes" (N,) (255 without the Dynamic-Deep edge),
    "instructions": (N, 7: `STEPS`), "ram": the RAM the device needs beside its stack} —
    instructions from SysTick under ``-icount shift=0``."""
    import struct
    import subprocess

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "edge.wse").write_bytes(blob_bytes)
    (work / "params.bin").write_bytes(struct.pack("<IIIIQiIIId", level, bed, seq0, model_id, t0_ms,
                                                  -2 if dd is None else dd, eeg_level, int(lossless), audit_every,
                                                  bound))
    np.stack([ecg_raw, eeg_raw], 1).astype("<f8").tofile(work / "raw.f64")
    (work / "out.bin").unlink(missing_ok=True)
    r = subprocess.run([_tool("qemu-system-arm"), "-M", "mps2-an500", "-cpu", "cortex-m7", "-nographic",
                        "-monitor", "none", "-serial", "none", "-semihosting-config", "enable=on,target=native",
                        "-icount", "shift=0", "-kernel", str(Path(elf).resolve())],
                       cwd=work, capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0:
        raise RuntimeError(f"the M7 run failed ({r.returncode}): {r.stdout.strip()} {r.stderr.strip()}")
    raw = (work / "out.bin").read_bytes()
    scratch, dd_work, enc_struct, device, blob_buffer = (int(v) for v in np.frombuffer(raw[:20], "<u4"))
    recs, frames, pos = [], [], 20
    while pos < len(raw):
        rec = np.frombuffer(raw, PAIR_RECORD, count=1, offset=pos)[0]
        pos += PAIR_RECORD.itemsize
        frames.append(raw[pos:pos + int(rec["frame_len"])])
        pos += int(rec["frame_len"])
        recs.append(rec)
    if len(recs) != len(ecg_raw):
        raise RuntimeError(f"the M7 run encoded {len(recs)} of {len(ecg_raw)} window pairs")
    rec = np.array(recs, PAIR_RECORD)
    return {"ecg": (rec["code"][:, 0], rec["idx"][:, 0].reshape(-1, 2, 32).astype(np.int64)),
            "eeg": (rec["code"][:, 1], rec["idx"][:, 1].reshape(-1, 2, 32).astype(np.int64)),
            "frames": frames, "levels": rec["level"].astype(np.int64), "pred_codes": rec["pred_code"].astype(np.int64),
            "instructions": rec["ticks"][:, :len(STEPS)].astype(np.int64) * (1_000_000_000 // SYSTICK_HZ),
            "ram": {"scratch": scratch, "dd_work": dd_work, "encoder_struct": enc_struct, "device_state": device},
            "blob_buffer": blob_buffer}


def python_device(edge: Int8Encoder, modality: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the simulated device computes for one raw stream cut into (N, 256) windows: its own
    causal filter (`wire_codec.device_filters`, NaN as 0 first), the scale code and the integer
    encoder -> (codes, indices (N, 2, 32))."""
    from wardmodels.frontend import normalise
    from wardmodels.wire_codec import device_filters

    f = device_filters()[modality]
    y = np.stack([f(np.nan_to_num(w)) for w in np.asarray(raw, np.float64)])
    x, codes = normalise(y, modality)
    return codes, edge.encode(modality, x)
