"""A worker that cannot start: ``python -m tests.exiting_worker`` exits with status 3 at once (as
one with a broken configuration would), for the supervisor's back-off test."""

import sys

if __name__ == "__main__":
    sys.exit(3)
