"""Alarm delivery end to end, on the real broker and influxd with a real worker process:
subscriptions over the HTTP API (ward-scoped tokens, bad input), a signed webhook within 3 s of
the window that raised the alarm, acknowledgement stopping escalation (the escalation reaching the
wider audience otherwise), a worker restart keeping subscriptions and unacknowledged alarms, a
webhook that is down receiving the alarm once it is back, server-sent events, delivery records.

The alarm used is ``seq_gap`` (windows lost between device and cloud: raised by the window after
the gap, deterministic) configured the way a ward can configure any condition: high priority,
latching, escalating after 4 s without acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from device_sim.ward import WINDOW_US, Device, RawEncoder, make_sources
from processors import delivery as dl
from stream.topics import bed_key
from tests.isolation import api
from wardstream.influxq import query, query_rows
from wardstream.workers import WorkerPool

pytestmark = pytest.mark.servers

TOKEN_ICU = "icu-token-0123456789abcdef"
TOKEN_CARDIO = "cardio-token-0123456789abcdef"
SECRET = "webhook-secret-0123456789"
ALARM_CONFIG = {"seq_gap": {"priority": "high", "latching": True, "escalate_after_s": 4.0}}


class Receiver:
    """A webhook receiver on a fixed port that can be taken down and brought back."""

    def __init__(self, port: int = 0):
        self.got: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.got.append({"t": time.time(), "path": self.path, "body": body,
                                      "headers": {k.lower(): v for k, v in self.headers.items()}})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.handler = H
        self.port = port
        self.start()

    def start(self) -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()

    def wait(self, pred, timeout: float = 60.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                for g in self.got:
                    ev = json.loads(g["body"])
                    if pred(g["path"], ev):
                        return {**g, "event": ev}
            time.sleep(0.05)
        raise AssertionError(f"no matching webhook within {timeout}s; got {[json.loads(g['body'])['id'] for g in self.got]}")

    def events(self, path: str) -> list[dict]:
        with self.lock:
            return [json.loads(g["body"]) for g in self.got if g["path"] == path]


class Ward:
    """Raw-level devices whose sequence numbers the test controls (a skipped number is a gap)."""

    def __init__(self, s, beds: list[int]):
        self.s = s
        now = int(time.time() * 1e6)
        src = make_sources("synthetic", beds, None, seed=5)
        # the first three windows lie in the past; window 4 (after the gap) ends now
        self.devices = {b: Device(b, src[b], now - 5 * WINDOW_US, RawEncoder()) for b in beds}

    def reclock(self, beds: list[int]) -> None:
        """Move the beds' clocks so that the window after a one-window gap ends now (a device's
        window is sent the moment its last sample is in)."""
        now = int(time.time() * 1e6)
        for b in beds:
            d = self.devices[b]
            d.clock0_us = now - (d.seq + 2) * WINDOW_US

    async def send(self, plan: list[tuple[int, int, int]]) -> dict[int, tuple[float, float]]:
        """For each (bed, n, skip): skip ``skip`` sequence numbers, send ``n`` windows. Returns per
        bed (device time at which its last window ends, wall time it was acknowledged)."""
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=self.s.kafka_bootstrap, acks="all")
        await p.start()
        out = {}
        try:
            for bed, n, skip in plan:
                d = self.devices[bed]
                d.seq += skip
                for _ in range(n):
                    raw, frame = d.next_frame()
                    await p.send_and_wait(self.s.frames_topic, raw, key=bed_key(bed))
                out[bed] = (frame.window_end_us / 1e6, time.time())
        finally:
            await p.stop()
        return out


def test_alarm_delivery_end_to_end(ward_settings, monkeypatch):
    s = ward_settings.replace(wards="icu:1-10,cardio:11-20", alarm_config=json.dumps(ALARM_CONFIG),
                              webhook_max_backoff_s=0.5, webhook_give_up_s=120.0, device_silent_s=8.0)
    monkeypatch.setenv("WARDSTREAM_API_TOKENS", f"{TOKEN_ICU}=icu;{TOKEN_CARDIO}=cardio")
    rx = Receiver()
    port = s.worker_web_port
    pool = WorkerPool(s, 1)
    pool.start_all()
    try:
        pool.wait_ready()
        hook = {"kind": "webhook", "url": f"http://127.0.0.1:{rx.port}/nurse", "secret": SECRET}
        # --- bad input: every reason, the right 4xx
        assert api(port, "GET", "/api/v1/subscriptions", None)[0] == 401
        assert api(port, "GET", "/api/v1/subscriptions", "not-a-known-token-at-all")[0] == 401
        code, body = api(port, "POST", "/api/v1/subscriptions", TOKEN_ICU,
                         {"name": "x", "priorities": ["urgent"], "delivery": {"kind": "webhook", "url": "ftp://x"}})
        assert code == 400 and len(body["reasons"]) >= 4, body  # wards, priorities, url, secret
        assert api(port, "POST", "/api/v1/subscriptions", TOKEN_ICU, b"{not json")[0] == 400
        code, body = api(port, "POST", "/api/v1/subscriptions", TOKEN_ICU,
                         {"name": "sneaky", "wards": ["cardio"], "delivery": {"kind": "kafka"}})
        assert code == 403 and "cardio" in body["error"]
        # --- subscriptions: the ICU nurse (every transition) and the charge nurse (escalations only)
        code, nurse = api(port, "POST", "/api/v1/subscriptions", TOKEN_ICU,
                          {"name": "ICU nurse", "wards": ["icu"], "priorities": ["high", "medium"], "delivery": hook})
        assert code == 201 and nurse["delivery"]["secret"] == "***"
        code, charge = api(port, "POST", "/api/v1/subscriptions", TOKEN_ICU,
                           {"name": "charge nurse", "wards": ["icu"], "events": ["escalated"],
                            "delivery": {**hook, "url": f"http://127.0.0.1:{rx.port}/charge"}})
        assert code == 201
        code, cardio = api(port, "POST", "/api/v1/subscriptions", TOKEN_CARDIO,
                           {"name": "cardio desk", "wards": ["cardio"], "delivery": {"kind": "kafka"}})
        assert code == 201
        # ward B's token sees neither ward A's subscriptions nor can delete them
        listed = api(port, "GET", "/api/v1/subscriptions", TOKEN_CARDIO)[1]["subscriptions"]
        assert [x["id"] for x in listed] == [cardio["id"]]
        assert api(port, "GET", f"/api/v1/subscriptions/{nurse['id']}", TOKEN_CARDIO)[0] == 404
        assert api(port, "DELETE", f"/api/v1/subscriptions/{nurse['id']}", TOKEN_CARDIO)[0] == 404

        ward = Ward(s, [3, 4, 5, 12])

        asyncio.run(ward.send([(b, 3, 0) for b in (3, 4, 12)]))
        ward.reclock([3, 4, 12])  # the window after the gap ends now
        ends = asyncio.run(ward.send([(b, 1, 1) for b in (3, 4, 12)]))
        got = rx.wait(lambda p, e: p == "/nurse" and e["bed"] == 3 and e["state"] == "active")
        ev, hdr = got["event"], got["headers"]
        assert dl.verify(SECRET, got["body"], hdr["x-wardstream-signature"])
        assert not dl.verify("another-secret-1234567", got["body"], hdr["x-wardstream-signature"])
        assert (ev["condition"], ev["priority"], ev["ward"]) == ("seq_gap", "high", "icu")
        assert hdr["x-wardstream-subscription"] == nurse["id"] and hdr["x-wardstream-event"] == ev["id"]
        delay = got["t"] - ends[3][0]
        assert delay < 3.0, f"webhook {delay:.2f} s after the window that raised the alarm"
        print(f"webhook {delay * 1000:.0f} ms after the end of the window that raised the alarm "
              f"({(got['t'] - ends[3][1]) * 1000:.0f} ms after Kafka acknowledged the frame)")
        rx.wait(lambda p, e: p == "/nurse" and e["bed"] == 4 and e["state"] == "active")

        # --- acknowledgement: scoped, validated, and it stops escalation
        assert api(port, "POST", "/api/v1/alarms/3/seq_gap/ack", TOKEN_CARDIO, {"by": "intruder"})[0] == 404
        assert api(port, "POST", "/api/v1/alarms/3/seq_gap/ack", TOKEN_ICU, {})[0] == 400
        assert api(port, "POST", "/api/v1/alarms/3/asystole/ack", TOKEN_ICU, {"by": "nurse-a"})[0] == 404
        alarms_b = api(port, "GET", "/api/v1/alarms", TOKEN_CARDIO)[1]["alarms"]
        assert {a["bed"] for a in alarms_b} == {12}  # ward B sees only its own bed's alarm
        code, body = api(port, "POST", "/api/v1/alarms/3/seq_gap/ack", TOKEN_ICU, {"by": "nurse-a"})
        assert code == 202, body
        acked = rx.wait(lambda p, e: p == "/nurse" and e["bed"] == 3 and e["state"] == "acknowledged")["event"]
        assert acked["by"] == "nurse-a"
        # the API answers from its view of the alarm events, a consumer of its own: the webhook can
        # arrive before that view has read the acknowledgement; once it has, a second ack is refused
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            mine = api(port, "GET", "/api/v1/alarms?bed=3", TOKEN_ICU)[1]["alarms"]
            if any(a["condition"] == "seq_gap" and a["status"] == "acknowledged" for a in mine):
                break
            time.sleep(0.1)
        assert api(port, "POST", "/api/v1/alarms/3/seq_gap/ack", TOKEN_ICU, {"by": "nurse-a"})[0] == 409
        fhir = api(port, "GET", "/api/v1/alarms/4/seq_gap/fhir", TOKEN_ICU)[1]
        assert fhir["resourceType"] == "DeviceAlert" and fhir["priority"] == "high" and fhir["presence"] is True

        # 6 s more of device time for both beds: bed 4 escalates, bed 3 does not
        asyncio.run(ward.send([(3, 3, 0), (4, 3, 0)]))
        esc = rx.wait(lambda p, e: p == "/charge" and e["state"] == "escalated")["event"]
        assert esc["bed"] == 4
        time.sleep(1.0)
        assert [e["bed"] for e in rx.events("/charge")] == [4]
        assert not [e for e in rx.events("/nurse") if e["bed"] == 3 and e["state"] == "escalated"]

        # --- a worker restart keeps subscriptions and unacknowledged alarms
        pool.stop_all()
        pool.start_all()
        pool.wait_ready()
        deadline = time.time() + 20
        while time.time() < deadline:
            code, body = api(port, "GET", "/api/v1/alarms", TOKEN_ICU)
            if code == 200 and body["complete"]:
                break
            time.sleep(0.3)
        open_ = {(a["bed"], a["condition"]): a["status"] for a in body["alarms"] if a["condition"] == "seq_gap"}
        assert open_ == {(3, "seq_gap"): "acknowledged", (4, "seq_gap"): "active"}
        # bed 12 has sent nothing for > 8 s: the cardio token sees its device_silent alarm
        deadline = time.time() + 20
        while time.time() < deadline:
            cardio_alarms = api(port, "GET", "/api/v1/alarms", TOKEN_CARDIO)[1]["alarms"]
            silent = [a for a in cardio_alarms if a["condition"] == "device_silent"]
            if silent:
                break
            time.sleep(0.5)
        assert [(a["bed"], a["priority"], a["status"]) for a in silent] == [(12, "technical", "active")]
        assert all(a["ward"] == "cardio" for a in cardio_alarms)
        ids = {x["id"] for x in api(port, "GET", "/api/v1/subscriptions", TOKEN_ICU)[1]["subscriptions"]}
        assert ids == {nurse["id"], charge["id"]}

        # --- a receiver that is down gets the alarm when it is back
        rx.stop()

        asyncio.run(ward.send([(5, 3, 0), (5, 1, 1)]))
        deadline = time.time() + 60  # the alarm is raised (its first delivery attempt fails) ...
        while time.time() < deadline:
            bed5 = api(port, "GET", "/api/v1/alarms?bed=5", TOKEN_ICU)[1].get("alarms", [])
            if any(a["condition"] == "seq_gap" for a in bed5):
                break
            time.sleep(0.2)
        time.sleep(3.0)  # ... and retried while the receiver stays down
        rx.start()
        back = rx.wait(lambda p, e: p == "/nurse" and e["bed"] == 5 and e["state"] == "active", timeout=30)
        assert int(back["headers"]["x-wardstream-attempt"]) > 1
        print(f"receiver down 3 s: delivered on attempt {back['headers']['x-wardstream-attempt']}")
        # --- server-sent events: the ICU token's stream carries ward A's next alarm
        sse = asyncio.run(_sse_next(port, TOKEN_ICU, ward))
        assert sse["bed"] == 5 and sse["state"] == "acknowledged"
        # --- every delivery recorded in InfluxDB
        deadline = time.time() + 30
        while True:
            rows = query(s, 'SELECT count("attempts") FROM "alarm_delivery" WHERE "status" = \'delivered\' '
                            'GROUP BY "subscription"')
            counts = {r["tags"]["subscription"]: r["values"][0][1] for r in rows}
            if (counts.get(nurse["id"], 0) >= 5 and counts.get(charge["id"], 0) >= 1) or time.time() > deadline:
                break
            time.sleep(0.5)
        assert counts[nurse["id"]] >= 5 and counts[charge["id"]] == 1
        assert api(port, "GET", "/api/v1/openapi.json", None)[1]["openapi"].startswith("3.")
    finally:
        pool.stop_all()
        try:
            rx.stop()
        except Exception:
            pass


async def _sse_next(port: int, token: str, ward: Ward) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as sess:
        async with sess.get(f"http://127.0.0.1:{port}/api/v1/stream?bed=5", headers={"Authorization": f"Bearer {token}"},
                            timeout=aiohttp.ClientTimeout(total=30)) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            await resp.content.readline()  # ": connected"
            code, _ = await asyncio.to_thread(api, port, "POST", "/api/v1/alarms/5/seq_gap/ack", token, {"by": "nurse-b"})
            assert code == 202
            async for raw in resp.content:
                ln = raw.decode().strip()
                if ln.startswith("data: "):
                    return json.loads(ln[6:])
    raise AssertionError("no event on the stream")


def test_two_workers_share_subscriptions_and_route_acknowledgements(ward_settings, monkeypatch):
    """Beds spread over two workers' partitions: a subscription made on one worker hears the
    other's alarms, and an acknowledgement sent to either reaches the worker that owns the bed."""
    s = ward_settings.replace(wards="icu:1-10", alarm_config=json.dumps(ALARM_CONFIG), device_silent_s=600.0)
    monkeypatch.setenv("WARDSTREAM_API_TOKENS", f"{TOKEN_ICU}=icu")
    rx = Receiver()
    pool = WorkerPool(s, 2)
    pool.start_all()
    try:
        pool.wait_ready()
        p0, p1 = (w.port for w in pool.workers)
        code, sub = api(p0, "POST", "/api/v1/subscriptions", TOKEN_ICU,
                        {"name": "ICU", "wards": ["icu"], "delivery": {"kind": "webhook", "secret": SECRET,
                                                                       "url": f"http://127.0.0.1:{rx.port}/icu"}})
        assert code == 201
        # both workers see it (the other through the compacted topic)
        deadline = time.time() + 30
        while time.time() < deadline and not api(p1, "GET", f"/api/v1/subscriptions/{sub['id']}", TOKEN_ICU)[0] == 200:
            time.sleep(0.2)
        assert api(p1, "GET", f"/api/v1/subscriptions/{sub['id']}", TOKEN_ICU)[0] == 200
        beds = list(range(1, 9))
        owners = {st["worker"]: st for st in pool.stats()}
        ward = Ward(s, beds)
        asyncio.run(ward.send([(b, 3, 0) for b in beds]))
        ward.reclock(beds)
        asyncio.run(ward.send([(b, 1, 1) for b in beds]))
        for b in beds:
            rx.wait(lambda p, e, b=b: e["bed"] == b and e["state"] == "active")
        busy = [st for st in pool.stats() if st["windows_written"] > 0]
        assert len(busy) == 2, "the beds' partitions should be spread over both workers"
        for b in beds:  # every acknowledgement through worker 1's API, whoever owns the bed
            deadline = time.time() + 30
            while True:
                code, body = api(p1, "POST", f"/api/v1/alarms/{b}/seq_gap/ack", TOKEN_ICU, {"by": "nurse"})
                if code == 202 or time.time() > deadline:
                    break
                time.sleep(0.2)  # the open-alarm view of worker 1 may trail the other by a moment
            assert code == 202, (b, body)
        for b in beds:
            rx.wait(lambda p, e, b=b: e["bed"] == b and e["state"] == "acknowledged")
        assert len(owners) == 2
    finally:
        pool.stop_all()
        rx.stop()


@contextlib.contextmanager
def _api_worker(ward_settings, monkeypatch, **overrides):
    """One worker process serving the API for wards icu (beds 1-10) and cardio (11-20), with a
    token for each -> (settings, pool, API port); stopped on the way out."""
    s = ward_settings.replace(wards="icu:1-10,cardio:11-20", device_silent_s=600.0, **overrides)
    monkeypatch.setenv("WARDSTREAM_API_TOKENS", f"{TOKEN_ICU}=icu;{TOKEN_CARDIO}=cardio")
    pool = WorkerPool(s, 1)
    pool.start_all()
    try:
        pool.wait_ready()
        yield s, pool, pool.workers[0].port
    finally:
        pool.stop_all()


def test_bed_limits_set_over_the_api_apply_to_that_bed_only(ward_settings, monkeypatch):
    """A bed's alarm limits changed at run time through the API: validated with reasons, scoped to
    the token's wards, and used for that bed's next windows (here a brady limit above the
    synthetic patients' heart rate raises brady on bed 2 and not on bed 1)."""
    with _api_worker(ward_settings, monkeypatch,
                     alarm_limits=json.dumps({"wards": {"icu": {"tachy_bpm": 150}}})) as (s, pool, port):
        code, body = api(port, "GET", "/api/v1/beds/2/limits", TOKEN_ICU)
        assert code == 200 and body["ward"] == "icu" and body["runtime"] is None
        assert body["configured"] == {"tachy_bpm": 150.0} and body["effective"]["brady_bpm"] == 40.0
        assert api(port, "GET", "/api/v1/beds/2/limits", TOKEN_CARDIO)[0] == 404  # another ward's bed
        assert api(port, "PUT", "/api/v1/beds/2/limits", TOKEN_CARDIO, {"limits": {"brady_bpm": 200}, "by": "x"})[0] == 404
        assert api(port, "GET", "/api/v1/beds/2/limits", "nope")[0] == 401
        code, body = api(port, "PUT", "/api/v1/beds/2/limits", TOKEN_ICU,
                         {"limits": {"brady_bpm": -1, "tachy": 3, "nsvt_beats": 9}, "extra": 1})
        assert code == 400 and body["error"] == "invalid limits"
        text = " | ".join(body["reasons"])
        assert "'by'" in text and "unknown fields ['extra']" in text and "unknown limits ['tachy']" in text, text
        code, body = api(port, "PUT", "/api/v1/beds/2/limits", TOKEN_ICU, {"limits": {"vtach_beats": 2}, "by": "dr"})
        assert code == 400 and "nsvt_beats must not exceed vtach_beats" in body["reasons"][0]  # against the defaults
        code, body = api(port, "PUT", "/api/v1/beds/2/limits", TOKEN_ICU,
                         {"limits": {"brady_bpm": 200}, "by": "dr-ward"})
        assert code == 200 and body["effective"]["brady_bpm"] == 200.0 and body["effective"]["tachy_bpm"] == 150.0
        assert body["runtime"]["by"] == "dr-ward" and body["runtime"]["limits"] == {"brady_bpm": 200.0}
        ward = Ward(s, [1, 2])
        asyncio.run(ward.send([(1, 10, 0), (2, 10, 0)]))

        def open_brady(bed):
            code, body = api(port, "GET", f"/api/v1/alarms?bed={bed}", TOKEN_ICU)
            return [a for a in body["alarms"] if a["condition"] == "brady"]

        deadline = time.time() + 30
        while time.time() < deadline and not open_brady(2):
            time.sleep(0.3)
        (brady,) = open_brady(2)
        assert brady["priority"] == "medium" and brady["state"] == "active"
        assert not open_brady(1)  # same signal, default limits: no alarm
        # a restarted worker reads the bed's limits back from the compacted topic
        pool.stop_all()
        pool.start_all()
        pool.wait_ready()
        deadline = time.time() + 20
        while time.time() < deadline and (api(port, "GET", "/api/v1/beds/2/limits", TOKEN_ICU)[1].get("runtime") is None):
            time.sleep(0.3)
        code, body = api(port, "GET", "/api/v1/beds/2/limits", TOKEN_ICU)
        assert body["runtime"]["by"] == "dr-ward" and body["effective"]["brady_bpm"] == 200.0
        # cleared: the bed is back on its configured limits
        code, body = api(port, "PUT", "/api/v1/beds/2/limits", TOKEN_ICU, {"limits": {}, "by": "dr-ward"})
        assert code == 200 and body["runtime"] is None and body["effective"]["brady_bpm"] == 40.0


def _until(pred, timeout: float) -> None:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass (the caller asserts after)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not pred():
        time.sleep(0.3)


def test_a_clinician_asks_for_a_beds_ecg_at_full_fidelity_over_the_api(ward_settings, monkeypatch):
    """``POST /api/v1/beds/{bed}/fidelity``: validated and scoped; the worker that owns the bed
    publishes the hold on the control topic (what the bed's device reads) and writes it to
    InfluxDB; ``minutes`` 0 withdraws it. With the worker's automatic holds turned off here, the
    request is the only hold."""
    from device_sim.control import Bounds, hold_key, latest
    from processors.hold import MANUAL_MAX_MINUTES

    with _api_worker(ward_settings, monkeypatch, alarm_hold_s=0.0) as (s, _, port):
        url = "/api/v1/beds/3/fidelity"
        for body, says in (({"minutes": 30}, "'by'"), ({"by": "dr-b"}, "'minutes'"),
                           ({"by": "dr-b", "minutes": 30, "max_level": 8}, "max_level"),
                           ({"by": "dr-b", "minutes": MANUAL_MAX_MINUTES + 1}, "minutes"),
                           ({"by": "dr-b", "minutes": 30, "level": 0}, "unknown fields ['level']"),
                           ({"by": "dr-b", "minutes": True}, "'minutes'")):
            code, err = api(port, "POST", url, TOKEN_ICU, body)
            assert code == 400 and says in err["error"], (body, err)
        assert api(port, "POST", url, TOKEN_CARDIO, {"by": "x", "minutes": 5})[0] == 404  # another ward's bed
        assert api(port, "POST", url, "nope", {"by": "x", "minutes": 5})[0] == 401
        assert api(port, "GET", url, TOKEN_ICU)[1] == {"bed": 3, "ward": "icu", "hold": None}
        assert api(port, "GET", url, TOKEN_CARDIO)[0] == 404
        code, body = api(port, "POST", url, TOKEN_ICU, {"by": "dr-b", "minutes": 30, "max_level": 0})
        assert code == 202 and body["accepted"]["cmd"] == "fidelity"
        _until(lambda: hold_key(3) in asyncio.run(latest(s)), 20)
        # what the API says once the worker has published it: the device's hold
        _until(lambda: api(port, "GET", url, TOKEN_ICU)[1]["hold"] is not None, 20)
        shown = api(port, "GET", url, TOKEN_ICU)[1]["hold"]
        assert (shown["max_level"], shown["why"], shown["by"]) == (0, "requested by dr-b", "dr-b")
        assert shown["at_ms"] > 0
        held = json.loads(asyncio.run(latest(s))[hold_key(3)])
        assert (held["max_level"], held["why"]) == (0, "requested by dr-b")
        dev = Bounds(default=0.5)
        dev.apply(hold_key(3), asyncio.run(latest(s))[hold_key(3)])
        assert dev.max_level_for(3) == 0
        assert [(r["on"], r["max_level"]) for r in query_rows(s, "SELECT * FROM fidelity_hold WHERE bed = '3'")] == [(1, 0)]
        assert api(port, "POST", url, TOKEN_ICU, {"by": "dr-b", "minutes": 0})[0] == 202  # withdrawn
        _until(lambda: json.loads(asyncio.run(latest(s))[hold_key(3)])["max_level"] is None, 20)
        assert [r["on"] for r in query_rows(s, "SELECT * FROM fidelity_hold WHERE bed = '3'")] == [1, 0]
        _until(lambda: api(port, "GET", url, TOKEN_ICU)[1]["hold"] is None, 20)


def test_a_discharged_bed_returns_to_the_ward_settings_and_starts_a_new_stay(ward_settings, monkeypatch):
    """``POST /api/v1/beds/{bed}/discharge``: scoped and validated; the worker resolves the bed's
    open alarms (by whoever discharged), records the stay's end in InfluxDB, clears the bed's
    run-time alarm limits, Dynamic-Deep bound and slack correction (the devices' view of the control
    topic is the ward's again), and the next patient's windows start a new stream: a skipped
    sequence there is no gap, while the same skip on a bed not discharged is."""
    from device_sim.control import Bounds, hold_key, latest, publish, publish_slack, slack_key

    # the worker's fidelity hold here follows the brady alarm (`processors.hold`; by default the
    # ventricular and asystole alarms, which a synthetic patient does not raise)
    with _api_worker(ward_settings, monkeypatch, alarm_hold_conditions="brady") as (s, _, port):
        code, _ = api(port, "PUT", "/api/v1/beds/2/limits", TOKEN_ICU, {"limits": {"brady_bpm": 200}, "by": "dr-a"})
        assert code == 200

        asyncio.run(publish(s, 0.2, bed=2, by="dr-a"))  # a per-bed Dynamic-Deep bound, and the audits' slack
        asyncio.run(publish_slack(s, {2: 0.3}))
        ward = Ward(s, [1, 2])
        asyncio.run(ward.send([(1, 10, 0), (2, 10, 0)]))

        def open_alarms(bed):
            return {a["condition"]: a for a in api(port, "GET", f"/api/v1/alarms?bed={bed}", TOKEN_ICU)[1]["alarms"]}

        _until(lambda: "brady" in open_alarms(2), 30)
        assert open_alarms(2)["brady"]["state"] == "active"
        # the worker holds the bed's device at level 1 on the control topic, and says so in InfluxDB
        _until(lambda: hold_key(2) in asyncio.run(latest(s)), 20)
        held = json.loads(asyncio.run(latest(s))[hold_key(2)])
        assert (held["max_level"], held["why"], held["by"]) == (1, "brady", "alarm")
        assert hold_key(1) not in asyncio.run(latest(s))
        hp = query_rows(s, "SELECT * FROM fidelity_hold WHERE bed = '2'")
        assert [(r["on"], r["max_level"], r["why"]) for r in hp] == [(1, 1, "brady")]
        from dashboards.check import check

        panel = [r for r in check(s, [], range_s=900) if r.panel.startswith("Fidelity holds")]
        assert len(panel) == 1 and not panel[0].error and panel[0].series == 1  # one row: bed 2
        # bad input
        assert api(port, "POST", "/api/v1/beds/2/discharge", TOKEN_CARDIO, {"by": "x"})[0] == 404
        assert api(port, "POST", "/api/v1/beds/2/discharge", "nope", {"by": "x"})[0] == 401
        assert api(port, "POST", "/api/v1/beds/2/discharge", TOKEN_ICU, {})[0] == 400
        assert api(port, "POST", "/api/v1/beds/2/discharge", TOKEN_ICU, {"by": "x", "patient": "y"})[0] == 400
        assert api(port, "POST", "/api/v1/beds/x2/discharge", TOKEN_ICU, {"by": "x"})[0] == 400
        before_discharge_ms = int(time.time() * 1000) - 1
        code, body = api(port, "POST", "/api/v1/beds/2/discharge", TOKEN_ICU, {"by": "nurse-adt"})
        assert code == 202 and body["accepted"]["cmd"] == "discharge" and body["open_alarms"] >= 1
        _until(lambda: not open_alarms(2), 20)
        assert open_alarms(2) == {}
        lim = api(port, "GET", "/api/v1/beds/2/limits", TOKEN_ICU)[1]
        assert lim["runtime"] is None and lim["effective"]["brady_bpm"] == 40.0
        ctl = asyncio.run(latest(s))
        assert json.loads(ctl[bed_key(2)])["bound"] is None and json.loads(ctl[slack_key(2)])["slack"] is None
        dev = Bounds(default=0.5)
        for k, v in ctl.items():
            dev.apply(k, v)
        assert dev.for_bed(2) == 0.5 and dev.slack_for(2) == 0.0
        assert json.loads(ctl[hold_key(2)])["max_level"] is None and dev.max_level_for(2) is None
        stay = query_rows(s, "SELECT * FROM stay WHERE bed = '2'")
        assert len(stay) == 1 and stay[0]["by"] == "nurse-adt" and stay[0]["event"] == "discharge"
        assert stay[0]["alarms_resolved"] >= 1
        resolved = query_rows(s, "SELECT * FROM alarm WHERE bed = '2' AND \"condition\" = 'brady' AND \"state\" = 'resolved'")
        assert [(r["why"], r["by"]) for r in resolved] == [("patient discharged", "nurse-adt")]
        # the next patient: the same two-window skip on both beds; only bed 1 has lost windows
        asyncio.run(ward.send([(1, 1, 2), (2, 1, 2)]))
        _until(lambda: "seq_gap" in open_alarms(1), 20)
        assert "seq_gap" in open_alarms(1)
        asyncio.run(ward.send([(1, 4, 0), (2, 4, 0)]))
        _until(lambda: len(query_rows(s, "SELECT * FROM frame WHERE bed = '2'")) >= 15, 20)
        assert len(query_rows(s, "SELECT * FROM frame WHERE bed = '2'")) == 15
        assert not {"seq_gap", "brady"} & set(open_alarms(2))  # no gap; the ward's brady limit again
        # an acknowledgement given in the earlier stay and read again (after a crash, or a sweep)
        # acknowledges nothing of the new patient's; one given now does
        asyncio.run(ward.send([(2, 1, 2)]))
        _until(lambda: "seq_gap" in open_alarms(2), 20)

        async def stale_ack():
            from aiokafka import AIOKafkaProducer

            p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
            await p.start()
            try:
                await p.send_and_wait(s.commands_topic, json.dumps(
                    {"cmd": "acknowledge", "bed": 2, "condition": "seq_gap", "by": "nurse-earlier",
                     "at_ms": before_discharge_ms}).encode(), key=bed_key(2))
            finally:
                await p.stop()

        asyncio.run(stale_ack())
        time.sleep(3.0)  # commands are applied within a second here
        assert open_alarms(2)["seq_gap"]["state"] == "active"
        assert api(port, "POST", "/api/v1/alarms/2/seq_gap/ack", TOKEN_ICU, {"by": "nurse-now"})[0] == 202
        _until(lambda: open_alarms(2).get("seq_gap", {}).get("state") == "acknowledged", 20)
        # the bed view marks the discharge (its annotation's query, as Grafana would run it)
        from dashboards.check import check

        (mark,) = [r for r in check(s, ["2"], range_s=900, interval_ms=2000)
                   if r.dashboard == "bed-detail.json" and r.panel == "annotation: Discharges"]
        assert mark.error == "" and mark.series == 1 and mark.values == 3  # one point: by, alarms_resolved, bed
