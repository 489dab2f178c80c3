"""swagger_server/db/transaction.py on real PostgreSQL, directly and through a real PgBouncer in
transaction mode: a statement that is a whole transaction (``execute_alone``) costs one round trip
and keeps everything a transaction with ``BEGIN READ ONLY`` guaranteed (read-only, the preamble's
settings for it alone); inside an open transaction, or on a writable connection, it is a plain
``execute``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2.extensions import TRANSACTION_STATUS_IDLE, TRANSACTION_STATUS_INTRANS

from swagger_server import db
from swagger_server.db.pool import ConnectionPool
from swagger_server.db.transaction import PreambleBinding
from tests.conftest import make_settings
from tests.pg import TestDatabase, seeded_database
from tests.proxy import FaultProxy, dsn_via, upstream_from_dsn

SCHEMA = "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);"


@pytest.fixture(scope="module")
def notes_dsn(database: TestDatabase) -> str:
    return seeded_database(database, "transaction", SCHEMA)


@pytest.fixture
def pool_for(route: Callable[[str], tuple[str, dict[str, Any]]],
             notes_dsn: str) -> Iterator[Callable[..., ConnectionPool]]:
    """``pool_for()``: the service's pool (as create_pool makes it) on this module's database,
    directly or through PgBouncer, one connection."""
    made: list[ConnectionPool] = []

    def make() -> ConnectionPool:
        routed, database = route(notes_dsn)
        pool = db.create_pool(make_settings(routed, database=database,
                                            pool={"min_size": 1, "max_size": 1}))
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.closeall()


def _idle_read_only(conn: Any) -> None:
    """What the pool expects of a connection between transactions (db/transaction.py)."""
    assert conn.info.transaction_status == TRANSACTION_STATUS_IDLE
    assert conn.autocommit is False
    assert conn.readonly is True


def test_a_whole_transaction_is_one_round_trip(route, notes_dsn: str) -> None:
    """Counted by a proxy (in front of PostgreSQL, or of PgBouncer): execute_alone sends one
    message per statement and the pool's return sends nothing; execute() costs BEGIN, the
    statement and the ROLLBACK on return."""
    routed, database = route(notes_dsn)
    with FaultProxy(upstream_from_dsn(routed)) as proxy:
        pool = db.create_pool(make_settings(dsn_via(routed, proxy.port), database=database,
                                            pool={"min_size": 1, "max_size": 1}))

        def sends(run: Callable[[Any], None]) -> int:
            before = proxy.sends_total
            for _ in range(5):
                with pool.connection() as conn, conn.cursor() as cur:
                    run(cur)
                    assert cur.fetchone() == (1,)
            return proxy.sends_total - before

        try:
            assert sends(lambda cur: cur.execute_alone("SELECT 1")) == 5
            assert sends(lambda cur: cur.execute("SELECT 1")) == 5 * 3
        finally:
            pool.closeall()


def test_it_is_read_only(pool_for) -> None:
    """Behind PgBouncer no session default makes it so: the message's own SET TRANSACTION."""
    with pool_for().connection() as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute_alone("INSERT INTO notes (body) VALUES ('no')")
        _idle_read_only(conn)
        cur.execute_alone("SELECT current_setting('transaction_read_only')")
        assert cur.fetchone() == ("on",)


def test_the_preamble_holds_for_the_statement_and_ends_with_it(pool_for) -> None:
    pool = pool_for()
    with pool.connection() as conn:
        conn.cursor_factory = PreambleBinding.of_settings([("pgrest.test", "alone")])
        with conn.cursor() as cur:
            cur.execute_alone("SELECT current_setting('pgrest.test', true)")
            assert cur.fetchone() == ("alone",)
        _idle_read_only(conn)
        with conn.cursor() as plain:  # no preamble: the setting ended with its transaction
            psycopg2.extensions.cursor.execute(plain, "SELECT current_setting('pgrest.test', true)")
            assert plain.fetchone()[0] in (None, "")


def test_an_error_leaves_the_connection_as_the_pool_expects(pool_for) -> None:
    pool = pool_for()
    with pool.connection() as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.DivisionByZero):
            cur.execute_alone("SELECT 1 / 0")
        _idle_read_only(conn)
        cur.execute("SELECT 2")  # an ordinary transaction opens again
        assert cur.fetchone() == (2,)
        assert conn.info.transaction_status == TRANSACTION_STATUS_INTRANS
    assert pool.stats()["size"] == 1  # kept, not discarded


def test_inside_an_open_transaction_it_joins_it(pool_for) -> None:
    with pool_for().connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT txid_current()")
        first = cur.fetchone()[0]
        cur.execute_alone("SELECT txid_current()")
        assert cur.fetchone()[0] == first
        assert conn.info.transaction_status == TRANSACTION_STATUS_INTRANS


def test_a_writable_connection_commits_nothing_by_itself(pool_for, notes_dsn: str) -> None:
    """get_db(readonly=False) promises "commit yourself": execute_alone is a plain execute
    there, so what is not committed is rolled back on return."""
    pool = pool_for()
    with pool.connection() as conn:
        conn.readonly = False
        with conn.cursor() as cur:
            cur.execute_alone("INSERT INTO notes (body) VALUES ('uncommitted')")
            assert conn.info.transaction_status == TRANSACTION_STATUS_INTRANS
    with psycopg2.connect(notes_dsn) as check, check.cursor() as cur:
        cur.execute("SELECT count(*) FROM notes WHERE body = 'uncommitted'")
        assert cur.fetchone() == (0,)
    check.close()
