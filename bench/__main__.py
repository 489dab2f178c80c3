"""The benchmark anyone can run (``scripts/bench``, or ``python -m bench``): the service, the
reference variants and the pgbench ceilings in one run, interleaved rounds at several
concurrencies; writes ``bench/results/<date>.md`` and ``<date>.png``.

Uses BENCH_DATABASE_URL (the demo shop is loaded there unless its tables exist), else a temporary
embedded PostgreSQL with the demo shop. Needs wrk (scripts/ensure-wrk installs it as root).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import load, report, statements  # noqa: E402
from bench.bench_pool import database, gunicorn  # noqa: E402
from bench.load import Measure  # noqa: E402
from bench.variants import BY_KEY, PAGE, SERVERS, TABLE, VARIANTS, Variant  # noqa: E402
from swagger_server.config import load_settings  # noqa: E402
from swagger_server.db import demo  # noqa: E402

# Every server's pools at their fullest (2 workers x 10, the seed's 20 per worker) plus pgbench's
# clients: more than PostgreSQL's default 100.
MAX_CONNECTIONS = 400


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="The service, the reference pools and the pgbench ceilings in one run, "
                    "interleaved rounds; writes <out>/<name>.md and .png (README: Benchmark).")
    parser.add_argument("--seconds", type=int, default=3, help="each measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; the median is kept (default 3)")
    parser.add_argument("--concurrency", default="1,4,16,64",
                        help="comma-separated client counts (default 1,4,16,64)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of load before a variant's first round at a concurrency "
                             "(default 1)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers per server (default 2)")
    parser.add_argument("--worker-class", choices=("uvicorn", "asgi"),
                        help="default: the service's configured [SERVER] WORKER_CLASS")
    parser.add_argument("--variants", default=",".join(v.key for v in VARIANTS),
                        help="comma-separated subset of: " + ", ".join(BY_KEY))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="folder for <date>.md and <date>.png (default bench/results)")
    parser.add_argument("--name", default=time.strftime("%Y-%m-%d", time.gmtime()),
                        help="file name stem (default today's date, UTC)")
    parser.add_argument("--note", default="", help="a line for the results file (e.g. noise)")
    parser.add_argument("--readme", action="store_true",
                        help="also put the table and plot into README.md's Benchmark section")
    parser.add_argument("--quick", action="store_true",
                        help="a first look: 2 s, one round, concurrency 1 and 4 (1 to 2 minutes)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.quick:
        args.seconds, args.rounds, args.concurrency = 2, 1, "1,4"
    args.worker_class = args.worker_class or load_settings().server.worker_class
    args.concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    unknown = [k for k in args.variants.split(",") if k not in BY_KEY]
    if unknown or not args.concurrencies or min(args.concurrencies) < 1 \
            or min(args.seconds, args.rounds, args.workers) < 1:
        parser.error(f"bad --variants {unknown}" if unknown else
                     "--concurrency, --seconds, --rounds and --workers must be at least 1")
    args.selected = [BY_KEY[k] for k in args.variants.split(",")]
    return args


@contextlib.contextmanager
def servers(dsn: str, wanted: set[str], workers: int,
            worker_class: str) -> Iterator[dict[str, str]]:
    """Every gunicorn server the variants need, up for the whole run: base URL by name. They
    start side by side (each waits for its workers to answer) and stop side by side."""
    starting = {name: gunicorn(SERVERS[name][0], dsn, worker_class, workers,
                               {"BENCH_POOL": SERVERS[name][1]}, probe="/health/live")
                for name in sorted(wanted)}
    with ThreadPoolExecutor(len(starting) or 1) as pool:
        futures = {name: pool.submit(server.__enter__) for name, server in starting.items()}
        bases, failed = {}, []
        for name, future in futures.items():
            try:
                bases[name] = future.result()
            except Exception as exc:  # the first is raised once every server is up or failed
                failed.append(exc)
        try:
            if failed:
                raise failed[0]
            yield bases
        finally:
            stops = [pool.submit(starting[name].__exit__, None, None, None) for name in bases]
            for stop in stops:
                stop.result()


def measure(variant: Variant, c: int, seconds: int, bases: dict[str, str],
            sql: dict[str, str], dsn: str, mixed: dict[str, Measure] | None = None) -> Measure:
    """One run; a run that fails counts as one error with no rate, and the benchmark goes on.

    ``mixed``: this round's one run of every "mix:" variant, made by the first of them."""
    try:
        if variant.sql.startswith("mix:"):
            if mixed is None:
                mixed = {}
            if not mixed:
                names = [v.sql[4:] for v in VARIANTS if v.sql.startswith("mix:")]
                mixed.update(load.pgbench_mix(dsn, {n: sql[n] for n in names}, seconds, c))
            return mixed[variant.sql[4:]]
        if variant.server is None:
            return load.pgbench(dsn, sql[variant.sql], seconds, c)
        return load.wrk(bases[variant.server] + variant.path, seconds, c)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"c={c}: {variant.label}: failed: {exc}", file=sys.stderr, flush=True)
        return Measure(0.0, 0.0, 0.0, errors=1)


def run(args: argparse.Namespace) -> Path:
    load.ensure_wrk()
    started = time.time()
    results: dict[tuple[str, int], list[Measure]] = {}
    with database(MAX_CONNECTIONS) as dsn:
        demo.seed(dsn)  # the demo shop, unless its tables exist already
        sql = {"generated": statements.generated(dsn, TABLE, PAGE),
               "json_agg": statements.plain_json_agg(TABLE, PAGE)}
        facts = report.machine_facts(dsn, args)
        wanted = {v.server for v in args.selected if v.server}
        with servers(dsn, wanted, args.workers, args.worker_class) as bases:
            facts["load average at start"] = report.load_average()
            for c in args.concurrencies:
                if args.warmup:
                    for variant in args.selected:  # connections opened, code paths hot
                        if variant.server is not None:  # pgbench connects anew each run
                            # Enough connections that every worker serves (and opens its pool).
                            measure(variant, max(c, 4 * args.workers), args.warmup, bases, sql,
                                    dsn)
                # Interleaved: A, B, C, A, B, C...; a noisy moment hurts every variant alike.
                for round_no in range(1, args.rounds + 1):
                    mixed: dict[str, Measure] = {}  # one pgbench run for the "mix:" variants
                    for variant in args.selected:
                        m = measure(variant, c, args.seconds, bases, sql, dsn, mixed)
                        results.setdefault((variant.key, c), []).append(m)
                        print(f"c={c:<3} round {round_no}: {variant.label:55.55s} "
                              f"{m.rate:9,.0f}/s p50 {m.p50_ms:7.2f} ms p99 {m.p99_ms:7.2f} ms"
                              + (f" errors {m.errors}" if m.errors else ""), flush=True)
            facts["load average at end"] = report.load_average()
    facts["duration"] = f"{time.time() - started:.0f} s"
    medians = {key: median(runs) for key, runs in results.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{args.name}.png"
    report.plot(medians, args.selected, args.concurrencies, png)
    md = args.out / f"{args.name}.md"
    table = report.markdown(medians, args.selected, args.concurrencies, facts, png.name,
                            args.note, sql)
    md.write_text(table, encoding="utf-8")
    if args.readme:
        report.update_readme(ROOT / "README.md", md, png)
    print(f"wrote {md} and {png}")
    return md


def median(runs: list[Measure]) -> Measure:
    return Measure(statistics.median(m.rate for m in runs),
                   statistics.median(m.p50_ms for m in runs),
                   statistics.median(m.p99_ms for m in runs), sum(m.errors for m in runs))


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
