"""A page of 100 orders with their customer and items embedded, in one run, interleaved rounds:

- the API (``wrk``) against ``pgbench`` running the very statement the service builds for that
  page (goal: the API at >= 0.6 of pgbench);
- the same page through the API the N+1 way (1 page of orders + 100 customer rows by key + 100
  item lists: 201 requests) against the one embedding request, both from the same Python
  clients, in whole pages per second.

Usage: python -m bench.bench_embed [--seconds 10] [--connections 16] [--workers 2] [--repeat 3]
Needs ``wrk`` and ``pgbench``. Uses BENCH_DATABASE_URL (the demo is loaded into it unless there),
else a temporary embedded server with the demo shop. Not a test: figures are as measured on a
noisy machine; ratios within one run are what count.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import psycopg2

from bench.bench_pool import database, gunicorn, wrk  # puts the project on sys.path
from swagger_server.config import ApiSettings
from swagger_server.data import catalog, embed, query
from swagger_server.db import demo

PAGE = 100
SELECT = ("id,status,total,customer:customers(name,country),"
          "order_items(line_no,product_id,quantity,unit_price)")
EMBED_PATH = f"/tables/orders/rows?select={urllib.parse.quote(SELECT, safe=',:()')}&limit={PAGE}"
PLAIN_PATH = f"/tables/orders/rows?select=id,status,total,customer_id&limit={PAGE}"


def generated_statement(dsn: str) -> str:
    """The page statement the service builds for EMBED_PATH, values inlined for pgbench."""
    api = ApiSettings()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cat = catalog.load(conn, api)
        relation = cat.resolve("orders")
        assert relation is not None
        shape = embed.parse(cat, relation, SELECT, api.max_embed_depth, api.max_embeds)
        order, unique = query.parse_order(relation, None)
        q = query.RowsQuery(relation, (), order=order, unique=unique, limit=PAGE, shape=shape)
        statement, params = query.page_sql(q)
        return cur.mogrify(statement, params).decode()


def pgbench(dsn: str, script: Path, seconds: int, clients: int, protocol: str) -> float:
    """Transactions/s of pgbench running ``script`` (one statement each), kept connections.

    ``simple``: parsed and planned each time, as the service sends it (psycopg2 inlines values
    and has no prepared statements); ``prepared``: planned once, the harder reference."""
    params = psycopg2.extensions.parse_dsn(dsn)
    env_args = ["-h", params.get("host", "localhost"), "-p", str(params.get("port", 5432)),
                "-U", params.get("user", "postgres"), params.get("dbname", "postgres")]
    env = {"PGPASSWORD": params.get("password", ""), "PATH": "/usr/bin:/bin"}
    base = ["pgbench", "-n", "-M", protocol, f"-c{clients}", "-j1", "-f", str(script)]
    subprocess.run([*base, "-T2", *env_args], check=True, capture_output=True, env=env)
    out = subprocess.run([*base, f"-T{seconds}", *env_args], check=True, capture_output=True,
                         text=True, env=env).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def pages_per_second(base: str, seconds: float, clients: int, n_plus_one: bool) -> float:
    """Whole pages (orders with customer and items) per second, ``clients`` at once."""
    url = urllib.parse.urlsplit(base)
    done = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def get(conn: http.client.HTTPConnection, path: str) -> object:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        return json.loads(body)

    def one_page(conn: http.client.HTTPConnection, offset: int) -> None:
        if not n_plus_one:
            page = get(conn, f"{EMBED_PATH}&offset={offset}")
            assert len(page["data"]) == PAGE  # type: ignore[index]
            return
        orders = get(conn, f"/tables/orders/rows?select=id,status,total,customer_id"
                           f"&limit={PAGE}&offset={offset}")["data"]  # type: ignore[index]
        for order in orders:
            order["customer"] = get(conn, f"/tables/customers/rows/{order['customer_id']}"
                                          "?select=name,country")
            order["order_items"] = get(
                conn, f"/tables/order_items/rows?filter=order_id.eq.{order['id']}"
                      "&select=line_no,product_id,quantity,unit_price")["data"]  # type: ignore

    def client(number: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        pages = 0
        while time.perf_counter() < deadline:
            one_page(conn, ((number * 37 + pages) % 200) * PAGE)
            pages += 1
        conn.close()
        with lock:
            done[0] += pages

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4, help="Python clients (N+1 ratio)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds, interleaved; median kept")
    args = parser.parse_args()
    for tool in ("wrk", "pgbench"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install {tool}")
    keys = ("pgbench", "prepared", "plain", "api", "embed", "n+1")
    results: dict[str, list[float]] = {k: [] for k in keys}
    with database() as dsn:
        demo.seed(dsn)
        statement = generated_statement(dsn)
        with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
            script = Path(tmp) / "page.sql"
            script.write_text(statement + ";\n", encoding="utf-8")
            with gunicorn("wsgi:application", dsn, "asgi", args.workers,
                          probe="/health/live") as base:
                for round_no in range(1, args.repeat + 1):
                    tps = pgbench(dsn, script, args.seconds, args.connections, "simple")
                    prepared = pgbench(dsn, script, args.seconds, args.connections, "prepared")
                    plain = wrk(base + PLAIN_PATH, args.seconds, args.connections)
                    rps = wrk(base + EMBED_PATH, args.seconds, args.connections)
                    embedded = pages_per_second(base, args.seconds, args.clients, False)
                    n_plus_one = pages_per_second(base, args.seconds, args.clients, True)
                    for key, value in zip(keys, (tps, prepared, plain, rps, embedded,
                                                 n_plus_one), strict=True):
                        results[key].append(value)
                    print(f"round {round_no}: pgbench {tps:,.0f} tps (prepared {prepared:,.0f})"
                          f", API {rps:,.0f} req/s ({rps / tps:.2f}; plain page {plain:,.0f}); "
                          f"pages/s with {args.clients} clients: embedded {embedded:,.1f}, "
                          f"N+1 {n_plus_one:,.2f} ({embedded / n_plus_one:.0f}x)", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedian of {args.repeat} rounds, {args.workers} workers:")
    print(f"| page of {PAGE} orders + customer + items | per second | ratio |")
    print("|---|---|---|")
    print(f"| pgbench -M simple, the generated statement (-c{args.connections}) | "
          f"{med['pgbench']:,.0f} | 1.00 |")
    print(f"| pgbench -M prepared, the same | {med['prepared']:,.0f} | "
          f"{med['prepared'] / med['pgbench']:.2f} |")
    print(f"| API, 100 orders without embeds (wrk) | {med['plain']:,.0f} | "
          f"{med['plain'] / med['pgbench']:.2f} |")
    print(f"| API, one request (wrk -t1 -c{args.connections}) | {med['api']:,.0f} | "
          f"{med['api'] / med['pgbench']:.2f} |")
    print(f"| API, one request ({args.clients} Python clients) | {med['embed']:,.1f} | "
          f"{med['embed'] / med['n+1']:.0f}x N+1 |")
    print(f"| API, N+1: 201 requests ({args.clients} Python clients) | {med['n+1']:,.2f} | "
          "1 |")


if __name__ == "__main__":
    main()
