"""The ASGI app: one process, two faces (JSON under ``/api/v1``, the review UI at ``/``).

:func:`create_app` builds a FastAPI app around one :class:`~vigil.core.app.Vigil` (the same core
the CLI calls). Start-up loads the indexes and starts three background threads: action delivery,
the job runner and the retention purge. Shut-down stops them and closes the store if the app
opened it.

Request flow: :class:`_Guard` (pure ASGI) times every request for Prometheus and enforces the
upload limit (413 from the ``Content-Length`` header, or as soon as a streamed body passes the
limit); routers authenticate with a bearer token and check the role; every error, ours or the
framework's, leaves as ``{"error": {"code", "message", "details"}}`` with the status of the
:mod:`vigil.errors` class. Database errors caused by odd input (a NUL byte, an out-of-range
number) are 422, never 500.

The in-memory indexes are not safe for concurrent mutation, so calls that read or change them
hold :attr:`Service.index_lock`; hashing an upload happens outside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import threading
import time
import typing as t
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vigil.api.settings import ServiceSettings
from vigil.core import review
from vigil.core.actions import ActionWorker
from vigil.core.app import Vigil
from vigil.core.jobs import JobRunner
from vigil.core.retention import RetentionWorker
from vigil.errors import FileTooLarge, VigilError

__all__ = ["API_PREFIX", "Service", "create_app"]

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


class _BodyTooLarge(Exception):
    pass


class Metrics:
    """Prometheus metrics in a registry of this app (two apps in one process do not clash)."""

    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vigil_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("vigil_http_request_duration_seconds", "Request latency",
                                 ["route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.matches = Counter("vigil_matches", "Block matches found", ["bank"],
                               registry=self.registry)
        self.lookups = Counter("vigil_lookups", "Items checked", ["kind"], registry=self.registry)
        #: what /metrics reports: this registry, or with ``vigil serve --workers N`` (which sets
        #: PROMETHEUS_MULTIPROC_DIR) the counters of every worker summed from their files
        self.scrape = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            self.scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.scrape)
        self.scrape.register(_StateCollector(service))


class _StateCollector:
    """Queue depth and index sizes, read when Prometheus scrapes."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def describe(self) -> list[t.Any]:
        return []

    def collect(self) -> t.Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("vigil_review_queue_depth", "Review cases by status",
                                  labels=["status"])
        try:
            with self.service.vigil.store.read() as s:
                counts = review.queue_depth(s)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is busy
            counts = {}
        for status in ("open", "decided"):
            depth.add_metric([status], counts.get(status, 0))
        yield depth
        sizes = GaugeMetricFamily("vigil_index_size", "Signals in each index", labels=["signal_type"])
        idx = self.service.vigil._indexes
        if idx is not None:
            for name, n in idx.sizes().items():
                sizes.add_metric([name], n)
        yield sizes


class Leadership:
    """Which of the processes serving one data directory runs the background work (webhook
    deliveries, jobs, retention): the one holding an exclusive ``flock`` on ``serve.lock``.

    ``vigil serve --workers N`` starts N processes; exactly one of them leads. When it exits,
    the kernel drops its lock and another worker takes over at its next sync tick; a job it
    left running goes back to the queue when the new leader's job runner starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: t.BinaryIO | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def try_acquire(self) -> bool:
        if self._fh is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+b")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class Service:
    """What the routers share: the core, settings, locks, workers and metrics."""

    def __init__(self, vigil: Vigil, settings: ServiceSettings, owns_vigil: bool) -> None:
        self.vigil = vigil
        self.settings = settings
        vigil.refresh_interval_s = settings.refresh_interval_s
        self.owns_vigil = owns_vigil
        self.index_lock = threading.RLock()
        self.metrics = Metrics(self)
        self.actions = ActionWorker(vigil.store, settings.delivery, settings.action_interval_s)
        self.jobs = JobRunner(vigil.store)
        self.retention = RetentionWorker(vigil.store, vigil.settings.data_dir,
                                         settings.retention_days, settings.retention_interval_s)
        from vigil.api.batching import LookupBatcher

        self.lookups = LookupBatcher(self)
        #: token hash -> (principal, valid until monotonic time); see vigil.api.deps.caller
        self.auth_cache: dict[str, tuple[t.Any, float]] = {}
        self.ready = False
        self._secret: bytes | None = None
        self._stop_sync = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self.leadership = Leadership(vigil.settings.data_dir / "serve.lock")
        self._background_lock = threading.Lock()

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            from vigil.core.auth import server_secret

            self._secret = server_secret(self.vigil.store)
        return self._secret

    def _sync_indexes(self) -> None:
        """Apply bank changes made by other processes (the CLI, another server) every few
        seconds, also between requests: the store's change log is the source of truth
        (:meth:`vigil.core.app.Vigil.refresh_indexes`, a cheap head check first)."""
        while not self._stop_sync.wait(self.settings.index_sync_s):
            try:
                with self.index_lock:
                    self.vigil.refresh_indexes()
            except Exception:  # noqa: BLE001 - retried on the next tick
                log.exception("index sync failed")
            self._start_background()  # a standby worker takes over when the leader is gone

    def _start_background(self) -> None:
        """Start the background workers if this process may lead (see :class:`Leadership`)."""
        if not self.settings.workers:
            return
        with self._background_lock:
            if self.leadership.held or self._stop_sync.is_set():
                return
            if not self.leadership.try_acquire():
                return
            self.actions.start()
            self.jobs.start()
            self.retention.start()

    def start(self) -> None:
        with self.index_lock:
            _ = self.vigil.indexes  # load (or rebuild) before the first request
        self.ready = True
        self.lookups.start()  # always: it serves the API's signal lookups
        from vigil.api.routes_content import register_jobs

        register_jobs(self)
        self._stop_sync.clear()
        self._sync_thread = threading.Thread(target=self._sync_indexes, name="vigil-index-sync",
                                             daemon=True)
        self._sync_thread.start()
        self._start_background()

    def stop(self) -> None:
        self.ready = False
        self.lookups.stop()
        self._stop_sync.set()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=30)
        with self._background_lock:
            if self.leadership.held:
                self.actions.stop()
                self.jobs.stop()
                self.retention.stop()
                self.leadership.release()
        if self.owns_vigil:
            self.vigil.close()


def error_body(code: str, message: str, details: t.Any = None) -> dict[str, t.Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _error(status: int, code: str, message: str, details: t.Any = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


class _Guard:
    """Pure ASGI middleware: metrics for every request, and the upload limit."""

    def __init__(self, app: t.Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.service.settings.max_upload_bytes
        started = time.perf_counter()
        status_box = [500]
        sent_start = [False]
        over = [False]

        async def send_wrapper(message: t.MutableMapping[str, t.Any]) -> None:
            if over[0] and not sent_start[0]:
                return  # the app's answer to a body we cut off (FastAPI says 400): ours wins
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                sent_start[0] = True
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length")
        seen = [0]

        async def receive_wrapper() -> dict[str, t.Any]:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    over[0] = True
                    raise _BodyTooLarge
            return t.cast(dict[str, t.Any], message)

        try:
            if length is not None and length.isdigit() and int(length) > limit:
                over[0] = True
            else:
                with contextlib.suppress(_BodyTooLarge):
                    await self.app(scope, receive_wrapper, send_wrapper)
            if over[0] and not sent_start[0]:
                exc = FileTooLarge(f"the request body is over the upload limit of {limit} bytes",
                                   limit=limit)
                over[0] = False
                await _error(413, exc.code, exc.message, exc.details,
                             {"Connection": "close"})(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            if scope.get("path", "").startswith(API_PREFIX) and name.startswith("/") \
                    and not name.startswith(API_PREFIX):
                name = API_PREFIX + name  # routers report their path without the prefix
            m = self.service.metrics
            m.requests.labels(scope.get("method", "?"), name, str(status_box[0])).inc()
            m.latency.labels(name).observe(time.perf_counter() - started)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(VigilError)
    async def vigil_error(request: Request, exc: VigilError) -> JSONResponse:
        if exc.status == 401:
            return _error(401, exc.code, exc.message, exc.details, {"WWW-Authenticate": "Bearer"})
        if exc.status >= 500 and exc.status != 503:
            log.error("internal error: %s", exc.message)
        return _error(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))} for e in exc.errors()]
        return _error(422, "invalid_request", "the request is malformed", {"errors": details})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "file_too_large",
                 415: "unsupported_media_type", 401: "unauthorized", 403: "forbidden"}
        code = codes.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        return _error(422, "invalid_input", "a value is out of range or not storable",
                      {"reason": str(exc.orig).splitlines()[0][:200] if exc.orig else ""})

    @app.exception_handler(IntegrityError)
    async def integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
        return _error(409, "conflict", "the change conflicts with existing data", None)

    @app.exception_handler(OperationalError)
    async def operational_error(request: Request, exc: OperationalError) -> JSONResponse:
        return _error(503, "store_error", "the database is unavailable; retry", None)

    @app.exception_handler(StatementError)
    async def statement_error(request: Request, exc: StatementError) -> JSONResponse:
        return _error(422, "invalid_input", "a value cannot be used in a query", None)

    @app.exception_handler(UnicodeError)
    async def unicode_error(request: Request, exc: UnicodeError) -> JSONResponse:
        return _error(422, "invalid_input", "text that is not valid Unicode", None)

    @app.exception_handler(OverflowError)
    async def overflow_error(request: Request, exc: OverflowError) -> JSONResponse:
        return _error(422, "invalid_input", "a number is out of range", None)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal", "internal error", None)


def worker_app() -> FastAPI:
    """The app of one ``vigil serve --workers N`` process (uvicorn calls this factory in each
    worker): a core from the environment with its indexes loaded before the first request."""
    vigil = Vigil()
    try:
        _ = vigil.indexes
        app = create_app(vigil, owns=True)
    except BaseException:
        vigil.close()
        raise
    freeze_gc()
    return app


def freeze_gc() -> None:
    """Everything loaded so far lives as long as the process. Freezing it takes it out of the
    cyclic collector's view, so a full collection under load walks only what requests allocate
    instead of every long-lived object: shorter pauses in the latency tail."""
    gc.collect()
    gc.freeze()


def create_app(vigil: Vigil | None = None, settings: ServiceSettings | None = None, *,
               owns: bool | None = None) -> FastAPI:
    """Build the service around ``vigil`` (or a new one from the environment)."""
    settings = settings or ServiceSettings.from_env()
    owns = vigil is None if owns is None else owns
    service = Service(vigil or Vigil(), settings, owns)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> t.AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="Vigil", version="1", lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None,
        description="Recognise known media and its edited re-uploads; review queue; actions.",
    )
    app.state.service = service
    _install_errors(app)

    from vigil.api import routes_admin, routes_banks, routes_content, routes_review

    for mod in (routes_content, routes_banks, routes_review, routes_admin):
        app.include_router(mod.router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Readiness: the database answers and the indexes are loaded."""
        checks = {"database": False, "indexes": service.ready and service.vigil._indexes is not None}
        try:
            with service.vigil.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:  # noqa: BLE001 - not ready is the answer, not an error
            pass
        ok = all(checks.values())
        # which process answered: with `vigil serve --workers N` each worker answers for itself
        return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks,
                             "worker": os.getpid()},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus metrics: requests, latencies, matches, queue depth, index sizes."""
        return PlainTextResponse(generate_latest(service.metrics.scrape),
                                 media_type=CONTENT_TYPE_LATEST)

    from vigil.web.ui import mount_ui

    mount_ui(app, service)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/queue", status_code=303)

    from vigil.api.fastpath import SignalLookupFastPath

    # inside the guard (metrics, upload limit): the ordinary signal lookup skips the framework
    app.add_middleware(SignalLookupFastPath, service=service, path=f"{API_PREFIX}/match/signals")
    app.add_middleware(_Guard, service=service)
    return app
