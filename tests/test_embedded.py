"""The embedded PostgreSQL: its own data folder, reused across starts, only when no database is
configured, and closed to everyone but its owner (private socket folder, generated password).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import pwd
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from swagger_server.config import EMBEDDED_DSN_ENV, Settings, load_settings
from swagger_server.db.embedded import (
    HBA_CONF,
    PASSWORD_FILE,
    EmbeddedError,
    EmbeddedPostgres,
    _pgserver,
    scram_verifier,
    start_if_needed,
)
from tests.pg import TestDatabase


@pytest.fixture
def tmp_path(pg_root: Path) -> Path:
    """A folder of this test's own under the session's server root, not pytest's tmp root: a
    concurrent pytest session (as root) chmods that back to 0700, locking the servers' user out."""
    return Path(tempfile.mkdtemp(dir=pg_root))


def query(dsn: str, sql: str) -> list[tuple]:
    with contextlib.closing(psycopg2.connect(dsn, connect_timeout=5)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []


def settings_from(monkeypatch: pytest.MonkeyPatch, **environ: str) -> Settings:
    """Settings the way the service loads them, from the process environment: the session
    fixture keeps the developer's config.ini and variables out of it (tests/conftest.py)."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
def no_embedded_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No embedded DSN published yet; whatever a test publishes is undone afterwards."""
    monkeypatch.setenv(EMBEDDED_DSN_ENV, "")  # recorded, so what a test sets is removed after
    monkeypatch.delenv(EMBEDDED_DSN_ENV)
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


def test_the_dsn_names_the_socket_dir_superuser_and_password(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    assert "password" not in psycopg2.extensions.parse_dsn(server.dsn)  # none made yet
    try:
        server.start()
        params = psycopg2.extensions.parse_dsn(server.dsn)
        assert params["host"] == str(server.socket_dir)
        assert params["user"] == "postgres"
        assert params["password"] == server.password
        assert len(server.password) >= 32
    finally:
        server.stop(mode="immediate")


def server_uid(server: EmbeddedPostgres) -> int:
    return pwd.getpwnam("pgserver").pw_uid if os.geteuid() == 0 else os.geteuid()


def without_password(dsn: str) -> str:
    params = psycopg2.extensions.parse_dsn(dsn)
    params.pop("password")
    return psycopg2.extensions.make_dsn(**params)


def test_a_long_data_dir_path_works_with_a_private_socket_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedPostgres(deep)
    assert server.socket_dir != deep
    assert len(str(server.socket_dir / ".s.PGSQL.5432")) < 108
    try:
        dsn = server.start()
        assert query(dsn, "SELECT 1") == [(1,)]
        info = server.socket_dir.lstat()
        assert stat.S_ISDIR(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o700  # it was 0777: any local user got in
        assert info.st_uid == server_uid(server)
        assert (server.socket_dir / ".s.PGSQL.5432").exists()
    finally:
        server.stop(mode="immediate")


def test_a_socket_folder_left_open_by_an_older_version_is_closed(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / ("d" * 60) / ("e" * 60))
    server.socket_dir.mkdir(mode=0o777, exist_ok=True)
    server.socket_dir.chmod(0o777)
    try:
        server.start()
        assert stat.S_IMODE(server.socket_dir.stat().st_mode) == 0o700
    finally:
        server.stop(mode="immediate")


@pytest.mark.parametrize("planted", ["symlink", "foreign owner"])
def test_a_socket_folder_planted_by_someone_else_is_refused(tmp_path: Path, planted: str) -> None:
    """The folder's name under /tmp is predictable: another user may have made it first."""
    server = EmbeddedPostgres(tmp_path / ("d" * 60) / planted.replace(" ", "-") / ("f" * 50))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if planted == "foreign owner" and os.geteuid() == 0:
        server.socket_dir.mkdir(mode=0o700)
        os.chown(server.socket_dir, pwd.getpwnam("nobody").pw_uid, -1)
        expected = "belongs to uid"
    else:  # without root no folder can be given away: a symlink to one of ours instead
        server.socket_dir.symlink_to(elsewhere)
        expected = "is not a folder"
    try:
        with pytest.raises(EmbeddedError, match=expected):
            server.start()
        assert not server.is_running()
        assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700
    finally:
        server.stop(mode="immediate")
        if server.socket_dir.is_symlink():
            server.socket_dir.unlink()
        else:
            server.socket_dir.rmdir()


def test_the_data_folder_holding_the_socket_is_private(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        server.start()
        assert server.socket_dir == server.data_dir
        info = server.data_dir.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == server_uid(server)
    finally:
        server.stop(mode="immediate")


@pytest.mark.parametrize("listen_tcp", [False, True], ids=["socket", "tcp"])
def test_a_connection_without_the_password_is_refused(tmp_path: Path, listen_tcp: bool) -> None:
    port = free_port() if listen_tcp else 5432
    server = EmbeddedPostgres(tmp_path / "pg", listen_tcp=listen_tcp, port=port)
    try:
        dsn = server.start()
        with pytest.raises(psycopg2.OperationalError, match="password"):
            query(without_password(dsn), "SELECT 1")
        wrong = psycopg2.extensions.make_dsn(without_password(dsn), password="guess")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            query(wrong, "SELECT 1")
        assert query(dsn, "SELECT 1") == [(1,)]
        assert query(dsn, "SHOW password_encryption") == [("scram-sha-256",)]
        assert query(dsn, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                          "WHERE rolname = 'postgres'") == [(True,)]
    finally:
        server.stop(mode="immediate")


def test_the_password_file_is_private_and_kept_across_starts(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        server.start()
        password_file = server.data_dir / PASSWORD_FILE
        info = password_file.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_uid == server_uid(server)
        first = server.password
        server.stop()
        assert EmbeddedPostgres(tmp_path / "pg").start() == server.dsn
        assert server.password == first
        assert (server.data_dir / "pg_hba.conf").read_text() == HBA_CONF
    finally:
        server.stop(mode="immediate")


def trusting_data_dir(data_dir: Path) -> EmbeddedPostgres:
    """What an older pgrest left: a data folder made with initdb --auth=trust."""
    server = EmbeddedPostgres(data_dir)
    _, bin_path = _pgserver()
    server._prepare_permissions()
    server._run([str(bin_path / "initdb"), "-D", str(server.data_dir), "-U", "postgres",
                 "--auth=trust", "--no-sync"])
    return server


def test_a_data_dir_made_with_trust_gets_a_password_and_keeps_its_data(tmp_path: Path) -> None:
    """What an older pgrest left: initdb --auth=trust, no password file."""
    server = trusting_data_dir(tmp_path / "old")
    try:
        server._start_server()  # as the old version ran it: everyone local is trusted
        query(server.dsn, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        server.stop()
        assert server.password is None

        dsn = server.start()
        assert not server.created
        assert server.password
        assert query(dsn, "SELECT n FROM kept") == [(7,)]
        with pytest.raises(psycopg2.OperationalError, match="password"):
            query(without_password(dsn), "SELECT 1")
    finally:
        server.stop(mode="immediate")


def test_a_running_trusting_server_is_not_used_silently(tmp_path: Path) -> None:
    server = trusting_data_dir(tmp_path / "old")
    try:
        server._start_server()
        with pytest.raises(EmbeddedError, match=r"running without a password.*pg_ctl stop"):
            EmbeddedPostgres(tmp_path / "old").start()
    finally:
        server.stop(mode="immediate")


def test_the_scram_verifier_is_what_postgresql_makes(database: TestDatabase) -> None:
    """Our verifier, for a known salt, equals the one the server computes for the password."""
    with contextlib.closing(database.connect()) as conn:
        made = psycopg2.extensions.encrypt_password("s3cret", "postgres", conn, "scram-sha-256")
    iterations, salt_and_keys = made.removeprefix("SCRAM-SHA-256$").split(":", 1)
    salt = base64.b64decode(salt_and_keys.split("$")[0])
    assert iterations == "4096"
    assert scram_verifier("s3cret", salt) == made


def test_the_password_is_never_logged(
    tmp_path: Path, no_embedded_env: None, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger="swagger_server")
    settings = settings_from(monkeypatch, EMBEDDED_DATA_DIR=str(tmp_path / "pg"))
    server = start_if_needed(settings)
    try:
        assert server is not None and server.password
        assert "embedded PostgreSQL" in caplog.text
        assert server.password not in caplog.text
        assert server.password not in server.log_file.read_text()
    finally:
        if server is not None:
            server.stop(mode="immediate")


@pytest.mark.parametrize(
    "environ",
    [{"DATABASE_URL": "postgresql://app@127.0.0.1:1/none"},
     {"POSTGRES_URL": "127.0.0.1", "POSTGRES_PORT": "1"}],
    ids=["DATABASE_URL", "POSTGRES"],
)
def test_a_configured_database_is_never_touched(
    tmp_path: Path, no_embedded_env: None, environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path / "never"
    settings = settings_from(monkeypatch, **environ, EMBEDDED_DATA_DIR=str(data_dir))
    assert start_if_needed(settings) is None
    assert not data_dir.exists()
    assert EMBEDDED_DSN_ENV not in os.environ


def test_an_already_published_server_is_not_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "never"
    monkeypatch.setenv(EMBEDDED_DSN_ENV, "host=/somewhere/else")
    settings = settings_from(monkeypatch, EMBEDDED_DATA_DIR=str(data_dir))
    assert start_if_needed(settings) is None
    assert not data_dir.exists()
    assert os.environ[EMBEDDED_DSN_ENV] == "host=/somewhere/else"


def test_with_nothing_configured_it_starts_and_publishes_the_dsn(
    tmp_path: Path, no_embedded_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "pgdata"
    settings = settings_from(monkeypatch, EMBEDDED_DATA_DIR=str(data_dir))
    assert settings.database.embedded and settings.database.dsn is None

    server = start_if_needed(settings)
    try:
        assert server is not None
        assert server.data_dir == data_dir.resolve()
        assert os.environ[EMBEDDED_DSN_ENV] == server.dsn
        # Settings loaded afterwards (what the forked workers do) point at it.
        reloaded = load_settings()
        assert reloaded.database.embedded
        assert reloaded.database.dsn == server.dsn
        assert query(reloaded.database.dsn, "SELECT current_user") == [("postgres",)]
    finally:
        if server is not None:
            server.stop(mode="immediate")


def free_port() -> int:
    with socket.socket() as sock:  # a free port: bound, then released
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_listens_on_127_0_0_1_when_asked(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedPostgres(tmp_path / "pg", listen_tcp=True, port=port)
    try:
        dsn = server.start()
        params = psycopg2.extensions.parse_dsn(dsn)
        assert (params["host"], params["port"]) == ("127.0.0.1", str(port))
        assert query(dsn, "SELECT inet_server_port()") == [(port,)]
    finally:
        server.stop(mode="immediate")
