"""Actions: rules that turn decisions into signed webhook calls.

A *rule* maps (bank, label ``key=value``, severity, decision) to a webhook; any filter left empty
matches everything. When a decision is recorded, :func:`schedule` (called in the decision's own
transaction) writes one *delivery* per matching rule. Its idempotency key is the SHA-256 of the
rule and the event id, so a delivery is never scheduled twice, and a receiver can drop repeats.

The worker (:class:`ActionWorker`, a thread in the service process) sends due deliveries:

* ``POST`` the event as JSON with headers ``X-Vigil-Timestamp`` (Unix seconds),
  ``X-Vigil-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``,
  ``Idempotency-Key`` and ``X-Vigil-Event``;
* every attempt is a row in ``action_attempts`` (status code or error, duration);
* a 2xx marks the delivery ``delivered``; anything else schedules a retry after
  ``base_delay * 2**(attempts-1)`` seconds (exponential backoff), until ``max_attempts``, after
  which it is ``dead``: listed in the dead-letter list (API and UI) and retried only by hand.

Receivers verify with :func:`verify_signature` (the recipe in docs/service.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
import typing as t
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from vigil.core import audit
from vigil.core.background import BackgroundLoop
from vigil.core.labels import SEVERITIES
from vigil.errors import Conflict, NotFound, UsageError
from vigil.store.db import Store
from vigil.store.models import utcnow
from vigil.store.service_models import ActionAttempt, ActionDelivery, ActionRule, Webhook

__all__ = [
    "ActionWorker",
    "DeliveryPolicy",
    "create_rule",
    "create_webhook",
    "deliver_due",
    "schedule",
    "sign",
    "verify_signature",
]

log = logging.getLogger(__name__)
RULE_DECISIONS = ("confirm", "false_positive", "escalate")


@dataclasses.dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 5.0
    timeout_s: float = 10.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str,
                     *, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does: recompute, compare in constant time, reject stale timestamps."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _iso(v: dt.datetime | None) -> str | None:
    return None if v is None else audit._ts(v) + "Z"


def _aware(v: dt.datetime) -> dt.datetime:
    return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)


# -- webhooks and rules --------------------------------------------------------------------------
def webhook_dict(w: Webhook, *, secret: bool = False) -> dict[str, t.Any]:
    out = {"id": w.id, "name": w.name, "url": w.url, "enabled": w.enabled,
           "created_at": _iso(w.created_at)}
    if secret:
        out["secret"] = w.secret
    return out


def create_webhook(store: Store, name: str, url: str, secret: str | None = None,
                   actor: str = "cli") -> dict[str, t.Any]:
    """Create a webhook; the result includes the signing secret (shown this once)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"webhook url must be http(s)://host/..., got {url!r}")
    if not name.strip() or len(name) > 128:
        raise UsageError("a webhook needs a name of 1 to 128 characters")
    secret = secret or secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise UsageError("a webhook secret needs at least 16 characters")
    with store.transaction() as s:
        if s.scalar(select(Webhook.id).where(Webhook.name == name)) is not None:
            raise Conflict(f"webhook {name!r} already exists", webhook=name)
        w = Webhook(name=name, url=url, secret=secret, enabled=True)
        s.add(w)
        s.flush()
        audit.append(s, actor, "webhook.create", f"webhook:{w.id}", {"name": name, "url": url})
        return webhook_dict(w, secret=True)


def list_webhooks(store: Store) -> list[dict[str, t.Any]]:
    with store.read() as s:
        return [webhook_dict(w) for w in s.scalars(select(Webhook).order_by(Webhook.id))]


def delete_webhook(store: Store, webhook_id: int, actor: str = "cli") -> None:
    with store.transaction() as s:
        w = s.get(Webhook, webhook_id)
        if w is None:
            raise NotFound(f"no webhook {webhook_id}", webhook=webhook_id)
        for r in s.scalars(select(ActionRule).where(ActionRule.webhook_id == webhook_id)):
            s.delete(r)
        for d in s.scalars(select(ActionDelivery).where(ActionDelivery.webhook_id == webhook_id)):
            s.delete(d)
        s.delete(w)
        audit.append(s, actor, "webhook.delete", f"webhook:{webhook_id}", {"name": w.name})


def rule_dict(r: ActionRule) -> dict[str, t.Any]:
    return {"id": r.id, "bank": r.bank, "label": r.label, "severity": r.severity,
            "decision": r.decision, "webhook_id": r.webhook_id, "enabled": r.enabled,
            "created_at": _iso(r.created_at)}


def create_rule(store: Store, webhook_id: int, *, bank: str | None = None,
                label: str | None = None, severity: str | None = None,
                decision: str | None = None, actor: str = "cli") -> dict[str, t.Any]:
    if label is not None and ("=" not in label or not label.partition("=")[0].strip()):
        raise UsageError(f"label filter must be key=value, got {label!r}")
    if severity is not None and severity not in SEVERITIES:
        raise UsageError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    if decision is not None and decision not in RULE_DECISIONS:
        raise UsageError(f"decision must be one of {', '.join(RULE_DECISIONS)}, got {decision!r}")
    with store.transaction() as s:
        if s.get(Webhook, webhook_id) is None:
            raise NotFound(f"no webhook {webhook_id}", webhook=webhook_id)
        r = ActionRule(webhook_id=webhook_id, bank=bank or None, label=label or None,
                       severity=severity, decision=decision, enabled=True)
        s.add(r)
        s.flush()
        audit.append(s, actor, "rule.create", f"rule:{r.id}", rule_dict(r) | {"created_at": None})
        return rule_dict(r)


def list_rules(store: Store) -> list[dict[str, t.Any]]:
    with store.read() as s:
        return [rule_dict(r) for r in s.scalars(select(ActionRule).order_by(ActionRule.id))]


def delete_rule(store: Store, rule_id: int, actor: str = "cli") -> None:
    with store.transaction() as s:
        r = s.get(ActionRule, rule_id)
        if r is None:
            raise NotFound(f"no rule {rule_id}", rule=rule_id)
        s.delete(r)
        audit.append(s, actor, "rule.delete", f"rule:{rule_id}", {})


# -- scheduling ----------------------------------------------------------------------------------
def _rule_matches(r: ActionRule, bank: str, labels: dict[str, t.Any], decision: str) -> bool:
    if r.bank and r.bank != bank:
        return False
    if r.decision and r.decision != decision:
        return False
    if r.severity and str(labels.get("severity")) != r.severity:
        return False
    if r.label:
        key, _, value = r.label.partition("=")
        if str(labels.get(key.strip())) != value.strip():
            return False
    return True


def schedule(s: Session, event: dict[str, t.Any], *, bank: str, labels: dict[str, t.Any],
             decision: str) -> list[int]:
    """Write one delivery per matching enabled rule, in the caller's transaction."""
    out: list[int] = []
    rules = s.scalars(select(ActionRule).join(Webhook, Webhook.id == ActionRule.webhook_id)
                      .where(ActionRule.enabled.is_(True), Webhook.enabled.is_(True))).all()
    for r in rules:
        if not _rule_matches(r, bank, labels, decision):
            continue
        key = hashlib.sha256(f"rule:{r.id}|{event['id']}".encode()).hexdigest()
        if s.scalar(select(ActionDelivery.id).where(ActionDelivery.idempotency_key == key)):
            continue
        d = ActionDelivery(rule_id=r.id, webhook_id=r.webhook_id, idempotency_key=key,
                           event={**event, "rule_id": r.id}, status="pending", attempts=0,
                           next_attempt_at=utcnow())
        s.add(d)
        s.flush()
        out.append(d.id)
    return out


# -- delivering ----------------------------------------------------------------------------------
def delivery_dict(d: ActionDelivery, attempts: list[ActionAttempt] | None = None) -> dict[str, t.Any]:
    out: dict[str, t.Any] = {
        "id": d.id, "rule_id": d.rule_id, "webhook_id": d.webhook_id,
        "idempotency_key": d.idempotency_key, "status": d.status, "attempts": d.attempts,
        "next_attempt_at": _iso(d.next_attempt_at), "last_error": d.last_error,
        "created_at": _iso(d.created_at), "delivered_at": _iso(d.delivered_at),
        "event_type": (d.event or {}).get("type"), "event_id": (d.event or {}).get("id"),
    }
    if attempts is not None:
        out["attempt_log"] = [{"at": _iso(a.at), "status_code": a.status_code, "error": a.error,
                               "duration_ms": round(a.duration_ms, 2)} for a in attempts]
    return out


def list_deliveries(store: Store, status: str | None = None, limit: int = 100,
                    offset: int = 0) -> list[dict[str, t.Any]]:
    with store.read() as s:
        stmt = select(ActionDelivery).order_by(ActionDelivery.id.desc()).limit(limit).offset(offset)
        if status:
            stmt = stmt.where(ActionDelivery.status == status)
        ds = s.scalars(stmt).all()
        atts: dict[int, list[ActionAttempt]] = {d.id: [] for d in ds}
        if ds:
            for a in s.scalars(select(ActionAttempt).where(ActionAttempt.delivery_id.in_(list(atts)))
                               .order_by(ActionAttempt.id)):
                atts[a.delivery_id].append(a)
        return [delivery_dict(d, atts[d.id]) for d in ds]


def retry(store: Store, delivery_id: int, actor: str = "cli") -> dict[str, t.Any]:
    with store.transaction() as s:
        d = s.get(ActionDelivery, delivery_id)
        if d is None:
            raise NotFound(f"no delivery {delivery_id}", delivery=delivery_id)
        if d.status != "delivered":
            d.status, d.attempts, d.next_attempt_at = "pending", 0, utcnow()
            s.flush()
            audit.append(s, actor, "action.retry", f"delivery:{d.id}", {})
        return delivery_dict(d)


def _post(client: t.Any, w: Webhook, d: ActionDelivery) -> tuple[int | None, str | None]:
    body = json.dumps(d.event, sort_keys=True, separators=(",", ":"), default=str).encode()
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Vigil-Timestamp": ts,
        "X-Vigil-Signature": sign(w.secret, ts, body),
        "Idempotency-Key": d.idempotency_key,
        "X-Vigil-Event": str((d.event or {}).get("type", "event")),
        "User-Agent": "vigil-webhook/1",
    }
    try:
        resp = client.post(w.url, content=body, headers=headers)
    except Exception as exc:  # noqa: BLE001 - any transport failure is a failed attempt
        return None, f"{type(exc).__name__}: {exc}"[:1000]
    if 200 <= resp.status_code < 300:
        return resp.status_code, None
    return resp.status_code, f"HTTP {resp.status_code}"


def deliver_due(store: Store, policy: DeliveryPolicy, client: t.Any, *, limit: int = 50) -> int:
    """Send every pending delivery that is due; returns how many attempts were made."""
    now = utcnow()
    with store.read() as s:
        due = s.execute(select(ActionDelivery.id).where(ActionDelivery.status == "pending",
                                                        ActionDelivery.next_attempt_at <= now)
                        .order_by(ActionDelivery.next_attempt_at).limit(limit)).scalars().all()
    n = 0
    for did in due:
        with store.read() as s:
            d = s.get(ActionDelivery, did)
            if d is None or d.status != "pending":
                continue
            w = s.get(Webhook, d.webhook_id)
            if w is None:
                continue
            s.expunge_all()
        started = time.perf_counter()
        code, error = _post(client, w, d)
        ms = (time.perf_counter() - started) * 1000
        n += 1
        with store.transaction() as s:
            d2 = s.get(ActionDelivery, did)
            if d2 is None:
                continue
            s.add(ActionAttempt(delivery_id=did, status_code=code, error=error, duration_ms=ms))
            d2.attempts += 1
            if error is None:
                d2.status, d2.delivered_at, d2.last_error = "delivered", utcnow(), None
                audit.append(s, "system:actions", "action.delivered", f"delivery:{did}",
                             {"webhook": w.name, "attempts": d2.attempts, "status_code": code,
                              "event": (d2.event or {}).get("id")})
            else:
                d2.last_error = error
                if d2.attempts >= policy.max_attempts:
                    d2.status = "dead"
                    audit.append(s, "system:actions", "action.dead", f"delivery:{did}",
                                 {"webhook": w.name, "attempts": d2.attempts, "error": error,
                                  "event": (d2.event or {}).get("id")})
                else:
                    delay = policy.base_delay_s * 2 ** (d2.attempts - 1)
                    d2.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)
    return n


class ActionWorker(BackgroundLoop):
    """A background thread that delivers due actions every ``interval_s`` (and when woken)."""

    thread_name = "vigil-actions"
    what = "action delivery round"

    def __init__(self, store: Store, policy: DeliveryPolicy, interval_s: float = 1.0) -> None:
        super().__init__(interval_s)
        self.store = store
        self.policy = policy
        self._client: t.Any = None

    def setup(self) -> None:
        import httpx

        self._client = httpx.Client(timeout=self.policy.timeout_s, follow_redirects=False)

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run_round(self) -> None:
        deliver_due(self.store, self.policy, self._client)
