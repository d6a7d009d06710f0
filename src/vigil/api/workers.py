"""``vigil serve --workers N``: N service processes on one port, each with its own listening
socket (``SO_REUSEPORT``), and a supervisor that restarts a worker that dies.

Why not uvicorn's own ``workers=N``: its workers share one listening socket, and whichever
process the kernel wakes first accepts the next connection. Keep-alive clients open their
connections once, so the split stays as it fell at the start: in the load benchmark, 50 of 64
connections (and so 78 % of the work) went to one of two workers, which then queued while the
other idled. With one ``SO_REUSEPORT`` socket per worker, the kernel spreads connections over the
workers by a hash of their addresses instead, whatever each worker is doing at that moment.

Flow: the supervisor checks that it may bind the port, then starts the workers
(``multiprocessing`` *spawn*: each imports Vigil afresh and builds its app with
:func:`vigil.api.app.worker_app` from the environment it was given). Each worker runs in its own
process group, so a Ctrl-C at the terminal reaches only the supervisor, which asks every worker
to shut down gracefully (SIGINT: uvicorn finishes the requests in flight) and waits. A worker
that exits on its own is restarted; five failed starts within a minute end the supervisor.

Linux/BSD only (``SO_REUSEPORT``); with one worker ``vigil serve`` runs in-process instead.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import time
import typing as t

from vigil.errors import UsageError

__all__ = ["serve_workers"]

log = logging.getLogger(__name__)
MAX_QUICK_FAILURES = 5
QUICK_S = 60.0


def _listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _worker(host: str, port: int, log_level: str) -> None:
    """One worker process: its app, its own SO_REUSEPORT socket, uvicorn until told to stop."""
    os.setpgrp()  # the terminal's Ctrl-C goes to the supervisor, which forwards it once
    import uvicorn

    from vigil.api.app import worker_app

    application = worker_app()
    sock = _listener(host, port)
    sock.listen(2048)
    config = uvicorn.Config(application, log_level=log_level, access_log=False,
                            timeout_keep_alive=75)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it shut down gracefully for: that is our exit


def serve_workers(host: str, port: int, workers: int, log_level: str,
                  env: dict[str, str]) -> int:
    """Run ``workers`` service processes on ``host:port`` until SIGINT/SIGTERM; returns the
    exit status (0 after a requested stop, 1 when workers kept failing to start)."""
    _listener(host, port).close()  # fail here, clearly, if the port is taken
    # the children inherit it at spawn, before they import anything (prometheus_client reads
    # PROMETHEUS_MULTIPROC_DIR when it is imported, which unpickling the target already does)
    os.environ.update(env)
    ctx = mp.get_context("spawn")
    stopping = False

    def start() -> t.Any:
        p = ctx.Process(target=_worker, args=(host, port, log_level), daemon=False,
                        name="vigil-serve-worker")
        p.start()
        return p

    def stop(signum: int, _frame: t.Any) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    procs = [start() for _ in range(workers)]
    failures: list[float] = []
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if p.is_alive() or stopping:
                    continue
                now = time.monotonic()
                failures = [f for f in failures if now - f < QUICK_S] + [now]
                log.warning("worker %s exited with %s", p.pid, p.exitcode)
                if len(failures) >= MAX_QUICK_FAILURES:
                    log.error("workers keep failing: stopping")
                    stopping, status = True, 1
                    break
                procs[i] = start()
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGINT)  # graceful: uvicorn finishes requests in flight
        deadline = time.monotonic() + 30
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        for s, h in old.items():
            signal.signal(s, h)
    return status
