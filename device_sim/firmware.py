"""Simulated beds that run the device firmware itself (``WARDSTREAM_SIM_ENCODER=firmware``).

The C device of `firmware/encoder/ws_device.h` — front end, int8 encoder, the Dynamic-Deep edge
when the codec has one, audit bursts, the v2 frame — built for this host as a shared library
(`firmware/encoder/host_lib.c`, cached under the state directory by the sources' hash) and driven
through ctypes, one C device per bed: the frames a load test sends are the firmware's own bytes,
not the Python simulator's (the two are equal byte for byte; `tests/device_sim/test_firmware_devices.py`).
Bounds and slack corrections from the control topic reach the C device before its next window, as
signed, numbered downlink control frames (`stream.downlink`) that the C device checks.
Needs a C compiler (`./ward` installs Debian's gcc) and wire format v2.
"""

from __future__ import annotations

import ctypes
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.wire import decode_frame


def _sources() -> list[Path]:
    from wardmodels.firmware import DEVICE_SOURCES, FIRMWARE

    src = FIRMWARE / "encoder"
    return [src / "host_lib.c", *(src / f for f in DEVICE_SOURCES)]


def library_path(cache_dir: Path) -> Path:
    """Build (once per version of the sources) and return the shared library."""
    from wardmodels.firmware import HOST_FLAGS, ToolchainMissing

    src = _sources()
    h = hashlib.sha256()
    for p in [*src, *sorted((src[0].parent).glob("*.h"))]:
        h.update(p.name.encode() + p.read_bytes())
    out = Path(cache_dir) / f"libwsdevice-{h.hexdigest()[:12]}.so"
    if not out.exists():
        import shutil

        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise ToolchainMissing("WARDSTREAM_SIM_ENCODER=firmware needs a C compiler (./ward installs Debian's gcc)")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run([cc, *HOST_FLAGS, "-fPIC", "-shared", "-o", str(tmp), *map(str, src), "-lm"],
                       check=True, capture_output=True, text=True)
        tmp.replace(out)
    return out


_LIBS: dict[Path, ctypes.CDLL] = {}


def _lib(path: Path) -> ctypes.CDLL:
    if path not in _LIBS:
        lib = ctypes.CDLL(str(path))
        vp, u32, u64, i, d, sz, cp = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int,
                                      ctypes.c_double, ctypes.c_size_t, ctypes.c_char_p)
        lib.wsh_model_new.restype = vp
        lib.wsh_model_new.argtypes = [cp, sz, cp, sz]
        lib.wsh_device_new.restype = vp
        lib.wsh_device_new.argtypes = [vp, u32, u32, u64, i, i, i, i, i, i, u32, d, cp, sz, cp, sz]
        lib.wsh_device_step.restype = i
        lib.wsh_device_step.argtypes = [vp, vp, vp, vp, sz]
        lib.wsh_device_control.restype = i
        lib.wsh_device_control.argtypes = [vp, cp, sz]
        lib.wsh_device_bound.restype = d
        lib.wsh_device_bound.argtypes = [vp]
        lib.wsh_device_slack.restype = d
        lib.wsh_device_slack.argtypes = [vp]
        lib.wsh_device_last_level.restype = i
        lib.wsh_device_last_level.argtypes = [vp]
        lib.wsh_device_free.argtypes = [vp]
        lib.wsh_model_free.argtypes = [vp]
        _LIBS[path] = lib
    return _LIBS[path]


class FirmwareModel:
    """One codec's parameter blob (`wardmodels.firmware.device_blob`) loaded by the C library."""

    def __init__(self, codec, cache_dir: Path):
        from wardmodels.firmware import device_blob

        self.lib = _lib(library_path(cache_dir))
        blob = device_blob(codec)
        why = ctypes.create_string_buffer(256)
        self.handle = self.lib.wsh_model_new(blob, len(blob), why, len(why))
        if not self.handle:
            raise ValueError(f"the firmware refused codec {codec.name}'s blob: {why.value.decode()}")
        self.codec = codec
        # the blob's predictor (version 5 holds its id): the default one, the only one in C
        self.predictor_id = codec.predictor.digest if codec.predictor is not None else None
        self.out = ctypes.create_string_buffer(4096)  # every frame's bytes; the devices step one at a time


@dataclass
class FirmwareEncoder:
    """A bed's firmware device, made on its first window (it needs the bed's id, clock, sequence
    number and key, which `device_sim.ward.Device` holds). ``dd``: None (a fixed-level device), -1
    (it picks its ECG level under ``bound``) or the fixed level it sends with its predicted error."""

    model: FirmwareModel
    dd: int | None
    level: int
    eeg_level: int
    _bound: float = 0.0
    _slack: float = 0.0
    _max_level: int | None = None
    handle: int | None = None
    bed_id: int = 0
    key: bytes | None = None
    counter: int = 0  # of the last downlink control frame sent
    whole_frame = True  # `Device._frame` asks it for the frame itself

    @property
    def model_id(self) -> int:
        return self.model.codec.model_id

    @property
    def name(self) -> str:
        what = {None: f"level {self.level}", -1: "dynamic"}.get(self.dd, f"level {self.dd} (error predicted)")
        return f"{self.model.codec.name} {what} (firmware)"

    @property
    def predictor_id(self) -> str | None:
        """The id of the error predictor in its blob (sent with its audit references)."""
        return self.model.predictor_id

    @property
    def last_level(self) -> int | None:
        return None if self.handle is None or self.dd is None else self.model.lib.wsh_device_last_level(self.handle)

    # the control topic's bound and slack correction (`device_sim.control`), from the next window
    @property
    def bound(self) -> float:
        return self._bound

    @bound.setter
    def bound(self, v: float) -> None:
        self._bound = float(v)
        self._push()

    @property
    def slack_offset(self) -> float:
        return self._slack

    @slack_offset.setter
    def slack_offset(self, v: float) -> None:
        self._slack = float(v)
        self._push()

    @property
    def max_level(self) -> int | None:
        """The fidelity hold's cap on the ECG level (the control topic's ``hold-`` key), or None."""
        return self._max_level

    @max_level.setter
    def max_level(self, v: int | None) -> None:
        if v != self._max_level:
            self._max_level = None if v is None else int(v)
            self._push()

    def _push(self) -> None:
        """The bound, slack and hold reach the C device as its gateway would send them: a downlink
        control frame (`stream.downlink`), signed with the device key and numbered."""
        if self.handle is None:
            return
        from stream.downlink import Control, encode_control

        self.counter += 1
        buf = encode_control(Control(self.bed_id, self.counter, self._bound, self._slack, self._max_level), self.key)
        code = self.model.lib.wsh_device_control(self.handle, buf, len(buf))
        if code != 0:
            raise RuntimeError(f"the firmware device of bed {self.bed_id} refused its control frame ({code})")

    def channels(self, ecg, eeg) -> tuple:
        return ()  # the C device encodes in `frame`, the whole frame at once

    def frame(self, dev) -> tuple[bytes, object]:
        """The next frame of `device_sim.ward.Device` ``dev`` (its ``last_window``), and the frame parsed."""
        lib = self.model.lib
        if self.handle is None:
            if dev.wire_version != 2:
                raise ValueError("firmware devices send wire format v2 only")
            key = dev.hmac_key or b""
            why = ctypes.create_string_buffer(256)
            self.handle = lib.wsh_device_new(
                self.model.handle, dev.bed_id, dev.seq, dev.clock0_us // 1000, self.model_id,
                -2 if self.dd is None else self.dd, self.level, self.eeg_level, int(dev.lossless), int(dev.coded),
                dev.audit_every, self._bound, key, len(key), why, len(why))
            if not self.handle:
                raise ValueError(f"the firmware refused the device of bed {dev.bed_id}: {why.value.decode()}")
            self.bed_id, self.key = dev.bed_id, dev.hmac_key
            self._push()
        ecg, eeg = dev.last_window
        e = np.ascontiguousarray(np.asarray(ecg, np.float64))  # NaN and infinities: the C front end's rule
        g = None if eeg is None else np.ascontiguousarray(np.asarray(eeg, np.float64))
        out = self.model.out
        n = lib.wsh_device_step(self.handle, e.ctypes.data, None if g is None else g.ctypes.data, out, len(out))
        if n < 0:
            raise RuntimeError(f"the firmware device of bed {dev.bed_id} failed ({n})")
        buf = out.raw[:n]
        dev.seq += 1
        key = dev.hmac_key
        return buf, decode_frame(buf, hmac_key_for=(lambda _bed: key) if key else None)

    def __del__(self):
        if self.handle is not None:
            self.model.lib.wsh_device_free(self.handle)
            self.handle = None


def device_options(codec, policy: str, level: int, bound: float, eeg_level: int, predictor: str) -> dict:
    """How the simulator configures a device of ``codec`` (`device_sim.ward.encoder_factory`'s
    rules), as the firmware's options: ``dd`` None (a fixed-level device without the
    Dynamic-Deep edge), -1 (it picks its ECG level under ``bound``; 0: the deployed one) or the
    fixed level a Dynamic-Deep codec's device sends with its predicted error; the EEG's level."""
    dd_codec = codec.predictor is not None and codec.chains is not None
    if policy == "dynamic" and not dd_codec:
        raise ValueError(f"codec {codec.name} has no Dynamic-Deep edge for the dynamic policy")
    if dd_codec and predictor != "default":
        raise ValueError(f"the firmware runs the default error predictor; {predictor!r} is not in C")
    if policy == "fixed" and not 1 <= level <= (5 if dd_codec else codec.stages):
        raise ValueError(f"level {level} is not a codec level the firmware sends")
    if policy == "dynamic":
        return {"dd": -1, "level": level, "eeg_level": eeg_level, "bound": float(bound)}
    if dd_codec:
        return {"dd": level, "level": level, "eeg_level": level if level <= codec.stages else eeg_level, "bound": 0.0}
    return {"dd": None, "level": level, "eeg_level": level, "bound": 0.0}


def firmware_factory(model_id: int, level: int, policy: str, bound: float, eeg_level: int, predictor: str,
                     cache_dir: Path):
    """`device_sim.ward.encoder_factory` for ``encoder="firmware"``: per-bed C devices configured as
    the Python ones would be (`device_options`)."""
    from wardmodels import runtime

    codec = runtime.load_deployed(model_id)
    o = device_options(codec, policy, level, bound, eeg_level, predictor)
    model = FirmwareModel(codec, cache_dir)
    b = (o["bound"] or float(codec.predictor.meta["deployed_bound"])) if o["dd"] == -1 else 0.0
    return lambda: FirmwareEncoder(model, o["dd"], o["level"], o["eeg_level"], b)
