"""get_db(readonly=False): how a hand-written endpoint writes, on real PostgreSQL.

Every transaction begins ``READ ONLY`` (psycopg2's ``readonly``); ``get_db(readonly=False)``
makes the request's transactions READ WRITE, the endpoint commits, and the pool makes the
connection read-only again when the request gives it back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import flask
import psycopg2
import psycopg2.errors
import pytest

from swagger_server import db
from tests.conftest import make_settings
from tests.pg import TestDatabase, seeded_database

SCHEMA = "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);"
INSERT = "INSERT INTO notes (body) VALUES (%s)"


@pytest.fixture(scope="module")
def notes_dsn(database: TestDatabase) -> str:
    return seeded_database(database, "writable", SCHEMA)


@pytest.fixture
def app(notes_dsn: str) -> Iterator[flask.Flask]:
    """A Flask app wired as create_app wires it, on a pool of one connection."""
    db.close_pool()
    app = flask.Flask(__name__)
    app.config["SETTINGS"] = make_settings(notes_dsn, pool={"min_size": 1, "max_size": 1})
    db.init_app(app)
    yield app
    db.close_pool()


def stored(dsn: str, body: str) -> int:
    """Rows with this body, seen from another session (so only committed ones)."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM notes WHERE body = %s", (body,))
        return cur.fetchone()[0]


def test_a_committed_write_persists(app: flask.Flask, notes_dsn: str) -> None:
    with app.app_context():  # one request: teardown_appcontext gives the connection back
        conn = db.get_db(readonly=False)
        with conn, conn.cursor() as cur:  # `with conn`: commit on success, rollback on error
            cur.execute(INSERT, ("committed",))
    assert stored(notes_dsn, "committed") == 1


def test_a_write_through_plain_get_db_is_refused(app: flask.Flask, notes_dsn: str) -> None:
    refused_write = pytest.raises(psycopg2.errors.ReadOnlySqlTransaction)
    with app.app_context(), refused_write as refused, db.get_db().cursor() as cur:
        cur.execute(INSERT, ("refused",))
    assert refused.value.pgcode == "25006"
    assert stored(notes_dsn, "refused") == 0


def test_the_next_request_on_the_same_connection_is_read_only_again(app: flask.Flask) -> None:
    with app.app_context():
        writable = db.get_db(readonly=False)
        with writable.cursor() as cur:
            cur.execute("SHOW transaction_read_only")
            assert cur.fetchone()[0] == "off"
        writable.commit()
    with app.app_context():
        conn = db.get_db()
        assert conn is writable  # a pool of one: the very same connection
        with conn.cursor() as cur:
            cur.execute("SHOW transaction_read_only")
            assert cur.fetchone()[0] == "on"
            with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
                cur.execute(INSERT, ("after a writable request",))


def test_an_uncommitted_write_is_rolled_back(app: flask.Flask, notes_dsn: str) -> None:
    with app.app_context(), db.get_db(readonly=False).cursor() as cur:
        cur.execute(INSERT, ("forgotten",))
        # the endpoint returns (or fails) without commit()
    assert stored(notes_dsn, "forgotten") == 0
    with app.app_context():
        assert db.get_pool().stats()["size"] == 1  # the connection was kept, just rolled back


def test_an_error_inside_with_conn_rolls_back(app: flask.Flask, notes_dsn: str) -> None:
    with app.app_context():
        conn = db.get_db(readonly=False)
        with pytest.raises(ValueError), conn, conn.cursor() as cur:
            cur.execute(INSERT, ("half done",))
            raise ValueError("the endpoint fails after its first statement")
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert stored(notes_dsn, "half done") == 0


def test_readonly_false_after_the_first_query_says_so(app: flask.Flask) -> None:
    with app.app_context():
        with db.get_db().cursor() as cur:
            cur.execute("SELECT 1")  # a read-only transaction is open now
        with pytest.raises(RuntimeError, match="before the request's first query"):
            db.get_db(readonly=False)


def test_a_writable_autocommit_connection_is_read_only_again(app: flask.Flask) -> None:
    """In autocommit mode psycopg2 sets readonly with a session-level SET: undone too."""
    with app.app_context():
        conn = db.get_db()
        conn.autocommit = True
        conn.readonly = False  # psycopg2 sends SET default_transaction_read_only TO off
        with conn.cursor() as cur:
            cur.execute(INSERT, ("autocommitted",))
    with app.app_context(), db.get_db().cursor() as cur:
        cur.execute("SHOW transaction_read_only")
        assert cur.fetchone()[0] == "on"
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute(INSERT, ("after autocommit",))
