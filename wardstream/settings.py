"""One frozen settings object, read from the environment (``WARDSTREAM_*``) and CLI flags.

Secrets (InfluxDB token, device HMAC master secret) come only from the environment.
Every address defaults to 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from wardmodels import DD_MODEL

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """``../shared/data`` beside the project when it exists, else ``./data``."""
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return shared if shared.exists() else Path("data")


@dataclass(frozen=True)
class Settings:
    app_id: str = "wardstream"  # Faust app id: consumer group and changelog topic prefix
    kafka_bootstrap: str = "127.0.0.1:19092"
    influx_url: str = "http://127.0.0.1:8086"
    influx_api: str = "v1"  # "v1": /write?db=&rp= (InfluxDB 1.x); "v2": /api/v2/write (2.x, token)
    influx_db: str = "wardstream"
    influx_rp: str = ""
    # v1: create the retention policies and continuous queries of processors.retention
    influx_retention: bool = True
    # decoded waveform strips written per modality (samples/s; 0: none) into the short-lived
    # "strip" retention policy, for the bed-detail dashboard
    waveform_hz: int = 32
    influx_org: str = "wardstream"
    influx_bucket: str = "wardstream"
    influx_token: str = ""  # environment only
    state_dir: Path = PROJECT_ROOT / ".wardstream"
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    frames_topic: str = "ward.frames"
    dlq_topic: str = "ward.frames.dlq"
    control_topic: str = "ward.control"
    alarms_topic: str = "ward.alarms"  # every alarm transition (JSON), key bed:condition
    deliveries_topic: str = "ward.alarms.deliveries"  # one record per (subscriber, alarm event), key subscriber
    subscriptions_topic: str = "ward.subscriptions"  # compacted, key subscription id
    limits_topic: str = "ward.alarm_limits"  # compacted, key bed_key: alarm limits set at run time
    commands_topic: str = "ward.commands"  # acknowledgements and discharges, key bed (co-partitioned with frames)
    # beds per ward: "icu:1-24,cardio:25-200" (beds outside every range: ward-N by 200s)
    wards: str = ""
    api_tokens: str = ""  # environment only: "TOKEN=wardA|wardB;TOKEN2=*" (bearer tokens and their wards)
    # per-condition alarm settings over processors.alarms.DEFAULT_CONDITIONS, JSON:
    # {"tachy": {"onset_s": 5}, "asystole": {"escalate_after_s": 20}}
    alarm_config: str = ""
    # alarm limits per ward and bed over processors.alarms.Thresholds, JSON:
    # {"default": {"tachy_bpm": 130}, "wards": {"cardio": {"vtach_beats": 3}}, "beds": {"12": {"brady_bpm": 35}}}
    alarm_limits: str = ""
    device_silent_s: float = 10.0  # no window from a bed this long: technical alarm device_silent
    # a frames partition with frames waiting whose group offset has not moved this long is
    # reported stalled by every worker (processors/group_watch.py; 0: not watched)
    stall_s: float = 30.0
    stall_priority: str = "technical"  # of the monitoring_stalled alarm of each bed waiting on one
    # a worker whose event loop has not run for this long exits (status 70) for its supervisor to
    # restart it (processors/watchdog.py; 0: off)
    loop_watchdog_s: float = 60.0
    # a supervised worker whose loop has not touched its heartbeat file for this long — stopped, or
    # hung where its own watchdog cannot run — is killed and started again (wardstream/workers.py;
    # 0: not checked). Longer than the watchdog's limit, so that a blocked loop exits with its stack
    worker_liveness_s: float = 120.0
    webhook_timeout_s: float = 5.0
    webhook_max_backoff_s: float = 30.0
    webhook_give_up_s: float = 900.0  # then the alarm becomes a technical "delivery_failed" alarm
    frames_partitions: int = 16
    # hours the frames topic keeps a window (0: 48, `stream.topics.FRAMES_RETENTION_H`, at its
    # creation only); set, it is applied to an existing frames topic too
    frames_retention_h: float = 0.0
    worker_web_port: int = 6066
    worker_web_host: str = "127.0.0.1"
    device_secret: str = ""  # environment only: master secret for per-device HMAC keys
    require_hmac: bool = False
    codec_model: int = DD_MODEL  # wire model id the simulated devices encode with (0: raw int16)
    codec_level: int = 1  # the level they send (0: raw; see wardmodels.runtime for the ladder)
    # how the simulator runs the edge encoder: "fp32" (the float network whose weights are the
    # firmware's int8 weights; ~8x faster here, indices agree with the integer path on >99% of
    # positions), "int8" (the bit-exact integer specification the firmware implements) or
    # "firmware" (the C device of firmware/ itself, built for this host: `device_sim.firmware`)
    sim_encoder: str = "fp32"
    # the simulator encodes the windows that are complete together, waiting for up to this many
    # (at most 0.1 s of device time; 1: each window as soon as it is complete): `device_sim.ward.run_ward`
    sim_gather: int = 8
    # "dynamic": each device picks its ECG level per window under a task-error bound (issue 5,
    # needs a codec model with a Dynamic-Deep predictor); "fixed": every window at codec_level.
    # Fixed is the default while dynamic is measured worse (more bytes than fixed level 2 at the
    # deployed bound, and a heavier worker: see docs/dynamic-deep.md)
    level_policy: str = "fixed"
    dd_bound: float = 0.0  # the ward's default bound (0: the deployed bound in the manifest)
    # which edge error predictor Dynamic-Deep devices run: "default", or "decode" (also the decode
    # check: each device decodes every level itself and runs its QRS detector on each; more
    # gain at the same bound, ~5 decodes + 5 detectors per window on the device), or "rhythm"
    # (also a small rhythm model on the last 10 s of the original and every level: ~32 M
    # multiply-adds more per window, wardmodels.edge_rhythm), or the path of a predictor file (one
    # fitted with `train dynamic-deep --phase predictor --no-deploy`; Python devices only)
    dd_predictor: str = "default"
    eeg_level: int = 2  # EEG's level under the dynamic policy (no EEG task model bounds it)
    # every this many seconds a device that predicts its task error sends 10 s of its ECG as
    # its encoder saw it, for the cloud's audit of the prediction (processors.audit; 0: never)
    audit_every_s: float = 1800.0
    # the worker sends each bed's slack correction from its audits back on the control topic
    # (processors.audit.slack_offset); devices that pick their level add it to their slack
    audit_correction: bool = True
    # the fidelity hold (processors.hold): while a bed has an open alarm of these conditions, and
    # alarm_hold_s after, the worker caps its device's ECG level at alarm_hold_level (control
    # topic key hold-NNNNNN; devices that pick their level obey it); 0 s: no holds
    alarm_hold_s: float = 120.0
    alarm_hold_level: int = 1
    alarm_hold_conditions: str = "vtach,nsvt,ectopy,asystole"
    # devices send their raw-level sections (and audit references) lossless-coded
    # (`stream.lossless`, wire flag bit 3: about half the bytes); 0: plain int16
    raw_lossless: bool = True
    # the frame format devices send: 2, the compact one (18-byte header, one byte per section
    # head), or 1 (`stream.wire`); the worker reads both
    wire_version: int = 2
    # v2 frames carry the codec-level sections entropy-coded where the codec model has coding
    # tables (wire flag bit 6, `stream.vqcode`: the same indices in fewer bytes); 0: bit-packed
    wire_coded: bool = True

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.rsplit(":", 1)[1])

    @property
    def influx_port(self) -> int:
        return int(self.influx_url.rsplit(":", 1)[1].split("/")[0])

    def device_key(self, bed_id: int) -> bytes | None:
        """Per-device HMAC key derived from the master secret (None: devices do not sign)."""
        if not self.device_secret:
            return None
        return hmac.new(self.device_secret.encode(), f"bed:{bed_id}".encode(), hashlib.sha256).digest()

    def replace(self, **changes) -> "Settings":
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


_ENV = {
    "app_id": "WARDSTREAM_APP_ID",
    "kafka_bootstrap": "WARDSTREAM_KAFKA_BOOTSTRAP",
    "influx_url": "WARDSTREAM_INFLUX_URL",
    "influx_api": "WARDSTREAM_INFLUX_API",
    "influx_db": "WARDSTREAM_INFLUX_DB",
    "influx_rp": "WARDSTREAM_INFLUX_RP",
    "influx_retention": "WARDSTREAM_INFLUX_RETENTION",
    "waveform_hz": "WARDSTREAM_WAVEFORM_HZ",
    "influx_org": "WARDSTREAM_INFLUX_ORG",
    "influx_bucket": "WARDSTREAM_INFLUX_BUCKET",
    "influx_token": "WARDSTREAM_INFLUX_TOKEN",
    "state_dir": "WARDSTREAM_STATE_DIR",
    "data_dir": "WARDSTREAM_DATA_DIR",
    "frames_topic": "WARDSTREAM_FRAMES_TOPIC",
    "dlq_topic": "WARDSTREAM_DLQ_TOPIC",
    "control_topic": "WARDSTREAM_CONTROL_TOPIC",
    "alarms_topic": "WARDSTREAM_ALARMS_TOPIC",
    "deliveries_topic": "WARDSTREAM_DELIVERIES_TOPIC",
    "subscriptions_topic": "WARDSTREAM_SUBSCRIPTIONS_TOPIC",
    "limits_topic": "WARDSTREAM_LIMITS_TOPIC",
    "commands_topic": "WARDSTREAM_COMMANDS_TOPIC",
    "wards": "WARDSTREAM_WARDS",
    "api_tokens": "WARDSTREAM_API_TOKENS",
    "alarm_config": "WARDSTREAM_ALARM_CONFIG",
    "alarm_limits": "WARDSTREAM_ALARM_LIMITS",
    "device_silent_s": "WARDSTREAM_DEVICE_SILENT_S",
    "stall_s": "WARDSTREAM_STALL_S",
    "stall_priority": "WARDSTREAM_STALL_PRIORITY",
    "loop_watchdog_s": "WARDSTREAM_LOOP_WATCHDOG_S",
    "worker_liveness_s": "WARDSTREAM_WORKER_LIVENESS_S",
    "webhook_timeout_s": "WARDSTREAM_WEBHOOK_TIMEOUT_S",
    "webhook_max_backoff_s": "WARDSTREAM_WEBHOOK_MAX_BACKOFF_S",
    "webhook_give_up_s": "WARDSTREAM_WEBHOOK_GIVE_UP_S",
    "frames_partitions": "WARDSTREAM_FRAMES_PARTITIONS",
    "frames_retention_h": "WARDSTREAM_FRAMES_RETENTION_H",
    "worker_web_port": "WARDSTREAM_WORKER_WEB_PORT",
    "worker_web_host": "WARDSTREAM_WORKER_WEB_HOST",
    "device_secret": "WARDSTREAM_DEVICE_SECRET",
    "require_hmac": "WARDSTREAM_REQUIRE_HMAC",
    "codec_model": "WARDSTREAM_CODEC_MODEL",
    "codec_level": "WARDSTREAM_CODEC_LEVEL",
    "sim_encoder": "WARDSTREAM_SIM_ENCODER",
    "sim_gather": "WARDSTREAM_SIM_GATHER",
    "level_policy": "WARDSTREAM_LEVEL_POLICY",
    "dd_bound": "WARDSTREAM_DD_BOUND",
    "dd_predictor": "WARDSTREAM_DD_PREDICTOR",
    "eeg_level": "WARDSTREAM_EEG_LEVEL",
    "audit_every_s": "WARDSTREAM_AUDIT_EVERY_S",
    "audit_correction": "WARDSTREAM_AUDIT_CORRECTION",
    "alarm_hold_s": "WARDSTREAM_ALARM_HOLD_S",
    "alarm_hold_level": "WARDSTREAM_ALARM_HOLD_LEVEL",
    "alarm_hold_conditions": "WARDSTREAM_ALARM_HOLD_CONDITIONS",
    "raw_lossless": "WARDSTREAM_RAW_LOSSLESS",
    "wire_version": "WARDSTREAM_WIRE_VERSION",
    "wire_coded": "WARDSTREAM_WIRE_CODED",
}


SECRETS = {"influx_token", "device_secret", "api_tokens"}


def to_env(s: Settings) -> dict[str, str]:
    """The ``WARDSTREAM_*`` variables that make another process read the same settings.

    Secrets are left out: they reach child processes only through the inherited environment.
    """
    out = {}
    for name, var in _ENV.items():
        if name in SECRETS:
            continue
        v = getattr(s, name)
        out[var] = ("1" if v else "0") if isinstance(v, bool) else str(v)
    return out


def from_env(env: dict[str, str] | None = None, **overrides) -> Settings:
    """Settings from ``env`` (default ``os.environ``), then explicit overrides (CLI flags)."""
    env = os.environ if env is None else env
    base = Settings()
    values: dict = {}
    for name, var in _ENV.items():
        if var not in env:
            continue
        raw = env[var]
        kind = type(getattr(base, name))
        if kind is bool:
            values[name] = raw.strip().lower() in {"1", "true", "yes", "on"}
        elif kind is int:
            values[name] = int(raw)
        elif kind is float:
            values[name] = float(raw)
        elif isinstance(getattr(base, name), Path):
            values[name] = Path(raw)
        else:
            values[name] = raw
    if int(values.get("sim_gather", base.sim_gather)) < 1:
        raise ValueError("WARDSTREAM_SIM_GATHER must be 1 or more (windows)")
    if values.get("sim_encoder", base.sim_encoder) not in {"fp32", "int8", "firmware"}:
        raise ValueError("WARDSTREAM_SIM_ENCODER must be 'fp32', 'int8' or 'firmware'")
    if values.get("sim_encoder", base.sim_encoder) == "firmware" and int(values.get("wire_version", base.wire_version)) != 2:
        raise ValueError("WARDSTREAM_SIM_ENCODER=firmware sends wire format v2 only (WARDSTREAM_WIRE_VERSION=2)")
    if values.get("level_policy", base.level_policy) not in {"fixed", "dynamic"}:
        raise ValueError("WARDSTREAM_LEVEL_POLICY must be 'fixed' or 'dynamic'")
    if float(values.get("frames_retention_h", base.frames_retention_h)) < 0:
        raise ValueError("WARDSTREAM_FRAMES_RETENTION_H must be 0 (48 h, at creation) or more (hours)")
    pk = str(values.get("dd_predictor", base.dd_predictor))
    if pk not in {"default", "decode", "rhythm"}:
        from wardmodels.runtime import check_predictor

        try:
            check_predictor(pk)
        except ValueError as exc:
            raise ValueError(f"WARDSTREAM_DD_PREDICTOR: {exc}") from None
    if values.get("waveform_hz", base.waveform_hz) not in {0, 16, 32, 64, 128}:
        raise ValueError("WARDSTREAM_WAVEFORM_HZ must be 0, 16, 32, 64 or 128 (a divisor of 128 Hz)")
    if values.get("influx_api", base.influx_api) not in {"v1", "v2"}:
        raise ValueError("WARDSTREAM_INFLUX_API must be 'v1' or 'v2'")
    if values.get("wire_version", base.wire_version) not in {1, 2}:
        raise ValueError("WARDSTREAM_WIRE_VERSION must be 1 or 2")
    out = dataclasses.replace(base, **values).replace(**overrides)
    from processors.hold import HoldPolicy

    try:
        HoldPolicy.from_settings(out)
    except ValueError as exc:
        raise ValueError(f"the fidelity hold (WARDSTREAM_ALARM_HOLD_*): {exc}") from None
    return out
