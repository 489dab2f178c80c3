"""The benchmark command (scripts/bench, ``python -m bench``) runs end to end: every variant
measured, the results file and the plot written. No speed is asserted (2 noisy cores): only that
each variant answered, without errors, and that the report has its parts. Also the parsers of
the load generators' reports, on their real formats."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.load import Measure, parse_mix, parse_pgbench, parse_wrk
from bench.variants import RATIOS, VARIANTS
from swagger_server.config import PROJECT_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(180)
def test_the_benchmark_measures_every_variant_and_writes_table_and_plot(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BENCH_DATABASE_URL"}  # its own server
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--seconds", "1", "--rounds", "1", "--concurrency", "1",
         "--warmup", "1", "--out", str(tmp_path), "--name", "smoke"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]

    text = (tmp_path / "smoke.md").read_text(encoding="utf-8")
    for variant in VARIANTS:
        row = re.search(rf"^\| {re.escape(variant.label)} \| 1 \| ([\d,.]+) \| ([\d,.]+|-) "
                        r"\| ([\d.]+) \| ([\d.]+) \| (\d+) \|$", text, re.MULTILINE)
        assert row, f"no row for {variant.label}:\n{text}"
        rate, rows, _p50, _p99, errors = row.groups()
        assert float(rate.replace(",", "")) > 0, variant.label  # it was measured at all
        assert errors == "0", f"{variant.label}: {errors} non-2xx or socket errors"
        assert (rows != "-") == bool(variant.rows), variant.label
    for ratio in RATIOS:
        assert re.search(rf"^\| {re.escape(ratio.label)} \| [\d.]+( [✓✗])? \|", text,
                         re.MULTILINE), ratio.label
    for fact in ("CPU", "cores", "RAM", "kernel", "PostgreSQL", "Python", "git commit",
                 "load average at start"):
        assert re.search(rf"^\| {fact} \| \S", text, re.MULTILINE), fact
    assert "![" in text and "(smoke.png)" in text
    png = (tmp_path / "smoke.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:8000/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.77ms    3.03ms  31.45ms   79.81%
    Req/Sec     1.65k   133.56     1.89k    70.00%
  Latency Distribution
     50%  850.00us
     75%   10.66ms
     90%   13.17ms
     99%    1.20s
  4927 requests in 3.00s, 650.58KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   1641.31
Transfer/sec:    216.79KB
"""


def test_wrk_report_gives_rate_percentiles_in_ms_and_every_error() -> None:
    assert parse_wrk(WRK_OUTPUT) == Measure(1641.31, 0.85, 1200.0, 12)


def test_wrk_report_without_requests_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_pgbench_report_gives_tps_failures_and_percentiles_of_the_logged_latencies() -> None:
    out = ("number of transactions actually processed: 100\nnumber of failed transactions: 3 "
           "(2.9%)\ntps = 812.5 (without initial connection time)\n")
    measure = parse_pgbench(out, [float(us) for us in range(1000, 101_000, 1000)])  # 1..100 ms
    assert measure.rate == 812.5 and measure.errors == 3
    assert measure.p50_ms == pytest.approx(50.5) and measure.p99_ms == pytest.approx(99.01)


def test_readme_gets_the_latest_tables_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Benchmark\n\n{report.README_START}\nold\n{report.README_END}\n"
                      "\n## Next\n", encoding="utf-8")
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    md = results / "2026-01-01.md"
    md.write_text("# Benchmark, 2026-01-01\n\n| table |\n\n![plot](2026-01-01.png)\n\n"
                  "## Machine and run\n\n| facts |\n", encoding="utf-8")
    report.update_readme(readme, md, results / "2026-01-01.png")
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and "| table |" in text and "| facts |" not in text
    assert "![plot](bench/results/2026-01-01.png)" in text
    assert "[bench/results/2026-01-01.md](bench/results/2026-01-01.md)" in text
    assert text.endswith(f"{report.README_END}\n\n## Next\n")


def test_pgbench_report_of_no_transaction_is_a_zero_rate_not_a_crash() -> None:
    """Clients still connecting when a short run ends: pgbench prints no tps line."""
    out = ("number of transactions actually processed: 0\n"
           "number of failed transactions: 0 (NaN%)\n")
    assert parse_pgbench(out, []) == Measure(0.0, 0.0, 0.0, 0)


def test_one_run_of_two_statements_gives_each_its_rate_from_its_own_latencies() -> None:
    out = ("number of transactions actually processed: 300\nnumber of failed transactions: 1 "
           "(0.3%)\ntps = 100.0 (without initial connection time)\n")
    latencies = {0: [2000.0] * 100, 1: [4000.0] * 200}  # script 0: 2 ms each, script 1: 4 ms
    got = parse_mix(out, latencies, ["generated", "json_agg"], clients=4)
    assert got["generated"] == Measure(2000.0, 2.0, 2.0, 1)  # 4 clients / 2 ms
    assert got["json_agg"] == Measure(1000.0, 4.0, 4.0, 1)
    assert parse_mix(out, {0: [1000.0]}, ["a", "b"], clients=1)["b"].rate == 0.0
