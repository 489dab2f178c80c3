"""Scrape time of GET /metrics's collector after 0 and 200 worker recycles, with and without
merging dead workers' files (``swagger_server.ops.metrics_files.merge_dead``, gunicorn's
``child_exit``).

Each "worker" is a forked process that records what a busy worker does (every route of the spec
with a few statuses, durations, pool waits, rows) in multiprocess mode, then exits; the master
side then merges its files (or, for the comparison, leaves them). Two live workers stay in every
case. A scrape is the collector's read of the directory plus the text rendering, as
``GET /metrics`` does it; the median of ``--scrapes`` scrapes is reported.

    python -m bench.bench_metrics_scrape [--recycles 200] [--scrapes 30]

``--gunicorn`` measures the real thing instead: ``GET /metrics`` of a gunicorn master with 2
workers (embedded PostgreSQL, or ``BENCH_DATABASE_URL``), fresh, then after ``--recycles``
workers were recycled (see :func:`run_gunicorn`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from bench.bench_pool import database
from swagger_server.app import SPEC_DIR, SPEC_FILE
from swagger_server.ops import metrics, metrics_files
from tests.server import GunicornServer

_POOL_OPEN = re.compile(r"pool open: pid=(\d+)")

ROUTES = [*sorted(set(metrics.spec_routes(SPEC_DIR / SPEC_FILE)[0].values())), metrics.OTHER]


def _worker(directory: str, hold: multiprocessing.synchronize.Event | None) -> None:
    os.environ[metrics_files.ENV] = directory
    found = metrics.get()
    for i, route in enumerate(ROUTES):
        for status in (200, 400, 404, 503):
            found.request_done(route, "GET", status, 0.001 * (i + 1))
    for seconds in (0.0001, 0.003, 0.2):
        found.acquire_wait.observe(seconds)
        found.checkout.observe(seconds)
        found.connect.observe(seconds)
    for fmt in ("json", "csv", "ndjson"):
        metrics.rows_served(fmt, 100)
    found.catalog_reloads.inc()
    for gauge in (*found.pool_sizes.values(), *found.pool_worker.values()):
        gauge.set(1)
    found.pool_worker_max.set(10)
    found.exports_in_progress.set(0)
    for counter in found.pool_counters.values():
        counter.inc(3)
    if hold is not None:
        hold.wait()
    os._exit(0)


def _scrape_seconds(directory: Path, scrapes: int) -> tuple[float, int]:
    times = []
    size = 0
    for _ in range(scrapes):
        start = time.perf_counter()
        registry = CollectorRegistry()
        metrics_files.LockedCollector(registry, path=str(directory))
        size = len(generate_latest(registry))
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def run(recycles: int, merge: bool, scrapes: int) -> tuple[float, int, int]:
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as name:
        directory = Path(name)
        for _ in range(recycles):
            worker = ctx.Process(target=_worker, args=(name, None))
            worker.start()
            worker.join()
            if merge:
                metrics_files.merge_dead(directory, worker.pid)
            else:  # what prometheus_client's own mark_process_dead does: live gauges only
                from prometheus_client import multiprocess
                multiprocess.mark_process_dead(worker.pid, name)
        hold = ctx.Event()
        live = [ctx.Process(target=_worker, args=(name, hold)) for _ in range(2)]
        for worker in live:
            worker.start()
        time.sleep(0.5)  # both have written
        seconds, size = _scrape_seconds(directory, scrapes)
        files = len(list(directory.glob("*.db")))
        hold.set()
        for worker in live:
            worker.join()
    return seconds, files, size


def _http_scrapes(server: GunicornServer, scrapes: int) -> tuple[float, int]:
    times = []
    for _ in range(scrapes):
        resp = server.get("/metrics", timeout=30)
        assert resp.status == 200, resp.status
        times.append(resp.elapsed)
    return statistics.median(times), len(resp.body)


def run_gunicorn(recycles: int, scrapes: int) -> None:
    """One master, 2 workers: scrapes when fresh, then after ``recycles`` workers were ended
    one by one with SIGTERM (a graceful exit, as ``max_requests`` makes: ``worker_exit`` then
    the master's ``child_exit``), each after serving requests, and replaced. Recycling by
    MAX_REQUESTS itself would go on during the scrapes (they are requests too), and the
    workers booting meanwhile would take the CPU the scrapes are timed on."""
    with database() as dsn, tempfile.TemporaryDirectory(prefix="bench-metrics-") as name:
        directory = Path(name) / "prometheus"
        env = {"DATABASE_URL": dsn, "SERVER_WORKERS": "2", "POOL_MIN_SIZE": "1",
               "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        with GunicornServer(Path(name) / "g", env) as server:
            for _ in range(20):
                server.get("/")
            time.sleep(1)
            base, size0 = _http_scrapes(server, scrapes)
            started = time.monotonic()
            for _ in range(recycles):
                victim = server.worker_pids()[0]
                for _ in range(3):
                    server.get("/")
                os.kill(victim, signal.SIGTERM)
                while victim in server.children() or len(server.worker_pids()) < 2:
                    time.sleep(0.02)
            took = time.monotonic() - started
            time.sleep(1)
            after, size_after = _http_scrapes(server, scrapes)
            files = len(list(directory.glob("*.db")))
            started_workers = len(set(_POOL_OPEN.findall(server.stderr())))
    print(f"gunicorn, 2 workers, GET /metrics, median of {scrapes}:")
    print(f"  fresh: {base * 1000:.1f} ms ({size0} bytes)")
    print(f"  after {recycles} recycles ({started_workers} workers started, {took:.0f} s): "
          f"{after * 1000:.1f} ms ({size_after} bytes, {files} files) = {after / base:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recycles", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--gunicorn", action="store_true", help="a real gunicorn master")
    args = parser.parse_args()
    if args.gunicorn:
        run_gunicorn(args.recycles, args.scrapes)
        return
    print(f"{len(ROUTES)} routes; median of {args.scrapes} scrapes; 2 live workers")
    print(f"{'recycles':>9} {'dead files':>10} {'files':>6} {'body bytes':>10} {'scrape ms':>10}")
    base = None
    for recycles, merge in ((0, True), (args.recycles, True), (args.recycles, False)):
        seconds, files, size = run(recycles, merge, args.scrapes)
        base = base or seconds
        how = "merged" if merge else "kept"
        print(f"{recycles:>9} {how:>10} {files:>6} {size:>10} {seconds * 1000:>10.2f}"
              f"  ({seconds / base:.2f}x)")


if __name__ == "__main__":
    main()
