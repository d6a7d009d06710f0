"""Shared pieces of the routers: the service, the caller, role checks, uploads, id limits."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import typing as t
from pathlib import Path

from fastapi import Depends, Query, Request, UploadFile
from fastapi import Path as FPath
from fastapi.concurrency import run_in_threadpool

from vigil.core import audit
from vigil.core.auth import Principal, authenticate, hash_token
from vigil.errors import Unauthorized, UnsupportedMedia

if t.TYPE_CHECKING:
    from vigil.api.app import Service

__all__ = ["ID_MAX", "caller", "require", "service_of", "staged_upload"]

#: ids are 63-bit in both databases; larger numbers are a 422 before any query
ID_MAX = 2**62


def service_of(request: Request) -> Service:
    return t.cast("Service", request.app.state.service)


#: how long a verified token is trusted without asking the database again; a revocation through
#: this process's API clears the cache at once, one from another process (the CLI) within this time
AUTH_CACHE_S = 5.0


async def caller(request: Request) -> Principal:
    """The principal behind ``Authorization: Bearer <token>``; 401 without a valid one.

    Async with a small cache: a busy client's requests then cost no database round trip and no
    thread hop for authentication."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("a bearer token is required (Authorization: Bearer vgl_…)")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("use Authorization: Bearer <token>")
    token = token.strip()
    service = service_of(request)
    key = hash_token(token)
    hit = service.auth_cache.get(key)
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        return t.cast(Principal, hit[0])
    p = await run_in_threadpool(authenticate, service.vigil.store, token)
    if len(service.auth_cache) > 10_000:
        service.auth_cache.clear()
    service.auth_cache[key] = (p, now + AUTH_CACHE_S)
    return p


def require(*roles: str) -> t.Callable[..., t.Awaitable[Principal]]:
    """A dependency: the caller, who must have one of ``roles`` (admin always may)."""

    async def dep(p: t.Annotated[Principal, Depends(caller)]) -> Principal:
        p.require(*roles)
        return p

    dep.__name__ = "require_" + "_".join(roles or ("admin",))
    return dep


@contextlib.contextmanager
def acting(p: Principal) -> t.Iterator[None]:
    with audit.acting_as(p.actor):
        yield


def check_multipart(request: Request) -> None:
    """A dependency of upload routes (listed after the caller, so 401/403 come first)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise UnsupportedMedia(
            f"send the file as multipart/form-data (field 'file'), not {ctype or 'no content type'}",
            content_type=ctype)


@contextlib.contextmanager
def staged_upload(service: Service, upload: UploadFile) -> t.Iterator[Path]:
    """Copy an upload to a private temporary file (hashing works on paths), removed after."""
    # a private folder per upload, holding the file under its (sanitised) own name, so that the
    # review queue can show where an item came from
    folder = Path(tempfile.mkdtemp(dir=_tmp_root(service)))
    name = Path(upload.filename or "upload").name[-100:]
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".") or "upload"
    path = folder / name
    with path.open("wb") as fh:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, fh, 1024 * 1024)
    try:
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tmp_root(service: Service) -> Path:
    root = service.vigil.settings.data_dir / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


IdPath = t.Annotated[int, FPath(ge=1, le=ID_MAX)]
Limit = t.Annotated[int, Query(ge=1, le=500)]
Offset = t.Annotated[int, Query(ge=0, le=ID_MAX)]

Multipart = t.Annotated[None, Depends(check_multipart)]
