"""Content: hash and match uploads or signals, batches, async jobs, submissions."""

from __future__ import annotations

import asyncio
import shutil
import typing as t
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from vigil.api.deps import (
    IdPath,
    Limit,
    Multipart,
    Offset,
    acting,
    require,
    service_of,
    staged_upload,
)
from vigil.core import jobs as jobops
from vigil.core.app import ItemResult
from vigil.core.auth import Principal
from vigil.core.hashing import hash_file
from vigil.errors import InvalidSignal, NotFound, UsageError
from vigil.signals import Signal
from vigil.store.models import Match, Submission

if t.TYPE_CHECKING:
    from vigil.api.app import Service

router = APIRouter(tags=["content"])
Submitter = t.Annotated[Principal, Depends(require("submitter"))]
Reader = t.Annotated[Principal, Depends(require("curator", "reviewer"))]
MAX_BATCH = 100
MAX_SIGNALS = 1000


class SignalsIn(BaseModel):
    signals: list[str] = Field(min_length=1, max_length=MAX_SIGNALS,
                               description="Canonical signals, e.g. pdq:<64 hex>")
    record: bool = Field(True, description="Record a submission (and queue block matches).")


def _item(service: Service, item: ItemResult, name: str | None = None) -> dict[str, t.Any]:
    out = item.to_dict()
    if "path" in out:
        out["filename"] = name
        del out["path"]
    for hit in (item.outcome.matches if item.outcome else []):
        service.metrics.matches.labels(hit.bank).inc()
    return out


def match_upload(service: Service, path: Path, name: str | None, *, record: bool = True,
                 raise_errors: bool = True,
                 progress: t.Callable[[float], None] | None = None) -> dict[str, t.Any]:
    hr = hash_file(path, service.vigil.settings.limits, progress=progress)
    if hr.error is not None and raise_errors:
        raise hr.error
    with service.index_lock:
        item = service.vigil.match_hashed(hr, record=record)
    service.metrics.lookups.labels("file").inc()
    return _item(service, item, name)


@router.post("/hash", summary="Hash an upload")
def hash_upload(request: Request, p: Submitter, mp: Multipart, file: UploadFile = File(...)) -> dict[str, t.Any]:
    """The signals of one file (md5, sha256; PDQ for images)."""
    service = service_of(request)
    with staged_upload(service, file) as path:
        hr = hash_file(path, service.vigil.settings.limits, local_features=False)
    if hr.error is not None:
        raise hr.error
    out = hr.to_dict()
    del out["path"]
    out["filename"] = file.filename
    return out


@router.post("/match", summary="Match an upload")
def match_one(request: Request, p: Submitter, mp: Multipart, file: UploadFile = File(...),
              record: bool = Form(True)) -> dict[str, t.Any]:
    """Check one file against every bank; block matches enter the review queue."""
    service = service_of(request)
    with acting(p), staged_upload(service, file) as path:
        return match_upload(service, path, file.filename, record=record)


@router.post("/match/batch", summary="Match several uploads")
def match_batch(request: Request, p: Submitter, mp: Multipart,
                files: list[UploadFile] = File(...)) -> dict[str, t.Any]:
    """One result per file (``error`` set for a file that failed); one bad file stops nothing."""
    if len(files) > MAX_BATCH:
        raise UsageError(f"at most {MAX_BATCH} files per batch, got {len(files)}")
    service = service_of(request)
    results = []
    with acting(p):
        for f in files:
            with staged_upload(service, f) as path:
                results.append(match_upload(service, path, f.filename, raise_errors=False))
    return {"results": results}


async def lookup_signals(service: Service, raw_signals: list[str], record: bool) -> dict[str, t.Any]:
    """The body of ``POST /match/signals``: one result per signal, in order; a malformed signal
    gets its error in place. Concurrent requests are matched together (see
    :mod:`vigil.api.batching`). Used by the route and by :mod:`vigil.api.fastpath`."""
    parsed: list[Signal] = []
    results: list[dict[str, t.Any] | None] = []
    for raw in raw_signals:
        try:
            parsed.append(Signal.parse(raw))
            results.append(None)
        except InvalidSignal as exc:
            results.append(ItemResult(signal=raw.strip()[:300], error=exc).to_dict())
    items: list[ItemResult] = []
    if parsed:
        items = await asyncio.wrap_future(service.lookups.submit(parsed, record))
    it = iter(items)
    out = [r if r is not None else _item(service, next(it)) for r in results]
    service.metrics.lookups.labels("signal").inc(len(parsed))
    return {"results": out}


@router.post("/match/signals", summary="Match signals")
async def match_signals(request: Request, body: SignalsIn, p: Submitter) -> dict[str, t.Any]:
    """Check signals (``type:value``) against every bank; one result per signal. Concurrent
    requests are matched together (see :mod:`vigil.api.batching`)."""
    return await lookup_signals(service_of(request), body.signals, body.record)


# -- jobs ----------------------------------------------------------------------------------------
def register_jobs(service: Service) -> None:
    """Job kinds of the service: ``match`` (a staged upload, matched and recorded)."""

    def run_match(params: dict[str, t.Any], progress: t.Callable[[float], None]) -> dict[str, t.Any]:
        path = Path(params["path"])
        try:
            with acting(Principal(0, params.get("actor", "jobs"), "submitter")):
                # decoding is the long part (video); matching after it is quick
                return match_upload(service, path, params.get("filename"),
                                    progress=lambda f: progress(0.95 * f))
        finally:
            path.unlink(missing_ok=True)

    if "match" not in service.jobs.handlers:
        service.jobs.register("match", run_match)


@router.post("/jobs", status_code=202, summary="Submit a job", tags=["jobs"])
def submit_job(request: Request, p: Submitter, mp: Multipart, file: UploadFile = File(...),
               kind: t.Literal["match"] = Form("match")) -> dict[str, t.Any]:
    """Queue large media for matching; poll ``GET /jobs/{id}`` for the result."""
    service = service_of(request)
    folder = service.vigil.settings.data_dir / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / uuid.uuid4().hex
    with dest.open("wb") as fh:
        file.file.seek(0)
        shutil.copyfileobj(file.file, fh, 1024 * 1024)
    job = jobops.submit(service.vigil.store, kind,
                        {"path": str(dest), "filename": file.filename, "actor": p.name}, p.actor)
    service.jobs.wake()
    return job


@router.get("/jobs/{job_id}", summary="Job status", tags=["jobs"])
def job_status(request: Request, job_id: str,
               p: Submitter) -> dict[str, t.Any]:
    if len(job_id) > 64:
        raise NotFound(f"no job {job_id[:64]}", job=job_id[:64])
    return jobops.get(service_of(request).vigil.store, job_id)


# -- submissions ---------------------------------------------------------------------------------
def _submission(s: t.Any, sub: Submission) -> dict[str, t.Any]:
    from vigil.core.audit import _ts

    return {"id": sub.id, "seen_at": _ts(sub.seen_at) + "Z", "source": sub.scan_key,
            "signals": (sub.signals or {}).get("signals", []), "error": sub.error,
            "matches": [{"entry_id": m.entry_id, "signal_type": m.signal_type,
                         "distance": m.distance, "variant": m.variant} for m in sub.matches]}


@router.get("/submissions", summary="List submissions", tags=["submissions"])
def list_submissions(request: Request, p: Reader,
                     limit: Limit = 50, offset: Offset = 0,
                     matched: bool | None = None) -> dict[str, t.Any]:
    store = service_of(request).vigil.store
    with store.read() as s:
        stmt = select(Submission).order_by(Submission.id.desc()).limit(limit).offset(offset)
        has = select(Match.id).where(Match.submission_id == Submission.id).exists()
        if matched is True:
            stmt = stmt.where(has)
        elif matched is False:
            stmt = stmt.where(~has)
        total = s.scalar(select(func.count()).select_from(Submission))
        return {"total": total, "submissions": [_submission(s, x) for x in s.scalars(stmt)]}


@router.get("/submissions/{submission_id}", summary="Show a submission", tags=["submissions"])
def show_submission(request: Request, submission_id: IdPath,
                    p: Reader) -> dict[str, t.Any]:
    store = service_of(request).vigil.store
    with store.read() as s:
        sub = s.get(Submission, submission_id)
        if sub is None:
            raise NotFound(f"no submission {submission_id}", submission=submission_id)
        return _submission(s, sub)
