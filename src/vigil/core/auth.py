"""API tokens and roles.

A token is ``vgl_`` plus 32 random bytes (URL-safe base64). Only its SHA-256 is stored: a
high-entropy secret needs no slow password hash, and a lookup by hash is one indexed query. The
token is shown once, at creation; listings show its first characters (``prefix``). A token can be
revoked (it stops working at once) and records when it was last used.

Roles, and what each may do (``admin`` may do everything):

========== ============================================================
role       may
========== ============================================================
admin      everything: tokens, action rules, webhooks, dead letters
curator    banks and entries; read submissions and the audit log
reviewer   the review queue: list, claim, reveal media, decide
submitter  hash and match content; submit and poll jobs
========== ============================================================

Creation and revocation are written to the audit log in the same transaction.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import typing as t

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from vigil.core import audit
from vigil.errors import Forbidden, NotFound, Unauthorized, UsageError, VigilError
from vigil.store.db import Store
from vigil.store.models import Meta, utcnow
from vigil.store.service_models import ApiToken

__all__ = [
    "ROLES",
    "Forbidden",
    "Principal",
    "Unauthorized",
    "authenticate",
    "create_token",
    "list_tokens",
    "revoke_token",
    "server_secret",
]

ROLES = ("admin", "curator", "reviewer", "submitter")
PREFIX = "vgl_"
#: write ``last_used_at`` at most this often per token, so a busy client does not make every
#: request a database write
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name and role."""

    token_id: int
    name: str
    role: str

    def allowed(self, *roles: str) -> bool:
        return self.role == "admin" or self.role in roles

    def require(self, *roles: str) -> None:
        if not self.allowed(*roles):
            need = " or ".join(("admin", *roles))
            raise Forbidden(f"this needs the {need} role; token {self.name!r} is {self.role}",
                            role=self.role, needs=["admin", *roles])

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_dict(tok: ApiToken) -> dict[str, t.Any]:
    def iso(v: dt.datetime | None) -> str | None:
        return None if v is None else audit._ts(v) + "Z"

    return {"id": tok.id, "name": tok.name, "role": tok.role, "prefix": tok.prefix,
            "created_at": iso(tok.created_at), "last_used_at": iso(tok.last_used_at),
            "revoked_at": iso(tok.revoked_at), "active": tok.revoked_at is None}


def create_token(store: Store, name: str, role: str, actor: str = "cli") -> dict[str, t.Any]:
    """Create a token; the returned dict holds the secret (``token``), shown this once."""
    name = name.strip()
    if not name or len(name) > 128:
        raise UsageError("a token needs a name of 1 to 128 characters")
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, got {role!r}", role=role)
    secret = PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    with store.transaction() as s:
        tok = ApiToken(name=name, role=role, token_hash=hash_token(secret), prefix=secret[:10])
        s.add(tok)
        s.flush()
        audit.append(s, actor, "token.create", f"token:{tok.id}", {"name": name, "role": role})
        out = _token_dict(tok)
    out["token"] = secret
    return out


def list_tokens(store: Store) -> list[dict[str, t.Any]]:
    with store.read() as s:
        return [_token_dict(x) for x in s.scalars(select(ApiToken).order_by(ApiToken.id))]


def revoke_token(store: Store, token_id: int, actor: str = "cli") -> dict[str, t.Any]:
    with store.transaction() as s:
        tok = s.get(ApiToken, token_id)
        if tok is None:
            raise NotFound(f"no token {token_id}", token=token_id)
        if tok.revoked_at is None:
            tok.revoked_at = utcnow()
            s.flush()
            audit.append(s, actor, "token.revoke", f"token:{tok.id}", {"name": tok.name})
        return _token_dict(tok)


def principal_for(store: Store, token_id: int) -> Principal | None:
    """The principal behind a session (UI): None when the token is gone or revoked."""
    with store.read() as s:
        tok = s.get(ApiToken, token_id)
        if tok is None or tok.revoked_at is not None:
            return None
        return Principal(tok.id, tok.name, tok.role)


def authenticate(store: Store, token: str | None) -> Principal:
    """Resolve a bearer token to its principal, or raise :class:`Unauthorized`."""
    if not token:
        raise Unauthorized("a bearer token is required (Authorization: Bearer vgl_…)")
    if not token.startswith(PREFIX) or len(token) > 200:
        raise Unauthorized("the token is not valid")
    digest = hash_token(token)
    with store.read() as s:
        tok = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
        # compare again in constant time: the index lookup alone would leak timing on a near miss
        if tok is None or not hmac.compare_digest(tok.token_hash, digest):
            raise Unauthorized("the token is not valid")
        if tok.revoked_at is not None:
            raise Unauthorized("the token was revoked")
        principal = Principal(tok.id, tok.name, tok.role)
        last = tok.last_used_at
    now = utcnow()
    if last is None or now - _aware(last) > LAST_USED_RESOLUTION:
        try:
            with store.transaction() as s:
                s.execute(update(ApiToken).where(ApiToken.id == principal.token_id)
                          .values(last_used_at=now))
        except VigilError:
            pass  # a busy database must not fail the request only for a bookkeeping write
    return principal


def _aware(v: dt.datetime) -> dt.datetime:
    return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)


def server_secret(store: Store) -> bytes:
    """A random key kept in the store, for signing UI session cookies (made on first use)."""
    try:
        with store.transaction() as s:
            row = s.get(Meta, "session_secret")
            if row is None:
                row = Meta(key="session_secret", value=secrets.token_hex(32))
                s.add(row)
            return bytes.fromhex(row.value)
    except (VigilError, IntegrityError):
        # another process (a second `vigil serve` worker) made it at the same moment: use theirs
        with store.read() as s:
            row = s.get(Meta, "session_secret")
            if row is None:
                raise
            return bytes.fromhex(row.value)
