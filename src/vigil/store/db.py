"""Engines, sessions and migrations.

Default: a SQLite file ``vigil.db`` in the data directory, in WAL mode with foreign keys on and a
busy timeout, so a scan's workers and a concurrent CLI call wait instead of failing. Production:
``VIGIL_DATABASE_URL=postgresql+psycopg://…``. The schema is only ever created by Alembic
(:func:`migrate`), which runs at start-up and is a no-op when the store is current.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import re
import threading
import typing as t
import uuid
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from vigil.errors import StoreError
from vigil.store.models import Bank, Meta

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


#: ``meta`` key of a random token replaced in every transaction that changes a bank's row
#: (creation, thresholds, modes, deletion): a process may cache the banks' settings for as long
#: as the token it read is the current one (see :meth:`vigil.core.app.Vigil.refresh_indexes`).
BANKS_VERSION = "banks_version"


def bump_banks_version(session: Session) -> None:
    """Replace the banks' version token, in ``session``'s transaction (once per transaction).

    A fresh random value rather than a counter: an upsert of a new token needs no read first, and
    two writers can never leave the same value behind (no ABA); on PostgreSQL the row lock orders
    concurrent bumps, so the last one committed is what everyone reads."""
    if session.info.get("banks_bumped"):
        return
    session.info["banks_bumped"] = True
    token = uuid.uuid4().hex
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    session.execute(upsert(Meta).values(key=BANKS_VERSION, value=token)
                    .on_conflict_do_update(index_elements=[Meta.key], set_={"value": token}))


def _watch_banks(session: Session, _ctx: t.Any, _instances: t.Any) -> None:
    """Before each flush: a bank row added, changed or deleted through the ORM bumps the token."""
    if any(isinstance(o, Bank) for o in itertools.chain(session.new, session.dirty, session.deleted)):
        bump_banks_version(session)


def _transaction_over(session: Session, *_: t.Any) -> None:
    session.info.pop("banks_bumped", None)


def _change_marks_query() -> t.Any:
    from sqlalchemy import func

    from vigil.store.models import IndexLog

    return select(select(func.max(IndexLog.seq)).scalar_subquery(),
                  select(Meta.value).where(Meta.key == BANKS_VERSION).scalar_subquery())


_CHANGE_MARKS = _change_marks_query()


class Store:
    """The database: an engine, a session factory and the store's identity."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self._writer_path: Path | None = None  # see writing()
        self._writer_fh: t.BinaryIO | None = None
        self._writer_thread_lock = threading.RLock()
        self._writer_depth = 0
        try:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[1] if "///" in url else ""  # sqlite:// is in memory
                memory = path in ("", ":memory:")
                if not memory:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    self._writer_path = Path(path + ".writer")
                # more pooled connections than SQLAlchemy's default 5: the service's threads
                # (lookups, request handlers, workers) otherwise open and set up overflow
                # connections again and again under load
                self.engine = (create_engine(url) if memory
                               else create_engine(url, pool_size=16, max_overflow=16))
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
        #: called after a transaction of this process that changed a bank has committed
        self.on_banks_changed: list[t.Callable[[], None]] = []
        event.listen(self.sessions, "before_flush", _watch_banks)
        event.listen(self.sessions, "after_commit", self._after_commit)
        event.listen(self.sessions, "after_rollback", _transaction_over)
        self.store_id = self._store_id()

    def _after_commit(self, session: Session) -> None:
        if session.info.pop("banks_bumped", None):
            for callback in self.on_banks_changed:
                callback()

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
    def writing(self) -> t.Iterator[None]:
        """Hold this store's writer lock (SQLite files only; a no-op elsewhere).

        SQLite lets one writer at a time in; a second one gets SQLITE_BUSY and its busy handler
        sleeps and retries on a fixed schedule (1, 2, 5, 10, 15, 20, 25 ms, ...). With several
        processes writing at once (``vigil serve --workers N``, a CLI import beside the server)
        those sleeps, not the writes, made the service's latency tail (~80 ms at p99 in the load
        benchmark). Writers therefore queue on an ``flock`` of ``<database>.writer`` first:
        the kernel wakes the next one the moment the lock is released. Re-entrant within a
        thread (a transaction inside a transaction); other threads of the process queue on a
        lock of their own in front of it."""
        if self._writer_path is None:
            yield
            return
        with self._writer_thread_lock:
            if self._writer_depth == 0:
                if self._writer_fh is None:
                    self._writer_fh = self._writer_path.open("a+b")
                fcntl.flock(self._writer_fh, fcntl.LOCK_EX)
            self._writer_depth += 1
            try:
                yield
            finally:
                self._writer_depth -= 1
                if self._writer_depth == 0:
                    fcntl.flock(self._writer_fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def transaction(self) -> t.Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        with self.writing():
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

    def change_marks(self) -> tuple[int, str]:
        """The change log's head and the banks' version token, in one cheap round trip: what a
        long-running process checks before each match to know whether it is behind."""
        with self.engine.connect() as conn:
            head, token = conn.execute(_CHANGE_MARKS).one()
        return int(head or 0), str(token or "")

    def execute_insert(self, stmt: t.Any, rows: list[dict[str, t.Any]]) -> None:
        """One executemany in its own transaction, without an ORM session (a hot path)."""
        try:
            with self.writing(), self.engine.begin() as conn:
                conn.execute(stmt, rows)
        except OperationalError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc

    def meta(self, key: str) -> str | None:
        with self.read() as s:
            return s.scalar(select(Meta.value).where(Meta.key == key))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writer_fh is not None:
            self._writer_fh.close()
            self._writer_fh = None
