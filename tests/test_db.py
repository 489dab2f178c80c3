"""swagger_server.db: one pool per process, made once under concurrency; get_db/close_db."""

from __future__ import annotations

import threading

import flask
import pytest

from swagger_server import db
from tests.conftest import make_settings
from tests.threads import run_concurrently


@pytest.fixture
def settings(database):
    db.close_pool()
    yield make_settings(database.dsn, pool={"min_size": 0, "max_size": 3})
    db.close_pool()


def test_concurrent_first_use_creates_exactly_one_pool(settings):
    barrier = threading.Barrier(16)
    seen: list[int] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            barrier.wait(5)
            seen.append(id(db.get_pool(settings)))
        except BaseException as exc:
            errors.append(exc)

    run_concurrently(first_use, 16, timeout=10)
    assert not errors
    assert len(set(seen)) == 1


@pytest.fixture
def app(settings) -> flask.Flask:
    """A bare Flask app with the db integration, as create_app wires it."""
    app = flask.Flask(__name__)
    app.config["SETTINGS"] = settings
    db.init_app(app)
    return app


def test_get_db_keeps_one_connection_per_request_and_close_db_returns_it(app):
    with app.app_context():
        first = db.get_db()
        assert db.get_db() is first  # the same connection for the whole request
        assert db.get_pool().stats()["in_use"] == 1
        with first.cursor() as cur:
            cur.execute("SELECT 1")  # leaves a transaction open
    # teardown_appcontext gave it back, rolled back
    stats = db.get_pool().stats()
    assert (stats["in_use"], stats["idle"]) == (0, 1)
    assert first.info.transaction_status == 0  # TRANSACTION_STATUS_IDLE


def test_connections_are_read_only_with_the_statement_timeout(settings):
    pool = db.init_pool(settings)
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute("SHOW transaction_read_only")
        assert cur.fetchone()[0] == "on"
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "30s"
        cur.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        assert cur.fetchone()[0].startswith("pgrest worker ")


def test_init_pool_replaces_the_process_pool(settings):
    old = db.get_pool(settings)
    new = db.init_pool(settings)
    assert new is not old and old.closed and db.get_pool() is new


def test_close_db_gives_back_to_the_pool_it_came_from(app):
    with app.app_context():
        conn = db.get_db()
        old = db.get_pool()
        db.close_pool()  # e.g. worker_exit while a request thread still runs
    # Teardown neither raised nor made a new pool to return the connection to.
    assert db._pool is None
    assert old.closed and conn.closed
