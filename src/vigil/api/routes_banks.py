"""Banks and entries: create, list, show, update thresholds, delete; entries by upload or signal,
list with paging and label filters, show, disable, enable. Curators (and admins)."""

from __future__ import annotations

import typing as t

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
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
from vigil.core import banks as bankops
from vigil.core.auth import Principal
from vigil.core.labels import validate_labels
from vigil.errors import NotFound, UsageError
from vigil.signals import Signal
from vigil.store.models import Entry

router = APIRouter(tags=["banks"])
Curator = t.Annotated[Principal, Depends(require("curator"))]
BankName = t.Annotated[str, Field(min_length=1, max_length=128)]


class BankIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: t.Literal["block", "allow"] = "block"
    thresholds: dict[str, int] = Field(default_factory=dict)
    description: str = Field("", max_length=10_000)


class BankPatch(BaseModel):
    thresholds: dict[str, int] = Field(min_length=1)


class EntryIn(BaseModel):
    signals: list[str] = Field(min_length=1, max_length=100)
    labels: dict[str, str] = Field(default_factory=dict)
    reference: str | None = Field(None, max_length=512)


class EntriesIn(BaseModel):
    entries: list[EntryIn] = Field(min_length=1, max_length=10_000)


def _thresholds(d: dict[str, int]) -> dict[str, int]:
    return bankops.parse_thresholds(f"{k}={v}" for k, v in d.items())


def _entry_dict(e: Entry, sigs: list[t.Any] | None = None) -> dict[str, t.Any]:
    from vigil.core.audit import _ts

    out = {"entry_id": e.id, "enabled": e.enabled, "labels": e.labels, "reference": e.reference,
           "created_at": _ts(e.created_at) + "Z",
           "disabled_at": _ts(e.disabled_at) + "Z" if e.disabled_at else None}
    if sigs is not None:
        out["signals"] = [Signal(r.type, r.value, r.quality, r.variant).to_dict() for r in sigs]
    return out


@router.get("/banks", summary="List banks")
def list_banks(request: Request, p: t.Annotated[Principal, Depends(require("curator", "reviewer"))]
               ) -> dict[str, t.Any]:
    return {"banks": service_of(request).vigil.list_banks()}


@router.post("/banks", status_code=201, summary="Create a bank")
def create_bank(request: Request, body: BankIn, p: Curator) -> dict[str, t.Any]:
    with acting(p):
        return service_of(request).vigil.create_bank(body.name, body.kind,
                                                     _thresholds(body.thresholds), body.description)


@router.get("/banks/{name}", summary="Show a bank")
def show_bank(request: Request, name: str, p: Curator) -> dict[str, t.Any]:
    return service_of(request).vigil.bank_info(name[:200])


@router.patch("/banks/{name}", summary="Update a bank's thresholds")
def update_bank(request: Request, name: str, body: BankPatch, p: Curator) -> dict[str, t.Any]:
    with acting(p):
        return service_of(request).vigil.set_thresholds(name[:200], _thresholds(body.thresholds))


@router.delete("/banks/{name}", summary="Delete a bank")
def delete_bank(request: Request, name: str, p: Curator) -> dict[str, t.Any]:
    """Deletes a bank none of whose entries ever matched (409 otherwise: disable entries)."""
    service = service_of(request)
    with acting(p), service.index_lock:
        return service.vigil.delete_bank(name[:200])


@router.get("/banks/{name}/entries", summary="List a bank's entries")
def list_entries(request: Request, name: str, p: Curator, limit: Limit = 50, offset: Offset = 0,
                 label: t.Annotated[list[str] | None, Query(max_length=300)] = None,
                 enabled: bool | None = None) -> dict[str, t.Any]:
    """Paged, newest first; ``label=key=value`` (repeatable) keeps entries with those labels."""
    service = service_of(request)
    with service.vigil.store.read() as s:
        bank = bankops.get_bank(s, name[:200])
        stmt = select(Entry).where(Entry.bank_id == bank.id)
        for item in label or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"label filter must be key=value, got {item!r}")
            stmt = stmt.where(Entry.labels[key.strip()].as_string() == value.strip())
        if enabled is not None:
            stmt = stmt.where(Entry.enabled.is_(enabled))
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = s.scalars(stmt.order_by(Entry.id.desc()).limit(limit).offset(offset)).all()
        return {"bank": bank.name, "total": total, "limit": limit, "offset": offset,
                "entries": [_entry_dict(e) for e in rows]}


@router.post("/banks/{name}/entries", status_code=201, summary="Add entries by signal")
def add_entries(request: Request, name: str, body: EntriesIn, p: Curator) -> dict[str, t.Any]:
    """All or nothing: any bad signal or label fails the whole request (422)."""
    specs = []
    for i, e in enumerate(body.entries):
        try:
            sigs = [Signal.parse(x) for x in e.signals]
            labels = validate_labels(e.labels)
        except (UsageError, ValueError) as exc:
            msg = getattr(exc, "message", str(exc))
            raise UsageError(f"entry {i}: {msg}", entry=i) from exc
        specs.append(bankops.EntrySpec(sigs, labels, e.reference))
    service = service_of(request)
    with acting(p), service.index_lock:
        ids = service.vigil.add_entries(name[:200], specs)
    return {"bank": name, "entry_ids": ids}


@router.post("/banks/{name}/entries/upload", status_code=201, summary="Add an entry by upload")
def add_upload(request: Request, name: str, p: Curator, mp: Multipart, file: UploadFile = File(...),
               label: list[str] | None = Form(None)) -> dict[str, t.Any]:
    """Hash the file and bank its signals with ``label`` fields ``key=value``; the bank keeps no
    media."""
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"label {item!r} must be key=value")
        labels[key] = value
    labels = validate_labels(labels)
    service = service_of(request)
    # the same path as `vigil bank add` (which also banks what other tiers need, e.g. local
    # features), on the upload staged under its own file name (the entry's reference)
    with staged_upload(service, file) as path, acting(p), service.index_lock:
        (item,) = list(service.vigil.add_files(name[:200], [path], labels))
    if item.error is not None:
        raise item.error
    hr = item.hashed
    assert hr is not None
    return {"bank": name, "entry_id": item.entry_id, "signals": [x.to_dict() for x in hr.signals],
            "note": hr.media_error.message if hr.media_error else None}


@router.get("/entries/{entry_id}", summary="Show an entry")
def show_entry(request: Request, entry_id: IdPath,
               p: t.Annotated[Principal, Depends(require("curator", "reviewer"))]) -> dict[str, t.Any]:
    return service_of(request).vigil.entry(entry_id)


def _toggle(request: Request, name: str, entry_id: int, p: Principal, on: bool) -> dict[str, t.Any]:
    service = service_of(request)
    with acting(p), service.index_lock:
        return service.vigil.set_enabled(name[:200], entry_id, on)


@router.post("/banks/{name}/entries/{entry_id}/disable", summary="Disable an entry")
def disable_entry(request: Request, name: str, entry_id: IdPath, p: Curator) -> dict[str, t.Any]:
    return _toggle(request, name, entry_id, p, False)


@router.post("/banks/{name}/entries/{entry_id}/enable", summary="Enable an entry")
def enable_entry(request: Request, name: str, entry_id: IdPath, p: Curator) -> dict[str, t.Any]:
    return _toggle(request, name, entry_id, p, True)


__all__ = ["NotFound", "router"]
