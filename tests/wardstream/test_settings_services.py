import subprocess
import sys
from pathlib import Path

import pytest

from wardstream import services
from wardstream.settings import Settings, from_env


def test_settings_from_env_and_flags():
    s = from_env({"WARDSTREAM_KAFKA_BOOTSTRAP": "10.0.0.5:9092", "WARDSTREAM_INFLUX_API": "v2",
                  "WARDSTREAM_INFLUX_TOKEN": "t0k", "WARDSTREAM_FRAMES_PARTITIONS": "24",
                  "WARDSTREAM_REQUIRE_HMAC": "yes"}, influx_url="http://db:8086")
    assert s.kafka_bootstrap == "10.0.0.5:9092" and s.influx_api == "v2" and s.influx_token == "t0k"
    assert s.frames_partitions == 24 and s.require_hmac is True and s.influx_url == "http://db:8086"
    with pytest.raises(ValueError):
        from_env({"WARDSTREAM_INFLUX_API": "v3"})
    assert from_env({}).dd_predictor == "default"
    assert from_env({"WARDSTREAM_DD_PREDICTOR": "decode"}).dd_predictor == "decode"
    assert from_env({"WARDSTREAM_DD_PREDICTOR": "rhythm"}).dd_predictor == "rhythm"
    with pytest.raises(ValueError, match="DD_PREDICTOR"):
        from_env({"WARDSTREAM_DD_PREDICTOR": "oracle"})
    assert from_env({}).frames_retention_h == 0 and from_env({"WARDSTREAM_FRAMES_RETENTION_H": "1.5"}).frames_retention_h == 1.5
    with pytest.raises(ValueError, match="FRAMES_RETENTION_H"):
        from_env({"WARDSTREAM_FRAMES_RETENTION_H": "-1"})


def test_defaults_bind_to_loopback_and_hold_no_secret():
    s = Settings()
    assert s.kafka_bootstrap.startswith("127.0.0.1:") and "127.0.0.1" in s.influx_url
    assert s.worker_web_host == "127.0.0.1"
    assert s.influx_token == "" and s.device_secret == "" and s.device_key(1) is None


def test_device_keys_are_per_device():
    s = from_env({"WARDSTREAM_DEVICE_SECRET": "ward-secret"})
    assert s.device_key(1) != s.device_key(2) and len(s.device_key(1)) == 32


def test_services_up_down_are_idempotent(tmp_path):
    import socket

    def port():
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            return so.getsockname()[1]

    s = from_env({}, state_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{port()}",
                 influx_url=f"http://127.0.0.1:{port()}")
    try:
        first = services.up(s)
        assert all(st.healthy for st in first)
        again = services.up(s)  # no second copy
        assert [st.pid for st in again] == [st.pid for st in first]
        assert (tmp_path / "broker" / "data").is_dir() and (tmp_path / "influxdb" / "influxdb.conf").exists()
        conf = (tmp_path / "influxdb" / "influxdb.conf").read_text()
        assert f'bind-address = "127.0.0.1:{s.influx_port}"' in conf
    finally:
        services.down(s)
        services.down(s)
    assert not any(st.running or st.healthy for st in services.status(s))


def test_missing_influxd_names_the_missing_piece(tmp_path, monkeypatch):
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    with pytest.raises(services.ServiceError, match="influxd.*apt-get install -y influxdb"):
        services.Influx(Settings(state_dir=tmp_path, influx_url="http://127.0.0.1:1")).up()


def test_cli_reports_missing_data_clearly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wardstream.cli", "eval", "qrs", "--data-dir",
                        str(tmp_path)], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert r.returncode == 2
    assert "MIT-BIH" in r.stderr and str(tmp_path) in r.stderr


def test_to_env_round_trips_and_leaves_secrets_out():
    from wardstream.settings import to_env

    s = from_env({"WARDSTREAM_INFLUX_TOKEN": "secret"}, app_id="x", frames_partitions=12,
                 require_hmac=True, state_dir=Path("/srv/ward"))
    env = to_env(s)
    assert "WARDSTREAM_INFLUX_TOKEN" not in env and "WARDSTREAM_DEVICE_SECRET" not in env
    assert from_env(env).replace(influx_token="secret") == s


def test_a_broker_restart_keeps_every_record_it_acknowledged(tmp_path):
    """`services.Broker.down` while a producer writes: after `up`, every record the broker
    acknowledged is there (noida-db stopped by a signal alone lost the last ~0.1 s of them)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from tests.isolation import free_port

    s = from_env({}, state_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    broker = services.Broker(s)
    tps = [TopicPartition("acked", p) for p in range(2)]

    async def write_then_stop() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("acked", 2, 1)])
        await admin.close()
        pr = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True)
        await pr.start()
        acked = 0

        async def produce():
            nonlocal acked
            i = 0
            while True:
                await (await pr.send("acked", value=b"x" * 200, partition=i % 2))
                acked += 1
                i += 1

        task = asyncio.ensure_future(produce())
        await asyncio.sleep(1.5)
        await asyncio.get_running_loop().run_in_executor(None, broker.down)  # the producer still writing
        task.cancel()
        try:
            await asyncio.wait_for(pr.stop(), 2)
        except BaseException:
            pass
        return acked

    async def stored() -> int:
        c = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None)
        await c.start()
        try:
            return sum((await c.end_offsets(tps)).values())
        finally:
            await c.stop()

    try:
        broker.up()
        acked = asyncio.run(write_then_stop())
        assert broker.pid() is None
        broker.up()
        assert acked > 500
        assert asyncio.run(stored()) >= acked
    finally:
        broker.down()
