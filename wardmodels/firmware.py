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
        [pad] f64 sos[n_sections][6]   [pad] f64 zi[n_sections][2] (the filter's state at rest for a
        unit input: `sosfilt_zi`)   [pad] f32 scale[256] (the value of each scale code, as
        `scale_value` rounds it)
      the wire tables of its level-1 section (`wardmodels.wire_tables`; level 2 codes with level
        1's first stage): [pad] i32 n_stages (0: sections travel bit-packed)  i32 k
        u8 scale_row[256]   per stage: i32 positions  u8 row[k]   (single-row u8 frequencies)
    [pad to 8]

The arithmetic is `wardmodels.int8`'s and `wardmodels.frontend`'s; the entropy coder's tables are
not in this blob (the C encoder produces indices; coding them is `wardmodels.entropy`'s, not yet
in C).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from wardmodels.int8 import Int8Encoder, Int8Modality

MAGIC = b"WSE1"
VERSION = 3


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

    sos = band_sos()
    out.pad()
    out.i32(len(sos), SCALE_STEPS_PER_OCTAVE)
    out.b += struct.pack("<d", SCALE_LOG2_MIN[name])
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


def blob(edge: Int8Encoder, coding: dict | None = None, modalities: tuple[str, ...] = ("ecg", "eeg")) -> bytes:
    """``coding``: the wire model's section tables (`stream.wire.CodecSpec.coding`: {(modality id,
    level): SectionModel}); without them the device sends its sections bit-packed."""
    out = _Blob()
    out.b += MAGIC
    out.b += struct.pack("<3I", VERSION, len(modalities), 0)
    for mod_id, name in enumerate(modalities):
        _modality(out, name, edge.modalities[name])
        _front_end(out, name)
        _wire_tables(out, (coding or {}).get((mod_id, 1)))
    out.pad()
    return bytes(out.b)


def device_blob(codec) -> bytes:
    """The blob of a deployed codec (`runtime.DeployedCodec`) with its wire tables."""
    from stream.wire import REGISTRY
    from wardmodels.wire_codec import register_deployed

    register_deployed()
    return blob(codec.edge, REGISTRY[codec.model_id].coding)


def export(codec, out: Path) -> dict:
    """`wardstream export firmware`: a deployed codec's device blob, and what it holds."""
    edge = codec.edge
    data = device_blob(codec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return {"blob": str(out), "bytes": len(data), "edge": codec.entry["edge"], "wire_tables": codec.entry.get("wire_tables"),
            "modalities": {m: {"convolutions": len(edge.modalities[m].convs),
                               "codebook_stages": len(edge.modalities[m].codebooks)} for m in ("ecg", "eeg")},
            "encoder_bytes_without_entropy_tables": edge.nbytes() - edge.prior_nbytes()}


# ------------------------------------------------------------------ the Cortex-M7 build, under QEMU

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
M7_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard", "-O2", "-std=c11",
            "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections",
            "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]
SYSTICK_HZ = 25_000_000  # the mps2 board clock SysTick counts; with -icount shift=0, 1 instruction = 1 ns
PAIR_RECORD = np.dtype([("idx", "<u2", (2, 64)), ("code", "u1", (2,)), ("frame_len", "<u2"), ("ticks", "<u4", (5,)),
                        ("frame", "u1", (256,))])


class ToolchainMissing(RuntimeError):
    pass


def _tool(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path is None:
        raise ToolchainMissing(f"{name} not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                               "qemu-system-arm (./ward bench firmware installs them)")
    return path


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
                    *(str(FIRMWARE / "encoder" / f) for f in ("ws_encoder.c", "ws_arith.c", "ws_frame.c", "ws_sha256.c")),
                    "-lm"],
                   check=True, capture_output=True, text=True)
    size = subprocess.run([_tool("arm-none-eabi-size"), "-A", str(elf)], check=True, capture_output=True, text=True).stdout
    sections = {ln.split()[0]: int(ln.split()[1]) for ln in size.splitlines() if ln.startswith(".")}
    return {"elf": elf, "text_bytes": sections.get(".text", 0) + sections.get(".isr_vector", 0),
            "bss_bytes": sections.get(".bss", 0)}


def run_m7(elf: Path, blob_bytes: bytes, ecg_raw: np.ndarray, eeg_raw: np.ndarray, work: Path, level: int = 1,
           bed: int = 1, seq0: int = 0, t0_ms: int = 1_800_000_000_000, model_id: int = 0,
           timeout_s: float = 600) -> dict:
    """Run the device on the emulated Cortex-M7: two raw streams (ECG in mV, EEG in µV), cut into
    (N, 256) consecutive windows, through the front end, the encoder at a base codec ``level`` and
    the wire frame -> {"ecg": (scale codes (N,), indices (N, 2, 32): the level's stages first),
    "eeg": the same, "frames": [bytes] (N), "instructions": (N, 5: ECG front end, ECG encode, EEG
    front end, EEG encode, the frame), "ram": the RAM the encoder needs beside its stack} —
    instructions from SysTick under ``-icount shift=0``."""
    import struct
    import subprocess

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "edge.wse").write_bytes(blob_bytes)
    (work / "params.bin").write_bytes(struct.pack("<IIIIQ", level, bed, seq0, model_id, t0_ms))
    np.stack([ecg_raw, eeg_raw], 1).astype("<f8").tofile(work / "raw.f64")
    (work / "out.bin").unlink(missing_ok=True)
    r = subprocess.run([_tool("qemu-system-arm"), "-M", "mps2-an500", "-cpu", "cortex-m7", "-nographic",
                        "-monitor", "none", "-serial", "none", "-semihosting-config", "enable=on,target=native",
                        "-icount", "shift=0", "-kernel", str(Path(elf).resolve())],
                       cwd=work, capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0:
        raise RuntimeError(f"the M7 run failed ({r.returncode}): {r.stdout.strip()} {r.stderr.strip()}")
    raw = (work / "out.bin").read_bytes()
    scratch, enc_struct = np.frombuffer(raw[:8], "<u4")
    rec = np.frombuffer(raw[8:], PAIR_RECORD)
    if len(rec) != len(ecg_raw):
        raise RuntimeError(f"the M7 run encoded {len(rec)} of {len(ecg_raw)} window pairs")
    return {"ecg": (rec["code"][:, 0], rec["idx"][:, 0].reshape(-1, 2, 32).astype(np.int64)),
            "eeg": (rec["code"][:, 1], rec["idx"][:, 1].reshape(-1, 2, 32).astype(np.int64)),
            "frames": [bytes(f[:n]) for f, n in zip(rec["frame"], rec["frame_len"])],
            "instructions": rec["ticks"].astype(np.int64) * (1_000_000_000 // SYSTICK_HZ),
            "ram": {"scratch": int(scratch), "encoder_struct": int(enc_struct)}}


def python_device(edge: Int8Encoder, modality: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the simulated device computes for one raw stream cut into (N, 256) windows: its own
    causal filter (`StreamFilter`), the scale code and the integer encoder -> (codes, indices (N, 2, 32))."""
    from wardmodels.frontend import StreamFilter, normalise

    f = StreamFilter()
    y = np.stack([f(w) for w in np.asarray(raw, np.float64)])
    x, codes = normalise(y, modality)
    return codes, edge.encode(modality, x)
