"""Administration: tokens, webhooks, action rules, deliveries (dead letters), the audit log."""

from __future__ import annotations

import typing as t

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from vigil.api.deps import IdPath, Limit, Offset, acting, caller, require, service_of
from vigil.core import actions, audit
from vigil.core import auth as authops
from vigil.core.auth import Principal

router = APIRouter()
Admin = t.Annotated[Principal, Depends(require())]
AuditReader = t.Annotated[Principal, Depends(require("curator"))]


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: t.Literal["admin", "curator", "reviewer", "submitter"]


class WebhookIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    url: str = Field(min_length=1, max_length=2048)
    secret: str | None = Field(None, min_length=16, max_length=256)


class RuleIn(BaseModel):
    webhook_id: int = Field(ge=1, le=2**62)
    bank: str | None = Field(None, max_length=128)
    label: str | None = Field(None, max_length=256, description="key=value")
    severity: t.Literal["low", "medium", "high", "critical"] | None = None
    decision: t.Literal["confirm", "false_positive", "escalate"] | None = None


@router.get("/me", tags=["tokens"], summary="Who am I")
def me(p: t.Annotated[Principal, Depends(caller)]) -> dict[str, t.Any]:
    return {"token_id": p.token_id, "name": p.name, "role": p.role}


@router.get("/tokens", tags=["tokens"], summary="List tokens")
def list_tokens(request: Request, p: Admin) -> dict[str, t.Any]:
    return {"tokens": authops.list_tokens(service_of(request).vigil.store)}


@router.post("/tokens", tags=["tokens"], status_code=201, summary="Create a token")
def create_token(request: Request, body: TokenIn, p: Admin) -> dict[str, t.Any]:
    """The response holds the token; it is shown this once."""
    return authops.create_token(service_of(request).vigil.store, body.name, body.role, p.actor)


@router.delete("/tokens/{token_id}", tags=["tokens"], summary="Revoke a token")
def revoke_token(request: Request, token_id: IdPath, p: Admin) -> dict[str, t.Any]:
    service = service_of(request)
    out = authops.revoke_token(service.vigil.store, token_id, p.actor)
    service.auth_cache.clear()  # the revoked token stops working at once
    return out


@router.get("/webhooks", tags=["actions"], summary="List webhooks")
def list_webhooks(request: Request, p: Admin) -> dict[str, t.Any]:
    return {"webhooks": actions.list_webhooks(service_of(request).vigil.store)}


@router.post("/webhooks", tags=["actions"], status_code=201, summary="Create a webhook")
def create_webhook(request: Request, body: WebhookIn, p: Admin) -> dict[str, t.Any]:
    """The response holds the signing secret; it is shown this once."""
    return actions.create_webhook(service_of(request).vigil.store, body.name, body.url,
                                  body.secret, p.actor)


@router.delete("/webhooks/{webhook_id}", tags=["actions"], summary="Delete a webhook")
def delete_webhook(request: Request, webhook_id: IdPath, p: Admin) -> dict[str, t.Any]:
    actions.delete_webhook(service_of(request).vigil.store, webhook_id, p.actor)
    return {"webhook_id": webhook_id, "deleted": True}


@router.get("/rules", tags=["actions"], summary="List action rules")
def list_rules(request: Request, p: Admin) -> dict[str, t.Any]:
    return {"rules": actions.list_rules(service_of(request).vigil.store)}


@router.post("/rules", tags=["actions"], status_code=201, summary="Create an action rule")
def create_rule(request: Request, body: RuleIn, p: Admin) -> dict[str, t.Any]:
    """(bank, label, severity, decision) -> webhook; an empty filter matches anything."""
    return actions.create_rule(service_of(request).vigil.store, body.webhook_id, bank=body.bank,
                               label=body.label, severity=body.severity, decision=body.decision,
                               actor=p.actor)


@router.delete("/rules/{rule_id}", tags=["actions"], summary="Delete an action rule")
def delete_rule(request: Request, rule_id: IdPath, p: Admin) -> dict[str, t.Any]:
    actions.delete_rule(service_of(request).vigil.store, rule_id, p.actor)
    return {"rule_id": rule_id, "deleted": True}


@router.get("/actions/deliveries", tags=["actions"], summary="Action deliveries and attempts")
def list_deliveries(request: Request, p: Admin, limit: Limit = 50, offset: Offset = 0,
                    status: t.Literal["pending", "delivered", "dead"] | None = None
                    ) -> dict[str, t.Any]:
    return {"deliveries": actions.list_deliveries(service_of(request).vigil.store, status,
                                                  limit, offset)}


@router.get("/actions/dead-letters", tags=["actions"], summary="Dead-letter list")
def dead_letters(request: Request, p: Admin, limit: Limit = 50,
                 offset: Offset = 0) -> dict[str, t.Any]:
    return {"deliveries": actions.list_deliveries(service_of(request).vigil.store, "dead",
                                                  limit, offset)}


@router.post("/actions/deliveries/{delivery_id}/retry", tags=["actions"], summary="Retry a delivery")
def retry_delivery(request: Request, delivery_id: IdPath, p: Admin) -> dict[str, t.Any]:
    service = service_of(request)
    out = actions.retry(service.vigil.store, delivery_id, p.actor)
    service.actions.wake()
    return out


@router.get("/audit", tags=["audit"], summary="Read the audit log")
def read_audit(request: Request, p: AuditReader, limit: Limit = 100,
               before: t.Annotated[int | None, Query(ge=1, le=2**62)] = None,
               action: t.Annotated[str | None, Query(max_length=64)] = None) -> dict[str, t.Any]:
    """Newest first; page with ``before=<seq>``."""
    with service_of(request).vigil.store.read() as s:
        return {"rows": audit.rows(s, limit=limit, before=before, action=action)}


@router.get("/audit/verify", tags=["audit"], summary="Verify the hash chain")
def verify_audit(request: Request, p: AuditReader) -> dict[str, t.Any]:
    """Walks the chain; ``first_broken_seq`` names the first row that does not verify."""
    with service_of(request).vigil.store.read() as s:
        return audit.verify(s).to_dict()


__all__ = ["acting", "router"]
