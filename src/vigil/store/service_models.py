"""Models of the service: tokens, review queue, decisions, actions, audit log, jobs.

* ``api_tokens``: bearer tokens, stored as the SHA-256 of a high-entropy secret (shown once).
* ``review_cases`` / ``review_items``: the queue. A *case* is one open question about one bank
  entry; every block match on that entry while the case is open becomes an *item* of it, so fifty
  re-uploads of one release are one decision with fifty items.
* ``decisions``: a reviewer's verdict on a case, with its statement of reasons (EU DSA fields).
* ``exposures``: how many items each reviewer revealed per day (the reviewer-safety cap).
* ``webhooks`` / ``action_rules`` / ``action_deliveries`` / ``action_attempts``: actions; every
  delivery attempt is a row.
* ``audit_log``: append-only and hash-chained (see :mod:`vigil.core.audit`).
* ``jobs``: asynchronous work (large uploads; video hashing later).

Migration: ``0002_service``; it must agree with these models (tests/test_store.py checks).
"""

from __future__ import annotations

import datetime as dt
import typing as t

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from vigil.store.models import Base, utcnow

__all__ = [
    "ActionAttempt",
    "ActionDelivery",
    "ActionRule",
    "ApiToken",
    "AuditRow",
    "Decision",
    "Exposure",
    "Job",
    "ReviewCase",
    "ReviewItem",
    "Webhook",
]

BigId = BigInteger().with_variant(Integer, "sqlite")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    #: hex SHA-256 of the secret; the secret itself is never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the first characters of the token, to recognise it in listings
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ReviewCase(Base):
    __tablename__ = "review_cases"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), index=True)
    bank: Mapped[str] = mapped_column(String(128))
    #: 0 (none/low) .. 4 (critical): ordering key, from the entry's severity label
    severity_rank: Mapped[int] = mapped_column(Integer, default=0)
    #: best match confidence among the items, 0..1
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | decided
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReviewItem(Base):
    __tablename__ = "review_items"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), index=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    signal_type: Mapped[str] = mapped_column(String(32))
    distance: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str | None] = mapped_column(String(64), default=None)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    #: the content's own signals (so a false positive can be added to an allow bank)
    signals: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str | None] = mapped_column(String(1024), default=None)
    #: a downscaled thumbnail kept for review, relative to the data directory; None once purged
    media_path: Mapped[str | None] = mapped_column(String(256), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), index=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(16))  # confirm | false_positive | escalate
    reason_code: Mapped[str] = mapped_column(String(64))
    reason_text: Mapped[str] = mapped_column(Text, default="")
    #: statement of reasons (EU DSA art. 17 fields), see vigil.core.review.statement_of_reasons
    statement: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    #: what the false-positive follow-ups did: {"disabled_entry": 3, "allow_entry": 9}
    follow_up: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Exposure(Base):
    __tablename__ = "exposures"
    __table_args__ = (UniqueConstraint("reviewer", "day", name="uq_exposures_reviewer_day"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, UTC
    count: Mapped[int] = mapped_column(Integer, default=0)


class Webhook(Base):
    __tablename__ = "webhooks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    #: the HMAC key; kept in clear because signing needs it (it is a shared secret, not a password)
    secret: Mapped[str] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ActionRule(Base):
    __tablename__ = "action_rules"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: filters; None matches anything
    bank: Mapped[str | None] = mapped_column(String(128), default=None)
    label: Mapped[str | None] = mapped_column(String(256), default=None)  # key=value
    severity: Mapped[str | None] = mapped_column(String(16), default=None)
    decision: Mapped[str | None] = mapped_column(String(16), default=None)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ActionDelivery(Base):
    __tablename__ = "action_deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("action_rules.id", ondelete="SET NULL"), default=None)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    event: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ActionAttempt(Base):
    __tablename__ = "action_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("action_deliveries.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)


class AuditRow(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256), default="")
    details: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)  # queued | running | done | failed
    params: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, t.Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, t.Any] | None] = mapped_column(JSON, default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    #: share of the work done, 0..1, while running (video hashing reports it); 1 when done
    progress: Mapped[float] = mapped_column(Float, default=0.0)
