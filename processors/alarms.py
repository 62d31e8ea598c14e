"""Alarm conditions per bed and the alarm model after IEC 60601-1-8, as a pure stream step.

Each window a bed's evidence (`Evidence`: heart rate, signal quality, the window's beats with
their classes, the rhythm decision, sequence gaps) updates one `Condition` per alarm condition:

* physiological: ``asystole`` (no QRS for >= 4 s on a good-quality signal), ``vtach`` (a run of
  >= ``vtach_beats`` ventricular beats at > 100 bpm, default 5), ``nsvt`` (non-sustained VT: a
  shorter run of >= 3 such beats), ``afib`` (atrial fibrillation decided for >= 30 s),
  ``brady`` / ``tachy`` (heart rate beyond per-bed thresholds), ``ectopy`` (frequent ventricular
  ectopy, beats per minute);
* technical: ``signal_quality`` (lead-off / unusable signal), ``seq_gap`` (windows lost between
  device and cloud), ``frame_flood`` (a device sending windows of the present faster than real
  time: more than ``flood_factor`` times its window rate over 10 s of arrivals; a backlog of old
  windows after an outage does not count), ``device_silent`` (no window from the bed for
  ``WARDSTREAM_DEVICE_SILENT_S``: raised by the worker's timer through `link_step`, resolved by
  the next window).

The alarm model (`AlarmState`): a condition must hold for its *onset delay* before the alarm
becomes ``active`` and must be absent for its *clear delay* (hysteresis) before it resolves;
high-priority alarms latch (stay until acknowledged even when the condition has gone); one alarm
per condition per episode (de-duplication); ``acknowledged`` silences and stops escalation;
an unacknowledged high-priority alarm escalates once after ``escalate_after_s``. Every
transition is an `AlarmEvent` with who/when/why.

Ventricular runs follow the bedside monitors' alarm chain (Philips IntelliVue: red "VTach" for a
run >= the VTach run limit, default 5, at >= the VTach rate limit, default 100 bpm; yellow
"Non-Sustain VTach" for a shorter run at that rate; Mindray's "V-Tach" / "Nonsus V-Tach" alike): a
3- or 4-beat run raises the medium-priority ``nsvt`` alarm, a run that reaches ``vtach_beats`` the
high-priority, latching ``vtach`` alarm. Every run of >= 3 fast ventricular beats still alarms;
``vtach_beats = 3`` (per ward or bed: `limits_from`) makes every such run high priority.

Time is the device's window time (ms), so a replay gives the same alarms as the live stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

PRIORITIES = ("high", "medium", "low", "technical")


@dataclass(frozen=True)
class ConditionConfig:
    priority: str
    onset_s: float = 0.0  # the condition must hold this long before the alarm sounds
    clear_s: float = 0.0  # ... and be absent this long before it resolves (hysteresis)
    latching: bool = False
    escalate_after_s: float | None = None  # unacknowledged this long -> escalate (once)


DEFAULT_CONDITIONS: dict[str, ConditionConfig] = {
    "asystole": ConditionConfig("high", 0.0, 4.0, latching=True, escalate_after_s=30.0),
    "vtach": ConditionConfig("high", 0.0, 6.0, latching=True, escalate_after_s=30.0),
    "nsvt": ConditionConfig("medium", 0.0, 6.0),
    "afib": ConditionConfig("medium", 0.0, 20.0),  # the 30-s persistence is part of the condition
    "brady": ConditionConfig("medium", 10.0, 10.0),
    "tachy": ConditionConfig("medium", 10.0, 10.0),
    "ectopy": ConditionConfig("low", 0.0, 60.0),
    "signal_quality": ConditionConfig("technical", 6.0, 4.0),
    "seq_gap": ConditionConfig("technical", 0.0, 10.0),
    "frame_flood": ConditionConfig("technical", 0.0, 10.0),
    "device_silent": ConditionConfig("technical", 0.0, 0.0),
}


def conditions_from(spec: str) -> dict[str, ConditionConfig]:
    """DEFAULT_CONDITIONS with per-condition overrides from JSON (``WARDSTREAM_ALARM_CONFIG``),
    e.g. ``{"tachy": {"onset_s": 5}, "asystole": {"escalate_after_s": 20}}``."""
    import json

    out = dict(DEFAULT_CONDITIONS)
    if not spec.strip():
        return out
    try:
        over = json.loads(spec)
    except ValueError as exc:
        raise ValueError(f"WARDSTREAM_ALARM_CONFIG is not JSON: {exc}") from None
    if not isinstance(over, dict):
        raise ValueError("WARDSTREAM_ALARM_CONFIG must be an object of condition -> settings")
    for name, changes in over.items():
        if name not in out:
            raise ValueError(f"WARDSTREAM_ALARM_CONFIG: unknown condition {name!r}; known: {sorted(out)}")
        if not isinstance(changes, dict) or set(changes) - set(ConditionConfig.__dataclass_fields__):
            raise ValueError(f"WARDSTREAM_ALARM_CONFIG[{name!r}]: settings are "
                             f"{sorted(ConditionConfig.__dataclass_fields__)}")
        if changes.get("priority", out[name].priority) not in PRIORITIES:
            raise ValueError(f"WARDSTREAM_ALARM_CONFIG[{name!r}]: priority must be one of {PRIORITIES}")
        out[name] = ConditionConfig(**{**asdict(out[name]), **changes})
    return out


# on since 2026-12-03: chosen on DS1 (AF windows read >= 0.118, the false ones 0.017-0.028); with the
# beat second stage it leaves the DS1 replay unchanged and cuts DS2 false AF alarms 7 -> 3 with no
# episode lost (with the CNN alone it had cost one; docs/alarms.md)
AFIB_IRR_DEFAULT = 0.05
AFIB_MIN_PAIRS = 6  # successive normal-to-normal interval pairs needed to call a rhythm irregular
AFIB_ENTROPY_DEFAULT = 0.0  # the RR-entropy limit (`rr_entropy`); 0: not required
AFIB_N_MIN_P_DEFAULT = 0.0  # a beat is normal for `rr_irregularity` from this N probability (0: any N call)
AFIB_S_MAX_DEFAULT = 0.0  # the largest share of beats called S that AF allows (0: not required)
V_RUN_COUNT_P_DEFAULT = 0.7  # chosen on DS1's replay (0.5 raised a false VT alarm there); docs/alarms.md
S_SHARE_MIN_BEATS = 10  # classified beats `s_share` needs
ENTROPY_R_S = 0.03  # sample entropy's match tolerance, 30 ms as COSEn's
ENTROPY_MIN_INTERVALS = 8


def rr_entropy(times_ms: list[int], r_s: float = ENTROPY_R_S,
               min_intervals: int = ENTROPY_MIN_INTERVALS) -> float | None:
    """How random the RR intervals of consecutive beats (times in ms, any class) are: sample
    entropy with m = 1 and a fixed tolerance ``r_s``, minus ln(mean RR in s) — the coefficient of
    sample entropy (COSEn; Lake & Moorman 2011, made for short AF series) without its constant
    term ln(2 r) (COSEn = this - 2.81 at 30 ms). Atrial fibrillation's intervals are random; a
    rhythm of premature beats or bigeminy repeats a few intervals. None below ``min_intervals``
    intervals; inf when no pair of intervals matches at length 2 (as random as it gets)."""
    rr = np.diff(np.asarray(times_ms, np.float64)) / 1000.0
    n = len(rr)
    if n < max(min_intervals, 3):
        return None
    d1 = np.abs(rr[:-1, None] - rr[None, :-1]) <= r_s  # length-1 templates (the first n - 1)
    d2 = d1 & (np.abs(rr[1:, None] - rr[None, 1:]) <= r_s)  # length-2 templates
    b = (d1.sum() - (n - 1)) / 2
    a = (d2.sum() - (n - 1)) / 2
    if a <= 0 or b <= 0:
        return float("inf")
    return float(-np.log(a / b) - np.log(rr.mean()))


def rr_irregularity(beats: list[list], min_pairs: int = AFIB_MIN_PAIRS) -> tuple[float | None, int]:
    """``beats``: [time ms, beat class] of consecutive classified beats, in time order. Returns
    (irregularity, pairs): over the successive pairs of RR intervals whose three beats are all of
    class N, the median |RR_i - RR_{i-1}| divided by the median of those intervals; None when
    fewer than ``min_pairs`` such pairs exist (the irregularity is then the ectopic beats', not the
    rhythm's). The classic AF criterion: irregular RR intervals once ectopic beats are taken out."""
    rr, d = [], []
    for i in range(2, len(beats)):
        if beats[i][1] == beats[i - 1][1] == beats[i - 2][1] == "N":
            a = beats[i - 1][0] - beats[i - 2][0]
            b = beats[i][0] - beats[i - 1][0]
            rr.append(b)
            d.append(abs(b - a))
    if len(d) < min_pairs:
        return None, len(d)
    return float(np.median(d) / max(np.median(rr), 1.0)), len(d)


def s_share(beats: list[list], min_beats: int = S_SHARE_MIN_BEATS) -> float | None:
    """``beats``: [time ms, beat class] of the classified beats of the last ``afib_s``. The share of
    them called supraventricular (S); None below ``min_beats``. Atrial fibrillation has no atrial
    premature beats to call (its beats are normal beats at random intervals), so a stretch where
    the beat model finds many is organised atrial activity with frequent premature beats (atrial
    bigeminy, sinus bradycardia with runs of them), which the rhythm model can read as AF."""
    if len(beats) < min_beats:
        return None
    return sum(1 for b in beats if b[1] == "S") / len(beats)


@dataclass(frozen=True)
class Thresholds:
    """Per-bed limits (adult defaults; per ward and per bed through `limits_from`)."""

    brady_bpm: float = 40.0
    tachy_bpm: float = 140.0
    asystole_s: float = 4.0
    vtach_beats: int = 5  # high-priority VT from this many consecutive ventricular beats ...
    vtach_bpm: float = 100.0  # ... at more than this rate; shorter fast runs of >= nsvt_beats: nsvt
    nsvt_beats: int = 3
    afib_s: float = 30.0
    afib_p: float = 0.5  # the rhythm decision's AF probability that counts as AF
    # when > 0 (opt-in), the ventricular rhythm must also be irregular beyond its ectopic beats:
    # the median successive difference of the RR intervals between normal-class beats, over
    # their median, in the last afib_s, at least this (see `rr_irregularity`)
    afib_irr: float = AFIB_IRR_DEFAULT
    # when > 0, the RR intervals of all beats of the last afib_s must also be random, not a
    # repeating pattern of premature beats: `rr_entropy` at least this (unknown: not required)
    afib_entropy: float = AFIB_ENTROPY_DEFAULT
    # a beat called N counts as normal in those intervals only from this class probability up
    # (below it is kept as "n"): atrial premature beats the beat model calls N with doubt
    # otherwise make a sinus rhythm read irregular
    afib_n_min_p: float = AFIB_N_MIN_P_DEFAULT
    # when > 0, at most this share of the beats of the last afib_s may be called S (`s_share`)
    afib_s_max: float = AFIB_S_MAX_DEFAULT
    ectopy_per_min: float = 10.0
    sqi_min: float = 0.5
    v_min_p: float = 0.9  # a beat's class counts for runs and ectopy at this class probability
    # an uncertain ventricular call (below v_min_p) from this probability up, between confident
    # ones, counts toward a run's length too (it always counts toward its rate); 0: never
    v_run_count_p: float = V_RUN_COUNT_P_DEFAULT
    flood_factor: float = 3.0  # windows of the present arriving this many times faster than real time


# limits whose 0 switches their condition off (the AF alarm's rhythm checks, the run-length count)
OPTIONAL_LIMITS = ("afib_irr", "afib_entropy", "afib_n_min_p", "afib_s_max", "v_run_count_p")
SHARE_LIMITS = ("afib_n_min_p", "afib_s_max", "v_run_count_p")  # probabilities or shares: at most 1


def check_limits(over, where: str = "") -> dict:
    """A dict of limit -> value over `Thresholds` (e.g. ``{"brady_bpm": 35}``), checked and typed;
    ValueError naming ``where`` and what is wrong otherwise."""
    fields = Thresholds.__dataclass_fields__
    if not isinstance(over, dict):
        raise ValueError(f"{where} must be an object of limit -> value")
    bad = sorted(set(over) - set(fields))
    if bad:
        raise ValueError(f"{where}: unknown limits {bad}; known: {sorted(fields)}")
    out = {}
    for k, v in over.items():
        integer = fields[k].type in (int, "int")
        low_ok = v == 0 and k in OPTIONAL_LIMITS  # 0: the condition is not required
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 or low_ok) or v == float("inf") \
                or (integer and v != int(v)):
            what = "a positive" if k not in OPTIONAL_LIMITS else "0 (off) or a positive"
            raise ValueError(f"{where}[{k!r}] must be {what} {'integer' if integer else 'number'}, not {v!r}")
        out[k] = int(v) if integer else float(v)
    _consistent(Thresholds(**out), where)
    return out


def _consistent(t: Thresholds, where: str) -> Thresholds:
    if t.nsvt_beats > t.vtach_beats:
        raise ValueError(f"{where}: nsvt_beats must not exceed vtach_beats")
    for k in SHARE_LIMITS:
        if getattr(t, k) > 1:
            raise ValueError(f"{where}: {k} is a probability or a share (at most 1)")
    return t


class BedLimits:
    """``bed -> Thresholds``: the defaults, overridden by the deployment's limits for all beds, the
    bed's ward and the bed (``WARDSTREAM_ALARM_LIMITS``), overridden last by limits set for the
    bed at run time (`set_bed`: the alarm API, through the compacted limits topic)."""

    def __init__(self, default: dict, wards: dict[str, dict], beds: dict[int, dict], ward_of):
        self.default, self.wards, self.beds, self.ward_of = default, wards, beds, ward_of
        self._cache: dict[int, Thresholds] = {}  # bed -> effective limits (run-time ones included)

    def configured(self, bed: int) -> dict:
        """The deployment's overrides for this bed (without those set at run time)."""
        return {**self.default, **self.wards.get(self.ward_of(bed), {}), **self.beds.get(bed, {})}

    def resolve(self, bed: int, runtime: dict | None) -> Thresholds:
        """What the bed's limits would be with ``runtime`` overrides; ValueError if inconsistent."""
        return _consistent(Thresholds(**{**self.configured(bed), **(runtime or {})}), f"bed {bed}")

    def set_bed(self, bed: int, runtime: dict | None) -> None:
        """Run-time overrides of one bed (None or {} clears them); checked before they apply."""
        self._cache[bed] = self.resolve(bed, check_limits(runtime or {}, f"limits of bed {bed}"))

    def __call__(self, bed: int) -> Thresholds:
        t = self._cache.get(bed)
        if t is None:  # no run-time limits were set for this bed
            t = self._cache[bed] = self.resolve(bed, None)
        return t


def limits_from(spec: str, ward_of, ward_names=None) -> BedLimits:
    """Per-bed `Thresholds` from JSON (``WARDSTREAM_ALARM_LIMITS``): the defaults, overridden by
    the bed's ward, overridden by the bed itself, e.g.
    ``{"default": {"tachy_bpm": 130}, "wards": {"cardio": {"vtach_beats": 3}},
    "beds": {"12": {"brady_bpm": 35}}}``. ``ward_of(bed)`` names a bed's ward; ``ward_names``
    (optional) are the configured wards, and a ward that is neither one of them nor a default
    ``ward-N`` is an error (a misspelt ward would otherwise change no bed). Returns a
    `BedLimits`; a malformed spec raises ValueError naming what is wrong."""
    import json
    import re

    d = {}
    if spec.strip():
        try:
            d = json.loads(spec)
        except ValueError as exc:
            raise ValueError(f"WARDSTREAM_ALARM_LIMITS is not JSON: {exc}") from None
        if not isinstance(d, dict) or set(d) - {"default", "wards", "beds"}:
            raise ValueError('WARDSTREAM_ALARM_LIMITS must be an object with "default", "wards" and/or "beds"')
    default = check_limits(d.get("default", {}), 'WARDSTREAM_ALARM_LIMITS["default"]')
    wards = {str(w): check_limits(o, f'WARDSTREAM_ALARM_LIMITS["wards"][{w!r}]')
             for w, o in (d.get("wards") or {}).items()}
    if ward_names is not None:
        unknown = sorted(w for w in wards if w not in ward_names and not re.fullmatch(r"ward-\d+", w))
        if unknown:
            raise ValueError(f'WARDSTREAM_ALARM_LIMITS["wards"]: unknown wards {unknown}; '
                             f"configured: {sorted(ward_names)} (or ward-N)")
    beds = {}
    for b, o in (d.get("beds") or {}).items():
        if not re.fullmatch(r"\d+", str(b)) or int(b) < 1:
            raise ValueError(f'WARDSTREAM_ALARM_LIMITS["beds"]: {b!r} is not a bed number')
        beds[int(b)] = check_limits(o, f'WARDSTREAM_ALARM_LIMITS["beds"][{b!r}]')
    lim = BedLimits(default, wards, beds, ward_of)
    # every combination a bed can get, checked now: a worker must not fail on its first window
    for w in wards:
        _consistent(Thresholds(**{**default, **wards[w]}), f"WARDSTREAM_ALARM_LIMITS: ward {w!r}")
    for b in beds:
        _consistent(Thresholds(**lim.configured(b)), f"WARDSTREAM_ALARM_LIMITS: bed {b}")
    return lim


@dataclass
class Evidence:
    """What one window of one bed says. Times are device ms."""

    t_end_ms: int
    window_ms: int
    hr_bpm: float | None
    sqi: float | None
    beats: list[tuple]  # (time ms, beat class or None when not classified yet[, class probability])
    p_af: float | None = None  # the rhythm decision over the last 10 s (None: no decision yet)
    gap_windows: int = 0
    # windows of the present (ending within the last 10 s of wall time) that arrived in the last
    # 10 s, counted by the worker (None: not counted, e.g. in an offline replay)
    recent_windows: int | None = None


@dataclass
class AlarmEvent:
    bed: int
    condition: str
    priority: str
    state: str  # active | acknowledged | resolved | escalated | cleared (condition gone, latched)
    t_ms: int
    by: str
    why: str
    episode: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Condition:
    """One condition's episode state machine."""

    present_since: int | None = None  # condition holding since (ms)
    absent_since: int | None = None  # condition absent since (ms), while an alarm is open
    state: str = "idle"  # idle | active | acknowledged
    onset_ms: int | None = None
    episode: int = 0
    escalated: bool = False
    condition_gone: bool = False  # latched alarm whose condition has cleared


def _pack_beats(beats: list[list]) -> list:
    """[[t ms, class], ...] as [first t, [gaps ms], "classes"]: the state is written after every
    window, and 30 s of beats as pairs cost ~3x the bytes."""
    if not beats:
        return []
    if any(len(b[1]) != 1 for b in beats):  # single-letter AAMI classes pack; anything else stays pairs
        return [list(b) for b in beats]
    ts = [int(b[0]) for b in beats]
    return [ts[0], [b - a for a, b in zip(ts, ts[1:])], "".join(b[1] for b in beats)]


def _unpack_beats(cb: list) -> list[list]:
    if not cb:
        return []
    if isinstance(cb[0], list):  # the pairs form of states written before the packed one
        return [list(b) for b in cb]
    t0, gaps, classes = cb
    ts = np.cumsum([int(t0)] + list(gaps)).tolist()
    return [[int(t), c] for t, c in zip(ts, classes)]


@dataclass
class AlarmState:
    """A bed's alarm state: conditions plus the evidence memory they need."""

    conditions: dict[str, Condition] = field(default_factory=dict)
    last_beat_ms: int | None = None
    signal_since_ms: int | None = None  # good-quality signal uninterrupted since
    v_run: list[int] = field(default_factory=list)  # times of the current ventricular run
    v_recent: list[int] = field(default_factory=list)  # ventricular beats in the last minute
    af_hist: list[list] = field(default_factory=list)  # [t ms, AF probability] of recent decisions
    v_run_uncertain: list[int] = field(default_factory=list)  # uncertain V calls inside the current run
    classified: list[list] = field(default_factory=list)  # [t ms, class] of the beats of the last afib_s
    v_run_counted: list[int] = field(default_factory=list)  # those of them that count toward its length

    def to_dict(self) -> dict:
        return {"c": {k: dict(v.__dict__) for k, v in self.conditions.items()}, "lb": self.last_beat_ms,
                "ss": self.signal_since_ms, "vr": self.v_run, "vx": self.v_recent, "af": self.af_hist,
                "vu": self.v_run_uncertain, "cb": _pack_beats(self.classified),
                **({"vk": self.v_run_counted} if self.v_run_counted else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "AlarmState":
        return cls({k: Condition(**v) for k, v in d.get("c", {}).items()}, d.get("lb"), d.get("ss"),
                   list(d.get("vr", [])), list(d.get("vx", [])), [list(h) for h in d.get("af", [])],
                   list(d.get("vu", [])), _unpack_beats(d.get("cb", [])), list(d.get("vk", [])))

    def open_alarms(self) -> dict[str, str]:
        return {k: c.state for k, c in self.conditions.items() if c.state != "idle"}


def _conditions_now(st: AlarmState, ev: Evidence, th: Thresholds) -> dict[str, tuple[bool, str]]:
    """Which conditions hold at the end of this window, with a reason each."""
    out: dict[str, tuple[bool, str]] = {}
    good = ev.sqi is not None and ev.sqi >= th.sqi_min
    t = ev.t_end_ms
    if good:
        if st.signal_since_ms is None:
            st.signal_since_ms = t - ev.window_ms
    else:
        st.signal_since_ms = None
    for b in ev.beats:
        st.last_beat_ms = b[0] if st.last_beat_ms is None else max(st.last_beat_ms, b[0])
    # asystole: no beat for >= asystole_s, over signal that has been good for that long
    ref = st.last_beat_ms if st.last_beat_ms is not None else st.signal_since_ms
    silent_s = (t - ref) / 1000.0 if ref is not None else 0.0
    asys = good and st.signal_since_ms is not None and (t - st.signal_since_ms) / 1000.0 >= th.asystole_s \
        and silent_s >= th.asystole_s
    out["asystole"] = (asys, f"no QRS for {silent_s:.1f} s on a good-quality signal")
    # ventricular runs: consecutive V beats; rate from the spacing of the last n of them
    vt, vt_why, ns, ns_why = False, "", False, ""

    def fast(n: int) -> float | None:
        """The rate of the run's last n ventricular beats if it is fast (the uncertain ventricular
        calls between the first and the last of them count as beats of the rate; toward the n only
        those from ``v_run_count_p`` up, when that limit is on)."""
        if n < 2:
            return None
        for k in range(2, len(st.v_run) + 1):  # the fewest trailing confident beats that make n
            t0, t1 = st.v_run[-k], st.v_run[-1]
            if k + sum(1 for u in st.v_run_counted if t0 < u < t1) >= n:
                break
        else:
            return None
        between = sum(1 for u in st.v_run_uncertain if t0 < u < t1)
        span = (t1 - t0) / 1000.0
        rate = 60.0 * (k - 1 + between) / span if span > 0 else 0.0
        return rate if rate > th.vtach_bpm else None

    def run_beats() -> int:
        """The current run's length: its confident V beats and the uncertain calls counted in it."""
        return len(st.v_run) + sum(1 for u in st.v_run_counted if u < st.v_run[-1])

    for b in sorted(ev.beats, key=lambda b: b[0]):
        bt, cls = b[0], b[1]
        uncertain = len(b) > 2 and b[2] < th.v_min_p and cls is not None
        if uncertain:
            # an uncertain call neither extends a run nor breaks it; an uncertain ventricular call
            # inside a run still counts as a beat of its rate (of its length from v_run_count_p)
            if cls == "V" and st.v_run:
                st.v_run_uncertain.append(bt)
                if th.v_run_count_p > 0 and b[2] >= th.v_run_count_p:
                    st.v_run_counted.append(bt)
        elif cls == "V":
            st.v_run.append(bt)
            st.v_recent.append(bt)
        elif cls is not None:
            st.v_run, st.v_run_uncertain, st.v_run_counted = [], [], []
        if (rate := fast(th.vtach_beats)) is not None:
            vt, vt_why = True, f"run of {run_beats()} ventricular beats at {rate:.0f} bpm"
        elif (rate := fast(th.nsvt_beats)) is not None:
            ns, ns_why = True, f"run of {run_beats()} ventricular beats at {rate:.0f} bpm"
    if st.v_run and t - st.v_run[-1] > 2000:  # a run ends when no V beat follows within 2 s
        st.v_run, st.v_run_uncertain, st.v_run_counted = [], [], []
    st.v_run_uncertain = [u for u in st.v_run_uncertain if st.v_run and u > st.v_run[0]]
    st.v_run_counted = [u for u in st.v_run_counted if st.v_run and u > st.v_run[0]]
    out["vtach"] = (vt, vt_why or "no ventricular run")
    # the shorter run's alarm gives way to the VT alarm (the monitors' alarm chain)
    out["nsvt"] = (ns and not vt, ns_why or "no ventricular run")
    st.v_recent = [b for b in st.v_recent if b > t - 60_000]
    out["ectopy"] = (len(st.v_recent) >= th.ectopy_per_min,
                     f"{len(st.v_recent)} ventricular beats in the last minute")
    # sustained AF: the decisions of the last afib_s - 10 s (each covers the 10 s before it), so
    # together they cover afib_s; their median AF probability decides (one odd decision does not
    # reset an episode); with afib_irr set, the RR intervals between normal beats of the last
    # afib_s must be irregular too (ventricular bigeminy or frequent premature beats make a
    # rhythm look irregular to the rhythm model; their intervals are left out here)
    irr, pairs, ent, share = None, 0, None, None
    # the classified beats are kept only where a limit needs them: the state is stored with every window
    if th.afib_irr > 0 or th.afib_entropy > 0 or th.afib_s_max > 0:
        new = [[int(b[0]), "n" if b[1] == "N" and len(b) > 2 and b[2] is not None and b[2] < th.afib_n_min_p
                else b[1]] for b in ev.beats if b[1] is not None]
        st.classified = sorted(b for b in st.classified + new if b[0] > t - int(th.afib_s * 1000))
        irr, pairs = rr_irregularity(st.classified)
        ent = rr_entropy([b[0] for b in st.classified]) if th.afib_entropy > 0 else None
        share = s_share(st.classified) if th.afib_s_max > 0 else None
    elif st.classified:
        st.classified = []
    if ev.p_af is not None:
        st.af_hist.append([t, round(float(ev.p_af) if good else 0.0, 4)])
    span_ms = int((th.afib_s - 10.0) * 1000)
    st.af_hist = [h for h in st.af_hist if h[0] >= t - span_ms]
    covered = bool(st.af_hist) and st.af_hist[-1][0] - st.af_hist[0][0] >= span_ms \
        and len(st.af_hist) >= 0.8 * span_ms / ev.window_ms
    med = float(np.median([h[1] for h in st.af_hist])) if st.af_hist else 0.0
    why = f"median AF probability {med:.2f} over the last {th.afib_s:.0f} s"
    irregular = True
    if th.afib_irr > 0:
        irregular = irr is not None and irr >= th.afib_irr
        why += ", RR irregularity " + (f"{irr:.3f}" if irr is not None else f"unknown ({pairs} normal interval pairs)")
    if th.afib_entropy > 0:
        irregular = irregular and (ent is None or ent >= th.afib_entropy)
        why += ", RR entropy " + (f"{ent:.2f}" if ent is not None else "unknown")
    if th.afib_s_max > 0:
        irregular = irregular and (share is None or share <= th.afib_s_max)
        why += ", S share " + (f"{share:.2f}" if share is not None else "unknown")
    out["afib"] = (covered and med >= th.afib_p and irregular, why)
    hr = ev.hr_bpm
    out["brady"] = (good and hr is not None and 0 < hr < th.brady_bpm, f"heart rate {hr} bpm")
    out["tachy"] = (good and hr is not None and hr > th.tachy_bpm, f"heart rate {hr} bpm")
    out["signal_quality"] = (not good, f"signal quality {ev.sqi}")
    out["seq_gap"] = (ev.gap_windows > 0, f"{ev.gap_windows} windows missing before this one")
    expected = 10_000 / ev.window_ms
    n = ev.recent_windows
    out["frame_flood"] = (n is not None and n > th.flood_factor * expected,
                          f"{n} windows of the present in 10 s (expected {expected:.0f})")
    out["device_silent"] = (False, "windows arriving")
    return out


def _advance(bed: int, st: AlarmState, name: str, holds: bool, why: str, t: int, cfg: ConditionConfig,
             events: list[AlarmEvent]) -> None:
    """One condition's episode state machine, one observation at time ``t``."""
    c = st.conditions.setdefault(name, Condition())

    def emit(state: str, reason: str) -> None:
        events.append(AlarmEvent(bed, name, cfg.priority, state, t, "wardstream", reason, c.episode))

    if holds:
        c.absent_since = None
        if c.present_since is None:
            c.present_since = t
        if c.state == "idle" and (t - c.present_since) / 1000.0 >= cfg.onset_s:
            c.state, c.onset_ms, c.episode, c.escalated, c.condition_gone = "active", t, c.episode + 1, False, False
            emit("active", why)
        elif c.condition_gone:
            c.condition_gone = False  # the latched condition came back: same episode
    else:
        c.present_since = None
        if c.state != "idle":
            if c.absent_since is None:
                c.absent_since = t
            if (t - c.absent_since) / 1000.0 >= cfg.clear_s and not c.condition_gone:
                if cfg.latching and c.state == "active":
                    c.condition_gone = True
                    emit("cleared", f"condition absent for {cfg.clear_s:.0f} s; latched until acknowledged")
                else:
                    c.state = "idle"
                    emit("resolved", f"condition absent for {cfg.clear_s:.0f} s")
    if (c.state == "active" and not c.escalated and cfg.escalate_after_s is not None
            and c.onset_ms is not None and (t - c.onset_ms) / 1000.0 >= cfg.escalate_after_s):
        c.escalated = True
        emit("escalated", f"not acknowledged within {cfg.escalate_after_s:.0f} s")


def step(bed: int, st: AlarmState, ev: Evidence, th: Thresholds = Thresholds(),
         conf: dict[str, ConditionConfig] = DEFAULT_CONDITIONS) -> list[AlarmEvent]:
    """Advance the bed's alarms by one window; returns the transitions it caused."""
    events: list[AlarmEvent] = []
    for name, (holds, why) in _conditions_now(st, ev, th).items():
        cfg = conf.get(name)
        if cfg is not None:
            _advance(bed, st, name, holds, why, ev.t_end_ms, cfg, events)
    return events


def link_step(bed: int, st: AlarmState, name: str, holds: bool, why: str, t_ms: int,
              conf: dict[str, ConditionConfig] = DEFAULT_CONDITIONS) -> list[AlarmEvent]:
    """A condition observed outside the window stream (``device_silent``: the worker's timer)."""
    events: list[AlarmEvent] = []
    _advance(bed, st, name, holds, why, t_ms, conf[name], events)
    return events


def discharge(bed: int, st: AlarmState, by: str, t_ms: int,
              conf: dict[str, ConditionConfig] = DEFAULT_CONDITIONS) -> tuple[AlarmState, list[AlarmEvent]]:
    """The bed's patient is discharged (or another patient takes the bed): every open alarm
    resolves now, latched and acknowledged ones included, and the evidence memory of the stay
    (beats, runs, AF decisions) is forgotten. Only each condition's episode counter carries over,
    so the next stay's alarms never reuse an earlier event id."""
    events = [AlarmEvent(bed, name, conf[name].priority if name in conf else "technical", "resolved", t_ms, by,
                         "patient discharged", c.episode)
              for name, c in sorted(st.conditions.items()) if c.state != "idle"]
    fresh = AlarmState({name: Condition(episode=c.episode) for name, c in st.conditions.items()})
    return fresh, events


def acknowledge(bed: int, st: AlarmState, condition: str, by: str, t_ms: int,
                conf: dict[str, ConditionConfig] = DEFAULT_CONDITIONS) -> list[AlarmEvent]:
    """A clinician acknowledges: silences the alarm and stops escalation; a latched alarm whose
    condition has gone resolves now."""
    c = st.conditions.get(condition)
    if c is None or c.state != "active":
        return []
    pri = conf[condition].priority
    out = [AlarmEvent(bed, condition, pri, "acknowledged", t_ms, by, "acknowledged", c.episode)]
    c.state = "acknowledged"
    if c.condition_gone:
        c.state, c.condition_gone = "idle", False
        out.append(AlarmEvent(bed, condition, pri, "resolved", t_ms, by, "latched alarm acknowledged after its condition cleared", c.episode))
    return out
