"""What a thread pays in CPU time for the work it does right after it slept (issue #10).

A worker thread sleeps while PostgreSQL builds a page (milliseconds), the event loop sleeps
while the worker runs. On this kind of machine (a KVM guest) the first microseconds after a
wake-up cost far more CPU than the same work done by a busy thread: the same call, timed with
the thread's own CPU clock, hot and right after sleeping. No database, no server.

Usage: python -m bench.bench_wake [--samples 300]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import statistics
import time
from collections.abc import Callable


def _loop(n: int) -> Callable[[], object]:
    def work() -> object:
        total = 0
        for i in range(n):
            total += i
        return total
    return work


def _hmac() -> object:
    return hmac.digest(b"k" * 32, b'{"f":"0123456789abcdef","k":["1"]}', hashlib.sha256)


def cpu_us(work: Callable[[], object], pause: float, samples: int) -> float:
    """Median thread CPU time of ``work`` (µs), each call after sleeping ``pause`` s (0: none)."""
    times = []
    for _ in range(samples):
        if pause:
            time.sleep(pause)
        start = time.thread_time_ns()
        work()
        times.append((time.thread_time_ns() - start) / 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    works = [("an empty loop", _loop(0)), ("a loop of 100", _loop(100)),
             ("a loop of 10,000", _loop(10_000)), ("one HMAC-SHA256", _hmac)]
    pauses = [("hot", 0.0), ("after 0.2 ms asleep", 0.0002), ("after 5 ms asleep", 0.005)]
    print("| work | " + " | ".join(p for p, _ in pauses) + " |")
    print("|---|" + "---:|" * len(pauses))
    for label, work in works:
        cells = [f"{cpu_us(work, pause, args.samples):.1f} µs" for _, pause in pauses]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
