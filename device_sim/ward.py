"""A simulated ward: N wearables, each producing one wire frame per 2-s window to Kafka.

Each device has its own clock (a random phase inside the 2-s period, so beds do not all send at
once), a monotonic sequence number, and optionally a per-device HMAC key. With ``speed`` > 1 the
windows are produced that many times faster than real time; device time still advances 2 s per
window. Simulated clocks never run backwards across runs: the last device time used is kept in
the state directory and the next run starts after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from device_sim.sources import EegmatReplay, MitdbReplay, SyntheticBed
from stream.topics import bed_key
from stream.wire import (RAW_MODEL_ID, WIRE_VERSION, Channel, Frame, Modality, audit_period_windows, encode_as_sent,
                         in_burst)

log = logging.getLogger("wardstream.sim")

FS = 128
WINDOW = 256
WINDOW_US = WINDOW * 1_000_000 // FS
ECG_GAIN_MV = 0.001  # 1 µV per LSB: ±32 mV range
EEG_GAIN_UV = 0.1  # 0.1 µV per LSB: ±3.2 mV range
SOURCES = ("synthetic", "mitdb", "eegmat", "replay")


class Source(Protocol):
    def next_window(self) -> tuple[np.ndarray, np.ndarray | None]: ...


def quantise(x: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(np.rint(np.nan_to_num(x) / gain), -32768, 32767).astype(np.int16)


class RawEncoder:
    """The uncompressed level: int16 samples with their gain. Used when no codec weights exist."""

    model_id = RAW_MODEL_ID
    name = "raw-int16"

    def channels(self, ecg: np.ndarray, eeg: np.ndarray | None) -> tuple[Channel, ...]:
        out = [Channel(Modality.ECG, 0, ECG_GAIN_MV, 0.0, quantise(ecg, ECG_GAIN_MV))]
        if eeg is not None:
            out.append(Channel(Modality.EEG, 0, EEG_GAIN_UV, 0.0, quantise(eeg, EEG_GAIN_UV)))
        return tuple(out)


class Encoder(Protocol):
    model_id: int
    name: str

    def channels(self, ecg: np.ndarray, eeg: np.ndarray | None) -> tuple[Channel, ...]: ...


def encoder_factory(model_id: int, level: int, encoder: str = "fp32", policy: str = "fixed",
                    bound: float = 0.0, eeg_level: int = 2, predictor: str = "default",
                    cache_dir: Path | None = None) -> Callable[[], Encoder]:
    """Per-device encoders (each keeps its own filter state): the deployed codec ``model_id`` at
    ``level`` run as ``encoder`` ("fp32", "int8" or "firmware": the C device itself, built into
    ``cache_dir``; see Settings.sim_encoder), or the raw level when model or level is 0. ``policy="dynamic"``: each device picks its ECG level per window
    under ``bound`` (0: the deployed bound) with the integer edge analysis
    (`wardmodels.wire_codec.DynamicEncoder`), running the edge error predictor ``predictor``
    ("default", "decode" or "rhythm", Settings.dd_predictor) — the fixed-level devices of a Dynamic-Deep
    codec run it too, for the predicted error each frame carries."""
    if encoder == "firmware" and not (policy == "fixed" and (model_id == RAW_MODEL_ID or level == 0)):
        from device_sim.firmware import firmware_factory
        from wardmodels.wire_codec import register_deployed
        from wardstream.threads import limit_threads

        limit_threads(1)
        if model_id not in register_deployed():
            raise ValueError(f"codec model {model_id} is not deployed (wardmodels/weights/MANIFEST.json)")
        return firmware_factory(model_id, level, policy, bound, eeg_level, predictor, cache_dir or Path(".wardstream"))
    if policy == "dynamic":
        from wardmodels.wire_codec import DynamicEncoder, register_deployed
        from wardstream.threads import limit_threads

        limit_threads(1)  # the simulator shares the machine with the worker and servers
        if model_id not in register_deployed():
            raise ValueError(f"codec model {model_id} is not deployed (wardmodels/weights/MANIFEST.json)")
        bound = bound or deployed_bound(model_id, predictor)
        DynamicEncoder(model_id, bound, eeg_level, encoder, predictor=predictor)  # load and validate once
        return lambda: DynamicEncoder(model_id, bound, eeg_level, encoder, predictor=predictor)
    if model_id == RAW_MODEL_ID or level == 0:
        return RawEncoder
    from wardmodels.runtime import load_deployed
    from wardmodels.wire_codec import CodecEncoder, DynamicEncoder, register_deployed
    from wardstream.threads import limit_threads

    limit_threads(1)  # the simulator shares the machine with the worker and servers
    if model_id not in register_deployed():
        raise ValueError(f"codec model {model_id} is not deployed (wardmodels/weights/MANIFEST.json)")
    codec = load_deployed(model_id)
    if codec.predictor is not None and codec.chains is not None:
        # a Dynamic-Deep codec: the device sends the fixed level and its predicted task error
        eeg = level if level <= codec.stages else eeg_level
        DynamicEncoder(model_id, 0.0, eeg, encoder, fixed_level=level, predictor=predictor)
        return lambda: DynamicEncoder(model_id, 0.0, eeg, encoder, fixed_level=level, predictor=predictor)
    CodecEncoder(model_id, level, encoder)  # load and validate once, before any device starts
    return lambda: CodecEncoder(model_id, level, encoder)


def deployed_bound(model_id: int, predictor: str = "default") -> float:
    from wardmodels.runtime import load_deployed

    codec = load_deployed(model_id)
    if codec.predictor is None:
        raise ValueError(f"codec model {model_id} has no Dynamic-Deep predictor")
    return float(codec.predictor_of(predictor).meta["deployed_bound"])


@dataclass
class Device:
    bed_id: int
    source: Source
    clock0_us: int  # device time of its first sample
    encoder: Encoder = field(default_factory=RawEncoder)
    hmac_key: bytes | None = None
    seq: int = 0
    last_window: tuple | None = None  # (ecg, eeg) of the last frame, as acquired
    # windows between audit bursts (stream.wire.in_burst; 0: never): in a burst a device that
    # predicts its task error also sends the ECG its encoder saw, for the cloud to check it
    audit_every: int = 0
    lossless: bool = False  # raw-level sections lossless-coded on the wire (Settings.raw_lossless)
    wire_version: int = WIRE_VERSION  # the frame format it sends (Settings.wire_version)
    # v2: sections entropy-coded where the codec has tables and the frame comes out shorter
    # (Settings.wire_coded)
    coded: bool = False

    def next_frame(self) -> tuple[bytes, Frame]:
        return next_frames([self])[0]

    def _frame(self, channels: tuple[Channel, ...]) -> tuple[bytes, Frame]:
        if getattr(self.encoder, "whole_frame", False):  # the firmware's device makes the frame itself
            return self.encoder.frame(self)
        pred = getattr(self.encoder, "last_pred", None)
        ref = None
        seen = getattr(self.encoder, "last_filtered", None)
        if pred is not None and seen is not None and in_burst(self.seq, self.bed_id, self.audit_every):
            from wardmodels.wire_codec import raw_channel

            ref = raw_channel(Modality.ECG, seen)
        t_us = self.clock0_us + self.seq * WINDOW_US
        if self.wire_version == 2:  # v2 carries whole milliseconds: the start rounded down to one
            t_us -= t_us % 1000
        # v2: the id of the predictor that made the prediction travels with the reference, so the
        # cloud audits the task error it was trained on
        pid = getattr(self.encoder, "predictor_id", None) if ref is not None and self.wire_version == 2 else None
        if self.wire_version != 2:  # v1 has no room for a raw section's front-end state
            channels = tuple(dataclasses.replace(ch, zi=None) for ch in channels)
        frame = Frame(self.bed_id, self.seq, t_us, FS, WINDOW,
                      self.encoder.model_id, channels, pred, ref, self.lossless, self.wire_version,
                      predictor_id=pid)
        self.seq += 1
        # the sections entropy-coded, when that is shorter (it usually is)
        return encode_as_sent(frame, self.hmac_key, self.coded)


def encode_windows(encoders: list, ecgs: list, eegs: list) -> list[tuple[Channel, ...]]:
    """One window per device through its encoder: codec devices (fixed-level and Dynamic-Deep)
    in one batch (`wardmodels.wire_codec.encode_many`), raw devices (`RawEncoder`) each alone."""
    chans: list = [None] * len(encoders)
    coded = [i for i, e in enumerate(encoders) if hasattr(e, "filters")]
    if coded:
        from wardmodels.wire_codec import encode_many

        res = encode_many([encoders[i] for i in coded], [ecgs[i] for i in coded], [eegs[i] for i in coded])
        for i, c in zip(coded, res):
            chans[i] = c
    for i, e in enumerate(encoders):
        if chans[i] is None:
            chans[i] = e.channels(ecgs[i], eegs[i])
    return chans


def next_frames(devices: list[Device]) -> list[tuple[bytes, Frame]]:
    """The next frame of each device; codec devices are encoded in one batch."""
    windows = [d.source.next_window() for d in devices]
    for d, w in zip(devices, windows):
        d.last_window = w
    chans = encode_windows([d.encoder for d in devices], [w[0] for w in windows], [w[1] for w in windows])
    return [d._frame(c) for d, c in zip(devices, chans)]


def make_sources(kind: str, beds: list[int], data_dir: Path | None, seed: int) -> dict[int, Source]:
    if kind not in SOURCES:
        raise ValueError(f"unknown source {kind!r}; choose from {', '.join(SOURCES)}")
    out: dict[int, Source] = {}
    rng = np.random.default_rng(seed)
    if kind in ("mitdb", "replay"):
        from wardstream.datasets import mitdb_records_present

        records = mitdb_records_present(data_dir)
        if not records:
            from wardstream.datasets import DataMissing
            raise DataMissing(f"no MIT-BIH records under {data_dir}/mitdb")
    if kind in ("eegmat", "replay"):
        from wardstream.datasets import load_eegmat

        recs = load_eegmat(data_dir)
    loaded: dict[str, object] = {}  # one copy of each record, shared by the beds replaying it
    for i, bed in enumerate(beds):
        use = kind if kind != "replay" else ("mitdb" if i % 2 == 0 else "eegmat")
        if use == "synthetic":
            out[bed] = SyntheticBed(bed, seed=seed)
        elif use == "mitdb":
            from wardstream.datasets import load_mitdb

            rec = records[i % len(records)]
            if rec not in loaded:
                loaded[rec] = load_mitdb(data_dir, rec)
            out[bed] = MitdbReplay(loaded[rec], start_s=float(rng.uniform(0, 1500)))
        else:
            r = recs[i % len(recs)]
            out[bed] = EegmatReplay(r, channel=i % 4, start_s=float(rng.uniform(0, 30)))
    return out


def corrupt(frame: bytes, how: int) -> tuple[bytes, str]:
    """A malformed variant of a good frame, for dead-letter exercise."""
    b = bytearray(frame)
    kind = how % 4
    if kind == 0:
        b[40] ^= 0xFF
        return bytes(b), "bad_crc"
    if kind == 1:  # cut in half: past the header, so only the checksum can tell
        return bytes(b[: len(b) // 2]), "bad_crc"
    if kind == 2:
        b[:4] = b"BAD!"
        return bytes(b), "bad_magic"
    return b"not a frame at all", "truncated"


@dataclass
class WardReport:
    frames_sent: int = 0
    frames_accepted: int = 0
    frames_failed: int = 0
    bad_frames_sent: int = 0
    # "topic/partition/offset" of each malformed frame the broker acknowledged: where the workers'
    # dead letters name their source, so an audit can check every one of them is on the topic
    bad_sources: list[str] = field(default_factory=list)
    wire_bytes: int = 0
    raw_bytes: int = 0
    accepted: dict[int, list[int]] = field(default_factory=dict)  # bed -> seqs acknowledged
    t_first_us: int = 0
    t_last_end_us: int = 0
    send_wall_s: float = 0.0
    levels: dict[int, int] = field(default_factory=dict)  # ECG level -> windows sent at it
    # bed -> [(seq, ecg, eeg, frame bytes)] of the first ``capture_windows`` windows of the
    # ``capture_beds``: what the report compares with the cloud's reconstruction
    captured: dict[int, list] = field(default_factory=dict)
    bounds: object | None = None  # device_sim.control.Bounds when devices pick their level
    # per frame: wall ms from its window's last sample to the producer accepting it (encoding and
    # a simulator running late both show here, before the frame ever reaches the broker)
    send_delay_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """What `wardstream sim` prints: counts, bytes, levels and send delays (JSON-ready)."""
        d = np.asarray(self.send_delay_ms, np.float64)
        return {"frames_sent": self.frames_sent, "frames_accepted": self.frames_accepted,
                "frames_failed": self.frames_failed, "bad_frames_sent": self.bad_frames_sent,
                "beds": len(self.accepted), "windows_accepted": sum(len(v) for v in self.accepted.values()),
                "wire_bytes": self.wire_bytes, "raw_bytes": self.raw_bytes,
                "ecg_levels": {str(k): v for k, v in sorted(self.levels.items())},
                "t_first_us": self.t_first_us, "t_last_end_us": self.t_last_end_us,
                "send_wall_s": round(self.send_wall_s, 3),
                "send_delay_ms": {"p50": round(float(np.percentile(d, 50)), 1), "p95": round(float(np.percentile(d, 95)), 1),
                                  "max": round(float(d.max()), 1)} if d.size else None}


def _clock_file(state_dir: Path) -> Path:
    return Path(state_dir) / "sim_clock.json"


def save_clock_end(state_dir: Path, last_end_us: int) -> None:
    """Remember the last device time used, so the next run's clocks start after it."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    _clock_file(state_dir).write_text(json.dumps({"last_end_us": last_end_us}))


def next_clock_start(state_dir: Path) -> int:
    now = int(time.time() * 1e6)
    try:
        last = json.loads(_clock_file(state_dir).read_text())["last_end_us"]
    except (OSError, ValueError, KeyError):
        last = 0
    return max(now, last + WINDOW_US)


GATHER_S = 0.1  # the longest a complete window waits for others to be encoded with (device time)


async def run_ward(settings, n_beds: int, duration_s: float, speed: float = 1.0,
                   source: str = "synthetic", seed: int = 0, bad_every: int = 0,
                   first_bed: int = 1, producer=None,
                   on_tick: Callable[[WardReport], None] | None = None,
                   capture_beds: tuple[int, ...] = (), capture_windows: int = 0,
                   gather: int | None = None, gather_s: float = GATHER_S) -> WardReport:
    """Run the ward for ``duration_s`` of wall time; returns what was sent and acknowledged.

    The devices whose windows are complete are encoded together (one call of the batched models).
    A window whose batch would be small waits for the next ones to complete, until ``gather``
    windows are complete or it has waited ``gather_s`` of device time (a load generator's
    economy, not a device's behaviour: a batch of two costs the simulator 6.0 ms of CPU per
    window, of eight 3.2 ms; measured 2026-12-06 on a 2-vCPU AVX2 EPYC, where at 200 beds the
    simulator then took a third of the host). The wait shows in the device send delay and in the
    end-to-end latency; ``gather`` (default ``settings.sim_gather``, `WARDSTREAM_SIM_GATHER`) 1
    sends every window as soon as it is complete."""
    if gather is None:
        gather = settings.sim_gather
    from aiokafka import AIOKafkaProducer

    beds = list(range(first_bed, first_bed + n_beds))
    sources = make_sources(source, beds, settings.data_dir, seed)
    for src in sources.values():
        if hasattr(src, "prime"):
            src.prime()
    make_encoder = encoder_factory(settings.codec_model, settings.codec_level, settings.sim_encoder,
                                   settings.level_policy, settings.dd_bound, settings.eeg_level,
                                   settings.dd_predictor, settings.state_dir / "firmware")
    clock0 = next_clock_start(settings.state_dir)
    rng = np.random.default_rng(seed)
    phases = {b: int(rng.uniform(0, WINDOW_US)) for b in beds}
    audit_every = audit_period_windows(settings.audit_every_s, FS, WINDOW)
    devices = {b: Device(b, sources[b], clock0 + phases[b], make_encoder(), settings.device_key(b),
                         audit_every=audit_every, lossless=settings.raw_lossless,
                         wire_version=settings.wire_version, coded=settings.wire_coded) for b in beds}
    own = producer is None
    if own:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=5,
                                    max_batch_size=256 * 1024, request_timeout_ms=30000)
        from device_sim.control import start_client

        await start_client(producer)  # the broker unreachable: closed again, the error raised
    rep = WardReport(t_first_us=clock0)
    control_task, stop_control = None, asyncio.Event()
    # devices with a codec level read the control topic: the fidelity holds (every one of them),
    # and the bound and slack correction (those that predict their task error)
    dyn = [d for d in devices.values() if hasattr(d.encoder, "max_level")]
    if dyn:
        from device_sim.control import Bounds, follow

        bounds = Bounds(default=getattr(dyn[0].encoder, "bound", None))
        rep.bounds = bounds

        def on_change():
            for d in dyn:
                if hasattr(d.encoder, "bound"):
                    d.encoder.bound = bounds.for_bed(d.bed_id, getattr(d.encoder, "predictor_id", None))
                    d.encoder.slack_offset = bounds.slack_for(d.bed_id)
                d.encoder.max_level = bounds.max_level_for(d.bed_id)

        control_task = asyncio.create_task(follow(settings, bounds, on_change, stop_control))
    wall0 = time.time()
    # heap of (due wall time, bed): a window is sent when its last sample has been acquired
    heap = [(wall0 + (phases[b] + WINDOW_US) / 1e6 / speed, b) for b in beds]
    heapq.heapify(heap)
    end_wall = wall0 + duration_s
    pending: list[tuple[asyncio.Future, int, int]] = []
    n_bad = 0
    bad_pending: list = []
    try:
        while heap and heap[0][0] <= end_wall:
            due, bed = heap[0]
            if gather > 1:  # wait for the gather-th window to complete, at most gather_s after this one
                kth = heapq.nsmallest(gather, heap)[-1][0]
                due = min(max(due, kth), due + gather_s / speed, end_wall)
            delay = due - time.time()
            if delay > 0:
                await _settle(pending, rep)
                await asyncio.sleep(min(delay, 0.05))
                continue
            now = time.time()
            batch = []  # every device whose window is complete, encoded together
            while heap and heap[0][0] <= min(now, end_wall) and len(batch) < 512:
                batch.append(heapq.heappop(heap))
            made = next_frames([devices[b] for _, b in batch])
            for (due, bed), (raw, frame) in zip(batch, made):
                key = bed_key(bed)
                pending.append((await producer.send(settings.frames_topic, raw, key=key), bed, frame.seq))
                rep.frames_sent += 1
                rep.wire_bytes += len(raw)
                rep.raw_bytes += 2 * frame.n_samples * len(frame.channels)
                for ch in frame.channels:
                    if ch.modality == Modality.ECG:
                        rep.levels[ch.level] = rep.levels.get(ch.level, 0) + 1
                rep.t_last_end_us = max(rep.t_last_end_us, frame.window_end_us)
                rep.send_delay_ms.append((time.time() - due) * 1000.0)
                if bed in capture_beds and len(rep.captured.setdefault(bed, [])) < capture_windows:
                    ecg, eeg = devices[bed].last_window
                    rep.captured[bed].append((frame.seq, ecg, eeg, raw))
                if bad_every and rep.frames_sent % bad_every == 0:
                    bad, _ = corrupt(raw, n_bad)
                    n_bad += 1
                    bad_pending.append(await producer.send(settings.frames_topic, bad, key=key))
                    rep.bad_frames_sent += 1
                heapq.heappush(heap, (due + WINDOW_US / 1e6 / speed, bed))
            if len(pending) >= 2000:
                await _settle(pending, rep)
            if on_tick:
                on_tick(rep)
        await producer.flush()
        await _settle(pending, rep)
        for fut in bad_pending:
            try:
                md = await fut
            except Exception as exc:  # never on the frames topic: nothing for a worker to dead-letter
                log.warning("malformed frame not acknowledged: %s", exc)
                continue
            rep.bad_sources.append(f"{md.topic}/{md.partition}/{md.offset}")
    finally:
        if control_task is not None:
            stop_control.set()
            await asyncio.gather(control_task, return_exceptions=True)
        if own:
            await producer.stop()
        rep.send_wall_s = time.time() - wall0
        save_clock_end(settings.state_dir, rep.t_last_end_us)
    return rep


async def _settle(pending: list, rep: WardReport) -> None:
    for fut, bed, seq in pending:
        try:
            await fut
        except Exception as exc:  # not acknowledged: not an accepted window
            rep.frames_failed += 1
            log.warning("frame bed %s seq %s not acknowledged: %s", bed, seq, exc)
            continue
        rep.frames_accepted += 1
        rep.accepted.setdefault(bed, []).append(seq)
    pending.clear()
