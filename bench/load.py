"""The load generators: wrk for HTTP, pgbench for a statement straight on PostgreSQL.

Each run gives a :class:`Measure` (rate, p50 and p99 latency, errors) parsed from the tool's own
report, so an HTTP variant and a pgbench ceiling are read the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg2.extensions

ROOT = Path(__file__).resolve().parent.parent
ENSURE_WRK = ROOT / "scripts" / "ensure-wrk"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class Measure:
    rate: float  # requests (or statements) per second
    p50_ms: float
    p99_ms: float
    errors: int = 0  # non-2xx answers, socket errors, failed statements


def ensure_wrk() -> str:
    """wrk's path, installed by scripts/ensure-wrk when missing (as root); else a clear error."""
    if not shutil.which("wrk"):
        done = subprocess.run([str(ENSURE_WRK)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip() or f"{ENSURE_WRK} failed")
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is still not on PATH after scripts/ensure-wrk")
    return path


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> Measure:
    """wrk --latency's report: Requests/sec, the 50 % and 99 % lines, errors of every kind."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return Measure(float(rate.group(1)), _duration_ms(p50.group(1)) if p50 else 0.0,
                   _duration_ms(p99.group(1)) if p99 else 0.0, errors)


def wrk(url: str, seconds: int, connections: int, header: str | None = None) -> Measure:
    """One wrk run: one thread (the other core serves), ``connections`` kept-alive clients."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
            *(["-H", header] if header else []), url]
    out = subprocess.run(argv, check=True, capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    return parse_wrk(out)


def pgbench_path() -> str:
    """The pgbench of the embedded server's binaries (pgserver), else one on PATH."""
    try:
        from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        POSTGRES_BIN_PATH = None
    if POSTGRES_BIN_PATH and (Path(POSTGRES_BIN_PATH) / "pgbench").exists():
        return str(Path(POSTGRES_BIN_PATH) / "pgbench")
    found = shutil.which("pgbench")
    if found is None:
        raise RuntimeError("pgbench not found: install pgserver (the dev lock) or "
                           "postgresql-client (apt-get install -y postgresql-client)")
    return found


def libpq_env(dsn: str) -> dict[str, str]:
    """The DSN as libpq variables: the password never appears on a command line."""
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE",
             "password": "PGPASSWORD", "sslmode": "PGSSLMODE", "options": "PGOPTIONS"}
    params = psycopg2.extensions.parse_dsn(dsn)
    return {**os.environ, **{names[k]: str(v) for k, v in params.items() if k in names}}


def parse_pgbench(out: str, latencies_us: list[float]) -> Measure:
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if tps is None:
        if re.search(r"number of transactions actually processed: 0\b", out):
            # Its clients were still connecting when the time was up (pgbench prints no tps).
            return Measure(0.0, 0.0, 0.0, int(failed.group(1)) if failed else 0)
        raise RuntimeError(f"no tps in pgbench's output:\n{out}")
    p50, p99 = _percentiles_ms(latencies_us)
    return Measure(float(tps.group(1)), p50, p99, int(failed.group(1)) if failed else 0)


def pgbench(dsn: str, statement: str, seconds: int, clients: int) -> Measure:
    """``statement`` run by ``clients`` sessions for ``seconds``, simple protocol (as psycopg2
    sends it); latencies from pgbench's per-transaction log."""
    out, latencies = _run_pgbench(dsn, [statement], seconds, clients)
    return parse_pgbench(out, latencies.get(0, []))


def pgbench_mix(dsn: str, statements: Mapping[str, str], seconds: int,
                clients: int) -> dict[str, Measure]:
    """The statements in one pgbench run, each transaction one of them at random (equal
    weights): both meet the same moments of a noisy machine, so the ratio of their times is
    steadier than one of two runs taken apart. Each gets ``clients`` / its mean latency as its
    rate (what a run of that statement alone would do at that latency) and its percentiles."""
    names = list(statements)
    out, latencies = _run_pgbench(dsn, [statements[n] for n in names], seconds, clients)
    return parse_mix(out, latencies, names, clients)


def parse_mix(out: str, latencies_us: Mapping[int, list[float]], names: list[str],
              clients: int) -> dict[str, Measure]:
    overall = parse_pgbench(out, [])
    measures = {}
    for number, name in enumerate(names):
        found = latencies_us.get(number, [])
        if not found:
            measures[name] = Measure(0.0, 0.0, 0.0, overall.errors)
            continue
        rate = clients / (statistics.fmean(found) / 1e6)
        p50, p99 = _percentiles_ms(found)
        measures[name] = Measure(rate, p50, p99, overall.errors)
    return measures


def _percentiles_ms(latencies_us: list[float]) -> tuple[float, float]:
    if len(latencies_us) < 2:
        return 0.0, 0.0
    cuts = statistics.quantiles(latencies_us, n=100, method="inclusive")
    return cuts[49] / 1e3, cuts[98] / 1e3


def _run_pgbench(dsn: str, statements: list[str], seconds: int,
                 clients: int) -> tuple[str, dict[int, list[float]]]:
    """pgbench's report and its logged latencies (microseconds) by script number."""
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        scripts: list[str] = []
        for number, statement in enumerate(statements):
            script = Path(tmp) / f"statement{number}.sql"
            # One line: pgbench reads a script line by line and ``:name`` as its variable.
            script.write_text(" ".join(statement.split()).rstrip(";") + ";\n", encoding="utf-8")
            scripts += ["-f", f"{script}@1"]
        argv = [pgbench_path(), "-n", *scripts, f"-c{clients}",
                f"-j{min(clients, 2)}", f"-T{seconds}", "-l", f"--log-prefix={tmp}/log"]
        done = subprocess.run(argv, capture_output=True, text=True, env=libpq_env(dsn),
                              timeout=seconds + 60, cwd=tmp)
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed: {done.stderr.strip()[-2000:]}")
        latencies: dict[int, list[float]] = {}
        for log in Path(tmp).glob("log.*"):
            for line in log.read_text(encoding="utf-8").splitlines():
                # client, transaction, latency (us), script number, epoch s, us
                fields = line.split()
                if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
                    latencies.setdefault(int(fields[3]), []).append(float(fields[2]))
        return done.stdout, latencies
