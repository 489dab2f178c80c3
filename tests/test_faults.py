"""Faults between the service and PostgreSQL: killed backends, a stopped database, a cut
network, an exhausted pool. Each gunicorn test starts its own master (the faults leave state
behind) and asserts what a client sees: status, ``Retry-After``, problem+json ``type``, time.

The last tests drive :class:`ConnectionPool` directly through the proxy, without gunicorn.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest

from swagger_server.db.pool import ConnectionPool, DatabaseUnavailable
from tests.pg import TestDatabase
from tests.proxy import FaultProxy, dsn_via, upstream_from_dsn
from tests.server import (
    GunicornServer,
    Response,
    http_get,
    scratch_database,
    terminate_worker_backends,
    worker_backends,
)

pytestmark = pytest.mark.faults

PROBLEM_JSON = "application/problem+json"
DB_UNAVAILABLE = "/problems/database-unavailable"
POOL_TIMEOUT = "/problems/pool-timeout"


@pytest.fixture
def fresh_db(database: TestDatabase) -> Iterator[str]:
    with scratch_database(database, "faults") as dsn:
        yield dsn


@pytest.fixture
def proxy(fresh_db: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream_from_dsn(fresh_db)) as running:
        yield running


def assert_unavailable(resp: Response, type_: str, within: float) -> None:
    """A 503 a client can act on: problem+json of the given type, Retry-After, in time."""
    assert resp.status == 503, (resp.status, resp.body[:300])
    assert resp.content_type == PROBLEM_JSON
    body = resp.json()
    assert body["type"] == type_, body
    assert body["status"] == 503
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.elapsed <= within, f"answered in {resp.elapsed:.2f}s > {within}s"


def wait_until_ok(server: GunicornServer, path: str, timeout: float) -> list[int]:
    """GET ``path`` until 200; returns the statuses seen (none may be a 500)."""
    statuses: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = server.get(path, timeout=10)
        statuses.append(resp.status)
        assert resp.status in (200, 503), (resp.status, resp.body[:300])
        if resp.status == 200:
            return statuses
        time.sleep(0.1)
    raise AssertionError(f"{path} not back to 200 in {timeout}s: {statuses}")


def warm_up(server: GunicornServer, workers: int) -> dict[int, dict]:
    """Both workers answered: the pools are in use; returns each worker's /pool stats."""
    for _ in range(6):
        assert server.get("/").status == 200
    assert server.get("/health/ready").status == 200
    seen = server.distinct_pool_pids(workers, timeout=20)
    assert len(seen) == workers, f"only {sorted(seen)} answered /pool"
    return seen


# ---------------------------------------------------------------------- through gunicorn

def test_terminated_backends_are_replaced_and_requests_succeed(
    fresh_db: str, tmp_path: Path
) -> None:
    """Default pool settings: no ping for 10 s, only the free 'socket readable?' check."""
    env = {"DATABASE_URL": fresh_db, "SERVER_WORKERS": "2"}
    with GunicornServer(tmp_path, env) as server:
        before = warm_up(server, 2)
        killed = terminate_worker_backends(fresh_db)
        assert killed >= 2 * 2  # min_size 2 per worker

        responses = [server.get("/", timeout=10) for _ in range(20)]
        assert [r.status for r in responses] == [200] * 20, [r.body[:200] for r in responses]

        after = server.distinct_pool_pids(2, timeout=20)
        assert set(after) == set(before)
        served = [pid for pid in after
                  if after[pid]["requests_total"] > before[pid]["requests_total"]]
        assert served
        for pid in served:
            assert after[pid]["discarded_total"] > before[pid]["discarded_total"], after[pid]
            assert after[pid]["errors_total"] == 0
        # Fresh connections replaced the dead ones.
        assert sum(worker_backends(fresh_db).values()) >= 2


def test_database_stopped_answers_503_then_recovers_without_restart(
    private_server: TestDatabase, tmp_path: Path
) -> None:
    assert private_server.server is not None
    acquire_timeout = 1.0
    env = {"DATABASE_URL": private_server.dsn, "SERVER_WORKERS": "2",
           "POOL_ACQUIRE_TIMEOUT": str(acquire_timeout)}
    with GunicornServer(tmp_path, env) as server:
        warm_up(server, 2)
        workers = server.worker_pids()

        private_server.server.stop(mode="fast")
        for path in ["/", "/health/ready"] * 4:
            assert_unavailable(server.get(path, timeout=15), DB_UNAVAILABLE,
                               within=acquire_timeout + 1)
        live = server.get("/health/live")
        assert live.status == 200, "liveness does not depend on the database"

        private_server.server.start()
        wait_until_ok(server, "/", timeout=15)
        # One worker is back; the other retries within its quick reconnect delay (0.4 s
        # +-10 %, README "Hung peers, leaks, outages"): every worker is back within 1 s.
        time.sleep(1.0)
        for path in ["/", "/health/ready"] * 5:
            resp = server.get(path)
            assert resp.status == 200, (path, resp.status, resp.body[:300])
        # Recovered in place: same master, same workers.
        assert server.process is not None and server.process.poll() is None
        assert server.worker_pids() == workers


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_network_cut_answers_503_then_recovers(
    mode: str, fresh_db: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    # libpq waits at least 2 s for a connection that never answers (connect_timeout >= 2).
    acquire_timeout = 2.0
    # The maintenance thread's connect has no request deadline: CONNECT_TIMEOUT bounds it.
    connect_timeout = 2
    # No schema reload listener: its connections through the proxy are not the pool's.
    env = {"DATABASE_URL": dsn_via(fresh_db, proxy.port), "SERVER_WORKERS": "2",
           "POOL_ACQUIRE_TIMEOUT": str(acquire_timeout), "API_RELOAD_CHANNEL": "",
           "POOL_CONNECT_TIMEOUT": str(connect_timeout)}
    with GunicornServer(tmp_path, env) as server:
        warm_up(server, 2)
        workers = server.worker_pids()

        # Slow the link so that requests are mid-query when it goes down.
        proxy.latency = 1.0
        with ThreadPoolExecutor(2) as pool:
            in_flight = [pool.submit(server.get, "/", timeout=15) for _ in range(2)]
            time.sleep(0.4)
            proxy.mode = mode  # type: ignore[assignment]
            assert proxy.cut() >= 2 * 2
            proxy.latency = 0.0
            paths = ["/", "/health/ready", "/", "/", "/health/ready", "/"]
            if mode == "blackhole":
                paths = paths[:3]  # each waits out the connect timeout
            for path in paths:
                assert_unavailable(server.get(path, timeout=15), DB_UNAVAILABLE,
                                   within=acquire_timeout + 1)
            for future in in_flight:
                assert_unavailable(future.result(timeout=20), DB_UNAVAILABLE,
                                   within=acquire_timeout + 1)

        proxy.forward()
        wait_until_ok(server, "/", timeout=15)
        # The other worker's attempt still in flight (blackholed) gives up within the connect
        # timeout (a request's, or the maintenance thread's); its next one succeeds 0.4 s later.
        time.sleep(max(acquire_timeout, connect_timeout) + 1.0)
        for path in ["/", "/health/ready"] * 5:
            assert server.get(path).status == 200
        assert server.worker_pids() == workers


def test_exhausted_pool_answers_503_pool_timeout_never_500(
    fresh_db: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    acquire_timeout, latency, clients = 0.5, 0.3, 20
    env = {"DATABASE_URL": dsn_via(fresh_db, proxy.port), "SERVER_WORKERS": "2",
           "POOL_MIN_SIZE": "2", "POOL_MAX_SIZE": "2",
           "POOL_ACQUIRE_TIMEOUT": str(acquire_timeout)}
    with GunicornServer(tmp_path, env) as server:
        before = warm_up(server, 2)
        proxy.latency = latency  # each request now holds its connection ~1.8 s
        barrier = threading.Barrier(clients)

        def one(_: int) -> Response:
            barrier.wait(timeout=10)
            return http_get(server.port, "/", timeout=20)

        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            responses = list(pool.map(one, range(clients)))
        wall = time.monotonic() - started
        proxy.latency = 0.0

        statuses = sorted(r.status for r in responses)
        assert set(statuses) <= {200, 503}, statuses
        assert 200 in statuses and 503 in statuses, statuses
        for resp in responses:
            if resp.status == 503:
                assert_unavailable(resp, POOL_TIMEOUT, within=10)
            assert resp.elapsed < 10, f"a request took {resp.elapsed:.1f}s"
        assert wall < 12

        after = server.distinct_pool_pids(2, timeout=20)
        timeouts = sum(after[pid]["timeouts_total"] - before[pid]["timeouts_total"]
                       for pid in after)
        assert timeouts == statuses.count(503)
        assert all(stats["size"] <= 2 for stats in after.values())
        assert server.get("/").status == 200


# ---------------------------------------------------------------------- the pool alone

@pytest.fixture
def make_pool(proxy: FaultProxy, fresh_db: str) -> Iterator[Callable[..., ConnectionPool]]:
    pools: list[ConnectionPool] = []

    def make(**kwargs: object) -> ConnectionPool:
        kwargs.setdefault("application_name", f"faulttest-{uuid.uuid4().hex[:10]}")
        pool = ConnectionPool(dsn_via(fresh_db, proxy.port), **kwargs)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.closeall()


def select_one(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone()[0]


def test_pool_connection_cut_mid_query_is_discarded_and_its_slot_freed(
    make_pool, proxy: FaultProxy
) -> None:
    pool = make_pool(min_size=1, max_size=1, acquire_timeout=2.0)
    conn = pool.getconn()
    failure: list[BaseException] = []

    def long_query() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(10)")
        except BaseException as exc:
            failure.append(exc)

    started = time.monotonic()
    runner = threading.Thread(target=long_query)
    runner.start()
    time.sleep(0.3)
    proxy.cut()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert time.monotonic() - started < 3, "the cut must end the query, not pg_sleep"
    assert failure and isinstance(failure[0], psycopg2.OperationalError), failure

    pool.putconn(conn)
    stats = pool.stats()
    assert stats["discarded_total"] == 1
    assert stats["in_use"] == 0
    # max_size=1: only a freed slot lets this through.
    with pool.connection(timeout=2) as again:
        assert again is not conn
        assert select_one(again) == 1


def test_pool_replaces_idle_connections_cut_by_the_network(
    make_pool, proxy: FaultProxy
) -> None:
    pool = make_pool(min_size=2, max_size=2, check_after_idle=3600)
    assert pool.stats()["size"] == 2
    assert proxy.cut() == 2
    time.sleep(0.1)  # the EOF reaches the client sockets
    for _ in range(3):
        with pool.connection(timeout=2) as conn:
            assert select_one(conn) == 1
    # Both at once: the second dead one, left idle and suspect, is caught on its checkout too.
    with pool.connection(timeout=2) as first, pool.connection(timeout=2) as second:
        assert select_one(first) == select_one(second) == 1
    stats = pool.stats()
    assert stats["discarded_total"] == 2
    assert stats["opened_total"] == 4
    assert stats["timeouts_total"] == 0
    assert stats["errors_total"] == 0


def test_pool_blackholed_database_fails_within_a_bound(make_pool, proxy: FaultProxy) -> None:
    pool = make_pool(min_size=0, max_size=1, acquire_timeout=1.0)
    proxy.mode = "blackhole"
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        pool.getconn()
    # libpq rounds connect_timeout up to 2 s at least.
    assert time.monotonic() - started < 3.5
    assert pool.stats()["size"] == 0, "a failed connect gives its slot back"
    proxy.forward()
    time.sleep(0.45)  # the next attempt may start 0.4 s (+-10 %) after the failed one
    with pool.connection(timeout=2) as conn:
        assert select_one(conn) == 1


# ---------------------------------------------------------------------- hung peers

def run_in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Start ``work``; the list gets its result or the exception it raised."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_pool_statement_to_a_frozen_peer_is_ended_past_its_deadline(
    make_pool, proxy: FaultProxy
) -> None:
    """The peer acknowledges (the proxy reads everything) but never answers: without the
    watchdog libpq waits forever; with it the statement fails past the deadline, the
    connection is discarded and its slot (max_size=1) serves again."""
    deadline = 1.0
    pool = make_pool(min_size=1, max_size=1, query_deadline=deadline, watch_interval=0.1)
    conn = pool.getconn()
    assert select_one(conn) == 1
    proxy.freeze()
    started = time.monotonic()
    thread, outcome = run_in_thread(lambda: select_one(conn))
    thread.join(timeout=deadline + 10)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), "the statement to a frozen peer still hangs"
    assert isinstance(outcome[0], psycopg2.OperationalError), outcome
    assert deadline <= elapsed < deadline + 3, f"ended after {elapsed:.2f}s"

    pool.putconn(conn)
    proxy.thaw()
    assert pool.stats()["discarded_total"] == 1
    with pool.connection(timeout=5) as again:
        assert again is not conn
        assert select_one(again) == 1


def test_pool_deadline_is_per_statement_not_per_checkout(make_pool, proxy: FaultProxy) -> None:
    """An export holds its connection for minutes: many statements, each answered in time, and
    one long statement that streams its rows. None of it is cut."""
    deadline = 1.0
    pool = make_pool(min_size=1, max_size=1, query_deadline=deadline, watch_interval=0.1)
    with pool.connection() as conn, conn.cursor() as cur:
        started = time.monotonic()
        while time.monotonic() - started < 3 * deadline:
            cur.execute("SELECT pg_sleep(0.3)")
        # 3 s in one statement, but a 200 kB row every 0.2 s: the answer keeps coming (over TCP
        # the kernel's time of the last data received restarts the clock).
        cur.execute("SELECT pg_sleep(0.2), repeat('x', 200000) FROM generate_series(1, 15)")
        assert len(cur.fetchall()) == 15
    assert pool.stats()["discarded_total"] == 0


def test_frozen_database_answers_503_within_the_statement_timeout_plus_margin(
    fresh_db: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    statement_timeout, margin = 1.0, 1.0
    env = {"DATABASE_URL": dsn_via(fresh_db, proxy.port), "SERVER_WORKERS": "1",
           "POOL_STATEMENT_TIMEOUT": str(int(statement_timeout * 1000)),
           "POOL_QUERY_DEADLINE_MARGIN": str(margin)}
    with GunicornServer(tmp_path, env) as server:
        before = warm_up(server, 1)
        proxy.freeze()
        # Scheduling noise on two shared cores: half a second over the bound is tolerated.
        for _ in range(2):
            assert_unavailable(server.get("/", timeout=30), DB_UNAVAILABLE,
                               within=statement_timeout + margin + 0.5)
        proxy.thaw()
        for _ in range(5):
            assert server.get("/").status == 200
        pid = next(iter(before))
        settled = time.monotonic() + 10  # the maintenance thread refills to min_size meanwhile
        while True:
            after = server.get("/pool").json()
            if (after["in_use"] == 0 and after["size"] >= 2) or time.monotonic() > settled:
                break
            time.sleep(0.1)
        assert after["discarded_total"] - before[pid]["discarded_total"] >= 2
        assert (after["in_use"], after["size"] >= 2) == (0, True), after
        assert "no answer from the database" in server.stderr()


# ---------------------------------------------------------------------- outages: backoff

def hammer(call: Callable[[], object], threads: int,
           seconds: float) -> list[tuple[float, float, object]]:
    """``call`` in a loop from ``threads`` threads for ``seconds``: (start, elapsed, result or
    error), start on the ``time.monotonic()`` clock."""
    results: list[tuple[float, float, object]] = []
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                outcome: object = call()
            except Exception as exc:
                outcome = exc
            with lock:
                results.append((started, time.monotonic() - started, outcome))

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(loop) for _ in range(threads)]:
            future.result()
    return results


def test_pool_while_the_database_is_down_one_attempt_at_a_time_and_the_rest_fail_at_once(
    make_pool, proxy: FaultProxy
) -> None:
    """A blackholed database: each attempt waits out libpq's connect timeout (2 s). Eight
    threads asking for a connection do not each make their own attempt."""
    pool = make_pool(min_size=0, max_size=4, acquire_timeout=5.0, connect_timeout=2)
    proxy.mode = "blackhole"
    with pytest.raises(DatabaseUnavailable):
        pool.getconn()  # the pool learns that the database is down
    accepted = proxy.accepted_total

    def take() -> None:
        pool.putconn(pool.getconn())

    results = hammer(take, threads=8, seconds=4.0)
    attempts = proxy.accepted_total - accepted
    assert all(isinstance(outcome, DatabaseUnavailable) for *_, outcome in results), results[:3]
    # One at a time, each waiting out 2 s, 0.4 s apart: 2 in 4 s (one more for scheduling noise).
    assert 1 <= attempts <= 3, f"{attempts} connection attempts in 4 s"
    # An attempt waits 2 s; the rest take milliseconds (1.5 s leaves room for a busy machine).
    slow = [elapsed for _, elapsed, _ in results if elapsed >= 1.5]
    assert len(slow) <= attempts, "only the thread making the attempt waits for it"
    assert len(results) - len(slow) >= 100, "the others fail at once"


def test_backoff_doubles_on_server_refusals_and_other_failures_retry_quickly(make_pool):
    pool = make_pool(min_size=0, max_size=1, reconnect_max_delay=5.0)

    def delay_after(error: str) -> float:
        pool._attempt_failed(error, error)
        return pool._next_attempt - time.monotonic()

    too_many = 'connection to server at "x" failed: FATAL:  sorry, too many clients already'
    delays = [delay_after(too_many) for _ in range(5)]
    for delay, expected in zip(delays, [1, 2, 4, 5, 5], strict=True):
        assert expected * 0.89 <= delay <= expected * 1.11, delays
    for nothing_reached_it in ("Connection refused", "timeout expired",
                               "FATAL:  the database system is starting up"):
        quick = delay_after(f'connection to server at "x" failed: {nothing_reached_it}')
        assert 0.35 <= quick <= 0.45, nothing_reached_it
    time.sleep(quick)
    with pool.connection(timeout=2):  # the database answers: the backoff starts over
        pass
    assert 0.89 <= delay_after(too_many) <= 1.11


def test_outage_answers_503_at_once_with_few_attempts_and_recovers_within_a_second(
    fresh_db: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    workers, seconds = 2, 3.0
    # No schema reload listener: its attempts through the proxy would count as the pool's.
    env = {"DATABASE_URL": dsn_via(fresh_db, proxy.port), "SERVER_WORKERS": str(workers),
           "POOL_ACQUIRE_TIMEOUT": "2", "API_RELOAD_CHANNEL": ""}
    with GunicornServer(tmp_path, env) as server:
        warm_up(server, workers)
        proxy.mode = "refuse"  # the proxy is there, the database behind it is not
        proxy.cut()
        for _ in range(4):  # each worker learns that the database is down
            server.get("/", timeout=10)
        accepted = proxy.accepted_total

        results = hammer(lambda: server.get("/", timeout=10), threads=4, seconds=seconds)
        attempts = proxy.accepted_total - accepted
        responses = [outcome for *_, outcome in results]
        for resp in responses:
            assert isinstance(resp, Response), resp
            assert_unavailable(resp, DB_UNAVAILABLE, within=1.0)
        latencies = sorted(resp.elapsed for resp in responses)  # type: ignore[union-attr]
        print(f"outage: {len(latencies)} requests answered 503, latency p50 "
              f"{latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
              f"{attempts} connection attempts in {seconds:g} s from {workers} workers")
        # One attempt at a time per worker, 0.4 s (-10 %) apart after a refusal.
        assert attempts <= workers * (seconds / 0.36 + 2), attempts
        assert attempts * 5 < len(responses), (attempts, len(responses))

        proxy.forward()
        back = time.monotonic()
        timeline = [(started - back, outcome) for started, _, outcome in
                    hammer(lambda: server.get("/", timeout=10), threads=2, seconds=2.5)]
        statuses = [(round(t, 2), resp.status) for t, resp in timeline]  # type: ignore[union-attr]
        first_ok = min(t for t, status in statuses if status == 200)
        print(f"outage over: first 200 after {first_ok:.2f}s")
        assert first_ok <= 1.0 + 0.5, statuses
        # Every worker is back within the second (requests land on either worker).
        assert all(status == 200 for t, status in statuses if t > 1.0 + 0.5), statuses
