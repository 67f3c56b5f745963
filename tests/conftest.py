"""Shared fixtures: databases on both backends, an in-process app, and helpers.

``db_url`` is parametrized over SQLite (a fresh file per test) and PostgreSQL (one database
per test worker, migrated once, truncated between tests). PostgreSQL is required: set
PAL_TEST_POSTGRES_URL to point elsewhere, or PAL_TEST_POSTGRES=skip to skip those tests.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from pal.config import load_settings
from pal.server.app import create_app
from pal.store import migrate
from pal.store.db import Database, open_database
from pal.store.tables import metadata

pytest_plugins = ["tests.secret_scan"]  # fails the run when a secret shows up in a log

PG_ADMIN_URL = os.environ.get(
    "PAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]

# Property tests run the same examples on every run, so a failure is reproducible and the
# suite cannot flake on a lucky draw; set HYPOTHESIS_PROFILE=explore for fresh examples.
hypothesis_settings.register_profile("pal", derandomize=True, deadline=None)
hypothesis_settings.register_profile("explore", deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pal"))


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    open_database(url).close()  # switches the file to WAL
    return path


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test worker, migrated to head."""
    if os.environ.get("PAL_TEST_POSTGRES") == "skip":
        pytest.skip("PAL_TEST_POSTGRES=skip")
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"pal_test_{worker_id}_{os.getpid()}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc.orig}); start it, set "
            "PAL_TEST_POSTGRES_URL, or PAL_TEST_POSTGRES=skip"
        )
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def truncate_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database URL on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "pal.sqlite"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    truncate_postgres(url)
    return url


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = open_database(db_url)
    yield db
    db.close()


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """An empty PostgreSQL database alone, for tests of what only PostgreSQL can do
    (concurrent writers: SQLite runs one at a time)."""
    truncate_postgres(postgres_url)
    return postgres_url


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[Database]:
    db = open_database(pg_url)
    yield db
    db.close()


@pytest.fixture
def client(database: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The app in-process (lifespan run) over ``database``; raises on server errors."""
    settings = load_settings({"PAL_HOME": str(tmp_path / "home")}, db_url=database.url)
    with TestClient(create_app(settings, database=database)) as test_client:
        yield test_client
