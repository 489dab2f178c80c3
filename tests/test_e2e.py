"""End to end: a real gunicorn master with two workers, each with its own pool, on PostgreSQL.

One server per module serves the read-only checks. It reaches its own scratch database through
a pass-through proxy, so the load test can add latency and make requests hold their connections
long enough for the pools to fill. Tests that stop or break a server start their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.pg import TestDatabase
from tests.proxy import FaultProxy, dsn_via, upstream_from_dsn
from tests.server import (
    GunicornServer,
    Response,
    http_get,
    scratch_database,
    wait_for,
    worker_backends,
)

pytestmark = pytest.mark.e2e

WORKERS = 2
MIN_SIZE = 2
MAX_SIZE = 3


class BootedServer:
    """The module's server and what the database showed before its first request."""

    def __init__(self, server: GunicornServer, proxy: FaultProxy, dsn: str,
                 boot_workers: list[int], boot_backends: dict[str, int]) -> None:
        self.server = server
        self.proxy = proxy
        self.dsn = dsn
        self.boot_workers = boot_workers
        self.boot_backends = boot_backends


@pytest.fixture(scope="module")
def e2e_db(database: TestDatabase) -> Iterator[str]:
    with scratch_database(database, "e2e") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def booted(e2e_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootedServer]:
    with FaultProxy(upstream_from_dsn(e2e_db)) as proxy:
        env = {
            "DATABASE_URL": dsn_via(e2e_db, proxy.port),
            "SERVER_WORKERS": str(WORKERS),
            "POOL_MIN_SIZE": str(MIN_SIZE),
            "POOL_MAX_SIZE": str(MAX_SIZE),
        }
        with GunicornServer(tmp_path_factory.mktemp("gunicorn-e2e"), env) as server:
            # Before any HTTP request: the workers' pools must already be connected.
            workers = server.worker_pids()
            backends = worker_backends(e2e_db)
            yield BootedServer(server, proxy, e2e_db, workers, backends)


@pytest.fixture
def fresh_db(database: TestDatabase) -> Iterator[str]:
    with scratch_database(database, "e2e_own") as dsn:
        yield dsn


def test_each_worker_connects_its_pool_before_the_first_request(booted: BootedServer) -> None:
    server = booted.server
    assert len(booted.boot_workers) == WORKERS
    children = {p.pid for p in psutil.Process(server.pid).children()}
    assert set(booted.boot_workers) <= children, "the pools' pids are the master's workers"
    expected = {f"pgrest worker {pid}": MIN_SIZE for pid in booted.boot_workers}
    assert booted.boot_backends == expected
    # The master itself holds no connection.
    assert f"pgrest worker {server.pid}" not in booted.boot_backends


def test_distinct_workers_answer_with_their_own_pool(booted: BootedServer) -> None:
    server = booted.server
    seen = server.distinct_pool_pids(WORKERS, timeout=20)
    assert len(seen) >= WORKERS, f"only {sorted(seen)} answered /pool"
    assert set(seen) <= set(server.children())
    for stats in seen.values():
        assert stats["min_size"] == MIN_SIZE
        assert stats["max_size"] == MAX_SIZE
        assert MIN_SIZE <= stats["size"] <= MAX_SIZE
    root = server.get("/")
    assert root.status == 200
    assert root.json() == [[1]]


def test_connections_never_exceed_workers_times_max_size_under_load(
    booted: BootedServer,
) -> None:
    server, proxy = booted.server, booted.proxy
    clients, duration = 16, 3.0
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(sum(worker_backends(booted.dsn).values()))
            stop.wait(0.02)

    def hammer() -> list[Response]:
        got: list[Response] = []
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            got.append(http_get(server.port, "/", timeout=15))
        return got

    # Latency makes each request hold its connection (~3 round trips), so the pools fill up.
    proxy.latency = 0.02
    sampler = threading.Thread(target=sample, name="pg-stat-sampler")
    sampler.start()
    try:
        with ThreadPoolExecutor(clients) as pool:
            results = [r for batch in pool.map(lambda _: hammer(), range(clients)) for r in batch]
    finally:
        proxy.latency = 0.0
        stop.set()
        sampler.join(timeout=10)
    assert not sampler.is_alive()

    statuses = {r.status for r in results}
    assert statuses == {200}, f"statuses under load: {statuses}"
    assert len(results) >= clients
    peak = max(samples)
    assert peak <= WORKERS * MAX_SIZE, f"{peak} connections > {WORKERS} x {MAX_SIZE}"
    # The load was real: at least one pool grew beyond min_size.
    assert peak > WORKERS * MIN_SIZE, f"pools never grew (peak {peak}, {len(results)} requests)"
    for stats in server.distinct_pool_pids(WORKERS, timeout=10).values():
        assert stats["size"] <= MAX_SIZE
        assert stats["timeouts_total"] == 0


def test_sigterm_stops_the_master_and_closes_every_connection(
    fresh_db: str, tmp_path: Path
) -> None:
    with FaultProxy(upstream_from_dsn(fresh_db)) as proxy:
        env = {"DATABASE_URL": dsn_via(fresh_db, proxy.port), "SERVER_WORKERS": "3",
               "POOL_MIN_SIZE": "1", "POOL_MAX_SIZE": "4"}
        with GunicornServer(tmp_path, env) as server:
            workers = server.worker_pids()
            assert len(workers) == 3
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda _: server.get("/").status, range(40)))
            assert set(statuses) == {200}
            assert set(worker_backends(fresh_db)) == {f"pgrest worker {pid}" for pid in workers}

            # Requests in flight when SIGTERM arrives (~1.2 s each with this latency) finish.
            proxy.latency = 0.2
            with ThreadPoolExecutor(4) as pool:
                in_flight = [pool.submit(server.get, "/", timeout=20) for _ in range(4)]
                time.sleep(0.3)
                started = time.monotonic()
                returncode = server.stop(timeout=20)
                stopped_in = time.monotonic() - started
                answers = [future.result(timeout=20) for future in in_flight]
            assert [r.status for r in answers] == [200] * 4, [r.body[:200] for r in answers]
            assert returncode == 0, server.stderr()[-2000:]
            assert stopped_in < 15
            assert not [pid for pid in workers if psutil.pid_exists(pid)
                        and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
            assert wait_for(lambda: not worker_backends(fresh_db), timeout=5), (
                f"connections left after shutdown: {worker_backends(fresh_db)}"
            )
            log = server.stderr()
            for pid in workers:
                assert f"pool closed: pid={pid}" in log
            assert "Traceback" not in log


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SERVER_WORKERS", "abc", "expected an integer"),
        ("POOL_MAX_SIZE", "0", "must be between 1 and 1000"),
        ("POOL_ACQUIRE_TIMEOUT", "soon", "expected a number of seconds"),
        ("POOL_MIN_SIZE", "9", "must not exceed POOL_MAX_SIZE"),
    ],
)
def test_a_bad_setting_stops_gunicorn_with_one_line_naming_it(
    key: str, value: str, message: str, e2e_db: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": e2e_db, "SERVER_WORKERS": "2", "POOL_MAX_SIZE": "4", key: value}
    server = GunicornServer(tmp_path, env)
    try:
        started = time.monotonic()
        process = server.launch()
        returncode = process.wait(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        server.kill()
    stderr = server.stderr()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode != 0
    assert elapsed < 10
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"configuration error: {key}: "), lines[0]
    assert message in lines[0]
    # Nothing was left listening on the port.
    with pytest.raises(ConnectionError):
        http_get(server.port, "/health/live", timeout=2)

