"""The embedded PostgreSQL: its own data folder, reused across starts, and only when no database
is configured.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from swagger_server.config import EMBEDDED_DSN_ENV, load_settings
from swagger_server.embedded import EmbeddedPostgres, start_if_needed


def query(dsn: str, sql: str) -> list[tuple]:
    with contextlib.closing(psycopg2.connect(dsn, connect_timeout=5)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def no_embedded_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No embedded DSN published yet; whatever a test publishes is undone afterwards."""
    monkeypatch.delenv(EMBEDDED_DSN_ENV, raising=False)
    yield


def test_start_initialises_then_reuses_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    server = EmbeddedPostgres(data_dir)
    try:
        dsn = server.start()
        assert server.created
        assert (data_dir / "PG_VERSION").exists()
        assert server.is_running()
        assert dsn == server.dsn
        assert query(dsn, "SELECT 1") == [(1,)]
        query(dsn, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        server.stop()
        assert not server.is_running()
        with pytest.raises(psycopg2.OperationalError):
            query(dsn, "SELECT 1")

        again = EmbeddedPostgres(data_dir)
        assert again.start() == dsn
        assert not again.created  # no second initdb
        assert query(dsn, "SELECT n FROM kept") == [(42,)]
    finally:
        server.stop(mode="immediate")
    assert not server.is_running()


def test_the_dsn_names_the_socket_dir_and_superuser(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    params = psycopg2.extensions.parse_dsn(server.dsn)
    assert params["host"] == str(server.socket_dir)
    assert params["user"] == "postgres"
    assert "password" not in params


def test_a_long_data_dir_path_gets_a_short_socket_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedPostgres(deep)
    assert server.socket_dir != deep
    assert len(str(server.socket_dir / ".s.PGSQL.5432")) < 108


@pytest.mark.parametrize(
    "environ",
    [{"DATABASE_URL": "postgresql://app@127.0.0.1:1/none"},
     {"POSTGRES_URL": "127.0.0.1", "POSTGRES_PORT": "1"}],
    ids=["DATABASE_URL", "POSTGRES"],
)
def test_a_configured_database_is_never_touched(
    tmp_path: Path, no_embedded_env: None, environ: dict[str, str]
) -> None:
    data_dir = tmp_path / "never"
    settings = load_settings(environ={**environ, "EMBEDDED_DATA_DIR": str(data_dir)})
    assert start_if_needed(settings) is None
    assert not data_dir.exists()
    assert EMBEDDED_DSN_ENV not in os.environ


def test_an_already_published_server_is_not_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "never"
    monkeypatch.setenv(EMBEDDED_DSN_ENV, "host=/somewhere/else")
    settings = load_settings(environ={"EMBEDDED_DATA_DIR": str(data_dir)})
    assert start_if_needed(settings) is None
    assert not data_dir.exists()
    assert os.environ[EMBEDDED_DSN_ENV] == "host=/somewhere/else"


def test_with_nothing_configured_it_starts_and_publishes_the_dsn(
    tmp_path: Path, no_embedded_env: None
) -> None:
    data_dir = tmp_path / "pgdata"
    settings = load_settings(environ={"EMBEDDED_DATA_DIR": str(data_dir)})
    assert settings.database.embedded and settings.database.dsn is None

    server = start_if_needed(settings)
    try:
        assert server is not None
        assert server.data_dir == data_dir.resolve()
        assert os.environ[EMBEDDED_DSN_ENV] == server.dsn
        # Settings loaded afterwards (what the forked workers do) point at it.
        reloaded = load_settings(environ={EMBEDDED_DSN_ENV: os.environ[EMBEDDED_DSN_ENV]})
        assert reloaded.database.embedded
        assert reloaded.database.dsn == server.dsn
        assert query(reloaded.database.dsn, "SELECT current_user") == [("postgres",)]
    finally:
        if server is not None:
            server.stop(mode="immediate")


def test_it_listens_on_127_0_0_1_when_asked(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a free port: bound, then released
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = EmbeddedPostgres(tmp_path / "pg", listen_tcp=True, port=port)
    try:
        dsn = server.start()
        params = psycopg2.extensions.parse_dsn(dsn)
        assert (params["host"], params["port"]) == ("127.0.0.1", str(port))
        assert query(dsn, "SELECT inet_server_port()") == [(port,)]
    finally:
        server.stop(mode="immediate")
