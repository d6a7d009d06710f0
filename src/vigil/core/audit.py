"""The audit log: append-only and hash-chained.

Every row stores ``prev_hash`` (the previous row's ``hash``) and its own ``hash``, the SHA-256 of
the row's canonical JSON (seq, time, actor, action, target, details, prev_hash; sorted keys, no
spaces). The first row chains to :data:`GENESIS`. The newest ``seq:hash`` is also kept in the
``meta`` table (``audit_head``), so removing the *last* rows is detected too, not only a gap in
the middle.

Flow of :func:`append`, always inside the caller's transaction so the change and its audit row
commit or roll back together:

1. take the chain's lock: on PostgreSQL a transaction-scoped advisory lock; on SQLite the
   insert itself takes the database's single write lock, and the predecessor is read after it;
2. insert the row (its ``seq`` comes from the database), read its predecessor, compute the hash;
3. move ``audit_head``.

:func:`verify` walks the chain in ``seq`` order and reports the first row whose stored link or
hash does not match, which is what ``vigil audit verify`` and ``GET /api/v1/audit/verify`` print.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import hashlib
import json
import typing as t

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from vigil.store.models import Meta, utcnow
from vigil.store.service_models import AuditRow

__all__ = ["GENESIS", "VerifyReport", "append", "canonical", "row_hash", "rows", "verify"]

GENESIS = "0" * 64
HEAD_KEY = "audit_head"
_PG_LOCK_ID = 0x56494749  # "VIGI": one advisory lock for the chain


def _ts(at: dt.datetime) -> str:
    """A timestamp form that is the same whether the database returns it aware or naive."""
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def canonical(seq: int, at: dt.datetime, actor: str, action: str, target: str,
              details: dict[str, t.Any], prev_hash: str) -> str:
    return json.dumps(
        {"seq": seq, "at": _ts(at), "actor": actor, "action": action, "target": target,
         "details": details, "prev_hash": prev_hash},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )


def row_hash(row: AuditRow) -> str:
    body = canonical(row.seq, row.at, row.actor, row.action, row.target, row.details or {},
                     row.prev_hash)
    return hashlib.sha256(body.encode()).hexdigest()


def _jsonable(details: dict[str, t.Any]) -> dict[str, t.Any]:
    # round-trip now so the hash is computed over exactly what the database will give back
    return t.cast(dict[str, t.Any], json.loads(json.dumps(details, default=str)))


def append(s: Session, actor: str, action: str, target: str = "",
           details: dict[str, t.Any] | None = None) -> AuditRow:
    """Append one row in the caller's transaction (see the module docstring)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
    row = AuditRow(at=utcnow(), actor=actor[:128],
                   action=action[:64], target=str(target)[:256],
                   details=_jsonable(details or {}), prev_hash=GENESIS, hash="")
    s.add(row)
    s.flush()  # gets seq, and on SQLite the write lock: nobody can append before us now
    prev = s.scalar(select(AuditRow.hash).where(AuditRow.seq < row.seq)
                    .order_by(AuditRow.seq.desc()).limit(1))
    row.prev_hash = prev or GENESIS
    row.hash = row_hash(row)
    head = s.get(Meta, HEAD_KEY)
    value = f"{row.seq}:{row.hash}"
    if head is None:
        s.add(Meta(key=HEAD_KEY, value=value))
    else:
        head.value = value
    s.flush()
    return row


@dataclasses.dataclass
class VerifyReport:
    ok: bool
    rows: int
    first_broken_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def _all_rows(s: Session, page: int = 2000) -> t.Iterator[AuditRow]:
    """Every row in seq order, a page at a time (keyset paging: no server-side cursor to leak
    when the walk stops early)."""
    last = 0
    while True:
        batch = s.scalars(select(AuditRow).where(AuditRow.seq > last).order_by(AuditRow.seq)
                          .limit(page)).all()
        if not batch:
            return
        yield from batch
        last = batch[-1].seq
        s.expunge_all()


def verify(s: Session) -> VerifyReport:
    """Walk the whole chain; report the first broken link."""
    prev = GENESIS
    n = 0
    last_seq = 0
    for row in _all_rows(s):
        n += 1
        if row.prev_hash != prev:
            return VerifyReport(False, n, row.seq, f"row {row.seq} does not follow the row before it "
                                "(a row was removed or altered before it)")
        if row_hash(row) != row.hash:
            return VerifyReport(False, n, row.seq, f"row {row.seq} was altered (its hash does not match)")
        prev = row.hash
        last_seq = row.seq
    head = s.get(Meta, HEAD_KEY)
    if head is not None:
        head_seq, _, head_hash = head.value.partition(":")
        if int(head_seq) != last_seq or head_hash != prev:
            return VerifyReport(False, n, int(head_seq),
                                f"the log ends at row {last_seq} but its head is row {head_seq} "
                                "(rows were removed from the end)")
    elif n:
        return VerifyReport(False, n, last_seq, "the log has rows but no head record")
    return VerifyReport(True, n)


def rows(s: Session, *, limit: int = 100, before: int | None = None,
         action: str | None = None) -> list[dict[str, t.Any]]:
    stmt = select(AuditRow).order_by(AuditRow.seq.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(AuditRow.seq < before)
    if action:
        stmt = stmt.where(AuditRow.action == action)
    return [to_dict(r) for r in s.scalars(stmt)]


def count(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(AuditRow)) or 0)


def to_dict(r: AuditRow) -> dict[str, t.Any]:
    return {"seq": r.seq, "at": _ts(r.at) + "Z", "actor": r.actor, "action": r.action,
            "target": r.target, "details": r.details, "prev_hash": r.prev_hash, "hash": r.hash}


#: who is acting, for rows the core appends on its own (bank and entry changes); the service sets
#: it per request, the CLI leaves the default
ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("vigil_actor", default="cli")


@contextlib.contextmanager
def acting_as(actor: str) -> t.Iterator[None]:
    tok = ACTOR.set(actor)
    try:
        yield
    finally:
        ACTOR.reset(tok)
