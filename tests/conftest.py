"""Shared fixtures: the session's PostgreSQL, settings for it, and Connexion test clients."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.app import create_app
from swagger_server.config import DatabaseSettings, PoolSettings, Settings
from tests.pg import TestDatabase, embedded_server, provide_database


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestDatabase]:
    """The session's PostgreSQL server (see tests/pg.py for the order of choice)."""
    with provide_database(tmp_path_factory.mktemp("pg")) as found:
        yield found


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[TestDatabase]:
    """An embedded server of this test's own, which it may stop and restart."""
    with embedded_server(tmp_path / "pgdata") as server:
        yield server


def make_settings(dsn: str, **sections: dict[str, Any]) -> Settings:
    """Settings for ``dsn``; ``pool={"max_size": 2}`` style overrides per section."""
    settings = Settings(database=DatabaseSettings(dsn=dsn, source="DATABASE_URL"))
    for name, values in sections.items():
        settings = dataclasses.replace(
            settings, **{name: dataclasses.replace(getattr(settings, name), **values)}
        )
    return settings


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


__all__ = ["PoolSettings", "make_settings"]
