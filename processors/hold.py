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

Per bed the state is two numbers in `processors.bed.BedState` (until when the hold lasts, device
time of the window ends; the level published), so a restarted worker neither repeats nor forgets a
hold; the time base is the device's window clock, so replays give the same holds.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        from device_sim.control import MAX_HOLD_LEVEL

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


def step(state, open_conditions, t_end_ms: int, policy: HoldPolicy | None) -> tuple[int | None, str] | None:
    """After a bed's alarms have stepped for the window ending at ``t_end_ms``: -> (the level to
    publish, or None to end the hold; why) when the bed's hold changes, else None. Updates
    ``state.hold_until_ms`` and ``state.hold_level``. ``policy`` None (holds turned off since the
    bed's hold began, e.g. a worker restarted with ``WARDSTREAM_ALARM_HOLD_S=0``): a hold still in
    force ends now, so that no device is left capped."""
    if policy is None:
        if state.hold_level < 0:
            return None
        state.hold_level, state.hold_until_ms = -1, 0
        return None, "holds off"
    why = sorted(policy.conditions & set(open_conditions))
    if why:
        state.hold_until_ms = max(state.hold_until_ms, int(t_end_ms + policy.seconds * 1000))
    if state.hold_until_ms > t_end_ms:
        if state.hold_level != policy.max_level:
            state.hold_level = policy.max_level
            return policy.max_level, ",".join(why)
        return None
    if state.hold_level >= 0:
        state.hold_level, state.hold_until_ms = -1, 0
        return None, ""
    return None
