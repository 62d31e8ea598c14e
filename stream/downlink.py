"""Downlink control frames: a device's Dynamic-Deep bound and slack correction, cloud to device.

The simulated devices follow the control topic directly (`device_sim.control`); a real device
hears it from its gateway, over a link anyone near the ward could talk on. A forged bound would
make a device send coarser windows than the ward chose, so the frame is authenticated with the
device's own key (the one that signs its uplink frames, `Settings.device_key`) and carries a
counter the device must see increase, so a recorded frame cannot be played back. The firmware
parses it in C (`firmware/encoder/ws_control.c`, byte for byte this layout); the simulator's
firmware devices receive every bound change this way (`device_sim.firmware`).

Layout (big-endian)::

    tag      u8 = 0xC1
    flags    u8 (bit 0: HMAC tag after the CRC; bit 1: a fidelity hold, ``max_level`` below; no
                 other bit is defined)
    bed_id   u32   the device the frame is for
    counter  u32   larger than the counter of every control frame the device applied before
    bound    f64   the task-error bound (0: the device's deployed bound); finite, >= 0
    slack    f64   the audits' correction added to the calibrated slack; finite
    max_level u8   if flag bit 1: the highest ECG level the device may send (0..7; the worker's
                   fidelity hold while an alarm is open, `device_sim.control`); without the flag,
                   no hold
    crc32    u32   over every byte before it
    hmac     16 B  truncated HMAC-SHA256 with the device key over every byte before it (flag bit 0)

30 bytes (31 with a hold), 46 signed. Every frame carries the device's whole control state, so a
frame without a hold ends one. A device with a key applies signed frames only; one without applies unsigned
frames only (it cannot check a tag). The tag byte differs from the uplink's (0xD2), so a signed
uplink frame can never pass for a control frame under the same key.

Not done: the C device keeps the last counter in RAM, so after a reboot it would accept one old
valid frame (the next with a larger counter overrides it); a real device keeps the counter in
non-volatile memory, or the gateway sends the current frame again after every reconnect.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import math
import struct
import zlib
from dataclasses import dataclass

from stream.wire import PACKED_LEVEL_BITS

TAG = 0xC1
FLAG_HMAC = 0x01
FLAG_HOLD = 0x02
HMAC_LEN = 16
MAX_LEVEL = (1 << PACKED_LEVEL_BITS) - 1  # a hold's highest level: any the v2 ECG level byte can name (7)
_BODY = struct.Struct(">BBIIdd")
SIZE = _BODY.size + 4


class ControlError(ValueError):
    """A downlink control frame a device must not apply (the message says why)."""


@dataclass(frozen=True)
class Control:
    bed_id: int
    counter: int
    bound: float
    slack: float
    max_level: int | None = None  # a fidelity hold: the highest ECG level the device may send


def encode_control(msg: Control, key: bytes | None = None) -> bytes:
    if not (math.isfinite(msg.bound) and msg.bound >= 0 and math.isfinite(msg.slack)):
        raise ControlError(f"bound {msg.bound} and slack {msg.slack} must be finite, the bound >= 0")
    if msg.max_level is not None and (isinstance(msg.max_level, bool) or not isinstance(msg.max_level, int)
                                      or not 0 <= msg.max_level <= MAX_LEVEL):
        raise ControlError(f"max_level {msg.max_level!r} must be an integer 0..{MAX_LEVEL}")
    hold = msg.max_level is not None
    body = _BODY.pack(TAG, (FLAG_HMAC if key else 0) | (FLAG_HOLD if hold else 0), msg.bed_id, msg.counter,
                      msg.bound, msg.slack) + (bytes([msg.max_level]) if hold else b"")
    out = body + struct.pack(">I", zlib.crc32(body))
    if key:
        out += _hmac.new(key, out, hashlib.sha256).digest()[:HMAC_LEN]
    return out


def decode_control(buf: bytes, key: bytes | None = None) -> Control:
    """Parse and check a frame as the device does (its bed and counter are the device's to check)."""
    buf = bytes(buf)
    if len(buf) < SIZE or buf[0] != TAG:
        raise ControlError("not a control frame")
    flags = buf[1]
    body = _BODY.size + (1 if flags & FLAG_HOLD else 0)
    size = body + 4
    if flags & ~(FLAG_HMAC | FLAG_HOLD) or len(buf) != size + (HMAC_LEN if flags & FLAG_HMAC else 0):
        raise ControlError("bad flags or length")
    (crc,) = struct.unpack_from(">I", buf, body)
    if zlib.crc32(buf[:body]) != crc:
        raise ControlError("crc32 mismatch")
    if bool(flags & FLAG_HMAC) != bool(key):
        raise ControlError("signed frame for a device without a key, or unsigned for one with a key")
    if key and not _hmac.compare_digest(buf[size:], _hmac.new(key, buf[:size], hashlib.sha256).digest()[:HMAC_LEN]):
        raise ControlError("hmac mismatch")
    _, _, bed, counter, bound, slack = _BODY.unpack_from(buf)
    max_level = buf[_BODY.size] if flags & FLAG_HOLD else None
    if not (math.isfinite(bound) and bound >= 0 and math.isfinite(slack)) \
            or (max_level is not None and max_level > MAX_LEVEL):
        raise ControlError("bound, slack or max_level out of range")
    return Control(bed, counter, bound, slack, max_level)
