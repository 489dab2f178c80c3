"""End to end: what the gunicorn master does with the configuration (issue 6, items 11, 12, 15,
18, 22): one settings object inherited by every worker, one random cursor key shared by them,
start-up warnings logged once by the master, start-up errors that hide the password.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swagger_server.config import PROJECT_ROOT
from swagger_server.data import cursors
from tests.pg import TestDatabase, seeded_database
from tests.server import GunicornServer, free_port, wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "Sup3r-s3cret!pw"
SCHEMA = """
CREATE TABLE t (id integer PRIMARY KEY, label text NOT NULL);
INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 40) g;
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "e2e_config", SCHEMA)


# --- one master, two workers, no CURSOR_SECRET, a misspelt variable, pools too big -------------

WORKERS = 2
TOO_BIG = 1000  # POOL_MAX_SIZE: 2 x 1000 connections fit no default max_connections


@pytest.fixture(scope="module")
def server(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    env = {
        "DATABASE_URL": dsn,
        "SERVER_WORKERS": str(WORKERS),
        "POOL_MAX_SIZE": str(TOO_BIG),
        "POOL_MAXSIZE": "20",  # misspelt
        "POSTGRES_PASSWORD": PASSWORD,  # the postgres image's name, not ours
    }
    with GunicornServer(tmp_path_factory.mktemp("gunicorn-config"), env) as started:
        yield started


def requests_per_worker(server: GunicornServer) -> dict[int, int]:
    """``requests_total`` (connections taken) of each worker, read through ``/pool``."""
    return {pid: stats["requests_total"]
            for pid, stats in server.distinct_pool_pids(WORKERS).items()}


def until_both_workers_served(server: GunicornServer, path: str) -> list[dict[str, Any]]:
    """GET ``path`` on new connections until each worker has answered some of them."""
    before = requests_per_worker(server)
    assert len(before) == WORKERS
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for _ in range(10):
            resp = server.get(path)
            assert resp.status == 200, resp.body
            bodies.append(resp.json())
        after = requests_per_worker(server)
        if all(after[pid] > before[pid] for pid in before):
            return bodies
    raise AssertionError(f"one worker answered everything: {before} -> {after}")


def test_every_worker_accepts_the_cursors_of_the_others(server: GunicornServer) -> None:
    # The same first page from both workers: one key, so one and the same cursor.
    pages = until_both_workers_served(server, "/tables/t/rows?limit=5")
    issued = {page["next_cursor"] for page in pages}
    assert len(issued) == 1, "the workers sign with different keys"
    cursor = issued.pop()
    # And that cursor is honoured by both workers.
    second = until_both_workers_served(server, f"/tables/t/rows?limit=5&cursor={cursor}")
    assert {tuple(row["id"] for row in page["data"]) for page in second} == {(6, 7, 8, 9, 10)}


def test_the_master_warns_once_that_cursors_will_not_survive_a_restart(
    server: GunicornServer,
) -> None:
    assert server.stderr().count(cursors.RANDOM_KEY_WARNING) == 1


def test_the_master_warns_once_about_variables_that_match_no_key(server: GunicornServer) -> None:
    log = server.stderr()
    assert log.count("environment variable POOL_MAXSIZE matches no setting") == 1
    assert "did you mean POOL_MAX_SIZE?" in log
    assert "POSTGRES_PASSWORD matches no setting and is ignored (did you mean POSTGRES_PW?)" in log
    assert PASSWORD not in log


def test_the_master_warns_when_the_pools_exceed_max_connections(server: GunicornServer) -> None:
    log = server.stderr()
    needed = WORKERS * (TOO_BIG + 1)  # each worker's pool and its schema-reload listener
    assert log.count(f"{WORKERS} workers x (POOL_MAX_SIZE {TOO_BIG} + 1 schema-reload "
                     f"listener) = {needed}") == 1
    assert "max_connections" in log


def _admitted(dsn: str) -> int:
    import contextlib

    import psycopg2

    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('max_connections')::int "
                    "- current_setting('superuser_reserved_connections')::int "
                    "- coalesce(current_setting('reserved_connections', true), '0')::int")
        return cur.fetchone()[0]


@pytest.mark.parametrize("channel", ["pgrest", ""])
def test_the_budget_counts_each_workers_listener(dsn: str, tmp_path: Path, channel: str) -> None:
    """Pools that fill the budget exactly fit, until each worker's listener connection (one
    more per worker, outside its pool) is counted; without a listener they fit."""
    max_size = _admitted(dsn) // WORKERS  # WORKERS x max_size <= admitted < WORKERS x (+1)
    env = {"DATABASE_URL": dsn, "SERVER_WORKERS": str(WORKERS), "POOL_MIN_SIZE": "0",
           "POOL_MAX_SIZE": str(max_size), "API_RELOAD_CHANNEL": channel}
    with GunicornServer(tmp_path, env) as server:
        log = server.stderr()
    warned = "schema-reload listener) = " in log and "max_connections" in log
    assert warned == bool(channel), log[-2000:]


def test_the_check_leaves_no_connection_behind(server: GunicornServer, dsn: str) -> None:
    import contextlib

    import psycopg2

    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'pgrest start-up check'")
        assert cur.fetchone()[0] == 0


# --- one settings object per process (item 18) -------------------------------------------------

def test_a_restarted_worker_uses_the_masters_settings_not_a_changed_file(
    dsn: str, tmp_path: Path
) -> None:
    config = tmp_path / "pgrest.ini"
    config.write_text("[API]\nDEFAULT_LIMIT = 3\nMAX_ROWS = 20\n")
    env = {"DATABASE_URL": dsn, "SERVER_WORKERS": "1", "APP_CONFIG": str(config)}
    with GunicornServer(tmp_path / "gunicorn", env) as server:
        assert len(server.get("/tables/t/rows").json()["data"]) == 3
        # Edited while the master runs: only a restart of the master may pick this up.
        config.write_text("[API]\nDEFAULT_LIMIT = 2\nMAX_ROWS = 5\n")
        [old] = server.worker_pids()
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: server.worker_pids() not in ([], [old]), 30), server.stderr()
        [new] = server.worker_pids()
        assert new != old
        assert len(server.get("/tables/t/rows").json()["data"]) == 3
        assert server.get("/tables/t/rows?limit=20").status == 200
        assert server.get("/pool").json()["pid"] == new


# --- start-up errors name the key and hide the password (items 11, 15) -------------------------

@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": f"postgresql://app:{PASSWORD}@db.invalid:54x2/shop"},
         "configuration error: DATABASE_URL: the port"),
        ({"POSTGRES_URL": f"postgresql://app:{PASSWORD}@db.invalid/shop"},
         "configuration error: POSTGRES_URL: is a host name"),
        ({"POOL_STATEMENT_TIMEOUT": "9999999999"},
         "configuration error: POOL_STATEMENT_TIMEOUT: must be between 0 and 2147483647"),
    ],
)
def test_a_bad_setting_stops_the_start_with_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    server = GunicornServer(tmp_path, env)
    process = server.launch()
    try:
        assert process.wait(30) != 0
    finally:
        server.kill()
    err = server.stderr()
    assert expected in err, err
    assert PASSWORD not in err
    assert "Traceback" not in err


def test_python_wsgi_py_warns_about_the_same_things(dsn: str, tmp_path: Path) -> None:
    """The development entry point: the same warnings, once, and the same key for its app."""
    port = free_port()
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("POOL_", "SERVER_", "API_", "CORS_", "EMBEDDED_", "POSTGRES_"))}
    env = {**base, "APP_CONFIG": str(empty), "DATABASE_URL": dsn,
           "SERVER_BIND": f"127.0.0.1:{port}", "API_MAXROWS": "5", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "wsgi.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "wsgi.py"], cwd=PROJECT_ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        assert wait_for(lambda: "Uvicorn running" in log.read_text(errors="replace")
                        or process.poll() is not None, 30), log.read_text()
        from tests.server import http_get

        first = http_get(port, "/tables/t/rows?limit=5").json()
        page = http_get(port, f"/tables/t/rows?limit=5&cursor={first['next_cursor']}")
        assert page.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    text = log.read_text(errors="replace")
    assert text.count(cursors.RANDOM_KEY_WARNING) == 1
    assert text.count("API_MAXROWS matches no setting") == 1
    assert "did you mean API_MAX_ROWS?" in text
