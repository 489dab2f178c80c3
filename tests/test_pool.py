"""ConnectionPool against a real PostgreSQL: keeping, waiting, timing out, discarding, healing."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg2
import psycopg2.pool
import pytest

from swagger_server.db.pool import (
    ConnectionPool,
    DatabaseUnavailable,
    PoolClosed,
    PoolError,
    PoolForkedError,
    PoolTimeout,
)
from tests.pg import TestDatabase
from tests.threads import run_concurrently

STATS_KEYS = {
    "pid", "min_size", "max_size", "size", "idle", "in_use", "waiting", "requests_total",
    "timeouts_total", "errors_total", "discarded_total", "wait_ms_total",
}


@pytest.fixture
def make_pool(database: TestDatabase) -> Iterator[Callable[..., ConnectionPool]]:
    pools: list[ConnectionPool] = []

    def make(dsn: str | None = None, **kwargs) -> ConnectionPool:
        kwargs.setdefault("application_name", f"pooltest-{uuid.uuid4().hex[:12]}")
        kwargs.setdefault("acquire_timeout", 5.0)
        pool = ConnectionPool(dsn or database.dsn, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.closeall()


def backend_pid(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def server_connections(database: TestDatabase, application_name: str) -> int:
    with contextlib.closing(database.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        )
        return cur.fetchone()[0]


def terminate(database: TestDatabase, application_name: str) -> int:
    with contextlib.closing(database.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (application_name,),
        )
        killed = cur.fetchone()[0]
    # pg_terminate_backend only signals; wait until the backends are really gone.
    deadline = time.monotonic() + 5
    while server_connections(database, application_name) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_opens_min_size_at_start_and_names_connections(make_pool, database):
    pool = make_pool(min_size=3, max_size=5)
    assert pool.stats()["size"] == 3
    assert server_connections(database, pool.application_name) == 3


def test_keeps_connections_that_psycopg2_would_close(make_pool, database):
    """The seed's ThreadedConnectionPool(1, n) closes every returned connection beyond one."""
    seed = psycopg2.pool.ThreadedConnectionPool(1, 5, database.dsn, application_name="seedpool")
    try:
        conns = [seed.getconn() for _ in range(5)]
        for conn in conns:
            seed.putconn(conn)
        assert server_connections(database, "seedpool") == 1
    finally:
        seed.closeall()

    pool = make_pool(min_size=1, max_size=5)
    conns = [pool.getconn() for _ in range(5)]
    pids = {backend_pid(conn) for conn in conns}
    for conn in conns:
        pool.putconn(conn)
    assert server_connections(database, pool.application_name) == 5
    stats = pool.stats()
    assert (stats["size"], stats["idle"], stats["in_use"]) == (5, 5, 0)
    again = [pool.getconn() for _ in range(5)]
    assert {backend_pid(conn) for conn in again} == pids  # reused, not reopened
    assert pool.stats()["opened_total"] == 5


def test_waits_for_a_returned_connection(make_pool):
    pool = make_pool(min_size=0, max_size=1)
    held = pool.getconn()
    got: list[float] = []

    def waiter() -> None:
        start = time.monotonic()
        conn = pool.getconn(timeout=5)
        got.append(time.monotonic() - start)
        pool.putconn(conn)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert wait_until(lambda: pool.stats()["waiting"] == 1)
    time.sleep(0.3)
    pool.putconn(held)
    thread.join(5)
    assert got and got[0] >= 0.25
    stats = pool.stats()
    assert stats["waiting"] == 0 and stats["timeouts_total"] == 0
    assert stats["wait_ms_total"] >= 250


def test_times_out_with_a_named_error(make_pool):
    pool = make_pool(min_size=0, max_size=1)
    held = pool.getconn()
    start = time.monotonic()
    with pytest.raises(PoolTimeout, match=r"within 0\.2s"):
        pool.getconn(timeout=0.2)
    assert 0.15 <= time.monotonic() - start < 2
    assert pool.stats()["timeouts_total"] == 1
    assert pool.stats()["waiting"] == 0
    pool.putconn(held)
    pool.putconn(pool.getconn(timeout=0.2))  # the pool still works after a timeout


def test_waiters_are_served_in_arrival_order(make_pool):
    pool = make_pool(min_size=0, max_size=1)
    held = pool.getconn()
    order: list[int] = []

    def waiter(i: int) -> None:
        conn = pool.getconn(timeout=10)
        order.append(i)
        pool.putconn(conn)

    threads = []
    for i in range(6):
        thread = threading.Thread(target=waiter, args=(i,))
        thread.start()
        threads.append(thread)
        assert wait_until(lambda n=i + 1: pool.stats()["waiting"] == n)
    pool.putconn(held)
    for thread in threads:
        thread.join(10)
    assert order == list(range(6))


def test_a_newcomer_does_not_overtake_a_waiter(make_pool):
    pool = make_pool(min_size=0, max_size=1)
    held = pool.getconn()
    served: list[str] = []

    def waiter() -> None:
        conn = pool.getconn(timeout=5)
        served.append("waiter")
        time.sleep(0.2)
        pool.putconn(conn)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert wait_until(lambda: pool.stats()["waiting"] == 1)
    pool.putconn(held)  # handed straight to the waiter...
    conn = pool.getconn(timeout=5)  # ...so the newcomer waits its turn
    served.append("newcomer")
    pool.putconn(conn)
    thread.join(5)
    assert served == ["waiter", "newcomer"]


def test_rolls_back_on_return_and_keeps_the_connection(make_pool):
    pool = make_pool(min_size=0, max_size=1)
    conn = pool.getconn()
    pid = backend_pid(conn)  # opens a transaction (autocommit off)
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    pool.putconn(conn)
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE

    conn = pool.getconn()
    with pytest.raises(psycopg2.errors.DivisionByZero), conn.cursor() as cur:
        cur.execute("SELECT 1/0")
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INERROR
    pool.putconn(conn)
    conn = pool.getconn()
    assert backend_pid(conn) == pid  # same connection, usable again
    pool.putconn(conn)
    assert pool.stats()["discarded_total"] == 0


def test_uncommitted_work_is_not_visible_after_return(make_pool, database):
    table = f"t_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(database.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (x int)")
    try:
        pool = make_pool(min_size=0, max_size=1)
        conn = pool.getconn()
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ WRITE")
            cur.execute(f"INSERT INTO {table} VALUES (1)")
        pool.putconn(conn)  # never committed
        with contextlib.closing(database.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            assert cur.fetchone()[0] == 0
    finally:
        with contextlib.closing(database.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"DROP TABLE {table}")


def test_discards_a_closed_connection_and_frees_its_slot(make_pool):
    pool = make_pool(min_size=0, max_size=1)
    conn = pool.getconn()
    conn.close()
    pool.putconn(conn)
    stats = pool.stats()
    assert (stats["size"], stats["discarded_total"]) == (0, 1)
    fresh = pool.getconn(timeout=1)  # the slot is free again
    assert backend_pid(fresh) > 0
    pool.putconn(fresh)


def test_put_close_true_discards(make_pool):
    pool = make_pool(min_size=0, max_size=2)
    conn = pool.getconn()
    pool.putconn(conn, close=True)
    assert conn.closed and pool.stats()["size"] == 0


def test_rejects_a_connection_it_did_not_hand_out(make_pool, database):
    pool = make_pool(min_size=0, max_size=1)
    stranger = psycopg2.connect(database.dsn)
    try:
        with pytest.raises(PoolError, match="unkeyed"):
            pool.putconn(stranger)
    finally:
        stranger.close()


def test_replaces_idle_connections_whose_backends_were_terminated(make_pool, database):
    # check_after_idle is long: only the free readable-socket check can notice.
    pool = make_pool(min_size=3, max_size=3, check_after_idle=3600)
    assert terminate(database, pool.application_name) == 3
    conns = [pool.getconn(timeout=5) for _ in range(3)]
    assert all(backend_pid(conn) > 0 for conn in conns)
    for conn in conns:
        pool.putconn(conn)
    stats = pool.stats()
    assert stats["discarded_total"] == 3 and stats["size"] == 3


def test_one_dead_connection_gets_the_other_idle_ones_tested_in_the_background(
    make_pool, database
):
    # No periodic maintenance and no idle checks: only the wake-up from the dead checkout.
    pool = make_pool(min_size=3, max_size=3, check_after_idle=3600, maintenance_interval=3600)
    terminate(database, pool.application_name)
    conn = pool.getconn(timeout=5)
    pool.putconn(conn)
    # The two other dead ones are found and replaced without any further checkout.
    assert wait_until(lambda: pool.stats()["discarded_total"] == 3)
    assert wait_until(lambda: pool.stats()["size"] == 3)
    assert wait_until(lambda: server_connections(database, pool.application_name) == 3)


def test_pings_connections_idle_longer_than_check_after_idle(make_pool, database):
    pool = make_pool(min_size=1, max_size=1, check_after_idle=0)
    conn = pool.getconn()
    pid = backend_pid(conn)
    pool.putconn(conn)
    conn = pool.getconn()
    assert backend_pid(conn) == pid  # a successful ping keeps it
    pool.putconn(conn)
    terminate(database, pool.application_name)
    conn = pool.getconn()
    assert backend_pid(conn) != pid
    pool.putconn(conn)
    assert pool.stats()["discarded_total"] == 1


def getconn_when_back(pool: ConnectionPool, within: float = 2.0):
    """While down, the pool refuses at once between attempts: the database is back for it
    within a second (the retry delay after a refused connection, plus margin)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return pool.getconn(timeout=1)
        except DatabaseUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_survives_a_database_restart(make_pool, private_server):
    pool = make_pool(private_server.dsn, min_size=2, max_size=4, check_after_idle=3600)
    conns = [pool.getconn() for _ in range(4)]
    for conn in conns:
        pool.putconn(conn)
    private_server.server.stop(mode="fast")
    with pytest.raises(DatabaseUnavailable):
        pool.getconn(timeout=3)
    private_server.server.start()
    conn = getconn_when_back(pool)
    assert backend_pid(conn) > 0
    pool.putconn(conn)
    assert pool.stats()["errors_total"] >= 1


def test_starts_while_the_database_is_down_and_fails_fast(make_pool, private_server):
    private_server.server.stop(mode="fast")
    pool = make_pool(private_server.dsn, min_size=2, max_size=2)
    assert pool.stats()["size"] == 0
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        pool.getconn(timeout=3)
    assert time.monotonic() - start < 3
    stats = pool.stats()
    assert stats["size"] == 0 and stats["errors_total"] >= 1
    private_server.server.start()
    pool.putconn(getconn_when_back(pool))


def test_fills_back_to_min_size_in_the_background(make_pool, database):
    pool = make_pool(min_size=2, max_size=4, maintenance_interval=0.05)
    conns = [pool.getconn() for _ in range(2)]
    for conn in conns:
        pool.putconn(conn, close=True)
    assert wait_until(lambda: pool.stats()["size"] == 2)
    assert wait_until(lambda: server_connections(database, pool.application_name) == 2)


def test_retires_connections_after_max_lifetime_with_jitter(make_pool):
    pool = make_pool(min_size=0, max_size=8, max_lifetime=1.0, maintenance_interval=3600)
    conns = [pool.getconn() for _ in range(8)]
    pids = {backend_pid(conn) for conn in conns}
    expiries = [pool._in_use[id(conn)].expires - pool._in_use[id(conn)].created for conn in conns]
    assert all(0.9 <= e <= 1.0 for e in expiries)
    assert len({round(e, 6) for e in expiries}) > 1  # jittered, not all at once
    for conn in conns:
        pool.putconn(conn)
    time.sleep(1.05)
    conn = pool.getconn()
    assert backend_pid(conn) not in pids
    pool.putconn(conn)


def test_closes_idle_connections_beyond_min_size_after_max_idle(make_pool, database):
    pool = make_pool(min_size=1, max_size=4, max_idle=0.3, maintenance_interval=0.05)
    conns = [pool.getconn() for _ in range(4)]
    for conn in conns:
        pool.putconn(conn)
    assert pool.stats()["idle"] == 4  # not closed on return
    assert wait_until(lambda: pool.stats()["size"] == 1, timeout=5)
    assert wait_until(lambda: server_connections(database, pool.application_name) == 1)


def test_refuses_to_hand_out_connections_in_another_process(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    parent_pid = backend_pid(conn)
    pool.putconn(conn)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            pool.getconn()
        except PoolForkedError:
            code = 0
        except BaseException:
            code = 2
        pool.closeall()  # must not close the parent's sockets
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    conn = pool.getconn()
    assert backend_pid(conn) == parent_pid  # the child did not kill the parent's connection
    pool.putconn(conn)


def test_closeall_wakes_waiters(make_pool):
    pool = make_pool(min_size=0, max_size=1)
    held = pool.getconn()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.getconn(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert wait_until(lambda: pool.stats()["waiting"] == 1)
    pool.closeall()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], PoolClosed)
    pool.putconn(held)  # returning after close just closes it
    assert held.closed
    with pytest.raises(PoolClosed):
        pool.getconn()


def test_closeall_cancels_a_statement_still_running(make_pool, database):
    """Without cancel(), close() waits for the running statement (psycopg2 holds the
    connection's lock): a worker's exit would wait out a long query, past gunicorn's SIGKILL."""
    pool = make_pool(min_size=0, max_size=1)
    conn = pool.getconn()
    outcome: list[BaseException | None] = []

    def long_query() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(60)")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=long_query, daemon=True)
    thread.start()
    name = pool.application_name
    assert wait_until(lambda: _active_sleeps(database, name) == 1, timeout=10)
    closer = threading.Thread(target=pool.closeall, daemon=True)
    closer.start()
    closer.join(20)  # the query would run 60 s
    assert not closer.is_alive(), "closeall() waited for the running statement"
    thread.join(5)
    assert outcome and isinstance(outcome[0], psycopg2.Error)
    assert conn.closed


def _active_sleeps(database: TestDatabase, application_name: str) -> int:
    with contextlib.closing(database.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'",
                    (application_name,))
        return cur.fetchone()[0]


def test_stats_report_what_the_pool_does(make_pool):
    pool = make_pool(min_size=1, max_size=2)
    stats = pool.stats()
    assert set(stats) >= STATS_KEYS
    assert stats["pid"] == os.getpid()
    assert (stats["min_size"], stats["max_size"], stats["size"], stats["idle"]) == (1, 2, 1, 1)
    a, b = pool.getconn(), pool.getconn()
    stats = pool.stats()
    assert (stats["size"], stats["idle"], stats["in_use"], stats["requests_total"]) == (2, 0, 2, 2)
    pool.putconn(a)
    pool.putconn(b)
    assert pool.stats()["in_use"] == 0


def test_many_threads_share_a_small_pool(make_pool, database):
    pool = make_pool(min_size=1, max_size=3, acquire_timeout=30)
    threads_n, rounds = 40, 25
    errors: list[BaseException] = []
    peak = [0]
    lock = threading.Lock()

    def work() -> None:
        try:
            for _ in range(rounds):
                with pool.connection() as conn, conn.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    cur.fetchone()
                    with lock:
                        peak[0] = max(peak[0], pool.stats()["in_use"])
        except BaseException as exc:
            errors.append(exc)

    run_concurrently(work, threads_n, timeout=60)
    assert not errors
    stats = pool.stats()
    assert stats["requests_total"] == threads_n * rounds
    assert stats["timeouts_total"] == 0 and stats["in_use"] == 0 and stats["waiting"] == 0
    assert stats["size"] <= 3 and peak[0] <= 3
    assert stats["opened_total"] <= 3  # kept and reused, never reopened
    assert server_connections(database, pool.application_name) <= 3


def test_timeouts_under_contention_leave_the_pool_consistent(make_pool):
    pool = make_pool(min_size=0, max_size=2)
    outcomes: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            with pool.connection(timeout=0.05) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.1)")
            result = "ok"
        except PoolTimeout:
            result = "timeout"
        with lock:
            outcomes.append(result)

    run_concurrently(work, 20)
    assert len(outcomes) == 20
    assert "ok" in outcomes and "timeout" in outcomes
    stats = pool.stats()
    assert stats["timeouts_total"] == outcomes.count("timeout")
    assert (stats["in_use"], stats["waiting"]) == (0, 0) and stats["size"] <= 2


def test_unreachable_database_fails_within_the_acquire_timeout(make_pool):
    # A port nothing listens on: connection refused at once, a named error, no hang.
    pool = make_pool("host=127.0.0.1 port=9 dbname=x user=x", min_size=1, max_size=1)
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        pool.getconn(timeout=2)
    assert time.monotonic() - start < 3


def test_an_expired_connection_is_replaced_without_suspecting_the_others(make_pool):
    pool = make_pool(min_size=0, max_size=2, max_lifetime=0.3, maintenance_interval=3600)
    conn = pool.getconn()
    old = backend_pid(conn)
    pool.putconn(conn)
    time.sleep(0.35)
    conn = pool.getconn()
    assert backend_pid(conn) != old
    pool.putconn(conn)
    # Age is not death: not counted as discarded, nothing made suspect.
    assert pool.stats()["discarded_total"] == 0
    assert pool._suspect_before == 0.0


def test_a_failing_configure_callback_leaves_no_connection_open(make_pool, database):
    def configure(conn):
        raise RuntimeError("configure failed")

    pool = make_pool(min_size=0, max_size=1, configure=configure)
    with pytest.raises(RuntimeError, match="configure failed"):
        pool.getconn(timeout=2)
    assert wait_until(lambda: server_connections(database, pool.application_name) == 0)
    assert pool.stats()["size"] == 0


# ---------------------------------------------------------------------- leak detection

def take_and_keep(pool: ConnectionPool, **kwargs):
    return pool.getconn(**kwargs)


def leak_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING" and "LEAK_THRESHOLD" in r.getMessage()]


def test_a_checkout_held_past_the_leak_threshold_warns_once_with_its_stack(make_pool, caplog):
    caplog.set_level(logging.WARNING, logger="swagger_server.db.watchdog")
    pool = make_pool(min_size=1, max_size=2, leak_threshold=0.3, watch_interval=0.05)
    conn = take_and_keep(pool)
    assert wait_until(lambda: leak_warnings(caplog), timeout=5)
    time.sleep(0.5)  # many more watchdog rounds: still one warning for this checkout
    warnings = leak_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "take_and_keep" in warnings[0], "the stack where the connection was taken"
    pool.putconn(conn)
    pool.putconn(take_and_keep(pool))  # a short checkout: no warning
    time.sleep(0.5)
    assert len(leak_warnings(caplog)) == 1
    conn = take_and_keep(pool)  # a new checkout held too long: its own warning
    assert wait_until(lambda: len(leak_warnings(caplog)) == 2, timeout=5)
    pool.putconn(conn)


def test_opening_a_connection_keeps_watching_the_other_checkouts(make_pool, caplog):
    """A checkout taken from the idle ones, then another that opens a new connection: the
    first is still watched (its leak warning comes), not forgotten when the second connects."""
    caplog.set_level(logging.WARNING, logger="swagger_server.db.watchdog")
    pool = make_pool(min_size=1, max_size=2, leak_threshold=0.3, watch_interval=0.05)
    held = take_and_keep(pool)  # the idle connection min_size opened
    pool.putconn(pool.getconn())  # a second connection opened meanwhile, given back at once
    assert pool.stats()["opened_total"] == 2
    assert wait_until(lambda: leak_warnings(caplog), timeout=5)
    pool.putconn(held)


def test_a_long_lived_checkout_is_not_a_leak(make_pool, caplog):
    caplog.set_level(logging.WARNING, logger="swagger_server.db.watchdog")
    pool = make_pool(min_size=1, max_size=2, leak_threshold=0.2, watch_interval=0.05)
    export = take_and_keep(pool, long_lived=True)
    time.sleep(0.8)
    assert leak_warnings(caplog) == []
    leaked = take_and_keep(pool)  # the same watchdog does warn about an ordinary one
    assert wait_until(lambda: leak_warnings(caplog), timeout=5)
    pool.putconn(export)
    pool.putconn(leaked)


def test_leak_detection_off_by_default_captures_no_stack(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    assert pool.leak_threshold == 0
    conn = pool.getconn()
    assert pool.checkouts == {}, "nothing is watched, no stack captured"
    pool.putconn(conn)
