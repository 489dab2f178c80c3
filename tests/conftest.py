"""Shared fixtures: the session's PostgreSQL, settings for it, and Connexion test clients."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server import config, db
from swagger_server.app import create_app
from swagger_server.config import DatabaseSettings, PoolSettings, Settings
from swagger_server.data.catalog import CACHE
from swagger_server.ops import metrics_files
from tests.pg import TestDatabase, embedded_server, provide_database
from tests.pgbouncer import PgBouncer


def service_variables(environ: Mapping[str, str]) -> list[str]:
    """The variables that configure the service: every ``SECTION_KEY`` of config.py's sections,
    ``DATABASE_URL``, ``APP_CONFIG``, the embedded server's published DSN and the metrics
    directory (prometheus_client's ``PROMETHEUS_MULTIPROC_DIR``)."""
    sections = {spec.section for keys in config._KEYS.values() for spec in keys} | {"POSTGRES"}
    named = {"DATABASE_URL", "APP_CONFIG", config.EMBEDDED_DSN_ENV, metrics_files.ENV}
    prefixes = tuple(f"{section}_" for section in sections)
    return [name for name in environ if name in named or name.startswith(prefixes)]


@pytest.fixture(scope="session", autouse=True)
def no_developer_config() -> Iterator[Path]:
    """Tests never read the developer's configuration: ``APP_CONFIG`` names an empty file (so a
    ``config.ini`` in the project is not read) and no ``SECTION_KEY`` variable of the shell is
    seen. A test sets what it needs itself (``monkeypatch.setenv``, or explicit settings)."""
    folder = Path(tempfile.mkdtemp(prefix="pgrest-config-"))
    folder.chmod(0o755)  # readable by the unprivileged users some tests run the service as
    empty = folder / "empty.ini"
    empty.write_text("", encoding="utf-8")
    empty.chmod(0o644)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in service_variables(os.environ):
                patch.delenv(name)
            patch.setenv("APP_CONFIG", str(empty))
            yield empty
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_root() -> Iterator[Path]:
    """Where embedded servers keep their data: outside pytest's tmp root, which every new
    pytest session (as root) chmods back to 0700, locking out the servers' unprivileged user."""
    root = Path(tempfile.mkdtemp(prefix="pgrest-tests-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def database(pg_root: Path) -> Iterator[TestDatabase]:
    """The session's PostgreSQL server (see tests/pg.py for the order of choice)."""
    with provide_database(pg_root) as found:
        yield found


@pytest.fixture
def private_server(pg_root: Path) -> Iterator[TestDatabase]:
    """An embedded server of this test's own, which it may stop and restart."""
    with embedded_server(Path(tempfile.mkdtemp(dir=pg_root)) / "pgdata") as server:
        yield server


@pytest.fixture(scope="session")
def bouncer(database: TestDatabase) -> Iterator[PgBouncer]:
    """The session's PgBouncer (pool_mode = transaction) in front of the session's server."""
    with PgBouncer(database.dsn, pool_size=10) as started:
        yield started


# The routes to PostgreSQL that the data API tests run through (``route`` fixture).
ROUTES = ("direct", "pgbouncer")


@pytest.fixture(scope="module", params=ROUTES)
def route(request: pytest.FixtureRequest) -> Callable[[str], tuple[str, dict[str, Any]]]:
    """``route(dsn) -> (dsn, database section)``: the DSN as is, or through the session's
    PgBouncer in transaction mode with ``POOLER = transaction``; a module's tests run once per
    route."""
    if request.param == "direct":
        return lambda dsn: (dsn, {})
    bouncer: PgBouncer = request.getfixturevalue("bouncer")
    return lambda dsn: (bouncer.dsn_for(dsn), {"pooler": "transaction"})


def make_settings(dsn: str, **sections: dict[str, Any]) -> Settings:
    """Settings for ``dsn``; ``pool={"max_size": 2}`` style overrides per section."""
    settings = Settings(database=DatabaseSettings(dsn=dsn, source="DATABASE_URL"))
    for name, values in sections.items():
        settings = dataclasses.replace(
            settings, **{name: dataclasses.replace(getattr(settings, name), **values)}
        )
    return settings


@contextlib.contextmanager
def app_client(dsn: str, **sections: dict[str, Any]) -> Iterator[TestClient]:
    """A test client on a new app for ``dsn``; the process pool and catalog are fresh."""
    db.close_pool()  # the pool is per process: a new app with new settings gets a new pool
    CACHE.invalidate()  # so is the catalog: a database made anew may reuse a name
    try:
        yield create_app(make_settings(dsn, **sections)).test_client()
    finally:
        db.close_pool()


@pytest.fixture
def make_client(database: TestDatabase) -> Iterator[Callable[..., TestClient]]:
    """``make_client(pool={...}, cors={...}, dsn=...)``: a Connexion test client on a new app."""

    def make(dsn: str | None = None, **sections: dict[str, Any]) -> TestClient:
        db.close_pool()  # the pool is per process: a new app with new settings gets a new pool
        app = create_app(make_settings(dsn or database.dsn, **sections))
        return app.test_client()

    yield make
    db.close_pool()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def client_for(dsn: str) -> Iterator[Callable[..., TestClient]]:
    """``client_for(**api)``: a test client on the requesting module's ``dsn`` fixture, with
    those ``[API]`` settings (a new pool and an empty catalog cache each time)."""

    def make(**api: Any) -> TestClient:
        db.close_pool()
        CACHE.invalidate()
        return create_app(make_settings(dsn, api=api)).test_client()

    yield make
    db.close_pool()


__all__ = ["PoolSettings", "make_settings"]
