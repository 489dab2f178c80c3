"""A database peer that vanishes without a word (no FIN, no RST, no ACK), in a network namespace:
the connection parameters the pool sets (db.py: ``tcp_user_timeout``, keepalives) end a
statement in flight within ``tcp_user_timeout`` instead of TCP's ~15 minutes of retransmissions.
The statement deadline (watchdog) is off here (``STATEMENT_TIMEOUT=0``), so only TCP acts.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import psycopg2
import pytest

from swagger_server import db
from tests.conftest import make_settings
from tests.netns import Namespace, namespace
from tests.pg import TestDatabase
from tests.proxy import dsn_via, upstream_from_dsn

pytestmark = pytest.mark.faults


@pytest.fixture
def link() -> Iterator[Namespace]:
    with namespace() as ns:
        yield ns


@pytest.fixture
def ns_dsn(link: Namespace, database: TestDatabase) -> Iterator[str]:
    """The test database, reached over TCP at the namespace's address (a forwarder runs in the
    namespace, to the database's Unix socket: paths are not namespaced)."""
    upstream = upstream_from_dsn(database.dsn)
    assert isinstance(upstream, str), "the embedded server listens on a Unix socket"
    forwarder = link.popen(sys.executable, "-m", "tests.proxy", link.ns_ip, upstream)
    try:
        assert forwarder.stdout is not None
        port = int(forwarder.stdout.readline())
        yield dsn_via(database.dsn, port, host=link.ns_ip)
    finally:
        assert forwarder.stdin is not None
        forwarder.stdin.close()  # it stops when its stdin closes
        try:
            forwarder.wait(timeout=10)
        except Exception:
            forwarder.kill()
            forwarder.wait(timeout=5)


def test_a_vanished_peer_ends_the_statement_within_tcp_user_timeout(
    link: Namespace, ns_dsn: str
) -> None:
    user_timeout = db._TCP_DEFAULTS["tcp_user_timeout"] / 1000
    settings = make_settings(ns_dsn, pool={"statement_timeout": 0, "min_size": 1,
                                           "max_size": 1})
    pool = db.create_pool(settings)
    try:
        conn = pool.getconn()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        link.drop_replies()
        failure: list[BaseException] = []

        def statement() -> None:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            except BaseException as exc:
                failure.append(exc)

        started = time.monotonic()
        runner = threading.Thread(target=statement, daemon=True)
        runner.start()
        runner.join(timeout=user_timeout + 15)
        elapsed = time.monotonic() - started
        assert not runner.is_alive(), f"the statement still hangs after {elapsed:.0f}s"
        assert failure and isinstance(failure[0], psycopg2.OperationalError), failure
        print(f"vanished peer: statement failed after {elapsed:.1f}s "
              f"(tcp_user_timeout {user_timeout:g}s)")
        assert user_timeout * 0.8 <= elapsed <= user_timeout + 10

        pool.putconn(conn)
        assert pool.stats()["discarded_total"] == 1
        link.restore()
        with pool.connection(timeout=10) as again, again.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        link.restore()  # first: a statement still hanging would hold closeall() up
        pool.closeall()
