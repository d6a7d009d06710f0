"""One shape for the service's background work: a daemon thread that runs a round of work every
``interval_s`` seconds, or at once when woken, until stopped.

Webhook deliveries (:class:`vigil.core.actions.ActionWorker`), jobs
(:class:`vigil.core.jobs.JobRunner`) and retention (:class:`vigil.core.retention.RetentionWorker`)
differ only in their round (:meth:`BackgroundLoop.run_round`). A round that fails is logged and
tried again at the next tick: a busy database (a :class:`~vigil.errors.VigilError`) is a warning,
anything else a logged exception; neither ends the thread. ``stop`` wakes the thread and waits
for the round in progress to finish, so a delivery or job is never cut off half-way by a clean
shutdown; ``start`` after ``stop`` starts a fresh thread.
"""

from __future__ import annotations

import logging
import threading
import time

from vigil.errors import VigilError

__all__ = ["BackgroundLoop"]

log = logging.getLogger(__name__)


class BackgroundLoop:
    #: the thread's name (shows in py-spy, logs and thread dumps)
    thread_name = "vigil-background"
    #: what a failed round is called in the log
    what = "background round"
    #: the least time between two rounds, however short the interval
    min_wait_s = 0.0

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: long rounds check it between units of work."""
        return self._stop.is_set()

    def run_round(self) -> None:
        """One round of work; subclasses override it."""
        raise NotImplementedError

    def setup(self) -> None:
        """Called in the thread before the first round (e.g. to open a client)."""

    def teardown(self) -> None:
        """Called in the thread after the last round."""

    def _run(self) -> None:
        self.setup()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.run_round()
                except VigilError as exc:  # a busy database: try again next round
                    log.warning("%s failed: %s", self.what, exc.message)
                except Exception:
                    log.exception("%s failed", self.what)
                # the interval runs from the round's start: an hourly purge stays hourly
                self._wake.wait(max(self.min_wait_s, self.interval_s - (time.monotonic() - started)))
                self._wake.clear()
        finally:
            self.teardown()
