"""GET /metrics through a real gunicorn master with 2 workers: one scrape covers both, and the
totals of workers that died (killed, or recycled by MAX_REQUESTS) stay while their files go."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from swagger_server.ops import metrics
from tests.pg import TestDatabase
from tests.server import GunicornServer, scratch_database, wait_for

# Per live worker: counter, histogram, and one gauge file per mode (livesum, liveall, livemax).
FILES_PER_WORKER = 5
MERGED_FILES = 2  # counter_merged.db, histogram_merged.db
_POOL_OPEN = re.compile(r"pool open: pid=(\d+)")


@pytest.fixture(scope="module")
def metrics_db(database: TestDatabase) -> Iterator[str]:
    with scratch_database(database, "metrics") as dsn:
        yield dsn


def _scrape(server: GunicornServer) -> list:
    resp = server.get("/metrics")
    assert resp.status == 200, resp.body[:500]
    assert resp.content_type == "text/plain"
    return [s for f in text_string_to_metric_families(resp.body.decode()) for s in f.samples]


def _total(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.db"))


def _start(tmp_path: Path, dsn: str, **env: str) -> tuple[GunicornServer, Path]:
    directory = tmp_path / "prometheus"
    server = GunicornServer(tmp_path / "gunicorn", {
        "DATABASE_URL": dsn, "SERVER_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "POOL_MIN_SIZE": "1", **env})
    return server, directory


def test_one_scrape_covers_both_workers_and_a_killed_ones_totals_stay(
        tmp_path: Path, metrics_db: str) -> None:
    server, directory = _start(tmp_path, metrics_db)
    with server:
        answered: dict[int, int] = {}
        for _ in range(200):
            pid = server.get("/pool").json()["pid"]
            answered[pid] = answered.get(pid, 0) + 1
            if len(answered) == 2 and sum(answered.values()) >= 40:
                break
        assert len(answered) == 2, answered  # both workers answered some
        sent = sum(answered.values())
        for _ in range(30):
            assert server.get("/").status == 200

        samples = _scrape(server)
        assert _total(samples, "pgrest_http_requests_total", route="/pool", status="200") == sent
        assert _total(samples, "pgrest_http_requests_total", route="/", method="GET") == 30
        per_worker = {s.labels["pid"] for s in samples
                      if s.name == "pgrest_pool_worker_in_use_connections"}
        assert per_worker == {str(p) for p in server.worker_pids()}
        assert _total(samples, "pgrest_pool_max_connections") == 2 * 10
        assert len(_files(directory)) <= 2 * FILES_PER_WORKER

        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: victim not in server.children()
                        and len(server.worker_pids()) == 2, 30)
        after = _scrape(server)
        assert _total(after, "pgrest_http_requests_total", route="/pool", status="200") == sent
        assert _total(after, "pgrest_http_requests_total", route="/", method="GET") == 30
        assert _total(after, "pgrest_http_request_duration_seconds_count", route="/") == 30
        pids = {s.labels["pid"] for s in after
                if s.name == "pgrest_pool_worker_in_use_connections"}
        assert str(victim) not in pids
        names = _files(directory)
        assert not [n for n in names if f"_{victim}." in n]
        assert {"counter_merged.db", "histogram_merged.db"} <= set(names)
        assert len(names) <= 2 * FILES_PER_WORKER + MERGED_FILES


def test_recycled_workers_keep_their_counts_and_the_files_stay_bounded(
        tmp_path: Path, metrics_db: str) -> None:
    server, directory = _start(tmp_path, metrics_db, SERVER_MAX_REQUESTS="5")
    with server:
        requests = 0
        deadline = time.monotonic() + 90
        # A worker recycles after 5 requests (and the time to start its successor).
        while _workers_started(server) < 2 + 12 and time.monotonic() < deadline:
            assert server.get("/", timeout=15).status == 200
            requests += 1
        recycled = _workers_started(server) - 2
        assert recycled >= 12, recycled
        # The last recycled ones reaped and merged.
        assert wait_for(lambda: len(server.worker_pids()) == 2
                        and len(_files(directory)) <= 2 * FILES_PER_WORKER + MERGED_FILES, 20)
        time.sleep(metrics.SAMPLE_INTERVAL * 2)  # the other live worker's pool read since
        samples = _scrape(server)
        assert _total(samples, "pgrest_http_requests_total", route="/", method="GET") == requests
        assert _total(samples, "pgrest_http_request_duration_seconds_count",
                      route="/") == requests
        assert _total(samples, "pgrest_pool_acquires_total") >= requests
        assert _total(samples, "pgrest_pool_opened_connections_total") >= recycled
        # Every dead worker's files went: the live workers' and the merged ones are left.
        assert len(_files(directory)) <= 2 * FILES_PER_WORKER + MERGED_FILES


def test_without_a_given_directory_the_master_makes_one_and_removes_it(
        tmp_path: Path, metrics_db: str) -> None:
    server = GunicornServer(tmp_path / "gunicorn", {"DATABASE_URL": metrics_db,
                                                     "SERVER_WORKERS": "2"})
    server.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with server:
        for _ in range(10):
            server.get("/")
        samples = _scrape(server)
        assert _total(samples, "pgrest_http_requests_total", route="/") == 10
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
        found = [e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
        assert not found  # the master's initial environment: it names the directory itself
        directories = [Path(d) for d in _metrics_dirs(server)]
        assert len(directories) == 1 and directories[0].is_dir()
    assert not directories[0].exists()


def _workers_started(server: GunicornServer) -> int:
    return len(set(_POOL_OPEN.findall(server.stderr())))


def _metrics_dirs(server: GunicornServer) -> set[str]:
    """The directory the workers write to (their open files)."""
    found: set[str] = set()
    for pid in server.worker_pids():
        for f in psutil.Process(pid).open_files():
            if os.path.basename(f.path).endswith(".db") and "pgrest-metrics-" in f.path:
                found.add(os.path.dirname(f.path))
    return found
