"""Shared fixtures: a store on each database (SQLite file, and the real PostgreSQL server that
scripts/test.sh or .ci/run starts), a Vigil core on it, and generated test media."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from PIL import Image

import vigil
from vigil.config import Settings
from vigil.core.app import Vigil

SAMPLES = Path(vigil.__file__).parent / "samples" / "images"
PG_ENV = "VIGIL_TEST_POSTGRES_URL"


def sample_photos() -> list[Path]:
    return sorted(SAMPLES.glob("*.jpg"))


def _postgres_database() -> tuple[str, str]:
    """Create a fresh database on the test server; returns (url, name)."""
    from sqlalchemy import create_engine, text

    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set in CI: .ci/run must start PostgreSQL")
        pytest.skip(f"PostgreSQL not available ({PG_ENV} unset; scripts/test.sh starts one)")
    name = f"vigil_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name, name


def _drop_postgres_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(os.environ[PG_ENV], isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'vigil.db'}"
        return
    url, name = _postgres_database()
    yield url
    _drop_postgres_database(name)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url)


@pytest.fixture
def core(settings: Settings):
    v = Vigil(settings)
    yield v
    v.close()


@pytest.fixture
def photos() -> list[Path]:
    return sample_photos()


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path
