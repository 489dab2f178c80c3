"""Data API throughput: 1000-row JSON pages and a 1,000,000-row NDJSON export.

Prints, in one run:
- rows/s for 1000-row pages fetched straight from PostgreSQL: the API's statement (JSON built by
  PostgreSQL, fetched as text) vs. the same rows fetched as tuples and serialised with Python's
  ``json`` (the reference);
- rows/s for 1000-row pages through the service (gunicorn, real HTTP, walking by cursor), with
  1 client and with 4;
- rows/s for a 1,000,000-row NDJSON export through the service, and the worker's peak RSS
  during it (sampled every 20 ms) next to its RSS before.

Usage: python -m bench.bench_data_api [--rows 1000000] [--workers 2] [--seconds 5]
Uses BENCH_DATABASE_URL (a table ``bench_events`` is created there), else a temporary embedded
server. Not a test: figures are noisy on small machines; ratios within one run are what count.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_pool import database, gunicorn  # noqa: E402
from bench.statements import page_query  # noqa: E402
from swagger_server.config import ApiSettings  # noqa: E402
from swagger_server.data import query  # noqa: E402

PAGE = 1000
TABLE = "bench_events"


def create_table(dsn: str, rows: int) -> None:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"""
            CREATE TABLE {TABLE} (
                id bigint PRIMARY KEY, kind text NOT NULL, amount numeric(12, 2),
                at timestamptz NOT NULL, payload jsonb, tags text[], note text)""")
        cur.execute(f"""
            INSERT INTO {TABLE}
            SELECT g, (ARRAY['click', 'view', 'buy', 'share'])[1 + g % 4],
                   CASE WHEN g % 10 = 0 THEN NULL ELSE (g % 100000) / 100.0 END,
                   timestamptz '2024-01-01' + g * interval '1 second',
                   jsonb_build_object('n', g, 'ok', g % 2 = 0), ARRAY['a', 'b'],
                   CASE WHEN g % 3 = 0 THEN 'note ' || g END
            FROM generate_series(1, {int(rows)}) AS g""")  # noqa: S608 (constants only)
        cur.execute(f"VACUUM ANALYZE {TABLE}")


def direct_pages(dsn: str, seconds: float) -> tuple[float, float]:
    """rows/s: the API's JSON-in-PostgreSQL statement vs. tuples + Python json, same rows."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        q = page_query(conn, TABLE, PAGE, ApiSettings(tables=(TABLE,)))
        statement, params = query.page_sql(q)
        sql_text = conn.cursor().mogrify(statement, params)
        names = [c.name for c in q.relation.columns]
        plain = f"SELECT * FROM {TABLE} ORDER BY id LIMIT {PAGE + 1}"  # noqa: S608

        def in_postgres() -> int:
            with conn.cursor() as cur:
                cur.execute(sql_text)
                data, fetched, _key = cur.fetchone()
            body = '{"data":[' + (data or "") + '],"next_cursor":null}'
            return len(body) and min(fetched, PAGE)

        def in_python() -> int:
            with conn.cursor() as cur:
                cur.execute(plain)
                rows = cur.fetchall()[:PAGE]
            body = json.dumps({"data": [dict(zip(names, r, strict=True)) for r in rows],
                               "next_cursor": None}, default=str)
            return len(body) and len(rows)

        return _rate(in_postgres, seconds), _rate(in_python, seconds)


def _rate(fn, seconds: float) -> float:
    for _ in range(3):
        fn()
    rows, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows += fn()
    return rows / (time.perf_counter() - start)


def api_pages(base: str, seconds: float, clients: int) -> float:
    """rows/s through the service: each client walks the table by cursor, 1000 rows a page."""
    url = urllib.parse.urlsplit(base)
    total = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        cursor = None
        rows = 0
        while time.perf_counter() < deadline:
            path = f"/tables/{TABLE}/rows?limit={PAGE}"
            if cursor:
                path += f"&cursor={cursor}"
            conn.request("GET", path)
            response = conn.getresponse()
            body = json.loads(response.read())
            assert response.status == 200, body
            rows += len(body["data"])
            cursor = body["next_cursor"]
        conn.close()
        with lock:
            total[0] += rows

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total[0] / (time.perf_counter() - start)


@contextlib.contextmanager
def rss_sampler(pids: list[int]) -> Iterator[dict[str, int]]:
    peak = {"before": sum(psutil.Process(p).memory_info().rss for p in pids), "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            for p in pids:
                with contextlib.suppress(psutil.Error):
                    peak["peak"] = max(peak["peak"], psutil.Process(p).memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def export(base: str, rows: int, workers: list[int]) -> tuple[float, int, dict[str, int]]:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    with rss_sampler(workers) as rss:
        start = time.perf_counter()
        conn.request("GET", f"/tables/{TABLE}/rows?limit={rows}",
                     headers={"Accept": "application/x-ndjson"})
        response = conn.getresponse()
        assert response.status == 200
        lines = 0
        while chunk := response.read(1 << 16):
            lines += chunk.count(b"\n")
        elapsed = time.perf_counter() - start
    conn.close()
    return lines / elapsed, lines, rss


def worker_pids(master: int) -> list[int]:
    return [c.pid for c in psutil.Process(master).children()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with database() as dsn:
        started = time.perf_counter()
        create_table(dsn, args.rows)
        print(f"table {TABLE}: {args.rows:,} rows in {time.perf_counter() - started:.1f}s",
              flush=True)
        pg, py = direct_pages(dsn, args.seconds)
        print(f"1000-row pages, direct: JSON built in PostgreSQL {pg:,.0f} rows/s; "
              f"tuples + Python json {py:,.0f} rows/s ({pg / py:.1f}x)", flush=True)
        os.environ["API_MAX_EXPORT_ROWS"] = str(args.rows)
        with gunicorn("wsgi:application", dsn, "asgi", args.workers) as base:
            master = _master_pid(base)
            for clients in (1, 4):
                rate = api_pages(base, args.seconds, clients)
                print(f"1000-row pages via the API, {clients} client(s), {args.workers} workers: "
                      f"{rate:,.0f} rows/s", flush=True)
            rate, lines, rss = export(base, args.rows, worker_pids(master))
            print(f"NDJSON export of {lines:,} rows: {rate:,.0f} rows/s; worker RSS before "
                  f"{rss['before'] / 2**20 / max(1, args.workers):.0f} MiB (mean), peak during "
                  f"export {rss['peak'] / 2**20:.0f} MiB", flush=True)


def _master_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN \
                and conn.pid:
            proc = psutil.Process(conn.pid)
            return proc.ppid() if proc.children() == [] else proc.pid
    raise RuntimeError("gunicorn master not found")


if __name__ == "__main__":
    main()
