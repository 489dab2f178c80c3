"""swagger_server.db: one pool per process, made once under concurrency; get_db/close_db."""

from __future__ import annotations

import threading
import urllib.parse

import flask
import psycopg2
import psycopg2.extensions
import pytest

from swagger_server import config, db
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


# --- DATABASE_URL's parameters merged with the pool's (issue 6, item 13) -----------------------

def _session(pool) -> dict[str, str]:
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                    (["search_path", "statement_timeout", "transaction_read_only",
                      "application_name", "work_mem"],))
        found = dict(cur.fetchall())
        found.update({f"dsn:{k}": v for k, v in conn.get_dsn_parameters().items()})
        return found


def test_the_dsns_options_and_parameters_win_over_the_pools(database):
    dsn = psycopg2.extensions.make_dsn(
        database.dsn,
        options="-csearch_path=app,public -c statement_timeout=4321 --work-mem=7MB",
        application_name="shop-api",
        keepalives_idle="77",
        tcp_user_timeout="2345",
        connect_timeout="9",
    )
    db.close_pool()
    try:
        pool = db.init_pool(make_settings(dsn, pool={"min_size": 0, "max_size": 2}))
        session = _session(pool)
        assert pool.connect_timeout == 9.0
    finally:
        db.close_pool()
    assert session["search_path"] == "app,public"  # kept, not replaced by our options
    assert session["work_mem"] == str(7 * 1024)  # kB
    assert session["statement_timeout"] == "4321"  # the user's wins over the default 30000
    assert session["transaction_read_only"] == "on"  # ours added
    assert session["application_name"] == "shop-api"
    assert session["dsn:keepalives_idle"] == "77"
    assert session["dsn:tcp_user_timeout"] == "2345"
    assert session["dsn:keepalives_interval"] == "10"  # not given: ours


def test_options_in_a_database_url_are_kept(database):
    """The issue's case: ``?options=-csearch_path%3Dapp`` in a URL (``=`` percent-encoded)."""
    params = {**psycopg2.extensions.parse_dsn(database.dsn), "options": "-csearch_path=app",
              "application_name": "shop-api"}
    url = "postgresql://?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    assert "options=-csearch_path%3Dapp" in url
    db.close_pool()
    try:
        session = _session(db.init_pool(make_settings(url, pool={"min_size": 0})))
    finally:
        db.close_pool()
    assert (session["search_path"], session["application_name"]) == ("app", "shop-api")
    assert session["statement_timeout"] == "30000"
    assert session["transaction_read_only"] == "on"


def test_without_dsn_parameters_the_pools_defaults_apply(database):
    db.close_pool()
    try:
        pool = db.init_pool(make_settings(database.dsn, pool={"min_size": 0,
                                                              "statement_timeout": 1500}))
        session = _session(pool)
    finally:
        db.close_pool()
    assert session["statement_timeout"] == "1500"
    assert session["transaction_read_only"] == "on"
    assert session["application_name"].startswith("pgrest worker ")
    assert session["dsn:keepalives_idle"] == "30"
    assert session["dsn:tcp_user_timeout"] == "10000"


def test_read_only_stays_on_whatever_the_dsn_says(database, caplog):
    dsn = psycopg2.extensions.make_dsn(
        database.dsn, options="-c default_transaction_read_only=off -csearch_path=app"
    )
    db.close_pool()
    try:
        with caplog.at_level("WARNING", logger="swagger_server.db"):
            pool = db.init_pool(make_settings(dsn, pool={"min_size": 0}))
        session = _session(pool)
    finally:
        db.close_pool()
    assert session["transaction_read_only"] == "on"
    assert session["search_path"] == "app"
    assert "default_transaction_read_only" in caplog.text


# --- STATEMENT_TIMEOUT's bound is PostgreSQL's (item 14) ---------------------------------------

def test_the_largest_statement_timeout_config_accepts_is_one_postgresql_accepts(database):
    bound = config._KEYS["pool"][6]
    assert bound.env == "POOL_STATEMENT_TIMEOUT" and isinstance(bound.parse, config._Number)
    largest = int(bound.parse.maximum or 0)
    db.close_pool()
    try:
        pool = db.init_pool(make_settings(database.dsn, pool={"min_size": 0,
                                                              "statement_timeout": largest}))
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'")
            assert cur.fetchone()[0] == largest
    finally:
        db.close_pool()
    # One more and PostgreSQL refuses every connection: the reason config.py refuses it.
    with pytest.raises(psycopg2.OperationalError, match="statement_timeout"):
        psycopg2.connect(database.dsn, options=f"-c statement_timeout={largest + 1}").close()
    with pytest.raises(config.ConfigError, match="POOL_STATEMENT_TIMEOUT"):
        config.load_settings(environ={"POOL_STATEMENT_TIMEOUT": str(largest + 1),
                                      "APP_CONFIG": "/dev/null"})
