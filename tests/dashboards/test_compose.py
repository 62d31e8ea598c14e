"""docker-compose.yml as data (no Docker engine runs here): valid against the Compose schema,
provisioning Grafana with the generated dashboards, no secret in the file, 127.0.0.1 only."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import yaml

from dashboards.build import DS, build_all
from tests.isolation import shared_dir
from wardstream.settings import PROJECT_ROOT, Settings

SPEC = shared_dir() / "compose" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def validator():
    if not SPEC.exists():
        pytest.skip(f"the Compose schema is not at {SPEC} (set WARDSTREAM_SHARED_DIR)")
    return jsonschema.Draft7Validator(json.loads(SPEC.read_text()))


def test_compose_validates_against_the_compose_spec(compose, validator):
    assert [e.message for e in validator.iter_errors(compose)] == []
    bad = copy.deepcopy(compose)
    bad["services"]["kafka"]["depends_on"] = 42
    bad["services"]["grafana"]["not_a_key"] = 1
    assert len(list(validator.iter_errors(bad))) >= 2


def test_the_stack_has_every_part_with_health_checks_and_named_volumes(compose):
    sv = compose["services"]
    assert {"kafka", "influxdb", "grafana", "worker", "simulator"} <= set(sv)
    assert "KRaft" in (PROJECT_ROOT / "docker-compose.yml").read_text()
    assert sv["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("kafka", "influxdb", "grafana", "worker"):
        assert sv[name]["healthcheck"]["test"], name
    named = set(compose["volumes"])
    for name in ("kafka", "influxdb", "grafana"):
        mounts = [v.split(":")[0] for v in sv[name]["volumes"]]
        assert any(m in named for m in mounts), name
    assert sv["worker"]["deploy"]["replicas"] >= 1
    # a hung worker is killed and started again by its supervisor (compose restarts only exits)
    assert sv["worker"]["command"] == ["wardstream", "worker", "--supervise"]
    assert sv["simulator"]["command"][:4] == ["wardstream", "sim", "--beds", "200"]
    assert sv["worker"]["environment"]["WARDSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_no_secret_in_the_file_and_ports_on_loopback(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:?[-?][^}]*)?\}", str(value)), (name, key)


def test_grafana_provisions_the_generated_dashboards_and_the_datasource(compose):
    graf = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in graf["volumes"] if v.startswith("./"))
    prov = PROJECT_ROOT / mounts["./dashboards/provisioning"].replace("/etc/grafana/provisioning", "dashboards/provisioning")
    provider = yaml.safe_load((prov / "dashboards" / "wardstream.yaml").read_text())["providers"][0]
    host_dir = next(h for h, c in mounts.items() if c == provider["options"]["path"])
    files = {p.name for p in (PROJECT_ROOT / host_dir).glob("*.json")}
    assert files == set(build_all())
    ds = yaml.safe_load((prov / "datasources" / "wardstream.yaml").read_text())["datasources"][0]
    assert (ds["uid"], ds["type"], ds["jsonData"]["dbName"]) == (DS["uid"], "influxdb", Settings().influx_db)
    assert ds["url"] == "http://influxdb:8086"
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"]) and home.rsplit("/", 1)[1] in files
