"""Engines, sessions and migrations.

Default: a SQLite file ``vigil.db`` in the data directory, in WAL mode with foreign keys on and a
busy timeout, so a scan's workers and a concurrent CLI call wait instead of failing. Production:
``VIGIL_DATABASE_URL=postgresql+psycopg://…``. The schema is only ever created by Alembic
(:func:`migrate`), which runs at start-up and is a no-op when the store is current.
"""

from __future__ import annotations

import contextlib
import functools
import re
import typing as t
import uuid
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from vigil.errors import StoreError
from vigil.store.models import Meta

__all__ = ["Store", "current_revision", "head_revision", "migrate", "sqlite_url"]

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'vigil.db').resolve()}"


def _sqlite_pragmas(dbapi_conn: t.Any, _record: t.Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*(.+)$", re.M)


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration, read from the version files themselves: checking it costs a file
    read instead of importing Alembic, which is most of a CLI call's start-up otherwise."""
    revs: set[str] = set()
    downs: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for kind, raw in _REVISION.findall(path.read_text(encoding="utf-8")):
            values = set(re.findall(r"[\"']([^\"']+)[\"']", raw))
            (revs if kind == "revision" else downs).update(values)
    heads = revs - downs
    if len(heads) != 1:
        raise StoreError(f"migrations have {len(heads)} heads ({sorted(heads)}): merge them")
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database); a no-op, without
    loading Alembic, when the store is already current."""
    if current_revision(engine) == head_revision():
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """The database: an engine, a session factory and the store's identity."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        try:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.engine = create_engine(url)
                event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
            if create:
                migrate(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot open the database: {exc.orig}", url=self.safe_url) from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}", url=self.safe_url) from exc
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.store_id = self._store_id()

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages."""
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") else "?"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _store_id(self) -> str:
        with self.transaction() as s:
            row = s.get(Meta, "store_id")
            if row is None:
                row = Meta(key="store_id", value=uuid.uuid4().hex)
                s.add(row)
            return row.value

    @contextlib.contextmanager
    def transaction(self) -> t.Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        session = self.sessions()
        try:
            with session.begin():
                yield session
        except OperationalError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc
        finally:
            session.close()

    @contextlib.contextmanager
    def read(self) -> t.Iterator[Session]:
        session = self.sessions()
        try:
            yield session
        finally:
            session.close()

    def meta(self, key: str) -> str | None:
        with self.read() as s:
            return s.scalar(select(Meta.value).where(Meta.key == key))

    def dispose(self) -> None:
        self.engine.dispose()
