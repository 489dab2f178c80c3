"""Requests/s of the same page of rows with a valid token vs. anonymous (and with auth off), in
one run, rounds interleaved.

- token: ``Authorization: Bearer <HS256 token>`` for ``web_user`` (verified once, then cached;
  the role's preamble travels with the page's statement);
- anonymous: no credentials, runs as ``web_anon`` (the same preamble, no token);
- auth off: the same server without [AUTH]: no role switch at all (the reference).

Usage: python -m bench.bench_auth [--seconds 10] [--connections 16] [--workers 2] [--repeat 3]
Needs ``wrk`` (apt-get install -y wrk). Uses BENCH_DATABASE_URL (the demo is loaded into it if
absent), else a temporary embedded server with the demo. Ratios within one run are what count.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_pool import database, wrk, wrk_options  # noqa: E402
from bench.bench_pool import gunicorn as serve  # noqa: E402
from swagger_server.db import demo  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"  # noqa: S105 (a bench key)
PAGE = "/tables/products/rows?limit=100"


def gunicorn(dsn: str, workers: int,
             extra: Mapping[str, str]) -> contextlib.AbstractContextManager[str]:
    """The service with ``extra`` auth settings; none of the shell's AUTH_ variables."""
    return serve("wsgi:application", dsn, "uvicorn", workers, probe="/health/live",
                 drop_prefixes=("AUTH_",),
                 extra={"SERVER_ACCESS_LOG": "off", "POOL_MIN_SIZE": "10",
                        "APP_CONFIG": "/dev/null", **extra})


def main() -> None:
    args = wrk_options(__doc__.splitlines()[0])
    now = int(time.time())
    token = jwt.encode({"sub": "42", "role": "web_user", "iat": now, "exp": now + 86400},
                       SECRET, algorithm="HS256")
    auth = {"AUTH_JWT_SECRET": SECRET, "AUTH_ANONYMOUS_ROLE": "web_anon"}
    cases = [
        ("token (web_user)", auth, f"Authorization: Bearer {token}"),
        ("anonymous (web_anon)", auth, None),
        ("auth off", {}, None),
    ]
    runs: list[list[float]] = [[] for _ in cases]
    with database() as dsn:
        demo.seed(dsn)
        for round_no in range(args.repeat):
            # Interleaved, and each round starts with another case: no case always runs
            # right after the same one.
            order = [(round_no + k) % len(cases) for k in range(len(cases))]
            for i in order:
                label, extra, header = cases[i]
                with gunicorn(dsn, args.workers, extra) as base:
                    rps = wrk(base + PAGE, args.seconds, args.connections, header)
                runs[i].append(rps)
                print(f"round {round_no + 1}: {label:22s} {rps:8.0f} req/s", flush=True)
    medians = [statistics.median(r) for r in runs]
    print(f"\nGET {PAGE}, wrk -t1 -c{args.connections} -d{args.seconds}s, {args.workers} "
          f"workers, median of {args.repeat} interleaved rounds:")
    for (label, _, _), rps in zip(cases, medians, strict=True):
        print(f"| {label} | {rps:,.0f} | {rps / (medians[1] or 1):.2f} |")
    print(f"token / anonymous = {medians[0] / (medians[1] or 1):.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
