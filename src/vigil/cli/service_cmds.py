"""CLI commands of the service: ``vigil serve``, ``vigil token …``, ``vigil audit verify``,
``vigil retention purge``. Registered on the main app by one import in :mod:`vigil.cli.main`."""

from __future__ import annotations

import os
import shutil
import tempfile
import typing as t

import typer
from rich.table import Table

from vigil.cli.main import JsonOpt, ReturnCode, app, core, emit, err, fail, out, state
from vigil.errors import VigilError

__all__ = ["audit_app", "retention_app", "token_app"]

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
retention_app = typer.Typer(help="Retention of review media.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
app.add_typer(retention_app, name="retention")


@app.command("serve")
def serve_cmd(
    host: t.Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: t.Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: t.Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    workers: t.Annotated[int, typer.Option(min=1, max=64, help=(
        "Worker processes on the port (each with its own index copy and its own SO_REUSEPORT "
        "socket); one of them runs the background work (actions, jobs, retention)."))] = 1,
) -> None:
    """Run the service: JSON API under /api/v1 and the review UI at / (one process)."""
    import uvicorn

    from vigil.api import create_app
    from vigil.api.app import freeze_gc

    if workers > 1:
        from vigil.api.workers import serve_workers

        # each worker process builds its own core from the environment: hand it this one's
        cfg = core().settings
        env = {"VIGIL_DATA": str(cfg.data_dir)}
        if cfg.database_url:
            env["VIGIL_DATABASE_URL"] = cfg.database_url
        # the workers' Prometheus counters go to files there, and /metrics sums them all
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        own_metrics_dir = not metrics_dir
        if own_metrics_dir:
            metrics_dir = tempfile.mkdtemp(prefix="vigil-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        err.print(f"vigil: serving on http://{host}:{port}/ with {workers} worker processes")
        try:
            status = serve_workers(host, port, workers, log_level, env)
        except VigilError as exc:
            fail(exc)
        finally:
            if own_metrics_dir:
                shutil.rmtree(str(metrics_dir), ignore_errors=True)
        if status:
            raise typer.Exit(ReturnCode.ITEM_FAILED)
        return
    try:
        vigil = core()
        _ = vigil.indexes  # load (or rebuild) the indexes before serving
        application = create_app(vigil)
    except VigilError as exc:
        fail(exc)
    freeze_gc()
    err.print(f"vigil: serving on http://{host}:{port}/ (API docs at /api/v1/docs)")
    if os.environ.get("VIGIL_SECURE_COOKIES", "1") != "0" and host not in ("127.0.0.1", "localhost"):
        err.print("vigil: session cookies are Secure: put TLS in front of this port")
    # keep-alive longer than uvicorn's 5 s default: a client that reuses a connection just as the
    # server drops it sees a read error (one in ~10k requests in the load benchmark)
    uvicorn.run(application, host=host, port=port, log_level=log_level, access_log=False,
                timeout_keep_alive=75)


@token_app.command("create")
def token_create(
    name: t.Annotated[str, typer.Option("--name", help="Who or what uses the token.")],
    role: t.Annotated[str, typer.Option("--role", help="admin, curator, reviewer or submitter.")],
    json_out: JsonOpt = False,
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from vigil.core.auth import create_token

    try:
        info = create_token(core().store, name, role, actor="cli")
    except VigilError as exc:
        fail(exc)
    if json_out:
        emit(info)
    else:
        out.print(f"token {info['id']} for {info['name']} ({info['role']}):")
        out.print(info["token"])
        err.print("store it now: it is not shown again")


@token_app.command("list")
def token_list(json_out: JsonOpt = False) -> None:
    """List tokens (never their secrets)."""
    from vigil.core.auth import list_tokens

    rows = list_tokens(core().store)
    if json_out:
        for r in rows:
            emit(r)
        return
    table = Table("id", "name", "role", "prefix", "created", "last used", "revoked")
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["role"], r["prefix"] + "…", r["created_at"] or "",
                      r["last_used_at"] or "", r["revoked_at"] or "")
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: int, json_out: JsonOpt = False) -> None:
    """Revoke a token: it stops working at once."""
    from vigil.core.auth import revoke_token

    try:
        info = revoke_token(core().store, token_id, actor="cli")
    except VigilError as exc:
        fail(exc)
    emit(info) if json_out else out.print(f"token {token_id} ({info['name']}) revoked")


@audit_app.command("verify")
def audit_verify(json_out: JsonOpt = False) -> None:
    """Check the audit log's hash chain; exit 1 and name the first broken row if it is broken."""
    from vigil.core import audit

    with core().store.read() as s:
        report = audit.verify(s)
    if json_out:
        emit(report.to_dict())
    elif report.ok:
        out.print(f"audit log intact: {report.rows} rows verified")
    else:
        err.print(f"[red]audit log broken at row {report.first_broken_seq}:[/red] {report.problem}")
    raise typer.Exit(ReturnCode.OK if report.ok else ReturnCode.ITEM_FAILED)


@retention_app.command("purge")
def retention_purge(
    days: t.Annotated[float | None, typer.Option(help="Keep media this many days "
                                                 "[default: VIGIL_RETENTION_DAYS or 30].")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete review thumbnails older than the retention period."""
    from vigil.core.retention import DEFAULT_DAYS, purge

    v = core()
    if days is None:
        days = float(os.environ.get("VIGIL_RETENTION_DAYS") or DEFAULT_DAYS)
    try:
        res = purge(v.store, v.settings.data_dir, days)
    except VigilError as exc:
        fail(exc)
    emit(res) if json_out else out.print(
        f"purged {res['purged_items']} review thumbnails and {res['purged_orphans']} orphan files "
        f"older than {days:g} days")


_ = state  # the shared CLI state (data dir, database URL) comes with core()
