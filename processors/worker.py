"""Entry point of one worker process: ``python -m processors.worker`` (or ``wardstream worker``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import os

    from wardstream.threads import limit_threads

    # one compute thread per worker process (torch and BLAS): scale out with more workers
    # (processes), and keep the simulator, broker and InfluxDB on a shared machine from fighting
    # over spinning threads
    limit_threads(int(os.environ.get("WARDSTREAM_TORCH_THREADS", "1")))
    from stream import kafka_compat
    from stream.app import app
    from wardstream.workers import broker_wait_s

    # a worker (re)started while the broker restarts waits for it instead of exiting
    kafka_compat.wait_for_broker(broker_wait_s())
    if os.environ.get("WARDSTREAM_WORKER_ID"):
        # a worker with a stable id restarts as the group member it was (kafka_compat, mend 5)
        kafka_compat.remember_member_ids(app.conf.datadir, os.environ["WARDSTREAM_WORKER_ID"])
    import processors.agents  # noqa: F401  (registers the agents with the app)
    import processors.alarm_service  # noqa: F401  (alarm delivery, the alarm API)

    sys.argv = ["wardstream-worker", "worker", "-l", "info", *(argv or [])]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1:])
