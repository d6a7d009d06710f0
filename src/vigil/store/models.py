"""SQLAlchemy 2 models: banks, entries, their signals, the index change log, submissions, matches.

Banks hold signals and labels, never media. An entry is disabled by a tombstone (``enabled`` false,
``disabled_at`` set), never deleted, so a decision that cites it stays explainable.

Every change that affects what the indexes must hold (a signal added, an entry disabled or
enabled) appends rows to ``index_log`` in the same transaction as the change itself; indexes
replay that log to catch up (see :mod:`vigil.index.manager`).

The schema is created and upgraded only by Alembic migrations (``store/migrations``); a test
checks that the migrations and these models agree.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Bank",
    "Base",
    "Entry",
    "IndexLog",
    "Match",
    "Meta",
    "SignalRow",
    "Submission",
    "utcnow",
]

# BigInteger primary keys that are still SQLite's fast INTEGER PRIMARY KEY (rowid) there
BigId = BigInteger().with_variant(Integer, "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: t.ClassVar[dict[t.Any, t.Any]] = {
        dt.datetime: DateTime(timezone=True),
        dict[str, t.Any]: JSON,
    }


class Meta(Base):
    """Key/value facts about the store itself (its id, used to tell index files apart)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Bank(Base):
    __tablename__ = "banks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # block | allow
    description: Mapped[str] = mapped_column(Text, default="")
    #: per signal type match threshold, e.g. {"pdq": 31}; missing types use the type's default
    thresholds: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    #: robust tier for this bank: always | on-miss | off; None = the default (vigil.core.robust)
    robust_mode: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    entries: Mapped[list[Entry]] = relationship(back_populates="bank")


class Entry(Base):
    __tablename__ = "entries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: structured labels, see vigil.core.labels
    labels: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    #: where the entry came from: a file name or a partner's id; never the media itself
    reference: Mapped[str | None] = mapped_column(String(512), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    bank: Mapped[Bank] = relationship(back_populates="entries")
    signals: Mapped[list[SignalRow]] = relationship(
        back_populates="entry", order_by="SignalRow.id", cascade="all, delete-orphan"
    )


class SignalRow(Base):
    __tablename__ = "signals"
    __table_args__ = (Index("ix_signals_type_value", "type", "value"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(256))
    quality: Mapped[int | None] = mapped_column(Integer, default=None)
    #: None for the content as is, "trimmed"/"untrimmed" for PDQ border handling
    variant: Mapped[str | None] = mapped_column(String(32), default=None)

    entry: Mapped[Entry] = relationship(back_populates="signals")


class IndexLog(Base):
    """Append-only: which signal ids to add to or remove from the indexes, in order."""

    __tablename__ = "index_log"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    signal_id: Mapped[int] = mapped_column(BigInteger)
    signal_type: Mapped[str] = mapped_column(String(32))
    op: Mapped[str] = mapped_column(String(8))  # add | remove
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Submission(Base):
    """One content item checked by Vigil (a file of a scan, an upload, a signal list)."""

    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("scan_key", name="uq_submissions_scan_key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: for scans: the absolute path; a re-run skips a key whose size and mtime are unchanged
    scan_key: Mapped[str | None] = mapped_column(String(1024), default=None)
    size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger, default=None)
    signals: Mapped[dict[str, t.Any]] = mapped_column(JSON, default=dict)
    error: Mapped[dict[str, t.Any] | None] = mapped_column(JSON, default=None)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    matches: Mapped[list[Match]] = relationship(
        back_populates="submission", cascade="all, delete-orphan"
    )


class Match(Base):
    __tablename__ = "matches"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id"), index=True)
    signal_type: Mapped[str] = mapped_column(String(32))
    distance: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    submission: Mapped[Submission] = relationship(back_populates="matches")


# Feature models live in their own modules (one per feature area) and register on the same
# metadata; importing them here makes Alembic and the tests see the whole schema.
from vigil.store import robust_models, service_models, video_models  # noqa: E402,F401
