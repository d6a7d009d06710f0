"""Asynchronous jobs: work too large for one request (big uploads now, video hashing later).

Shape: a ``jobs`` row (``id``, ``kind``, ``status`` queued -> running -> done | failed, ``params``,
``result``, ``error``, timestamps). :func:`submit` writes the row and returns at once; the client
polls ``GET /api/v1/jobs/{id}``. A :class:`JobRunner` thread in the service process claims queued
jobs one at a time with a conditional update (so two runners never take the same job) and calls
the handler registered for the job's kind. A handler takes the params and a ``progress(fraction)``
callback (stored as the job's ``progress``, at most every half second) and returns a JSON-able
result or raises a :class:`~vigil.errors.VigilError`, which becomes the job's ``error``.

On start the runner puts back jobs left ``running`` by a process that died, so nothing is lost.
The video work registers its own kinds with :meth:`JobRunner.register`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import typing as t
import uuid

from sqlalchemy import CursorResult, select, update

from vigil.core import audit
from vigil.core.background import BackgroundLoop
from vigil.errors import NotFound, UsageError, VigilError
from vigil.store.db import Store
from vigil.store.models import utcnow
from vigil.store.service_models import Job

__all__ = ["Handler", "JobRunner", "get", "job_dict", "submit"]

log = logging.getLogger(__name__)
Progress = t.Callable[[float], None]
Handler = t.Callable[[dict[str, t.Any], Progress], dict[str, t.Any]]


def _iso(v: dt.datetime | None) -> str | None:
    return None if v is None else audit._ts(v) + "Z"


def job_dict(j: Job) -> dict[str, t.Any]:
    return {"id": j.id, "kind": j.kind, "status": j.status, "progress": round(j.progress or 0.0, 3),
            "result": j.result, "error": j.error,
            "created_by": j.created_by, "created_at": _iso(j.created_at),
            "started_at": _iso(j.started_at), "finished_at": _iso(j.finished_at)}


def submit(store: Store, kind: str, params: dict[str, t.Any], created_by: str = "") -> dict[str, t.Any]:
    with store.transaction() as s:
        j = Job(id=uuid.uuid4().hex, kind=kind, status="queued", params=params,
                created_by=created_by)
        s.add(j)
        s.flush()
        return job_dict(j)


def get(store: Store, job_id: str) -> dict[str, t.Any]:
    with store.read() as s:
        j = s.get(Job, job_id)
        if j is None:
            raise NotFound(f"no job {job_id}", job=job_id)
        return job_dict(j)


class JobRunner(BackgroundLoop):
    thread_name = "vigil-jobs"
    what = "job round"

    def __init__(self, store: Store, interval_s: float = 0.5) -> None:
        super().__init__(interval_s)
        self.store = store
        self.handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self.handlers:
            raise UsageError(f"a handler for job kind {kind!r} is already registered")
        self.handlers[kind] = handler

    def start(self) -> None:
        with self.store.transaction() as s:  # recover jobs of a process that died mid-job
            s.execute(update(Job).where(Job.status == "running").values(status="queued"))
        super().start()

    def run_once(self) -> bool:
        """Claim and run one queued job; False when there was none."""
        with self.store.read() as s:
            job_id = s.scalar(select(Job.id).where(Job.status == "queued")
                              .order_by(Job.created_at).limit(1))
        if job_id is None:
            return False
        with self.store.transaction() as s:
            won = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                            .values(status="running", started_at=utcnow()))
            won_rows = t.cast(CursorResult[t.Any], won).rowcount
        if won_rows != 1:
            return True  # someone else took it
        with self.store.read() as s:
            j = s.get(Job, job_id)
            assert j is not None
            kind, params = j.kind, dict(j.params or {})
        result: dict[str, t.Any] | None = None
        error: dict[str, t.Any] | None = None
        handler = self.handlers.get(kind)
        try:
            if handler is None:
                raise UsageError(f"no handler for job kind {kind!r}")
            result = handler(params, self._progress_writer(job_id))
        except VigilError as exc:
            error = exc.to_dict()
        except Exception as exc:
            log.exception("job %s failed", job_id)
            error = {"code": "internal", "message": f"{type(exc).__name__}: {exc}", "details": {}}
        with self.store.transaction() as s:
            s.execute(update(Job).where(Job.id == job_id).values(
                status="failed" if error else "done", result=result, error=error,
                progress=0.0 if error else 1.0, finished_at=utcnow()))
        return True

    def _progress_writer(self, job_id: str) -> Progress:
        last = [0.0, -1.0]  # time written, value written

        def write(fraction: float) -> None:
            now = time.monotonic()
            value = min(1.0, max(0.0, float(fraction)))
            if now - last[0] < 0.5 or value == last[1]:
                return
            last[0], last[1] = now, value
            with self.store.transaction() as s:
                s.execute(update(Job).where(Job.id == job_id).values(progress=value))

        return write

    def run_round(self) -> None:
        while not self.stopping and self.run_once():
            pass
