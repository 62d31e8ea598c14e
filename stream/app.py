"""The one Faust app, its topics and its tables. Settings come from the environment.

Run a worker with ``wardstream worker`` (or ``python -m processors.worker``).
"""

from __future__ import annotations

import os

import faust

from stream import kafka_compat
from stream.topics import compact_configs
from wardstream.settings import from_env

settings = from_env()
kafka_compat.install()

app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",  # tables are rebuilt from their changelog topics on start
    topic_partitions=settings.frames_partitions,
    topic_replication_factor=1,
    web_bind=settings.worker_web_host,
    web_host=settings.worker_web_host,
    web_port=settings.worker_web_port,
    broker_session_timeout=10,
    broker_heartbeat_interval=1,
    consumer_auto_offset_reset="earliest",
    processing_guarantee="at_least_once",
    broker_commit_interval=1.0,
    stream_buffer_maxsize=8192,
    producer_acks=-1,
    web_enabled=True,
    datadir=os.environ.get("WARDSTREAM_FAUST_DATADIR", str(settings.state_dir / "faust")),
)

frames_topic = app.topic(settings.frames_topic, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw",
                         partitions=settings.frames_partitions)
dlq_topic = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")

# per-bed stream state (stream.topics.bed_key -> processors.bed.BedState JSON). Keys are the
# frame keys' exact bytes, so the partitioner puts each bed's changelog on its frames partition.
bed_table = app.Table("bed-state", key_type=bytes, value_type=bytes,
                      partitions=settings.frames_partitions,
                      use_partitioner=True,
                      # compacted with segments that close, so that compaction runs (stream.topics)
                      extra_topic_configs=compact_configs())
