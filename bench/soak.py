"""Soak: 100k mixed requests; worker RSS and database connections over time (issue #10).

Not a test: it prints what it saw. A gunicorn master (``--workers``, ``POOL_MAX_SIZE``
``--max-size``) serves the demo shop; ``--threads`` clients with kept-alive connections send
``--requests`` requests in all, mixed: JSON pages of ``orders`` (following ``next_cursor`` a few
pages deep, with filters and ``count=exact`` now and then), one row by key (``products``,
``order_items``' composite key), and small NDJSON / CSV exports. After ``--warmup`` requests each
worker's RSS is the reference; it is sampled every ``--every`` seconds, and the connections of
the workers (``pg_stat_activity``) every 0.2 s. The verdict: RSS within +-10 % of the
reference, connections never above workers x max size.

Usage: python -m bench.soak [--dsn DSN] [--requests 100000] [--workers 2] [--max-size 4]
Without --dsn, a temporary embedded PostgreSQL with the demo data.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_perf_cpu import _listens  # noqa: E402
from bench.bench_perf_rows import gunicorn  # noqa: E402
from swagger_server.db import demo  # noqa: E402
from swagger_server.db.embedded import EmbeddedPostgres  # noqa: E402

RSS_TOLERANCE = 0.10
RECONNECT_EVERY = 100


@contextlib.contextmanager
def demo_database(dsn: str | None) -> Iterator[str]:
    if dsn:
        demo.seed(dsn)  # loads the demo only into an empty database
        yield dsn
        return
    import tempfile
    with tempfile.TemporaryDirectory(prefix="soak-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data")
        try:
            url = server.start()
            demo.seed(url)
            yield url
        finally:
            server.stop(mode="immediate")


class Mix:
    """The next request's path, at random by weight, following cursors of earlier pages."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.cursor: str | None = None
        self.base = ""
        self.depth = 0

    def next(self) -> tuple[str, str, dict[str, str]]:
        """(kind, path, headers)."""
        r = self.random.random()
        if r < 0.55:
            return "page", self._page(), {}
        if r < 0.95:
            if self.random.random() < 0.5:
                return "row", f"/tables/products/rows/{self.random.randint(1, 1000)}", {}
            order = self.random.randint(1, 30000)
            return "row", f"/tables/order_items/rows/{order},1", {}
        fmt = self.random.choice(["application/x-ndjson", "text/csv"])
        limit = self.random.choice([100, 1000, 5000])
        return "export", f"/tables/orders/rows?limit={limit}&select=id,status,total", \
            {"Accept": fmt}

    def _page(self) -> str:
        if self.cursor is not None and self.depth < 5:
            self.depth += 1
            return f"{self.base}&cursor={self.cursor}"
        self.cursor, self.depth = None, 0
        extra = self.random.choice(["", "&filter=status.eq.paid", "&count=exact",
                                    "&order=total.desc&select=id,total"])
        self.base = f"/tables/orders/rows?limit={self.random.choice([10, 100, 1000])}{extra}"
        return self.base

    def saw(self, kind: str, path: str, body: bytes) -> None:
        if kind == "page":  # the next page of this query, or a new query
            with contextlib.suppress(ValueError, KeyError):
                self.cursor = json.loads(body)["next_cursor"]


def client(port: int, seed: int, counter: Iterator[int], total: int, statuses: Counter[str],
           lock: threading.Lock) -> None:
    mix = Mix(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for sent in itertools.count(1):
        if next(counter) >= total:
            break
        if sent % RECONNECT_EVERY == 0:
            # As browsers do; also spreads the clients over the workers again and again, so
            # that each worker meets the full concurrency during the warm-up already.
            conn.close()
        kind, path, headers = mix.next()
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                statuses[f"{kind} error"] += 1
            continue
        mix.saw(kind, path, body)
        with lock:
            statuses[f"{kind} {resp.status}"] += 1
    conn.close()


def worker_rss(master: int) -> dict[int, int]:
    out = {}
    for child in psutil.Process(master).children():
        with contextlib.suppress(psutil.Error):
            out[child.pid] = child.memory_info().rss
    return out


def connections(dsn: str, stop: threading.Event, peak: list[int], limit: int,
                workers: list[int]) -> None:
    """The soak's workers' connections (by application_name: not other services' workers)."""
    shown = [-100]
    names = [f"pgrest worker {pid}" for pid in workers]
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("SELECT application_name, pid, state, backend_start, "
                            "left(query, 60) FROM pg_stat_activity "
                            "WHERE application_name = ANY(%s)", (names,))
                rows = cur.fetchall()
                peak.append(len(rows))
                if len(rows) > limit and len(peak) - shown[0] > 50:  # what was over, now and then
                    shown[0] = len(peak)
                    print(f"  {len(rows)} connections:", *rows, sep="\n    ", flush=True)
                time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--every", type=float, default=10.0)
    args = parser.parse_args()
    with demo_database(args.dsn) as dsn, \
            gunicorn(ROOT, dsn, args.workers, {"POOL_MAX_SIZE": str(args.max_size)}) as base:
        port = int(base.rsplit(":", 1)[1])
        master = next(p.pid for p in psutil.process_iter(["cmdline"])
                      if p.info["cmdline"] and "gunicorn" in " ".join(p.info["cmdline"])
                      and p.children() and _listens(p, port))
        statuses: Counter[str] = Counter()
        lock = threading.Lock()

        def run(count: int, seed: int) -> list[threading.Thread]:
            counter = itertools.count()
            threads = [threading.Thread(target=client, args=(port, seed + i, counter, count,
                                                             statuses, lock))
                       for i in range(args.threads)]
            for t in threads:
                t.start()
            return threads

        for t in run(args.warmup, 1):
            t.join()
        reference = worker_rss(master)
        print(f"after {args.warmup} warm-up requests, RSS MiB: "
              + ", ".join(f"{pid}: {rss / 2**20:.1f}" for pid, rss in reference.items()),
              flush=True)
        statuses.clear()
        stop = threading.Event()
        peaks: list[int] = []
        sampler = threading.Thread(target=connections,
                                   args=(dsn, stop, peaks, args.workers * args.max_size,
                                         list(reference)),
                                   name="conn-sampler", daemon=True)
        sampler.start()
        start = time.monotonic()
        clients = run(args.requests, 1000)
        samples: list[tuple[float, dict[int, int]]] = []
        while any(t.is_alive() for t in clients):
            time.sleep(args.every)
            rss = worker_rss(master)
            samples.append((time.monotonic() - start, rss))
            done = sum(statuses.values())
            print(f"{time.monotonic() - start:6.0f}s {done:7d} requests  RSS MiB: "
                  + ", ".join(f"{pid}: {v / 2**20:.1f}" for pid, v in rss.items())
                  + f"  connections now {peaks[-1] if peaks else '?'}", flush=True)
        for t in clients:
            t.join()
        elapsed = time.monotonic() - start
        final = worker_rss(master)
        samples.append((elapsed, final))
        stop.set()
        sampler.join()
    limit = args.workers * args.max_size
    print(f"\n{sum(statuses.values())} requests in {elapsed:.0f}s "
          f"({sum(statuses.values()) / elapsed:.0f}/s): {dict(sorted(statuses.items()))}")
    worst = 0.0
    for pid, ref in reference.items():
        values = [rss[pid] for _, rss in samples if pid in rss]
        dev = max(abs(v - ref) / ref for v in values) if values else float("nan")
        worst = max(worst, dev)
        print(f"worker {pid}: RSS after warm-up {ref / 2**20:.1f} MiB, min "
              f"{min(values) / 2**20:.1f}, max {max(values) / 2**20:.1f}, final "
              f"{values[-1] / 2**20:.1f} MiB; largest deviation {dev * 100:+.1f} %")
    print(f"connections: max {max(peaks) if peaks else '?'} of {len(peaks)} samples; "
          f"bound workers x MAX_SIZE = {limit}")
    ok = worst <= RSS_TOLERANCE and peaks and max(peaks) <= limit
    print("verdict:", "holds" if ok else "DOES NOT HOLD")


if __name__ == "__main__":
    main()
