"""A worker whose event loop blocks in a synchronous call once the file named by
``WARDSTREAM_TEST_BLOCK_FLAG`` exists: ``python -m tests.blocking_worker``, for the watchdog's
test (`tests/processors/test_watchdog.py`). Otherwise the real worker."""

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

    @app.timer(interval=0.5)
    async def block_when_asked() -> None:
        if flag.exists():
            stuck_in_a_synchronous_call()

    from processors.worker import main as worker_main

    worker_main(sys.argv[1:])


if __name__ == "__main__":
    main()
