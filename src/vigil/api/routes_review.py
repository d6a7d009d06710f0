"""The review queue: list cases, show one, claim, reveal media (counted), decide."""

from __future__ import annotations

import contextlib
import typing as t

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from vigil.api.deps import IdPath, Limit, Offset, acting, require, service_of
from vigil.core import review
from vigil.core.auth import Principal

router = APIRouter(tags=["review"])
Reviewer = t.Annotated[Principal, Depends(require("reviewer"))]


class DecisionIn(BaseModel):
    verdict: t.Literal["confirm", "false_positive", "escalate"]
    reason_code: str = Field(min_length=1, max_length=64)
    reason_text: str = Field("", max_length=5000)
    disable_entry: bool = Field(False, description="false_positive only: disable the bank entry")
    allow_bank: str | None = Field(None, max_length=128,
                                   description="false_positive only: add the content's signals "
                                               "to this allow bank")
    decision_ground: t.Literal["illegal_content", "incompatible_with_terms"] | None = None
    legal_ground: str = Field("", max_length=2000)
    category: str | None = Field(None, max_length=128)


@router.get("/review/reasons", summary="Verdicts and their reason codes")
def reasons(p: Reviewer) -> dict[str, t.Any]:
    return {"verdicts": list(review.VERDICTS),
            "reason_codes": {k: list(v) for k, v in review.REASON_CODES.items()}}


@router.get("/review/cases", summary="The queue")
def list_cases(request: Request, p: Reviewer, limit: Limit = 50, offset: Offset = 0,
               status: t.Literal["open", "decided"] = "open",
               bank: t.Annotated[str | None, Query(max_length=128)] = None) -> dict[str, t.Any]:
    """Open cases by severity, then match confidence, then age; one case per bank entry."""
    with service_of(request).vigil.store.read() as s:
        return {"cases": review.list_cases(s, status=status, limit=limit, offset=offset,
                                           bank=bank)}


@router.get("/review/cases/{case_id}", summary="Show a case")
def show_case(request: Request, case_id: IdPath, p: Reviewer) -> dict[str, t.Any]:
    service = service_of(request)
    with service.vigil.store.read() as s:
        out = review.case_detail(s, case_id)
        out["exposure"] = {"today": review.exposure_today(s, p.name),
                           "cap": service.settings.exposure_cap}
    return out


@router.post("/review/cases/{case_id}/claim", summary="Claim a case")
def claim_case(request: Request, case_id: IdPath, p: Reviewer) -> dict[str, t.Any]:
    with service_of(request).vigil.store.transaction() as s:
        return review.claim(s, case_id, p.name)


@router.post("/review/cases/{case_id}/decision", status_code=201, summary="Decide a case")
def decide_case(request: Request, case_id: IdPath, body: DecisionIn,
                p: Reviewer) -> dict[str, t.Any]:
    """One decision for all the case's items, with a statement of reasons (DSA fields)."""
    service = service_of(request)
    # only a decision that changes a bank (disable the entry, allow the content) touches the
    # in-memory indexes; the others must not hold up the lookups waiting for the index lock
    changes_banks = bool(body.disable_entry or body.allow_bank)
    with acting(p), (service.index_lock if changes_banks else contextlib.nullcontext()):
        out = review.decide(service.vigil, case_id, p.actor, body.verdict, body.reason_code,
                            body.reason_text, disable_entry=body.disable_entry,
                            allow_bank=body.allow_bank, decision_ground=body.decision_ground,
                            legal_ground=body.legal_ground, category=body.category)
    service.actions.wake()
    return out


@router.get("/review/items/{item_id}/media", summary="Reveal an item's media",
            responses={200: {"content": {"image/jpeg": {}}}})
def item_media(request: Request, item_id: IdPath, p: Reviewer) -> Response:
    """The review thumbnail; each call counts against the reviewer's daily exposure cap (403
    ``exposure_cap`` past it)."""
    service = service_of(request)
    with service.vigil.store.transaction() as s:
        item, count = review.reveal(s, item_id, p.name, service.settings.exposure_cap)
        rel = item.media_path
    assert rel is not None
    path = service.vigil.settings.data_dir / rel
    try:
        data = path.read_bytes()
    except OSError:
        from vigil.errors import NotFound

        raise NotFound(f"review item {item_id}: media file is gone", item=item_id) from None
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Vigil-Exposure": str(count)})


@router.get("/review/exposure", summary="My exposure today")
def exposure(request: Request, p: Reviewer) -> dict[str, t.Any]:
    service = service_of(request)
    with service.vigil.store.read() as s:
        return {"reviewer": p.name, "today": review.exposure_today(s, p.name),
                "cap": service.settings.exposure_cap}
