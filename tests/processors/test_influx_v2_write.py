"""The sink's InfluxDB 2.x write path (`/api/v2/write`, org/bucket, token header) against a real
server that implements that API: Debian's victoria-metrics. (No InfluxDB 2.x server can be
installed on these machines; influxd 1.6.7 has only the v1 API.)"""

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from processors.influx_sink import InfluxSink, line
from wardstream.settings import from_env


@pytest.fixture
def victoria(tmp_path):
    exe = shutil.which("victoria-metrics")
    if not exe:
        pytest.fail("victoria-metrics is missing: `apt-get install -y victoria-metrics` (./ward test installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={tmp_path}",
                             "-search.latencyOffset=0s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/health", timeout=0.5)
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_v2_write_api(victoria):
    s = from_env({"WARDSTREAM_INFLUX_TOKEN": "test-token"}, influx_url=victoria, influx_api="v2",
                 influx_org="ward", influx_bucket="vitals")
    sink = InfluxSink(s)
    assert sink.url.endswith("/api/v2/write") and sink.params["bucket"] == "vitals"
    assert sink.headers["Authorization"] == "Token test-token"
    now_ms = int(time.time() * 1000)

    async def go():
        await sink.ensure_database()  # nothing to create on v2
        for i in range(5):
            sink.add(line("vitals", {"bed": "9"}, {"hr_bpm": 70.0 + i}, now_ms - 10_000 + 2000 * i))
        n = await sink.flush()
        await sink.close()
        return n

    assert asyncio.run(go()) == 5
    urllib.request.urlopen(victoria + "/internal/force_flush", timeout=5)
    q = urllib.parse.urlencode({"match[]": '{__name__="vitals_hr_bpm"}'})
    deadline = time.time() + 10
    series = []
    while time.time() < deadline and not series:
        body = urllib.request.urlopen(f"{victoria}/api/v1/export?{q}", timeout=5).read().decode()
        series = [json.loads(x) for x in body.splitlines() if x.strip()]
        time.sleep(0.2)
    assert len(series) == 1 and series[0]["metric"]["bed"] == "9"
    assert series[0]["values"] == [70.0, 71.0, 72.0, 73.0, 74.0]
