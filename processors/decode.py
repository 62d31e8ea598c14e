"""Reconstruct each modality of a validated frame in physical units (ECG mV, EEG µV)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from stream.wire import Channel, Frame, FrameError, Modality


class NoDecoder(FrameError):
    """The frame names a codec level this worker has no decoder weights for."""

    reason = "no_decoder"


# model id -> decoder(channel, frame) -> float32 samples; codecs register themselves here
DECODERS: dict[int, Callable[[Channel, Frame], np.ndarray]] = {}


def reconstruct(frame: Frame) -> dict[Modality, np.ndarray]:
    out: dict[Modality, np.ndarray] = {}
    for ch in frame.channels:
        if ch.level == 0:
            out[ch.modality] = ch.physical()
            continue
        dec = DECODERS.get(frame.model_id)
        if dec is None:
            raise NoDecoder(f"no decoder loaded for model {frame.model_id} level {ch.level}")
        out[ch.modality] = dec(ch, frame)
    return out
