"""Micro-batching of signal lookups.

Under load, many clients each ask for one or a few signals. Matching them one request at a time
pays the fixed costs (reading bank thresholds, one index call, one transaction and commit to
record the submissions) per request. The batcher instead queues each request's signals; one
worker thread takes everything queued (up to :attr:`LookupBatcher.max_signals`), matches it with
one :meth:`~vigil.core.app.Vigil.match_signals` call under the index lock, and hands each request
its own results. A lone request is served at once (the worker never waits to fill a batch), so
batching adds no latency when idle and cuts the per-request cost when busy. Results and the
recorded submissions are exactly those of separate calls: the core records one submission per
signal either way.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import queue
import threading
import typing as t

from vigil.core.app import ItemResult
from vigil.signals import Signal

if t.TYPE_CHECKING:
    from vigil.api.app import Service

__all__ = ["LookupBatcher"]

log = logging.getLogger(__name__)
_Job = tuple[list[Signal], bool, "cf.Future[list[ItemResult]]"]


class LookupBatcher:
    def __init__(self, service: Service, max_signals: int = 512) -> None:
        self.service = service
        self.max_signals = max_signals
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vigil-lookups", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, signals: list[Signal], record: bool) -> cf.Future[list[ItemResult]]:
        fut: cf.Future[list[ItemResult]] = cf.Future()
        if self._thread is None:  # not started (e.g. a test app without lifespan): run inline
            self._serve([(signals, record, fut)])
        else:
            self._queue.put((signals, record, fut))
        return fut

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first[0])
            while size < self.max_signals:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
                size += len(nxt[0])
            for record in (True, False):
                group = [j for j in batch if j[1] is record]
                if group:
                    self._serve(group)

    def _serve(self, group: list[_Job]) -> None:
        signals = [s for sigs, _, _ in group for s in sigs]
        try:
            with self.service.index_lock:
                items = self.service.vigil.match_signals(signals, record=group[0][1])
            self.batches += 1
        except BaseException as exc:  # noqa: BLE001 - every waiting request must hear of it
            for _, _, fut in group:
                fut.set_exception(exc)
            return
        at = 0
        for sigs, _, fut in group:
            fut.set_result(items[at:at + len(sigs)])
            at += len(sigs)
