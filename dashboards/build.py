"""The four Grafana dashboards, generated from Python (InfluxQL against the `wardstream` database).

``build_all()`` returns ``{file name: dashboard JSON}``; `wardstream dashboards build --out DIR`
writes them (the committed copies in ``dashboards/generated/`` are what Grafana provisions, and a
test keeps them equal to what this module builds). Every query is raw InfluxQL with Grafana's
macros (``$timeFilter``, ``$__interval``, ``$__interval_ms``) and the dashboard variables
(``$bed``): it works on InfluxDB 1.x and, through a DBRP mapping, on 2.x.

What each measurement is: see ``dashboards/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.retention import STRIP
from wardstream.cost import ASSUMPTIONS, usd_per_wire_byte_month

DS = {"type": "influxdb", "uid": "wardstream-influx"}
SCHEMA_VERSION = 39
RHYTHMS = ("normal", "af", "other", "noisy")  # rhythm.code 0..3 (processors.classify)
PRIORITY_NAMES = {0: "none", 1: "technical", 2: "low", 3: "medium", 4: "high"}
PRIORITY_COLOURS = {0: "green", 1: "blue", 2: "yellow", 3: "orange", 4: "red"}
BED = '"bed" =~ /^$bed$/'
KAFKA_OVERHEAD = ASSUMPTIONS["kafka_record_overhead_bytes"]


def target(query: str, ref: str = "A", alias: str = "", fmt: str = "time_series") -> dict:
    t = {"refId": ref, "datasource": DS, "query": query, "rawQuery": True, "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def value_mappings(names: dict[int, str], colours: dict[int, str] | None = None) -> list[dict]:
    opts = {str(k): {"text": v, "index": i, **({"color": colours[k]} if colours else {})}
            for i, (k, v) in enumerate(names.items())}
    return [{"type": "value", "options": opts}]


def thresholds(steps: list[tuple[float | None, str]]) -> dict:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


@dataclass
class Layout:
    """Places panels left to right in rows of 24 grid units."""

    x: int = 0
    y: int = 0
    row_h: int = 0
    next_id: int = 1
    panels: list = field(default_factory=list)

    def add(self, panel: dict, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = self.next_id
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)
        return panel

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": self.next_id,
                            "panels": [], "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.next_id += 1
        self.y += 1


def stat(title: str, targets: list[dict], unit: str = "none", description: str = "",
         mappings: list | None = None, steps: list | None = None, decimals: int | None = None,
         colour_mode: str = "background", text_mode: str = "value_and_name", fields: str = "") -> dict:
    defaults: dict = {"unit": unit, "mappings": mappings or [],
                      "thresholds": thresholds(steps or [(None, "green")]), "color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description, "datasource": DS,
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"graphMode": "none", "colorMode": colour_mode, "justifyMode": "auto",
                        "textMode": text_mode, "wideLayout": True, "showPercentChange": False,
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": fields, "values": False},
                        "percentChangeColorMode": "standard", "orientation": "auto"}}


def timeseries(title: str, targets: list[dict], unit: str = "none", description: str = "",
               draw: str = "line", stack: bool = False, fill: int = 10, time_from: str = "",
               interpolation: str = "linear", points: str = "never", min_: float | None = None) -> dict:
    custom = {"drawStyle": draw, "lineInterpolation": interpolation, "lineWidth": 1,
              "fillOpacity": fill, "gradientMode": "none", "showPoints": points, "pointSize": 4,
              "spanNulls": False, "axisPlacement": "auto", "axisLabel": "", "axisColorMode": "text",
              "axisCenteredZero": False, "scaleDistribution": {"type": "linear"},
              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
              "thresholdsStyle": {"mode": "off"}, "barAlignment": 0,
              "hideFrom": {"tooltip": False, "legend": False, "viz": False}}
    defaults: dict = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"},
                      "thresholds": thresholds([(None, "green")])}
    if min_ is not None:
        defaults["min"] = min_
    p = {"type": "timeseries", "title": title, "description": description, "datasource": DS,
         "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": []},
         "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                     "tooltip": {"mode": "multi", "sort": "desc"}}}
    if time_from:
        p["timeFrom"] = time_from
    return p


def table(title: str, targets: list[dict], description: str = "", sort_by: str = "",
          mappings: list | None = None) -> dict:
    p = {"type": "table", "title": title, "description": description, "datasource": DS, "targets": targets,
         "fieldConfig": {"defaults": {"mappings": mappings or [], "custom": {"align": "auto"}}, "overrides": []},
         "options": {"showHeader": True, "cellHeight": "sm"}}
    if sort_by:
        p["options"]["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return p


def bed_variable(multi: bool) -> dict:
    return {"type": "query", "name": "bed", "label": "Bed", "datasource": DS,
            "query": 'SHOW TAG VALUES FROM "frame" WITH KEY = "bed"',
            "definition": 'SHOW TAG VALUES FROM "frame" WITH KEY = "bed"',
            "refresh": 2, "sort": 3, "multi": multi, "includeAll": multi,
            **({"allValue": ".*"} if multi else {}),
            "current": {"text": "All" if multi else "", "value": "$__all" if multi else ""}}


def alarm_annotation(bed_filter: bool) -> dict:
    where = "$timeFilter" + (f" AND {BED}" if bed_filter else "")
    return {"name": "Alarms", "datasource": DS, "enable": True, "iconColor": "red",
            "target": {"refId": "Anno", "query": f'SELECT "why", "condition", "priority", "bed" FROM "alarm" '
                                                 f"WHERE {where} AND \"state\" = 'active'",
                       "rawQuery": True, "resultFormat": "table"},
            "mappings": {"text": {"source": "field", "value": "why"},
                         "tags": {"source": "field", "value": "condition"}}}


def _point_annotation(name: str, colour: str, ref: str, measurement: str, fields: str, text: str,
                      bed_filter: bool) -> dict:
    """An annotation per point of ``measurement`` (its ``text`` field as the text, its bed as the
    tag), of the selected beds only with ``bed_filter``."""
    where = "$timeFilter" + (f" AND {BED}" if bed_filter else "")
    return {"name": name, "datasource": DS, "enable": True, "iconColor": colour,
            "target": {"refId": ref, "query": f'SELECT {fields}, "bed" FROM "{measurement}" WHERE {where}',
                       "rawQuery": True, "resultFormat": "table"},
            "mappings": {"text": {"source": "field", "value": text},
                         "tags": {"source": "field", "value": "bed"}}}


def stay_annotation(bed_filter: bool) -> dict:
    """The end of a patient's stay (`POST /api/v1/beds/{bed}/discharge`): a bed's traces before and
    after it belong to different patients."""
    return _point_annotation("Discharges", "blue", "Stay", "stay", '"by", "alarms_resolved"', "by", bed_filter)


def hold_annotation(bed_filter: bool) -> dict:
    """The worker's fidelity holds beginning and ending (`processors/hold.py`): why a bed's ECG
    levels fall to 1 and rise again."""
    return _point_annotation("Fidelity holds", "purple", "Hold", "fidelity_hold", '"why", "on", "max_level"', "why",
                             bed_filter)


def dashboard(uid: str, title: str, description: str, layout: Layout, variables: list[dict],
              annotations: list[dict], tags: list[str], time_from: str = "now-15m", refresh: str = "10s") -> dict:
    builtin = {"name": "Annotations & Alerts", "builtIn": 1, "enable": True, "hide": True,
               "iconColor": "rgba(0, 211, 255, 1)", "type": "dashboard",
               "datasource": {"type": "grafana", "uid": "-- Grafana --"}}
    return {"uid": uid, "title": title, "description": description, "tags": ["wardstream", *tags],
            "timezone": "browser", "editable": True, "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION,
            "version": 1, "refresh": refresh, "time": {"from": time_from, "to": "now"},
            "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
            "templating": {"list": variables}, "annotations": {"list": [builtin, *annotations]},
            "links": [{"title": "wardstream", "type": "dashboards", "tags": ["wardstream"], "asDropdown": True,
                       "icon": "external link", "includeVars": False, "keepTime": True, "targetBlank": False,
                       "tooltip": "", "url": ""}],
            "panels": layout.panels}


def ward_overview() -> dict:
    L = Layout()
    L.row("Beds")
    last_by_bed = "WHERE $timeFilter AND " + BED + ' GROUP BY "bed"'
    L.add(stat("Highest active alarm", [target(f'SELECT last("highest") FROM "alarm_level" {last_by_bed}',
                                                alias="bed $tag_bed")],
               description="Per bed: the highest priority among its open (active, acknowledged or latched) "
                           "alarms, IEC 60601-1-8 priorities; a bed whose windows wait behind a stuck worker "
                           "counts its monitoring_stalled alarm (technical unless the ward set it louder).",
               mappings=value_mappings(PRIORITY_NAMES, PRIORITY_COLOURS),
               steps=[(None, "green"), (1, "blue"), (2, "yellow"), (3, "orange"), (4, "red")]), 24, 6)
    L.add(stat("Heart rate", [target(f'SELECT last("hr_bpm") FROM "vitals" {last_by_bed}', alias="bed $tag_bed")],
               unit="bpm", decimals=0, description="Per bed: the last heart rate (beats of the last 10 s).",
               steps=[(None, "red"), (40, "orange"), (50, "green"), (120, "orange"), (150, "red")]), 24, 6)
    L.add(stat("Rhythm", [target(f'SELECT last("code") FROM "rhythm" {last_by_bed}', alias="bed $tag_bed")],
               description="Per bed: the rhythm classifier's decision on the last 10 s of ECG.",
               mappings=value_mappings(dict(enumerate(RHYTHMS)), {0: "green", 1: "red", 2: "orange", 3: "purple"})),
          12, 6)
    L.add(stat("Signal quality", [target(f'SELECT last("sqi") FROM "vitals" {last_by_bed}', alias="bed $tag_bed")],
               unit="percentunit", decimals=2, description="Per bed: ECG signal-quality index of the last window "
               "(0 unusable, 1 clean).", steps=[(None, "red"), (0.5, "orange"), (0.8, "green")]), 12, 6)
    L.add(stat("Beds not monitored", [target('SELECT max("beds_stalled") FROM "pipeline" WHERE time > now() - 30s')],
               description="Beds whose windows wait behind a stalled frames partition (its worker stuck or gone), "
                           "as the workers' group watches see them in the last 30 s: each has a "
                           "monitoring_stalled alarm, and its tiles show old values. Empty when no worker "
                           "wrote a pipeline point in that time (see the pipeline-health dashboard).",
               steps=[(None, "green"), (1, "red")]), 4, 4)
    L.add(stat("Last window written", [target(f'SELECT last("wire_bytes") FROM "frame" {last_by_bed}',
                                               alias="bed $tag_bed")],
               unit="dateTimeFromNow", fields="/^Time$/", colour_mode="none",
               description="Per bed: how long ago its last window was written. The tiles above show each "
                           "bed's last values: a bed whose device is silent, or whose windows wait behind a "
                           "stalled worker (alarm monitoring_stalled), shows old values here first."), 20, 4)
    L.row("Alarms")
    L.add(table("Beds by alarm priority",
                [target('SELECT last("highest") AS "priority", last("open") AS "open alarms" FROM "alarm_level" '
                        f'{last_by_bed}', fmt="table")],
                description="Every bed with its highest open alarm priority (4 high … 1 technical, 0 none), "
                            "sorted highest first.", sort_by="priority"), 8, 10)
    L.add(table("Alarm history",
                [target('SELECT "why", "by", "episode" FROM "alarm" WHERE $timeFilter AND ' + BED
                        + ' GROUP BY "bed", "condition", "priority", "state" ORDER BY time DESC LIMIT 500',
                        fmt="table")],
                description="Every alarm transition (active, acknowledged, resolved, escalated) with who and why."),
          16, 10)
    return dashboard("ward-overview", "Ward overview", "A tile per bed: alarms, heart rate, rhythm, signal quality.",
                     L, [bed_variable(multi=True)], [alarm_annotation(False)], ["ward"], refresh="5s")


def bed_detail() -> dict:
    L = Layout()
    w = "WHERE $timeFilter AND " + BED
    L.add(timeseries("Heart rate", [target(f'SELECT mean("hr_bpm") FROM "vitals" {w} GROUP BY time($__interval) fill(null)',
                                           alias="heart rate")], unit="bpm"), 12, 8)
    L.add(timeseries("Heart-rate variability",
                     [target(f'SELECT mean("sdnn_ms") AS "SDNN", mean("rmssd_ms") AS "RMSSD" FROM "vitals" {w} '
                             "GROUP BY time($__interval) fill(null)")], unit="ms"), 12, 8)
    L.add(timeseries("Rhythm probabilities",
                     [target("SELECT " + ", ".join(f'mean("p_{r}") AS "{r}"' for r in RHYTHMS)
                             + f' FROM "rhythm" {w} GROUP BY time($__interval) fill(null)')],
                     unit="percentunit", stack=True, fill=60, min_=0), 12, 8)
    L.add(timeseries("Ectopic beats per minute",
                     [target(f'SELECT count("cls_p") FROM "beat" {w} AND "cls" = \'{c}\' GROUP BY time(1m) fill(0)',
                             ref=c, alias=name) for c, name in (("S", "supraventricular"), ("V", "ventricular"),
                                                                ("F", "fusion"))],
                     draw="bars", stack=True, fill=80,
                     description="Beats the beat classifier calls S, V or F (AAMI), counted per minute."), 12, 8)
    L.add(timeseries("Reconstructed ECG (last 20 s)",
                     [target(f'SELECT "ecg" FROM "{STRIP.name}"."waveform" {w}', alias="ECG")],
                     unit="mV", time_from="20s", fill=0,
                     description="The decoded ECG the cloud analysed, block-averaged to the stored strip rate."),
          12, 8)
    L.add(timeseries("Reconstructed EEG (last 20 s)",
                     [target(f'SELECT "eeg" FROM "{STRIP.name}"."waveform" {w}', alias="EEG")],
                     unit="µV", time_from="20s", fill=0), 12, 8)
    L.add(timeseries("EEG band powers",
                     [target("SELECT " + ", ".join(f'mean("{b}") AS "{b}"' for b in ("delta", "theta", "alpha", "beta", "gamma"))
                             + f' FROM "eeg_bands" {w} GROUP BY time($__interval) fill(null)')],
                     unit="µV²"), 12, 8)
    L.add(timeseries("Compression level and gain",
                     [target(f'SELECT mean("level") FROM "bandwidth" {w} GROUP BY time($__interval), "modality" fill(null)',
                             ref="L", alias="level $tag_modality"),
                      target(f'SELECT sum("raw_bits") / sum("wire_bits") FROM "bandwidth" {w} '
                             'GROUP BY time($__interval), "modality" fill(null)', ref="G", alias="gain $tag_modality")],
                     interpolation="stepAfter",
                     description="Wire level per modality (0 raw … 5 the deepest) and the gain vs 16-bit samples."),
          12, 8)
    L.add(timeseries("Signal quality and alarm level",
                     [target(f'SELECT mean("sqi") FROM "vitals" {w} GROUP BY time($__interval) fill(null)', ref="Q",
                             alias="SQI"),
                      target(f'SELECT max("highest") FROM "alarm_level" {w} GROUP BY time($__interval) fill(null)',
                             ref="H", alias="highest alarm (0 none … 4 high)")], interpolation="stepAfter"), 24, 7)
    return dashboard("bed-detail", "Bed detail", "One bed: vitals, rhythm, ectopy, EEG, compression, waveforms.",
                     L, [bed_variable(multi=False)], [alarm_annotation(True), stay_annotation(True), hold_annotation(True)], ["bed"],
                     time_from="now-30m")


def bandwidth_cost() -> dict:
    L = Layout()
    usd = usd_per_wire_byte_month()
    iv = "$__interval_ms"
    L.add(timeseries("Bits per second per bed",
                     [target(f'SELECT sum("wire_bits") * 1000 / {iv} FROM "bandwidth" WHERE $timeFilter AND {BED} '
                             'GROUP BY time($__interval), "bed" fill(0)', alias="bed $tag_bed")], unit="bps",
                     description="Codec payload bits (indices + scale byte) per second, both modalities."), 12, 8)
    L.add(timeseries("Wire bytes per second, ward",
                     [target(f'SELECT sum("wire_bytes") * 1000 / {iv} FROM "frame" WHERE $timeFilter '
                             'GROUP BY time($__interval) fill(0)', ref="W", alias="sent (frames, headers + CRC)"),
                      target(f'SELECT sum("raw_bytes") * 1000 / {iv} FROM "frame" WHERE $timeFilter '
                             'GROUP BY time($__interval) fill(0)', ref="R", alias="raw 16-bit samples")], unit="Bps"),
          12, 8)
    L.add(timeseries("Compression gain",
                     [target('SELECT sum("raw_bits") / sum("wire_bits") FROM "bandwidth" WHERE $timeFilter '
                             'GROUP BY time($__interval), "modality" fill(null)', ref="M", alias="payload $tag_modality"),
                      target('SELECT sum("raw_bytes") / sum("wire_bytes") FROM "frame" WHERE $timeFilter '
                             'GROUP BY time($__interval) fill(null)', ref="F", alias="whole frames")], unit="x"), 12, 8)
    L.add(timeseries("ECG level mix",
                     [target(f'SELECT count("wire_bits") FROM "bandwidth" WHERE $timeFilter AND "modality" = \'ecg\' '
                             f'AND "level" = {lv} GROUP BY time($__interval) fill(0)', ref=f"L{lv}", alias=f"level {lv}")
                      for lv in range(6)],
                     draw="bars", stack=True, fill=80, unit="percentunit",
                     description="Windows per level (stacked; with a dynamic policy the devices pick the level "
                                 "under the task-error bound)."), 12, 8)
    L.add(stat("Kafka cost per month at the current rate",
               [target(f'SELECT sum("wire_bytes") * 1000 / {iv} * {usd:.9g} + count("wire_bytes") * 1000 / {iv} '
                       f'* {KAFKA_OVERHEAD} * {usd:.9g} FROM "frame" WHERE $timeFilter GROUP BY time($__interval) fill(none)',
                       ref="W", alias="as sent"),
                target(f'SELECT (sum("raw_bytes") + count("raw_bytes") * {KAFKA_OVERHEAD + 37}) * 1000 / {iv} * {usd:.9g} '
                       'FROM "frame" WHERE $timeFilter GROUP BY time($__interval) fill(none)',
                       ref="R", alias="if sent as raw 16-bit")],
               unit="currencyUSD", decimals=2, colour_mode="none",
               description=f"Byte-driven costs only (broker data in/out, {ASSUMPTIONS['broker_retention_days']}-day "
                           f"broker storage, {ASSUMPTIONS['archive_days']}-day archive) at the list prices of "
                           f"`wardstream cost` (USD {usd:.3g} per byte/s per month); fixed costs (broker cluster, "
                           "worker VM, InfluxDB) are in its JSON."), 12, 6)
    L.add(stat("Wire vs raw, ward", [target('SELECT sum("wire_bytes") / sum("raw_bytes") FROM "frame" WHERE $timeFilter')],
               unit="percentunit", decimals=3, colour_mode="none",
               description="Bytes on the wire (headers and CRC included) over raw 16-bit samples."), 12, 6)
    L.add(timeseries("Predicted vs observed task error (audited windows)",
                     [target('SELECT mean("predicted") FROM "task_error" WHERE $timeFilter AND "observed" >= 0 '
                             f'AND {BED} GROUP BY time($__interval) fill(none)', ref="P", alias="predicted by the devices"),
                      target(f'SELECT mean("observed") FROM "task_error" WHERE $timeFilter AND {BED} '
                             'GROUP BY time($__interval) fill(none)', ref="O", alias="observed by the cloud")],
                     draw="points", points="always",
                     description="On the last window of each audit burst the device's own prediction of the task "
                                 "error (rhythm-classifier KL + QRS error, plus the beat term for predictors trained "
                                 "with it: the quantity its level choice is bounded by) next to the error the cloud "
                                 "measures against the 10 s of ECG the device sent for the audit, with the task error "
                                 "of the predictor the device names in its frames (processors/audit.py)."), 12, 8)
    L.add(timeseries("Observed minus predicted task error, per level",
                     [target('SELECT mean("observed") - mean("predicted") FROM "task_error" WHERE $timeFilter '
                             f'AND "observed" >= 0 AND {BED} GROUP BY time($__interval), "level" fill(none)',
                             ref="D", alias="level $tag_level")],
                     draw="points", points="always",
                     description="Above zero: the devices under-predict the harm of their level (the bound is "
                                 "looser in the ward than in calibration)."), 12, 8)
    L.add(table("Edge error predictors (last audit per bed)",
                [target('SELECT last("predictor") AS "predictor", last("slack") AS "slack correction" '
                        f'FROM "task_error" WHERE $timeFilter AND {BED} GROUP BY "bed"', fmt="table")],
                description="Per audited bed: the id of the error predictor its device runs (the 12 hex digits "
                            "of wardmodels/weights/predictor-<id>.npz, sent with each audit reference) and the "
                            "slack correction the worker last computed for it. A ward in a staged roll-out shows "
                            "both predictors here; each bed is audited with its own's task error."), 24, 8)
    L.add(table("Fidelity holds (ECG level capped while an alarm is open)",
                [target('SELECT last("on") AS "on", last("max_level") AS "max level", last("why") AS "alarm" '
                        f'FROM "fidelity_hold" WHERE $timeFilter AND {BED} GROUP BY "bed"', fmt="table")],
                description="The worker's fidelity hold (processors/hold.py): while a bed has an open ventricular "
                            "or asystole alarm (WARDSTREAM_ALARM_HOLD_CONDITIONS), and 2 minutes after "
                            "(WARDSTREAM_ALARM_HOLD_S), its device sends no ECG level above the hold's (default 1) "
                            "— the last transition per bed: on = 1 since then, 0 ended."), 24, 6)
    return dashboard("bandwidth-cost", "Bandwidth and cost", "What the ward sends, at which levels, and what it costs.",
                     L, [bed_variable(multi=True)], [], ["bandwidth"], time_from="now-1h")


def pipeline_health() -> dict:
    L = Layout()
    tw = 'WHERE $timeFilter GROUP BY time($__interval), "worker" fill(null)'
    L.add(timeseries("Frames per second", [target(f'SELECT non_negative_derivative(last("frames"), 1s) FROM "pipeline" {tw}',
                                                  alias="worker $tag_worker")], unit="short"), 12, 8)
    L.add(timeseries("Consumer lag", [target(f'SELECT max("consumer_lag") FROM "pipeline" {tw}', alias="worker $tag_worker")],
                     unit="short", description="Frames on each worker's partitions not yet committed."), 12, 8)
    L.add(timeseries("End-to-end latency (window end → InfluxDB ack)",
                     [target(f'SELECT max("latency_p{q}_ms") FROM "pipeline" {tw}', ref=f"P{q}",
                             alias=f"p{q} $tag_worker") for q in (50, 95, 99)], unit="ms"), 12, 8)
    L.add(timeseries("Dead letters per second by reason",
                     [target('SELECT non_negative_derivative(sum("count"), 1s) FROM "dead_letters" WHERE $timeFilter '
                             'GROUP BY time($__interval), "reason" fill(null)', alias="$tag_reason")],
                     unit="short", draw="bars", stack=True, fill=80), 12, 8)
    L.add(timeseries("InfluxDB writes",
                     [target(f'SELECT non_negative_derivative(last("points_written"), 1s) FROM "pipeline" {tw}', ref="W",
                             alias="points/s $tag_worker"),
                      target(f'SELECT non_negative_derivative(last("write_failures"), 1s) FROM "pipeline" {tw}', ref="F",
                             alias="failed writes/s $tag_worker")], unit="short"), 12, 8)
    L.add(timeseries("Alarm deliveries per minute",
                     [target('SELECT count("attempts") FROM "alarm_delivery" WHERE $timeFilter '
                             'GROUP BY time(1m), "status", "kind" fill(null)', alias="$tag_kind $tag_status")],
                     draw="bars", stack=True, fill=80,
                     description="Webhook and Kafka deliveries to subscribers by outcome; a failed webhook "
                                 "delivery also raises a technical delivery_failed alarm. Empty without subscriptions."),
          12, 8)
    L.add(stat("Worker starts", [target('SELECT count("pid") FROM "worker_start" WHERE $timeFilter')],
               description="Worker processes started in the time range (a restart is every start after the first).",
               colour_mode="none"), 6, 8)
    L.add(stat("Worker CPU", [target('SELECT non_negative_derivative(last("cpu_s"), 1s) FROM "pipeline" '
                                     'WHERE $timeFilter GROUP BY time($__interval), "worker" fill(null)',
                                     alias="worker $tag_worker")], unit="percentunit", decimals=2, colour_mode="none",
               description="Share of one core each worker used."), 6, 8)
    L.add(stat("Stalled partitions", [target('SELECT last("stalled_partitions") FROM "pipeline" WHERE $timeFilter '
                                             'GROUP BY "worker"', alias="seen by $tag_worker")],
               description="Frames partitions with frames waiting whose group offset has not moved for "
                           "WARDSTREAM_STALL_S (default 30 s), as each worker sees the whole group: their worker "
                           "is stuck, or dead and not yet replaced, and their beds are not monitored: each "
                           "such bed has a monitoring_stalled alarm (processors/group_watch.py).",
               steps=[(None, "green"), (1, "red")]), 6, 8)
    L.add(stat("Backlog windows", [target('SELECT last("backlog_windows") FROM "pipeline" WHERE $timeFilter '
                                          'GROUP BY "worker"', alias="worker $tag_worker")],
               description="Windows each worker process wrote that had ended before it started (left on the "
                           "broker by an outage or a restart; a worker its supervisor started again counts "
                           "from the supervisor's first start when it is told, as the demo's are): delivered "
                           "late by the downtime, and kept out of the latency percentiles.",
               colour_mode="none"), 6, 8)
    L.add(stat("Last pipeline point", [target('SELECT last("frames") FROM "pipeline" WHERE $timeFilter '
                                              'GROUP BY "worker"', alias="worker $tag_worker")],
               unit="dateTimeFromNow", fields="/^Time$/", colour_mode="none",
               description="How long ago each worker wrote its last pipeline point: a live worker writes one "
                           "every 5 s, so an older one is a worker stopped, stuck (its event-loop watchdog ends "
                           "it after WARDSTREAM_LOOP_WATCHDOG_S, its supervisor kills it after "
                           "WARDSTREAM_WORKER_LIVENESS_S) or unable to reach InfluxDB."), 24, 4)
    L.add(table("Worker starts and why",
                [target('SELECT "reason", "pid" FROM "worker_start" WHERE $timeFilter GROUP BY "worker" '
                        'ORDER BY time DESC LIMIT 50', fmt="table")],
                description="Every worker process started in the time range, newest first, with what its "
                            "supervisor said of the one before: start, restart after exit N (70: its event-loop "
                            "watchdog), restart after kill: no heartbeat for N s (stopped or hung where its "
                            "watchdog could not run). Empty reason: a worker from before reasons were written."),
          24, 6)
    return dashboard("pipeline-health", "Pipeline health", "Throughput, lag, latency, dead letters, InfluxDB writes.",
                     L, [], [], ["pipeline"], refresh="5s")


BUILDERS = {"ward-overview.json": ward_overview, "bed-detail.json": bed_detail,
            "bandwidth-cost.json": bandwidth_cost, "pipeline-health.json": pipeline_health}


def build_all() -> dict[str, dict]:
    return {name: f() for name, f in BUILDERS.items()}


def panel_queries(d: dict) -> list[tuple[str, str]]:
    """(panel title, InfluxQL) of every panel target and annotation of a dashboard."""
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["query"]))
    for a in d["annotations"]["list"]:
        if "query" in a.get("target", {}):
            out.append((f"annotation: {a['name']}", a["target"]["query"]))
    return out
