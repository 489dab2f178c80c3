"""Rows pages through the API against PostgreSQL's own ``json_agg``, in one run (issue #10).

For each round, interleaved: ``GET /tables/<table>/rows?limit=1000`` with wrk at each
concurrency, for every code tree given (``--tree label=path``: e.g. this checkout and an
exported older commit, to measure a lever before/after), and pgbench running the plain
``json_agg`` of the same rows (and, with ``--generated``, a statement file). Prints medians in
rows/s and the ratios API / plain.

Usage: python -m bench.bench_perf_rows --dsn DSN [--table orders] [--tree new=. --tree old=/tmp/x]
       [--seconds 5] [--repeat 3] [--clients 1,4] [--workers 2] [--path-suffix '']
Needs wrk and pgbench. The DSN's database must hold the table (e.g. the demo's ``orders``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from bench import bench_pool

ROOT = Path(__file__).resolve().parent.parent
PAGE = 1000


def gunicorn(tree: Path, dsn: str, workers: int,
             extra: Mapping[str, str]) -> contextlib.AbstractContextManager[str]:
    """``gunicorn wsgi:application`` run from ``tree`` (its gunicorn.conf.py and code)."""
    settings = {"SERVER_ACCESS_LOG": "off", "POOL_MIN_SIZE": "4", "PYTHONPATH": str(tree),
                "APP_CONFIG": "/dev/null", **extra}  # extra wins over the defaults
    return bench_pool.gunicorn(
        "wsgi:application", dsn, "uvicorn", workers, settings, probe="/health/ready",
        drop_prefixes=("POOL_", "SERVER_", "API_", "AUTH_", "CORS_"), cwd=tree)


def wrk(url: str, seconds: int, connections: int, headers: list[str]) -> float:
    base = ["wrk", "-t1", f"-c{connections}"]
    for header in headers:
        base += ["-H", header]
    subprocess.run([*base, "-d1s", url], check=True, capture_output=True)  # warm-up
    out = subprocess.run([*base, f"-d{seconds}s", url], check=True, capture_output=True,
                         text=True).stdout
    if re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        print(f"  warning: non-2xx responses from {url}", file=sys.stderr)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def pgbench(dsn: str, sql_text: str, seconds: int, clients: int) -> float:
    parts = dict(p.split("=", 1) for p in dsn.split())
    env = dict(os.environ, PGPASSWORD=parts.get("password", ""))
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(sql_text.rstrip().rstrip(";") + ";\n")
    try:
        out = subprocess.run(
            ["pgbench", "-n", "-h", parts.get("host", "localhost"), "-p", parts.get("port", "5432"),
             "-U", parts.get("user", "postgres"), "-T", str(seconds), "-c", str(clients),
             "-j", str(clients), "-f", f.name, parts.get("dbname", "postgres")],
            check=True, capture_output=True, text=True, env=env).stdout
    finally:
        os.unlink(f.name)
    match = re.search(r"tps = ([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--table", default="orders")
    parser.add_argument("--tree", action="append", default=[],
                        help="label=path of a code tree to serve (default: this checkout)")
    parser.add_argument("--generated", help="a file with the generated statement, for pgbench")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--query", default=f"limit={PAGE}")
    args = parser.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["this", str(ROOT)]]
    clients = [int(c) for c in args.clients.split(",")]
    plain = (f"select json_agg(t)::text from (select * from {args.table} "  # noqa: S608
             f"order by id limit {PAGE}) t")
    results: dict[str, list[float]] = {}
    for round_no in range(args.repeat):
        cases: list[tuple[str, float]] = []
        for label, tree in trees:
            with gunicorn(Path(tree), args.dsn, args.workers, {}) as base:
                url = f"{base}/tables/{args.table}/rows?{args.query}"
                for c in clients:
                    cases.append((f"api {label} c={c}", wrk(url, args.seconds, c, args.header)))
        for c in clients:
            cases.append((f"pgbench plain c={c}", pgbench(args.dsn, plain, args.seconds, c)))
            if args.generated:
                cases.append((f"pgbench generated c={c}",
                              pgbench(args.dsn, Path(args.generated).read_text(), args.seconds, c)))
        for name, rate in cases:
            results.setdefault(name, []).append(rate * PAGE)
            print(f"round {round_no + 1}: {name:28s} {rate * PAGE:12,.0f} rows/s", flush=True)
    print(f"\nmedians of {args.repeat} interleaved rounds, {args.workers} workers, "
          f"{args.seconds}s each, rows/s ({args.table}, {args.query}):")
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, value in medians.items():
        c = name.rsplit("c=", 1)[1]
        ref = medians.get(f"pgbench plain c={c}") or 1.0
        print(f"| {name} | {value:,.0f} | {value / ref:.2f} of plain json_agg |")


if __name__ == "__main__":
    main()
