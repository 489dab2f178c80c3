"""Metrics: the merge of dead workers' files, the collector, and what one app records.

The multiprocess tests fork real processes that record metrics as a worker does (in
multiprocess mode, with files in a directory of the test's own), then exit like a recycled
worker; the app tests run one app in this process (single-process mode), on real PostgreSQL.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from swagger_server.db.pool import ConnectionPool, PoolTimeout
from swagger_server.ops import metrics, metrics_files
from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

SCHEMA = """
CREATE TABLE things (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO things SELECT g, 'thing ' || g FROM generate_series(1, 30) g;
"""


# ---------------------------------------------------------------------- multiprocess files


def _worker(directory: str, requests: int, rows: int) -> None:
    """What a worker records, in a forked process: requests, a wait, pool sizes."""
    os.environ[metrics_files.ENV] = directory
    found = metrics.get()
    assert found.multiprocess
    for i in range(requests):
        found.request_done("/tables/{table}/rows", "GET", 200 if i % 4 else 404, 0.003 * i)
    found.acquire_wait.observe(0.002)
    metrics.rows_served("json", rows)
    found.pool_sizes["in_use"].set(3)
    found.pool_worker["in_use"].set(3)
    os._exit(0)


def _run_worker(directory: Path, requests: int, rows: int) -> int:
    process = multiprocessing.get_context("fork").Process(
        target=_worker, args=(str(directory), requests, rows))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    return process.pid


def _scrape(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a multiprocess scrape of ``directory``, by name and labels."""
    registry = CollectorRegistry()
    metrics_files.LockedCollector(registry, path=str(directory))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == x for k, x in labels.items()))


def test_merging_dead_workers_keeps_every_total_and_bounds_the_files(tmp_path: Path) -> None:
    pids = [_run_worker(tmp_path, requests=10 + i, rows=5) for i in range(6)]
    before = _scrape(tmp_path)
    assert _total(before, "pgrest_http_requests_total") == sum(10 + i for i in range(6))
    assert _total(before, "pgrest_pool_worker_in_use_connections") == 3 * 6  # liveall: kept
    files_before = len(list(tmp_path.glob("*.db")))

    for pid in pids:
        metrics_files.merge_dead(tmp_path, pid)
    after = _scrape(tmp_path)

    counted = {k: v for k, v in before.items()
               if k[0].endswith(("_total", "_bucket", "_sum", "_count"))}
    assert len(counted) > 20
    # Counters and histograms, every one (sums of floats in another order: approx).
    assert {k: after[k] for k in counted} == pytest.approx(counted)
    assert _total(after, "pgrest_http_requests_total", status="404") == sum(
        len(range(0, 10 + i, 4)) for i in range(6))
    assert _total(after, "pgrest_pool_acquire_wait_seconds_count") == 6
    assert _total(after, "pgrest_rows_served_total", format="json") == 30
    # A dead worker has no connections: its gauges are gone, not summed.
    assert _total(after, "pgrest_pool_worker_in_use_connections") == 0
    assert _total(after, "pgrest_pool_in_use_connections") == 0
    names = sorted(p.name for p in tmp_path.glob("*.db"))
    assert names == ["counter_merged.db", "histogram_merged.db"]
    assert files_before >= 6 * 2


def test_totals_survive_many_merges_and_live_workers_add_to_them(tmp_path: Path) -> None:
    for _ in range(12):
        metrics_files.merge_dead(tmp_path, _run_worker(tmp_path, requests=3, rows=1))
    live = _run_worker(tmp_path, requests=4, rows=0)  # not merged: still "alive"
    samples = _scrape(tmp_path)
    assert _total(samples, "pgrest_http_requests_total") == 12 * 3 + 4
    assert _total(samples, "pgrest_http_request_duration_seconds_count") == 12 * 3 + 4
    assert _total(samples, "pgrest_pool_worker_in_use_connections") == 3  # the live one
    assert len(list(tmp_path.glob("*.db"))) == 2 + len(list(tmp_path.glob(f"*_{live}.db")))


def test_prepare_empties_a_given_directory_and_makes_one_otherwise(tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"old")
    (given / "keep.txt").write_text("not ours")
    path, made = metrics_files.prepare({metrics_files.ENV: str(given)})
    assert (path, made) == (given, False)
    assert [p.name for p in given.iterdir()] == ["keep.txt"]

    environ: dict[str, str] = {}
    path, made = metrics_files.prepare(environ)
    try:
        assert made and path.is_dir() and environ[metrics_files.ENV] == str(path)
        assert not list(path.iterdir())
    finally:
        metrics_files.remove_owned()
    assert not path.exists() and given.is_dir()  # a given directory is never removed


# ---------------------------------------------------------------------- one app, in process


@pytest.fixture(scope="module")
def things_db(database: TestDatabase) -> str:
    return seeded_database(database, "metrics", SCHEMA)


@pytest.fixture
def client(things_db: str) -> Iterator[TestClient]:
    with app_client(things_db) as made:
        yield made


def _families(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text) for s in family.samples
    }


def test_requests_are_counted_by_route_template_never_by_raw_path(client: TestClient) -> None:
    before = _families(client)
    for name in ("things", "nope", "x%0Ay"):
        client.get(f"/tables/{name}/rows?limit=7")
    client.get("/no/such/path/123")
    client.get("/health/live")
    after = _families(client)

    def grown(**labels: str) -> float:
        name = "pgrest_http_requests_total"
        return _total(after, name, **labels) - _total(before, name, **labels)

    assert grown(route="/tables/{table}/rows", method="GET", status="200") == 1
    assert grown(route="/tables/{table}/rows", method="GET", status="404") == 1
    # No route: the unknown path, and the control character answered before routing.
    assert grown(route="other", status="404") == 2
    assert grown(route="/health/live", status="200") == 1
    routes = {dict(lab).get("route") for (_, lab) in after}
    assert not any(r and ("things" in r or "nope" in r or "123" in r) for r in routes)
    assert _total(after, "pgrest_rows_served_total", format="json") - _total(
        before, "pgrest_rows_served_total", format="json") == 7
    duration = "pgrest_http_request_duration_seconds_count"
    assert _total(after, duration, route="/tables/{table}/rows") - _total(
        before, duration, route="/tables/{table}/rows") == 2


def test_pool_sizes_counters_and_waits_come_from_the_pool(client: TestClient) -> None:
    before = _families(client)
    for _ in range(3):
        assert client.get("/").status_code == 200
    after = _families(client)

    def grown(name: str) -> float:
        return _total(after, name) - _total(before, name)

    assert _total(after, "pgrest_pool_max_connections") == 10  # this process's pool
    assert _total(after, "pgrest_pool_size_connections") >= 1
    assert _total(after, "pgrest_pool_in_use_connections") == 0  # all given back
    assert grown("pgrest_pool_acquires_total") == 3
    assert grown("pgrest_pool_acquire_wait_seconds_count") == 3
    assert grown("pgrest_pool_checkout_seconds_count") == 3


def test_exports_count_their_rows_and_are_in_progress_while_streaming(
        client: TestClient) -> None:
    before = _families(client)
    resp = client.get("/tables/things/rows?limit=12", headers={"Accept": "text/csv"})
    assert resp.status_code == 200
    client.get("/tables/things/rows?limit=5", headers={"Accept": "application/x-ndjson"})
    after = _families(client)
    assert _total(after, "pgrest_rows_served_total", format="csv") - _total(
        before, "pgrest_rows_served_total", format="csv") == 12
    assert _total(after, "pgrest_rows_served_total", format="ndjson") - _total(
        before, "pgrest_rows_served_total", format="ndjson") == 5
    assert _total(after, "pgrest_exports_in_progress") == 0  # both ended
    assert _total(after, "pgrest_catalog_reloads_total") >= 1


# ---------------------------------------------------------------------- the pool's observer


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def acquired(self, seconds: float) -> None:
        self.events.append(("acquired", seconds))

    def released(self, seconds: float) -> None:
        self.events.append(("released", seconds))

    def connected(self, seconds: float) -> None:
        self.events.append(("connected", seconds))


def test_the_pool_tells_its_observer_each_wait_checkout_and_connection(
        database: TestDatabase) -> None:
    with ConnectionPool(database.dsn, min_size=0, max_size=1, acquire_timeout=2) as pool:
        recorder = _Recorder()
        pool.observer = recorder
        conn = pool.getconn()  # opens one: a connection, then an acquire
        threading.Timer(0.3, pool.putconn, args=(conn,)).start()
        second = pool.getconn()  # waits for the first to come back
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.2)
        time.sleep(0.1)
        pool.putconn(second)
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["connected", "acquired", "released", "acquired", "acquired", "released"]
    seconds = dict(enumerate(s for _, s in recorder.events))
    assert 0 < seconds[0] < 5  # the connection's opening
    assert seconds[2] >= 0.25  # the first was held some 0.3 s
    assert seconds[3] >= 0.25  # ... which the second waited for
    assert 0.15 <= seconds[4] < 2  # the timeout is a wait too
    assert seconds[5] >= 0.25  # held through the timeout and the sleep


def test_a_request_is_counted_before_its_last_byte_not_after_the_closing_message() -> None:
    """A body whose every byte goes in a ``more_body`` message, then an empty closing one (as
    a2wsgi sends Flask's): the client has its answer before the closing message, and may ask
    another worker for /metrics at once. The request must be counted by then."""
    import asyncio

    seen: list[float] = []

    def requests_now() -> float:
        return sum(c._value.get() for c in metrics.get()._requests.values()
                   if c is not None)

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def server_send(message) -> None:
        if message["type"] == "http.response.body" and message.get("more_body"):
            seen.append(requests_now())  # the client now holds all 5 bytes

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    middleware = metrics.MetricsMiddleware(app, routes={}, fixed_paths=frozenset({"/x"}))
    before = requests_now()
    asyncio.run(middleware({"type": "http", "method": "GET", "path": "/x", "headers": []},
                           receive, server_send))
    assert seen == [before + 1]
    assert requests_now() == before + 1  # once, not again at the closing message
