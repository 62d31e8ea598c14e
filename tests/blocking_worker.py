"""A worker whose event loop blocks in a synchronous call once the file named by
``WARDSTREAM_TEST_BLOCK_FLAG`` exists and it has received ``WARDSTREAM_TEST_BLOCK_AFTER_FRAMES``
frames (default 0), removing the file (so once): ``python -m tests.blocking_worker``, for the
watchdog's and the supervisor's tests. Otherwise the real worker."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def stuck_in_a_synchronous_call() -> None:
    time.sleep(3600)


def main() -> None:
    from stream.app import app

    flag = Path(os.environ["WARDSTREAM_TEST_BLOCK_FLAG"])
    after = int(os.environ.get("WARDSTREAM_TEST_BLOCK_AFTER_FRAMES", "0"))

    @app.timer(interval=0.5)
    async def block_when_asked() -> None:
        from processors.agents import stats

        if flag.exists() and stats.frames >= after:
            flag.unlink()  # once: the worker started again after it runs normally
            stuck_in_a_synchronous_call()

    from processors.worker import main as worker_main

    worker_main(sys.argv[1:])


if __name__ == "__main__":
    main()
