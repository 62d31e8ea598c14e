"""The fidelity hold: a bed with an open ventricular or asystole alarm gets its ECG at full fidelity.

A device that picks its level per window sends the coarse levels (3–5) wherever its predictor
expects the rhythm decision and the QRS timing to survive them — including windows in which one or
two beats lose their ventricular shape, which the ventricular-run alarm counts (docs/dynamic-deep.md,
"What choosing levels costs the ventricular-run alarms"). Once a bed has shown it (an open
``vtach``, ``nsvt``, ``ectopy`` or ``asystole`` alarm), the worker caps the level its device may send
at ``max_level`` (default 1, the main job's fidelity) for as long as such an alarm is open and
``seconds`` after: key ``hold-NNNNNN`` on the control topic (`device_sim.control`), which the
simulated devices read and the gateway turns into the firmware's downlink frames
(`stream.downlink`, flag bit 1). A hold only ever lowers the level, so a device still sends raw
where its predictor asks for it. The clinician looking at the bed then sees the signal as the main
job's devices send it, and the alarms that follow see what fixed level 1 lets them see.

A clinician can ask for the same on any bed (`POST /api/v1/beds/{bed}/fidelity`, `request`); while
both are in force the lower level wins.

Per bed the state is two numbers in `processors.bed.BedState` (until when the hold lasts, device
time of the window ends; the level published), so a restarted worker neither repeats nor forgets a
hold; the time base is the device's window clock, so replays give the same holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.downlink import MAX_LEVEL as MAX_HOLD_LEVEL

DEFAULT_CONDITIONS = ("vtach", "nsvt", "ectopy", "asystole")


@dataclass(frozen=True)
class HoldPolicy:
    conditions: frozenset[str] = frozenset(DEFAULT_CONDITIONS)
    seconds: float = 120.0  # after the last window with such an alarm open
    max_level: int = 1

    @classmethod
    def from_settings(cls, s) -> "HoldPolicy | None":
        """``WARDSTREAM_ALARM_HOLD_S`` (0: no holds), ``_LEVEL``, ``_CONDITIONS``; checked."""
        if s.alarm_hold_s <= 0:
            return None
        return cls(parse_conditions(s.alarm_hold_conditions), float(s.alarm_hold_s), int(s.alarm_hold_level))

    def __post_init__(self):
        if not 0 <= self.max_level <= MAX_HOLD_LEVEL:
            raise ValueError(f"the hold's level must be 0..{MAX_HOLD_LEVEL}, got {self.max_level}")
        if self.seconds <= 0:
            raise ValueError(f"the hold lasts a positive number of seconds, got {self.seconds}")


def parse_conditions(spec: str) -> frozenset[str]:
    from processors.alarms import DEFAULT_CONDITIONS as KNOWN

    names = frozenset(c.strip() for c in spec.split(",") if c.strip())
    unknown = sorted(names - set(KNOWN))
    if not names or unknown:
        raise ValueError(f"WARDSTREAM_ALARM_HOLD_CONDITIONS: unknown alarm condition(s) {unknown} "
                         f"(known: {', '.join(sorted(KNOWN))})" if unknown else
                         "WARDSTREAM_ALARM_HOLD_CONDITIONS names no condition")
    return names


MANUAL_MAX_MINUTES = 24 * 60  # a clinician's request lasts at most a day (renewable)


def request(state, max_level: int | None, minutes: float, by: str, t_ms: int) -> None:
    """A clinician's hold on the bed (``POST /api/v1/beds/{bed}/fidelity``): its device sends no ECG
    level above ``max_level`` for ``minutes`` from device time ``t_ms`` (the bed's last window);
    ``minutes`` 0 withdraws it. Applied by the next `step`."""
    if not 0 <= minutes <= MANUAL_MAX_MINUTES:
        raise ValueError(f"minutes must lie in 0..{MANUAL_MAX_MINUTES}, got {minutes}")
    if minutes and (max_level is None or not 0 <= max_level <= MAX_HOLD_LEVEL):
        raise ValueError(f"max_level must lie in 0..{MAX_HOLD_LEVEL}, got {max_level}")
    if minutes:
        state.manual_level, state.manual_until_ms, state.manual_by = int(max_level), int(t_ms + minutes * 60_000), by
    else:
        state.manual_level, state.manual_until_ms, state.manual_by = -1, 0, ""


def step(state, open_conditions, t_end_ms: int, policy: HoldPolicy | None) -> tuple[int | None, str] | None:
    """After a bed's alarms have stepped for the window ending at ``t_end_ms`` (or a clinician's
    request, `request`): -> (the level to publish, or None to end the hold; why) when the bed's hold
    changes, else None. The hold's level is the lowest of the automatic one (an open alarm of
    ``policy.conditions``, and ``policy.seconds`` after) and a clinician's request in force.
    ``policy`` None: no automatic holds (one still in force, say from before a restart with
    ``WARDSTREAM_ALARM_HOLD_S=0``, ends now, so that no device is left capped). Updates the
    hold fields of ``state``."""
    levels, why = [], []
    if policy is not None:
        trig = sorted(policy.conditions & set(open_conditions))
        if trig:
            state.hold_until_ms = max(state.hold_until_ms, int(t_end_ms + policy.seconds * 1000))
        if state.hold_until_ms > t_end_ms:
            levels.append(policy.max_level)
            why += trig or ["alarm"]
    if policy is None or state.hold_until_ms <= t_end_ms:
        state.hold_until_ms = 0
    if state.manual_until_ms > t_end_ms:
        levels.append(state.manual_level)
        why.append(f"requested by {state.manual_by}")
    else:
        state.manual_level, state.manual_until_ms, state.manual_by = -1, 0, ""
    level = min(levels) if levels else -1
    if level == state.hold_level:
        return None
    state.hold_level = level
    return (level, ",".join(why)) if level >= 0 else (None, "")


def published_by(state, default: str = "alarm") -> str:
    """Who a hold change is published for (its control-topic record's ``by``): "alarm" while the
    automatic hold is in force, else the clinician whose request is (`request`), else ``default``
    (an ending: "alarm" when it ran out, the clinician's name when they withdrew it)."""
    if state.hold_until_ms > 0:
        return "alarm"
    return state.manual_by or default
