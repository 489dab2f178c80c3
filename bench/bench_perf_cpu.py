"""CPU time per request, worker and database backend, by route and code tree (issue #10).

Throughput on a shared 2-core machine swings by 2x between runs; the CPU time a request costs
(the worker's user + system time, plus its PostgreSQL backends') does much less, and it is
what bounds throughput once the cores are busy. Each round, interleaved: for every code tree
(``--tree label=path``) one gunicorn worker serves wrk (``-c`` connections, ``--seconds``) on
each ``--path``; the worker's and its backends' CPU (``/proc/<pid>/stat``) over the requests
wrk made gives ms per request. The same round measures the backend CPU of ``--sql`` statements
run back to back on one connection (e.g. the plain ``json_agg`` of the same rows).

Usage: python -m bench.bench_perf_cpu --dsn DSN --path '/tables/orders/rows?limit=1000'
       [--path /] [--tree new=. --tree old=/tmp/old] [--sql plain='select ...'] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import psutil
import psycopg2

from bench.bench_perf_rows import gunicorn

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def backend_pids(dsn: str, worker: int) -> list[int]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                    (f"pgrest worker {worker}",))
        return [r[0] for r in cur.fetchall()]


def wrk_requests(url: str, seconds: int, connections: int) -> int:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url], check=True,
                         capture_output=True, text=True).stdout
    match = re.search(r"(\d+) requests in", out)
    return int(match.group(1)) if match else 0


def api_cost(base: str, dsn: str, path: str, seconds: int, connections: int) -> tuple[float, float]:
    """(worker ms, backends ms) per request of ``path``."""
    port = base.rsplit(":", 1)[1]
    worker = next(p.pid for p in psutil.process_iter(["cmdline"])
                  if p.info["cmdline"] and "gunicorn" in " ".join(p.info["cmdline"])
                  and p.children() == [] and _listens(p, int(port)))
    wrk_requests(base + path, 1, connections)  # warm-up: pool full, code paths hot
    backends = backend_pids(dsn, worker)
    before = cpu_seconds(worker), sum(cpu_seconds(b) for b in backends)
    n = wrk_requests(base + path, seconds, connections)
    after = cpu_seconds(worker), sum(cpu_seconds(b) for b in backends)
    return (after[0] - before[0]) / n * 1000, (after[1] - before[1]) / n * 1000


def _listens(proc: psutil.Process, port: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return any(c.laddr.port == port for c in proc.net_connections("tcp"))
    return False


def sql_cost(dsn: str, statement: str, count: int) -> float:
    """Backend ms per execution, back to back on one connection."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute(statement)
        cur.fetchall()
        start = cpu_seconds(pid)
        for _ in range(count):
            cur.execute(statement)
            cur.fetchall()
        return (cpu_seconds(pid) - start) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--tree", action="append", default=[])
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--sql", action="append", default=[], help="label=statement")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--count", type=int, default=200, help="executions per --sql round")
    args = parser.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["this", str(ROOT)]]
    paths = args.path or ["/"]
    sqls = [s.split("=", 1) for s in args.sql]
    results: dict[str, list[tuple[float, float]]] = {}
    for round_no in range(args.repeat):
        for label, tree in trees:
            with gunicorn(Path(tree), args.dsn, 1, {"POOL_MAX_SIZE": "4"}) as base:
                time.sleep(0.5)
                for path in paths:
                    cost = api_cost(base, args.dsn, path, args.seconds, args.connections)
                    results.setdefault(f"{label} {path}", []).append(cost)
                    print(f"round {round_no + 1}: {label} {path}: worker {cost[0]:.3f} ms, "
                          f"backends {cost[1]:.3f} ms", flush=True)
        for label, statement in sqls:
            cost = (0.0, sql_cost(args.dsn, statement, args.count))
            results.setdefault(f"sql {label}", []).append(cost)
            print(f"round {round_no + 1}: sql {label}: backend {cost[1]:.3f} ms", flush=True)
    print(f"\nCPU ms per request, medians of {args.repeat} interleaved rounds "
          f"(wrk -c{args.connections}, 1 worker):")
    print("| case | worker | backends | total |")
    print("|---|---|---|---|")
    for name, costs in results.items():
        worker = statistics.median(c[0] for c in costs)
        backend = statistics.median(c[1] for c in costs)
        total = statistics.median(c[0] + c[1] for c in costs)
        print(f"| {name} | {worker:.3f} | {backend:.3f} | {total:.3f} |")


if __name__ == "__main__":
    main()
