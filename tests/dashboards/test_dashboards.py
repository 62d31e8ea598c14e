"""Dashboards as code: schema-valid, committed copies current, every panel's query returns data
from the real InfluxDB after a demo run, and `dashboards push` makes exactly the expected Grafana
API calls (against a recording stand-in: no Grafana server can run here)."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest

from dashboards.build import DS, build_all, panel_queries
from dashboards.check import check, expand
from dashboards.push import push
from tests.isolation import shared_dir
from wardstream.settings import PROJECT_ROOT

SCHEMAS = shared_dir() / "grafana"


def _schema(name: str) -> dict:
    path = SCHEMAS / f"{name}.jsonschema.json"
    if not path.exists():
        pytest.skip(f"the Grafana schemas are not at {SCHEMAS} (set WARDSTREAM_SHARED_DIR)")
    return json.loads(path.read_text())


def _validator(schema: dict, definition: str | None = None):
    if definition:
        schema = {**schema, "$ref": f"#/definitions/{definition}"}
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("name", sorted(build_all()))
def test_dashboard_validates_against_the_grafana_schema(name):
    d = build_all()[name]
    errors = [e.message for e in _validator(_schema("dashboard")).iter_errors(d)]
    assert errors == []
    stat, ts = _schema("stat"), _schema("timeseries")
    kinds = set()
    for p in d["panels"]:
        kinds.add(p["type"])
        if p["type"] == "stat":
            assert [e.message for e in _validator(stat, "Options").iter_errors(p["options"])] == [], p["title"]
        elif p["type"] == "timeseries":
            assert [e.message for e in _validator(ts, "Options").iter_errors(p["options"])] == [], p["title"]
            custom = p["fieldConfig"]["defaults"]["custom"]
            assert [e.message for e in _validator(ts, "GraphFieldConfig").iter_errors(custom)] == [], p["title"]
        if p["type"] != "row":
            assert p["datasource"] == DS and p["targets"], p["title"]
    assert kinds & {"stat", "timeseries", "table"}


def test_the_schema_check_can_fail():
    d = copy.deepcopy(build_all()["ward-overview.json"])
    del d["schemaVersion"]
    d["panels"][1]["gridPos"] = {"h": 2}
    assert len(list(_validator(_schema("dashboard")).iter_errors(d))) >= 2
    stat = next(p for p in d["panels"] if p["type"] == "stat")
    stat["options"]["colorMode"] = "rainbow"
    assert list(_validator(_schema("stat"), "Options").iter_errors(stat["options"]))


def test_committed_dashboards_are_what_the_code_builds():
    gen = PROJECT_ROOT / "dashboards" / "generated"
    for name, d in build_all().items():
        assert json.loads((gen / name).read_text()) == d, f"run `wardstream dashboards build` ({name} is stale)"
    assert sorted(p.name for p in gen.glob("*.json")) == sorted(build_all())


def test_dashboards_cover_what_the_issue_asks_for():
    titles = {name: {p["title"] for p in d["panels"]} for name, d in build_all().items()}
    assert {"Highest active alarm", "Heart rate", "Rhythm", "Signal quality", "Beds by alarm priority"} <= titles["ward-overview.json"]
    assert {"Reconstructed ECG (last 20 s)", "EEG band powers", "Ectopic beats per minute",
            "Compression level and gain", "Rhythm probabilities", "Heart-rate variability"} <= titles["bed-detail.json"]
    assert {"Bits per second per bed", "ECG level mix", "Kafka cost per month at the current rate"} <= titles["bandwidth-cost.json"]
    assert {"Frames per second", "Consumer lag", "Dead letters per second by reason", "InfluxDB writes",
            "Worker starts"} <= titles["pipeline-health.json"]
    for d in build_all().values():
        for _, q in panel_queries(d):
            assert q.lstrip().upper().startswith(("SELECT", "SHOW")), q  # InfluxQL, not Flux
    assert build_all()["ward-overview.json"]["annotations"]["list"][-1]["name"] == "Alarms"


def test_macro_expansion():
    q = 'SELECT mean("hr_bpm") FROM "vitals" WHERE $timeFilter AND "bed" =~ /^$bed$/ GROUP BY time($__interval)'
    assert expand(q, ["3", "12"], 600, 2000) == ('SELECT mean("hr_bpm") FROM "vitals" WHERE time >= now() - 600s '
                                                'AND "bed" =~ /^(3|12)$/ GROUP BY time(2000ms)')
    assert "$" not in expand('SELECT sum("x") * 1000 / $__interval_ms FROM "y"', [], 60, 500)


@pytest.mark.servers
def test_every_panel_returns_data_after_a_demo_run(demo_run):
    s, _, summary = demo_run
    results = check(s, [], range_s=900, interval_ms=2000, strip_range_s=900)
    assert [r for r in results if r.error] == []
    by_panel: dict = {}
    for r in results:
        by_panel.setdefault((r.dashboard, r.panel), []).append(r)
    empty = [k for k, rs in by_panel.items() if not any(r.values for r in rs)
             and not all(r.events_only for r in rs)]
    assert empty == []
    # the bed variable and one bed's view too
    one = check(s, ["2"], range_s=900, interval_ms=2000, strip_range_s=900)
    hr = next(r for r in one if r.dashboard == "bed-detail.json" and r.panel == "Heart rate")
    assert hr.series == 1 and hr.values >= 5
    strip = next(r for r in one if r.panel == "Reconstructed ECG (last 20 s)")
    assert strip.values >= 0.9 * s.waveform_hz * 2 * 5  # strips of at least five 2-s windows


class GrafanaStandIn(BaseHTTPRequestHandler):
    """A stand-in for Grafana's HTTP API (not Grafana): records each request, answers like it."""

    calls: list = []
    store: dict = {}

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        self.calls.append((self.command, self.path, self.headers.get("Authorization"), body))
        st, path = self.store, self.path
        if path == "/api/datasources/uid/wardstream-influx":
            if self.command == "GET":
                return self._reply(200, st["ds"]) if "ds" in st else self._reply(404, {"message": "not found"})
            st["ds"] = body
            return self._reply(200, {"message": "Datasource updated"})
        if path == "/api/datasources" and self.command == "POST":
            st["ds"] = body
            return self._reply(200, {"message": "Datasource added", "id": 1})
        if path == "/api/folders/wardstream" and self.command == "GET":
            return self._reply(200, st["folder"]) if "folder" in st else self._reply(404, {"message": "not found"})
        if path == "/api/folders" and self.command == "POST":
            st["folder"] = body
            return self._reply(200, {"uid": body["uid"], "title": body["title"]})
        if path == "/api/dashboards/db" and self.command == "POST":
            uid = body["dashboard"]["uid"]
            version = st.setdefault("dash", {}).get(uid, 0) + 1
            st["dash"][uid] = version
            return self._reply(200, {"status": "success", "uid": uid, "version": version})
        return self._reply(404, {"message": f"stand-in does not know {self.command} {path}"})

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, *args) -> None:
        pass


def test_push_makes_the_expected_grafana_api_calls(monkeypatch):
    from dashboards.push import from_env

    srv = ThreadingHTTPServer(("127.0.0.1", 0), GrafanaStandIn)
    GrafanaStandIn.calls, GrafanaStandIn.store = [], {}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("GRAFANA_TOKEN", "test-token")
        api = from_env(f"http://127.0.0.1:{srv.server_address[1]}")
        first = push(api, "http://influx.example:8086", "wardstream")
        calls1 = [(m, p) for m, p, _, _ in GrafanaStandIn.calls]
        dash = [("POST", "/api/dashboards/db")] * 4
        assert calls1 == [("GET", "/api/datasources/uid/wardstream-influx"), ("POST", "/api/datasources"),
                          ("GET", "/api/folders/wardstream"), ("POST", "/api/folders"), *dash]
        assert all(auth == "Bearer test-token" for _, _, auth, _ in GrafanaStandIn.calls)
        ds = GrafanaStandIn.calls[1][3]
        assert (ds["uid"], ds["type"], ds["url"], ds["jsonData"]["dbName"]) == (
            "wardstream-influx", "influxdb", "http://influx.example:8086", "wardstream")
        assert GrafanaStandIn.calls[3][3] == {"title": "wardstream", "uid": "wardstream"}
        posted = [c[3] for c in GrafanaStandIn.calls[4:]]
        assert sorted(p["dashboard"]["uid"] for p in posted) == sorted(d["uid"] for d in build_all().values())
        assert all(p["folderUid"] == "wardstream" and p["overwrite"] is True and p["dashboard"]["id"] is None
                   for p in posted)
        assert first["datasource"] == "created" and first["folder"] == "created"
        # a second push updates in place
        GrafanaStandIn.calls = []
        second = push(api, "http://influx.example:8086", "wardstream")
        assert [(m, p) for m, p, _, _ in GrafanaStandIn.calls] == [
            ("GET", "/api/datasources/uid/wardstream-influx"), ("PUT", "/api/datasources/uid/wardstream-influx"),
            ("GET", "/api/folders/wardstream"), *dash]
        assert second["datasource"] == "updated" and {d["version"] for d in second["dashboards"]} == {2}
    finally:
        srv.shutdown()


def test_push_needs_a_token_from_the_environment(monkeypatch):
    from dashboards.push import from_env

    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="GRAFANA_TOKEN"):
        from_env("http://127.0.0.1:9")
