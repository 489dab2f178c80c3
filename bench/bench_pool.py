"""Requests/s of ``GET /`` (select 1 through the pool) under gunicorn, in one run:

- the seed's psycopg2 ThreadedConnectionPool(1, 20) vs. our ConnectionPool,
- gunicorn's native ``asgi`` worker vs. ``uvicorn_worker.UvicornWorker``,
- ``/health/live`` (no database) as the ceiling of the stack.

Usage: python -m bench.bench_pool [--seconds 10] [--connections 16] [--workers 2]
Needs ``wrk`` (Debian package). Uses BENCH_DATABASE_URL, else a temporary embedded server.
Ratios within one run are what count: these machines are small and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench import load  # noqa: E402
from swagger_server.db.embedded import EmbeddedPostgres  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def database(max_connections: int | None = None) -> Iterator[str]:
    """BENCH_DATABASE_URL, else a temporary embedded server (restarted once with
    ``max_connections`` when given: several servers' pools and pgbench share it)."""
    url = os.environ.get("BENCH_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data")
        try:
            dsn = server.start()
            if max_connections:
                with contextlib.closing(psycopg2.connect(dsn)) as conn:
                    conn.autocommit = True
                    conn.cursor().execute("ALTER SYSTEM SET max_connections = %s",
                                          (max_connections,))
                server.stop()
                dsn = server.start()
            yield dsn
        finally:
            server.stop(mode="immediate")


@contextlib.contextmanager
def gunicorn(app: str, dsn: str, worker_class: str, workers: int,
             extra: Mapping[str, str] | None = None, probe: str = "/",
             drop_prefixes: tuple[str, ...] = (), cwd: Path = ROOT) -> Iterator[str]:
    """A gunicorn master serving ``app`` on a free port until the block ends; its base URL.

    ``extra`` settings win over the defaults here; variables starting with ``drop_prefixes``
    are not inherited; ``probe`` is the path polled until the workers answer; ``cwd`` is the
    tree it runs from (its gunicorn.conf.py).
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)} \
        if drop_prefixes else dict(os.environ)
    env.update(DATABASE_URL=dsn, SERVER_BIND=f"127.0.0.1:{port}",
               SERVER_WORKERS=str(workers), SERVER_WORKER_CLASS=worker_class,
               SERVER_LOG_LEVEL="warning", POOL_MAX_SIZE="10")
    env.update(extra or {})  # wins over the defaults (a keyword repeated in one update() raises)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", app], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + probe, timeout=2):  # noqa: S310 (loopback)
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"gunicorn {app} did not come up") from None
                time.sleep(0.2)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrk(url: str, seconds: int, connections: int, header: str | None = None) -> float:
    """Requests per second of one wrk run (after a 2 s warm-up); ``header`` goes with each."""
    load.wrk(url, 2, connections, header)  # warm-up: connections opened, code paths hot
    measure = load.wrk(url, seconds, connections, header)
    if measure.errors:
        print(f"  warning: {measure.errors} errors (non-2xx, socket) from {url}", file=sys.stderr)
    return measure.rate


def wrk_options(description: str) -> argparse.Namespace:
    """The options of the topic benchmarks that compare cases with wrk; wrk made sure of."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds, interleaved; median kept")
    args = parser.parse_args()
    load.ensure_wrk()
    return args


def main() -> None:
    args = wrk_options(__doc__.splitlines()[0])
    cases = [
        ("seed ThreadedConnectionPool(1, 20)", "bench.variants_wsgi:application", "uvicorn", "/"),
        ("seed ThreadedConnectionPool(1, 20)", "bench.variants_wsgi:application", "asgi", "/"),
        ("ConnectionPool (ours)", "wsgi:application", "asgi", "/"),
        ("ConnectionPool (ours)", "wsgi:application", "uvicorn", "/"),
        ("no database: /health/live", "wsgi:application", "asgi", "/health/live"),
        ("no database: /health/live", "wsgi:application", "uvicorn", "/health/live"),
    ]
    runs: list[list[float]] = [[] for _ in cases]
    with database() as dsn:
        # Rounds interleave the cases, so a noisy minute hurts them all alike.
        for round_no in range(args.repeat):
            for i, (label, app, worker, path) in enumerate(cases):
                with gunicorn(app, dsn, worker, args.workers, {"BENCH_POOL": "seed"}) as base:
                    rps = wrk(base + path, args.seconds, args.connections)
                runs[i].append(rps)
                print(f"round {round_no + 1}: {label:38s} {worker:8s} {rps:8.0f} req/s",
                      flush=True)
    results = [(label, worker, statistics.median(rounds))
               for (label, _, worker, _), rounds in zip(cases, runs, strict=True)]
    reference = results[0][2] or 1.0
    print(f"\nwrk -t1 -c{args.connections} -d{args.seconds}s, {args.workers} workers, "
          f"median of {args.repeat}; ratio vs. the seed's pool:")
    for label, worker, rps in results:
        print(f"| {label} | {worker} | {rps:,.0f} | {rps / reference:.2f}x |")


if __name__ == "__main__":
    main()
