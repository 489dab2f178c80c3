"""Cost of the pool's watchdog (statement deadline, hung peers) on ``GET /``, in one run.

With: the defaults (STATEMENT_TIMEOUT 30 s: the watchdog looks at checked-out connections every
QUERY_DEADLINE_MARGIN / 4). Without: POOL_STATEMENT_TIMEOUT=0, which turns the deadline and so
the watchdog thread off. Rounds interleave the two; the median of each is kept.

Usage: python -m bench.bench_deadline [--seconds 10] [--connections 16] [--workers 2]
"""

from __future__ import annotations

import os
import statistics

from bench.bench_pool import database, gunicorn, wrk, wrk_options

CASES = {
    "watchdog on (STATEMENT_TIMEOUT=30000)": "30000",
    "watchdog off (STATEMENT_TIMEOUT=0)": "0",
}


def main() -> None:
    args = wrk_options(__doc__.splitlines()[0])
    runs: dict[str, list[float]] = {label: [] for label in CASES}
    with database() as dsn:
        for round_no in range(args.repeat):
            for label, statement_timeout in CASES.items():
                os.environ["POOL_STATEMENT_TIMEOUT"] = statement_timeout
                with gunicorn("wsgi:application", dsn, "uvicorn", args.workers) as base:
                    rps = wrk(base + "/", args.seconds, args.connections)
                runs[label].append(rps)
                print(f"round {round_no + 1}: {label:40s} {rps:8.0f} req/s", flush=True)
    print(f"\nwrk -t1 -c{args.connections} -d{args.seconds}s, {args.workers} workers, "
          f"median of {args.repeat}:")
    for label, rounds in runs.items():
        print(f"| {label} | {statistics.median(rounds):,.0f} req/s | rounds {rounds} |")


if __name__ == "__main__":
    main()
