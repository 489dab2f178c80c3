"""The benchmark's results file (Markdown: machine facts, the table, the goal ratios) and plot."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import psycopg2

from bench import load
from bench.load import Measure
from bench.variants import RATIOS, Variant

ROOT = Path(__file__).resolve().parent.parent
README_START = "<!-- bench:latest:start (scripts/bench --readme writes this part) -->"
README_END = "<!-- bench:latest:end -->"

Medians = dict[tuple[str, int], Measure]


def _first(path: str, pattern: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            match = re.match(pattern, line)
            if match:
                return match.group(1).strip()
    return "?"


def _command(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except OSError:
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) \
        else "?"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts(dsn: str, args: argparse.Namespace) -> dict[str, str]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version")
        pg_version = cur.fetchone()[0]
    commit = _command("git", "rev-parse", "--short", "HEAD")
    if _command("git", "status", "--porcelain", "--untracked-files=no") not in ("?", ""):
        commit += " (with uncommitted changes)"
    mem_kib = _first("/proc/meminfo", r"MemTotal:\s+(\d+)")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git commit": commit,
        "CPU": _first("/proc/cpuinfo", r"model name\s*:\s*(.*)"),
        "cores": str(os.cpu_count()),
        "RAM": f"{int(mem_kib) / 2**20:.1f} GiB" if mem_kib.isdigit() else "?",
        "kernel": platform.release(),
        "PostgreSQL": pg_version,
        "Python": platform.python_version(),
        "gunicorn": metadata.version("gunicorn"),
        "servers": f"{args.workers} workers each, worker class {args.worker_class}, "
                   "POOL_MAX_SIZE 10",
        "wrk": _command("wrk", "--version").split(" Copyright")[0] + ", one thread",
        "pgbench": _command(load.pgbench_path(), "--version")
                   + f", simple protocol, threads min(c, {2})",
        "measurement": f"{args.seconds} s each, {args.rounds} interleaved round(s), median; "
                       f"{args.warmup} s warm-up per variant and concurrency",
        "command": "scripts/bench " + shlex.join(args.argv),
    }


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def markdown(medians: Medians, variants: Sequence[Variant], concurrencies: Sequence[int],
             facts: dict[str, str], png: str, note: str, sql: dict[str, str]) -> str:
    lines = [f"# Benchmark, {facts['date']}", ""]
    if note:
        lines += [note, ""]
    lines += [table(medians, variants, concurrencies), "", ratios(medians, concurrencies), "",
              f"![req/s, rows/s and latency vs concurrency]({png})", "", "## Machine and run", "",
              "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Statements run by pgbench", ""]
    for name, text in sql.items():
        lines += [f"{name}:", "", "```sql", text.strip(), "```", ""]
    return "\n".join(lines)


def table(medians: Medians, variants: Sequence[Variant], concurrencies: Sequence[int]) -> str:
    head = ["| variant | c | req/s | rows/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for v in variants:
        for c in concurrencies:
            m = medians.get((v.key, c))
            if m is None:
                continue
            rows_per_s = _num(m.rate * v.rows) if v.rows else "-"
            rows.append(f"| {v.label} | {c} | {_num(m.rate)} | {rows_per_s} | {m.p50_ms:.2f} "
                        f"| {m.p99_ms:.2f} | {m.errors} |")
    return "\n".join(head + rows)


def ratios(medians: Medians, concurrencies: Sequence[int]) -> str:
    head = ["| ratio | " + " | ".join(f"c={c}" for c in concurrencies) + " | goal (issue #10) |",
            "|---|" + "---:|" * len(concurrencies) + "---|"]
    rows = []
    for r in RATIOS:
        cells = []
        for c in concurrencies:
            top, bottom = medians.get((r.numerator, c)), medians.get((r.denominator, c))
            if top is None or bottom is None or not bottom.rate:
                cells.append("-")
                continue
            value = top.rate / bottom.rate
            verdict = r.holds(value) if not r.at or c in r.at else None
            mark = {True: " ✓", False: " ✗", None: ""}[verdict]
            cells.append(f"{value:.2f}{mark}")
        if any(cell != "-" for cell in cells):
            rows.append(f"| {r.label} | " + " | ".join(cells) + f" | {r.goal or '-'} |")
    return "\n".join(head + rows)


def plot(medians: Medians, variants: Sequence[Variant], concurrencies: Sequence[int],
         path: Path) -> None:
    """Four panels against concurrency: req/s, rows/s (page variants), p50, p99 latency."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9), constrained_layout=True)
    panels = [(axes[0][0], "requests (statements) per second", lambda v, m: m.rate, False),
              (axes[0][1], "rows per second (1000-row pages)", lambda v, m: m.rate * v.rows,
               True),
              (axes[1][0], "p50 latency (ms)", lambda v, m: m.p50_ms, False),
              (axes[1][1], "p99 latency (ms)", lambda v, m: m.p99_ms, False)]
    for ax, title, value, rows_only in panels:
        for v in variants:
            if rows_only and not v.rows:
                continue
            points = [(c, value(v, medians[(v.key, c)])) for c in concurrencies
                      if (v.key, c) in medians]
            if points:
                style = "--" if v.server is None else "-"
                ax.plot(*zip(*points, strict=True), style, marker="o", label=v.label)
        ax.set_title(title)
        ax.set_xlabel("concurrent clients")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(concurrencies), [str(c) for c in concurrencies])
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize="small")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def update_readme(readme: Path, md: Path, png: Path) -> None:
    """README's Benchmark section shows this run: its tables between the markers."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise RuntimeError(f"README.md lacks the markers {README_START!r} ... {README_END!r}")
    body = md.read_text(encoding="utf-8")
    tables = body.split("\n## Machine and run")[0].split("\n", 2)[2].strip()
    rel_png, rel_md = (os.path.relpath(p.resolve(), readme.resolve().parent) for p in (png, md))
    tables = tables.replace(f"]({png.name})", f"]({rel_png})")
    block = (f"{README_START}\nLatest run ([{rel_md}]({rel_md}), machine facts there):\n\n"
             f"{tables}\n{README_END}")
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + block + text[end:], encoding="utf-8")
