"""The background-loop base: rounds on a timer and on wake, failures survive, restart works."""

from __future__ import annotations

import threading
import time

from vigil.core.background import BackgroundLoop
from vigil.errors import StoreError


class Counting(BackgroundLoop):
    def __init__(self, interval_s: float, fail_first: int = 0) -> None:
        super().__init__(interval_s)
        self.rounds = 0
        self.fail_first = fail_first
        self.event = threading.Event()

    def run_round(self) -> None:
        self.rounds += 1
        self.event.set()
        if self.rounds <= self.fail_first:
            raise StoreError("database is locked") if self.rounds % 2 else RuntimeError("boom")


def _wait_rounds(loop: Counting, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while loop.rounds < n:
        assert time.monotonic() < deadline, f"only {loop.rounds} rounds"
        time.sleep(0.01)


def test_wake_runs_a_round_at_once_and_failures_do_not_end_the_thread():
    loop = Counting(interval_s=3600, fail_first=2)
    loop.start()
    try:
        _wait_rounds(loop, 1)
        loop.wake()
        _wait_rounds(loop, 2)  # the hour-long interval did not hold it back
        loop.wake()
        _wait_rounds(loop, 3)  # two failed rounds (a VigilError, then any exception) before it
        assert loop.running
    finally:
        loop.stop()
    assert not loop.running


def test_restart_after_stop_and_stop_is_idempotent():
    loop = Counting(interval_s=0.01)
    loop.start()
    _wait_rounds(loop, 3)
    loop.stop()
    loop.stop()
    n = loop.rounds
    time.sleep(0.05)
    assert loop.rounds == n  # stopped means no more rounds
    loop.start()
    _wait_rounds(loop, n + 2)
    loop.stop()
