"""`wardstream dashboards push`: create or update the InfluxDB data source, the folder and every
dashboard through the Grafana HTTP API, with the maintained `grafana-client`.

Grafana's address and token come from the environment (``GRAFANA_URL``, default
``http://127.0.0.1:3000``; ``GRAFANA_TOKEN``, a service-account token), never from the repo.
The data source's InfluxDB address is the worker's (``WARDSTREAM_INFLUX_URL``) unless
``--influx-url`` says where Grafana itself reaches InfluxDB.
"""

from __future__ import annotations

import os

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards.build import DS, build_all

FOLDER_UID = "wardstream"
FOLDER_TITLE = "wardstream"


def datasource_body(influx_url: str, database: str, api: str = "v1", token: str = "") -> dict:
    body = {"uid": DS["uid"], "name": "wardstream InfluxDB", "type": "influxdb", "access": "proxy",
            "url": influx_url, "jsonData": {"dbName": database, "httpMode": "POST"}, "isDefault": True}
    if api == "v2":  # InfluxQL through the DBRP mapping: the token goes in an Authorization header
        body["jsonData"].update({"httpHeaderName1": "Authorization"})
        body["secureJsonData"] = {"httpHeaderValue1": f"Token {token}"}
    return body


def push(grafana: GrafanaApi, influx_url: str, database: str, api: str = "v1", token: str = "") -> dict:
    """Idempotent: a second push updates what the first created. Returns what it did."""
    did = {"datasource": None, "folder": None, "dashboards": []}
    ds = datasource_body(influx_url, database, api, token)
    try:
        grafana.datasource.get_datasource_by_uid(DS["uid"])
        grafana.datasource.update_datasource_by_uid(DS["uid"], ds)
        did["datasource"] = "updated"
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        grafana.datasource.create_datasource(ds)
        did["datasource"] = "created"
    try:
        grafana.folder.get_folder(FOLDER_UID)
        did["folder"] = "exists"
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        grafana.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        did["folder"] = "created"
    for name, d in build_all().items():
        res = grafana.dashboard.update_dashboard({"dashboard": {**d, "id": None}, "folderUid": FOLDER_UID,
                                                  "overwrite": True, "message": "wardstream dashboards push"})
        did["dashboards"].append({"uid": d["uid"], "status": res.get("status"), "version": res.get("version")})
    return did


def from_env(url: str | None = None) -> GrafanaApi:
    url = url or os.environ.get("GRAFANA_URL", "http://127.0.0.1:3000")
    token = os.environ.get("GRAFANA_TOKEN")
    if not token:
        raise SystemExit("wardstream dashboards push: set GRAFANA_TOKEN (a Grafana service-account token)")
    return GrafanaApi.from_url(url, credential=token)
