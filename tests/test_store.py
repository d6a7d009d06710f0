"""The store on SQLite and PostgreSQL: migrations build the schema the models describe,
transactions are all-or-nothing, and the store keeps its identity."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select

from vigil.errors import Conflict, StoreError
from vigil.store.db import Store
from vigil.store.models import Bank, Base


def test_migrations_match_models(db_url):
    store = Store(db_url)
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []
    tables = set(inspect(store.engine).get_table_names())
    assert {"banks", "entries", "signals", "index_log", "submissions", "matches", "meta",
            "alembic_version"} <= tables
    store.dispose()


def test_migrate_is_idempotent_and_store_id_stable(db_url):
    a = Store(db_url)
    b = Store(db_url)  # runs the migrations again: a no-op
    assert a.store_id == b.store_id and len(a.store_id) == 32
    a.dispose()
    b.dispose()


def test_transaction_rolls_back_on_error(db_url):
    store = Store(db_url)
    with pytest.raises(RuntimeError):
        with store.transaction() as s:
            s.add(Bank(name="x", kind="block", thresholds={}, description=""))
            s.flush()
            raise RuntimeError("boom")
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Bank)) == 0
    store.dispose()


def test_duplicate_bank_name_is_a_conflict(core):
    core.create_bank("known")
    with pytest.raises(Conflict, match="already exists"):
        core.create_bank("known")


def test_unreachable_database_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot open the database"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_head_revision_is_alembics_head(db_url):
    """The fast start-up check reads the head from the files; it must agree with Alembic."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from vigil.store.db import MIGRATIONS, current_revision, head_revision

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()
    store = Store(db_url)
    assert current_revision(store.engine) == head_revision()
    store.dispose()
