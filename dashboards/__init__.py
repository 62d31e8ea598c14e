"""Grafana dashboards as code (issue #7): `build` generates them, `check` runs every panel's
query against InfluxDB, `push` creates or updates them through the Grafana HTTP API."""
