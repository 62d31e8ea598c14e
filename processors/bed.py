"""One bed's stream step: ``process_frame(state, frame, signals) -> (state, points)``.

Pure and deterministic, so a replayed window produces the very same points (same series, same
timestamps) and overwrites itself in InfluxDB. A window whose sequence number and device time are both
not newer than the last one processed is a replay of work already written and yields nothing;
a sequence that restarts with a later clock is a rebooted device and starts a new stream.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from processors.audit import AuditCase
from processors.influx_sink import line
from processors.qrs import QrsState, ecg_peaks_stream
from processors.vitals import (ecg_quality, ecg_quality_batch, eeg_band_powers,
                               eeg_band_powers_batch, hrv)
from stream.wire import AUDIT_WINDOWS, CRC_LEN, REGISTRY, Frame, Modality, frame_overhead
from wardmodels.classifier import (BEAT_CONTEXT, BEAT_POST, BEAT_PRE, RHYTHM_SAMPLES, RR_LONG_S, TEMPLATE_BEATS,
                                   beat_context, beat_inputs, beat_waves)
from wardmodels.frontend import StreamFilter

HRV_SPAN_S = 60.0
# beats a bed keeps: the RR context of a beat (`beat_context`) reaches RR_LONG_S before it, and a
# beat is classified once its successor is detected, a few seconds later (a pause up to the margin)
BEAT_HISTORY_S = RR_LONG_S + 8.0
ECG_BUFFER = 12 * 128  # samples of filtered ECG a bed keeps for the classifiers (12 s at 128 Hz)
DONE_WINDOWS = 256  # how far back a redelivered window is still recognised (8.5 min at 2 s)
_DONE_MASK = (1 << DONE_WINDOWS) - 1
STATE_FORMAT = b"\x01"  # first byte of a `BedState.to_bytes` value (a JSON one starts with "{")


@dataclass
class BedState:
    last_seq: int = -1
    last_t_us: int = -1  # device time of the last window processed
    anchor_seq: int = 0  # seq whose first sample is stream sample 0
    anchor_us: int = 0  # device time of that sample
    fs: int = 0
    n_samples: int = 0
    qrs: QrsState | None = None
    beats: list[int] = field(default_factory=list)  # stream sample indices, last BEAT_HISTORY_S
    windows: int = 0
    gaps: int = 0  # windows missing in sequence
    restarts: int = 0  # device restarts seen (sequence reset with a later clock)
    done: int = 0  # bit i set: window last_seq - i has been processed (i < DONE_WINDOWS)
    late: int = 0  # windows processed after a later one (redelivered out of order)
    # classifier inputs: the last ECG_BUFFER samples of front-end-filtered ECG (float16, so the
    # in-memory state is exactly what a restored one holds), the stream index after its last
    # sample, the causal filter state for raw-level windows, beats awaiting classification
    ecg_buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float16))
    buf_end: int = 0
    zi: list | None = None
    pending: list[int] = field(default_factory=list)
    alarms: dict = field(default_factory=dict)  # processors.alarms.AlarmState.to_dict()
    seen_ms: int = 0  # wall time the worker last processed a window of this bed (device_silent)
    # audit burst in progress (processors.audit): the device's reference ECG so far, float16,
    # and the sequence number of its last window (-1: none)
    audit_buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float16))
    audit_seq: int = -1
    # the per-bed slack correction: residuals of the last audits and the offset last published
    audit_res: list[float] = field(default_factory=list)
    slack_sent: float = 0.0
    # the patient's stay ended (`end_stay`: discharged, or the bed given to another patient) at
    # this wall time (ms); 0 while a stay goes on. The next window starts a new stream.
    discharged_ms: int = 0
    discharge_cmd_ms: int = 0  # ``at_ms`` of the last discharge command applied (one applied again is skipped)
    # the fidelity hold (`processors.hold`): until when it lasts (device time, ms; 0: none) and
    # the ECG level published for it (-1: none)
    hold_until_ms: int = 0
    hold_level: int = -1
    # a clinician's hold (`processors.hold.request`): its level (-1: none), until when (device ms), by whom
    manual_level: int = -1
    manual_until_ms: int = 0
    manual_by: str = ""

    def _fields(self) -> dict:
        return {"ls": self.last_seq, "lt": self.last_t_us, "r": self.restarts, "as": self.anchor_seq, "au": self.anchor_us,
                "fs": self.fs, "ns": self.n_samples,
                "q": self.qrs.to_dict() if self.qrs else None, "b": self.beats,
                "w": self.windows, "g": self.gaps, "dm": self.done, "lw": self.late,
                "be": self.buf_end, "zi": self.zi, "pd": self.pending, "al": self.alarms, "sn": self.seen_ms,
                "aq": self.audit_seq, "ar": self.audit_res, "ss": self.slack_sent,
                **({"dc": self.discharged_ms} if self.discharged_ms else {}),
                **({"dq": self.discharge_cmd_ms} if self.discharge_cmd_ms else {}),
                **({"hu": self.hold_until_ms, "hl": self.hold_level} if self.hold_level >= 0 or self.hold_until_ms else {}),
                **({"ml": self.manual_level, "mu": self.manual_until_ms, "mb": self.manual_by}
                   if self.manual_until_ms else {})}

    def to_bytes(self) -> bytes:
        """The changelog value, written once per window and bed (so its size is the worker's
        largest traffic to the broker): `STATE_FORMAT`, the lengths of the two parts below
        (u32 little-endian each), the zlib-compressed JSON of every field but the two float16
        buffers, then the buffers' raw little-endian float16 bytes (ECG, then audit reference)."""
        js = zlib.compress(json.dumps(self._fields(), separators=(",", ":")).encode(), 1)
        eb = self.ecg_buf.astype("<f2").tobytes()
        ab = self.audit_buf.astype("<f2").tobytes()
        return STATE_FORMAT + struct.pack("<II", len(js), len(eb)) + js + eb + ab

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "BedState":
        """A state from `to_bytes`, or from the JSON (buffers in base64) written before 2026-12-03."""
        if not raw:
            return cls()
        if raw[:1] == STATE_FORMAT:
            nj, ne = struct.unpack_from("<II", raw, 1)
            o = 1 + 8
            d = json.loads(zlib.decompress(raw[o:o + nj]))
            eb, ab = raw[o + nj:o + nj + ne], raw[o + nj + ne:]
        else:
            d = json.loads(raw)
            eb, ab = base64.b64decode(d.get("eb", "")), base64.b64decode(d.get("ab", ""))
        return cls(last_seq=d["ls"], last_t_us=d["lt"], restarts=d["r"], anchor_seq=d["as"], anchor_us=d["au"], fs=d["fs"],
                   n_samples=d["ns"], qrs=QrsState.from_dict(d["q"]) if d["q"] else None,
                   beats=list(d["b"]), windows=d["w"], gaps=d["g"], done=d["dm"], late=d["lw"],
                   ecg_buf=np.frombuffer(eb, "<f2").astype(np.float16),
                   buf_end=d.get("be", 0), zi=d.get("zi"), pending=list(d.get("pd", [])),
                   alarms=d.get("al") or {}, seen_ms=d.get("sn", 0),
                   audit_buf=np.frombuffer(ab, "<f2").astype(np.float16),
                   audit_seq=d.get("aq", -1), audit_res=list(d.get("ar", [])), slack_sent=d.get("ss", 0.0),
                   discharged_ms=d.get("dc", 0), discharge_cmd_ms=d.get("dq", 0),
                   hold_until_ms=d.get("hu", 0), hold_level=d.get("hl", -1),
                   manual_level=d.get("ml", -1), manual_until_ms=d.get("mu", 0), manual_by=d.get("mb", ""))

    def end_stay(self, t_ms: int) -> None:
        """Forget the patient: the signal history (beats, filtered ECG, detector, pending beats),
        the audit burst and the audit residuals behind the bed's slack correction. What stays is
        what keeps every window exactly once (sequence, device time, the processed-window bits)
        and the counters. The alarm state is the caller's (`processors.alarms.discharge`)."""
        _reanchor(self, None)
        self.audit_res, self.slack_sent = [], 0.0
        self.hold_until_ms, self.hold_level = 0, -1  # the caller clears the hold on the control topic
        self.manual_level, self.manual_until_ms, self.manual_by = -1, 0, ""
        self.discharged_ms = t_ms


@dataclass(frozen=True)
class ClassifierInputs:
    """What one window asks of the classifiers (run batched over many beds by the worker)."""

    bed: str
    rhythm: np.ndarray | None  # float32[1280] filtered ECG, the last 10 s; None until 10 s exist
    rhythm_ts_ms: int
    beat_waves: np.ndarray  # (n, 2, 112): wave, and wave minus the bed's recent-beat template
    beat_ctx: np.ndarray  # (n, 7): RR features, the rhythm's irregularity, prematurity (`beat_context`)
    beat_ts_ms: list[int]
    # for a streaming rhythm model (`wardmodels.stream_rhythm`): the bed's filtered-ECG buffer
    # ending with this window, the stream index after it, and the window's length
    recent: np.ndarray | None = None
    recent_end: int = 0
    window: int = 0


@dataclass(frozen=True)
class WindowEvidence:
    """What the alarm stage needs of a window besides the classifiers' outputs."""

    bed: int
    t_end_ms: int
    window_ms: int
    hr_bpm: float | None
    sqi: float | None
    beats_ms: list[int]  # beats detected in this window (device ms)
    gap: int


@dataclass(frozen=True)
class StepResult:
    points: list[str]
    replay: bool = False
    late: bool = False  # processed after a later window of the same stream
    gap: int = 0  # windows missing before this one
    beats: int = 0
    classify: ClassifierInputs | None = None
    evidence: WindowEvidence | None = None  # None for replays and late windows
    audit: AuditCase | None = None  # the last window of an audit burst (processors.audit)


def _reanchor(state: BedState, frame: Frame | None) -> None:
    """Start a new stream at ``frame`` (None: only forget the old one's signal history)."""
    if frame is not None:
        state.anchor_seq = frame.seq
        state.anchor_us = frame.t_start_us
        state.fs = frame.fs
        state.n_samples = frame.n_samples
    state.qrs = None
    state.beats = []
    state.ecg_buf = np.zeros(0, np.float16)
    state.buf_end = 0
    state.zi = None
    state.pending = []
    state.audit_buf = np.zeros(0, np.float16)
    state.audit_seq = -1


def _audit(state: BedState, frame: Frame, ts_ms: int) -> AuditCase | None:
    """Collect this window's audit reference; the case to score once a burst is complete (its
    windows consecutive, and the reconstruction of the same span in the bed's buffer)."""
    if frame.reference is None:
        return None
    if state.audit_seq != frame.seq - 1:
        state.audit_buf = np.zeros(0, np.float16)
    span = AUDIT_WINDOWS * frame.n_samples
    state.audit_buf = np.concatenate([state.audit_buf, frame.reference.physical().astype(np.float16)])[-span:]
    state.audit_seq = frame.seq
    if len(state.audit_buf) < span or len(state.ecg_buf) < span:
        return None
    ecg = frame.channel(Modality.ECG)
    case = AuditCase(str(frame.bed_id), ts_ms, ecg.level if ecg else -1, frame.pred_error,
                     state.audit_buf.astype(np.float32), state.ecg_buf[-span:].astype(np.float32),
                     frame.fs, frame.n_samples, frame.model_id, frame.predictor_id)
    state.audit_buf = np.zeros(0, np.float16)
    state.audit_seq = -1
    return case


def front_end(state: BedState, ecg: np.ndarray, fs: int, raw: bool, zi=None) -> np.ndarray:
    """The ECG every later stage sees: codec levels arrive band-passed by the device's front end;
    raw-level windows get the same causal filter here, so a stream that switches levels stays one
    signal. Its state: the device's own when the section carries it (``zi``: wire v2, a raw window
    after codec-level ones), else carried across raw windows, else (the first raw window after
    codec windows from a device that does not send it, or after a gap) started at rest."""
    if raw:
        if zi is not None:
            state.zi = np.asarray(zi, np.float64).reshape(-1, 2).tolist()
        filt = StreamFilter(fs, None if state.zi is None else np.asarray(state.zi, np.float64))
        x = filt(ecg)
        state.zi = filt.zi.tolist()
        return x
    state.zi = None
    return np.asarray(ecg, np.float32)


def _classifier_inputs(state: BedState, frame: Frame, x: np.ndarray, new_beats: list[int],
                       ts_ms: int) -> ClassifierInputs:
    """Extend the bed's filtered-ECG buffer by this window (``x``: after `front_end`) and cut what
    the classifiers need: the last 10 s for the rhythm (once 10 s of uninterrupted signal exist)
    and every pending beat whose successor has been detected (its post-RR interval is then known)."""
    fs = frame.fs
    start = (frame.seq - state.anchor_seq) * frame.n_samples  # stream index of this window
    buf = np.concatenate([state.ecg_buf, np.nan_to_num(x).astype(np.float16)])[-ECG_BUFFER:]
    state.ecg_buf = buf
    state.buf_end = start + len(x)
    buf_start = state.buf_end - len(buf)
    rhythm = buf[-RHYTHM_SAMPLES:].astype(np.float32) if len(buf) >= RHYTHM_SAMPLES else None
    state.pending.extend(new_beats)
    ready = [k for k in state.pending if k != state.pending[-1] and k + BEAT_POST <= state.buf_end]
    state.pending = [k for k in state.pending if k not in ready and k >= buf_start]
    waves = np.zeros((0, 2, 112), np.float32)
    ctx = np.zeros((0, BEAT_CONTEXT), np.float32)
    ts: list[int] = []
    if ready:
        allb = np.asarray(sorted(set(state.beats)), np.int64)
        ctx = beat_context(allb, fs, at=np.searchsorted(allb, ready))
        # the ready beats with the earlier beats the buffer still holds (their templates)
        inbuf = allb[(allb - BEAT_PRE >= buf_start) & (allb <= ready[-1])]
        inbuf = np.union1d(inbuf, ready)
        # only the ready beats need inputs, and their templates only the TEMPLATE_BEATS before them
        first = int(np.searchsorted(inbuf, ready[0]))
        lo = max(0, first - TEMPLATE_BEATS)
        w = beat_waves(buf.astype(np.float32), inbuf[lo:] - buf_start, fs)
        inp = beat_inputs(w, inbuf[lo:], fs, first=first - lo)
        waves = inp[np.searchsorted(inbuf, ready) - first]
        ts = [(state.anchor_us + k * 1_000_000 // fs) // 1000 for k in ready]
    return ClassifierInputs(str(frame.bed_id), rhythm, ts_ms, waves, ctx, ts, buf, state.buf_end, len(x))


@dataclass(frozen=True)
class Features:
    """Per-window features that are cheaper to compute for a whole batch at once."""

    sqi: float | None = None
    bands: dict[str, float] | None = None


def batch_features(signals: list[dict[Modality, np.ndarray]], fs: int) -> list[Features]:
    """`Features` for many windows of one sampling rate, vectorised per window length."""
    sqi: dict[int, float] = {}
    bands: dict[int, dict[str, float]] = {}
    for mod in (Modality.ECG, Modality.EEG):
        by_len: dict[int, list[int]] = {}
        for i, sig in enumerate(signals):
            if mod in sig:
                by_len.setdefault(sig[mod].size, []).append(i)
        for idx in by_len.values():
            arr = np.stack([signals[i][mod] for i in idx])
            if mod == Modality.ECG:
                sqi.update(zip(idx, ecg_quality_batch(arr, fs).tolist()))
            else:
                b = eeg_band_powers_batch(arr, fs)
                for j, i in enumerate(idx):
                    bands[i] = {k: float(v[j]) for k, v in b.items()}
    return [Features(sqi.get(i), bands.get(i)) for i in range(len(signals))]


def process_frame(state: BedState, frame: Frame, signals: dict[Modality, np.ndarray],
                  wire_len: int, features: Features | None = None) -> tuple[BedState, StepResult]:
    """Advance one bed by one decoded window.

    ``signals`` holds each modality's reconstruction in physical units (ECG mV, EEG µV);
    ``features``, when given, are the same window's `batch_features`.
    """
    if frame.seq <= state.last_seq and frame.t_start_us <= state.last_t_us:
        age = state.last_seq - frame.seq
        if age >= DONE_WINDOWS or (state.done >> age) & 1:
            return state, StepResult([], replay=True)
        # Never processed, but a later window was: Kafka redelivered it out of order (a
        # rebalance re-seek). Process it on its own, with a cold detector, and leave the live
        # stream state alone. A replay of it is recognised by its bit from now on.
        _, res = process_frame(BedState(), frame, signals, wire_len, features)
        state.done |= 1 << age
        state.late += 1
        return state, StepResult(res.points, late=True, beats=res.beats)
    gap = 0
    fresh = True
    if frame.seq <= state.last_seq or frame.t_start_us <= state.last_t_us:
        state.restarts += 1  # a rebooted device: new sequence, later clock
        _reanchor(state, frame)
    elif state.discharged_ms and state.last_seq >= 0:  # the first window of a new stay: a new
        _reanchor(state, frame)  # stream; windows skipped since the last one are not a gap (their
        fresh = False  # bits stay 0: processed late should they come)
    elif state.last_seq < 0 or frame.fs != state.fs or frame.n_samples != state.n_samples:
        _reanchor(state, frame)
    elif frame.seq != state.last_seq + 1:
        gap = frame.seq - state.last_seq - 1
        state.gaps += gap
        _reanchor(state, frame)  # the signal is discontinuous: restart the detector
        fresh = False
    else:
        fresh = False
    state.discharged_ms = 0
    fs = frame.fs
    bed = str(frame.bed_id)
    ts_ms = frame.t_start_us // 1000
    points: list[str] = []
    fields: dict[str, float | int] = {}
    n_beats = 0

    ecg = signals.get(Modality.ECG)
    clf_in = None
    audit = None
    beat_ms: list[int] = []
    if ecg is not None:
        ch = frame.channel(Modality.ECG)
        raw = ch is not None and ch.level == 0
        ecg = front_end(state, ecg, fs, raw, ch.zi if raw else None)
        state.qrs, beats = ecg_peaks_stream(ecg, fs, state.qrs)
        new_beats = [int(k) for k in beats.samples.tolist()]
        prev = state.beats[-1] if state.beats else None
        for k, amp in zip(beats.samples.tolist(), beats.amplitudes.tolist()):
            bf: dict[str, float | int] = {"amp_mv": float(amp)}
            if prev is not None:
                bf["rr_ms"] = (k - prev) * 1000.0 / fs
            t_ms = (state.anchor_us + k * 1_000_000 // fs) // 1000
            points.append(line("beat", {"bed": bed}, bf, t_ms))
            beat_ms.append(t_ms)
            prev = k
            state.beats.append(k)
        n_beats = int(beats.samples.size)
        now_idx = (frame.seq - state.anchor_seq + 1) * frame.n_samples
        horizon = now_idx - int(BEAT_HISTORY_S * fs)
        state.beats = [b for b in state.beats if b >= horizon]
        clf_in = _classifier_inputs(state, frame, ecg, new_beats, ts_ms)
        audit = _audit(state, frame, ts_ms)
        if frame.pred_error is not None:
            lv = frame.channel(Modality.ECG).level
            points.append(line("task_error", {"bed": bed, "level": str(lv)}, {"predicted": frame.pred_error}, ts_ms))
        fields.update(hrv([b / fs for b in state.beats], now_idx / fs, HRV_SPAN_S))
        fields["sqi"] = features.sqi if features and features.sqi is not None else ecg_quality(ecg, fs)
        fields["beats"] = n_beats
        points.append(line("vitals", {"bed": bed}, fields, ts_ms))

    eeg = signals.get(Modality.EEG)
    if eeg is not None:
        bands = features.bands if features and features.bands is not None else eeg_band_powers(eeg, fs)
        points.append(line("eeg_bands", {"bed": bed}, bands, ts_ms))

    for ch in frame.channels:
        lv = REGISTRY[frame.model_id].level(ch.level)
        # a whole number of bits, written as an integer field (an entropy-coded section's bytes come
        # in eighths: its level byte and its bits of the frame's coded stream)
        wire_bits = int(round(8 * (ch.wire_bytes if ch.wire_bytes is not None
                                   else lv.section_bytes(frame.n_samples, frame.version))))
        raw_bits = 16 * frame.n_samples
        points.append(line("bandwidth", {"bed": bed, "modality": ch.modality.name.lower()},
                           {"level": ch.level, "wire_bits": wire_bits, "raw_bits": raw_bits,
                            "gain": raw_bits / wire_bits}, ts_ms))
    raw_total = 2 * frame.n_samples * len(frame.channels)
    points.append(line("frame", {"bed": bed},
                       {"seq": frame.seq, "wire_bytes": wire_len, "raw_bytes": raw_total,
                        "gain": raw_total / wire_len, "gap": gap, "model": frame.model_id,
                        "header_bytes": frame_overhead(frame.version, fs, frame.n_samples) - CRC_LEN}, ts_ms))
    if fresh:
        state.done = 1
    else:  # missing windows keep a 0 bit: should they arrive later, they are processed late
        state.done = ((state.done << (frame.seq - state.last_seq)) | 1) & _DONE_MASK
    state.last_seq = frame.seq
    state.last_t_us = frame.t_start_us
    state.windows += 1
    window_ms = frame.n_samples * 1000 // fs
    evidence = WindowEvidence(frame.bed_id, ts_ms + window_ms, window_ms, fields.get("hr_bpm"),
                              fields.get("sqi"), [int(t) for t in beat_ms], gap)
    return state, StepResult(points, gap=gap, beats=n_beats, classify=clf_in, evidence=evidence, audit=audit)
