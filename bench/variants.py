"""What the benchmark runs: the service's routes, the reference pools behind the same stack, the
pgbench ceilings; and the ratios that issue #10's goals name."""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "orders"  # the demo shop's (30,000 rows): a page of 1000 is read the same way as of 200k
PAGE = 1000

# The gunicorn servers: app and BENCH_POOL (bench/variants_wsgi.py) for each.
SERVERS: dict[str, tuple[str, str]] = {
    # wsgi.py's app plus GET /bench/no-db and /bench/no-db-spec (bench/variants_wsgi.py), the
    # service's own pool.
    "service": ("bench.variants_wsgi:application", "ours"),
    "connect": ("bench.variants_wsgi:application", "connect"),
    "seed": ("bench.variants_wsgi:application", "seed"),
    "psycopg_pool": ("bench.variants_wsgi:application", "psycopg_pool"),
    "sqlalchemy": ("bench.variants_wsgi:application", "sqlalchemy"),
}


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    server: str | None = None  # a SERVERS key: wrk on ``path``; None: pgbench on ``sql``
    path: str = ""
    # "generated" or "json_agg": filled in once the database is up. "mix:<name>": that
    # statement's share of one pgbench run of every "mix:" variant (bench.load.pgbench_mix).
    sql: str = ""
    rows: int = 0  # rows per request, for rows/s (0: a one-row answer, rows/s means nothing)


VARIANTS: tuple[Variant, ...] = (
    Variant("rows_api", f"rows page: GET /tables/{TABLE}/rows?limit={PAGE}", "service",
            f"/tables/{TABLE}/rows?limit={PAGE}", rows=PAGE),
    Variant("rows_generated", "pgbench: the service's rows-page statement", sql="generated",
            rows=PAGE),
    Variant("rows_json_agg", f"pgbench: plain json_agg of {PAGE} rows", sql="json_agg", rows=PAGE),
    Variant("mix_generated", "pgbench, both in one run: the service's statement",
            sql="mix:generated", rows=PAGE),
    Variant("mix_json_agg", "pgbench, both in one run: plain json_agg", sql="mix:json_agg",
            rows=PAGE),
    Variant("root", "GET / (select 1), our pool", "service", "/"),
    Variant("no_db_spec", "no database: an operation in the spec, like GET /", "service",
            "/bench/no-db-spec"),
    Variant("no_db", "no database: a Flask view outside the spec", "service", "/bench/no-db"),
    Variant("floor_page", "floor: the page's statement and body in a bare Flask view", "service",
            "/bench/floor-page", rows=PAGE),
    Variant("floor_root", "floor: select 1 in a bare Flask view", "service", "/bench/floor-root"),
    Variant("live", "GET /health/live (on the event loop, before Flask)", "service",
            "/health/live"),
    Variant("connect", "GET /, new connection per request", "connect", "/"),
    Variant("seed", "GET /, the seed's ThreadedConnectionPool(1, 20)", "seed", "/"),
    Variant("psycopg_pool", "GET /, psycopg_pool ConnectionPool(10, 10)", "psycopg_pool", "/"),
    Variant("sqlalchemy", "GET /, SQLAlchemy QueuePool(10), pre_ping", "sqlalchemy", "/"),
)
BY_KEY = {v.key: v for v in VARIANTS}


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: str  # variant keys; the ratio of their rates (req/s or statements/s)
    denominator: str
    goal: str = ""  # issue #10's, in words
    at: tuple[int, ...] = ()  # the concurrencies the goal names (empty: every one)
    minimum: float | None = None  # the goal holds when ratio >= minimum
    maximum: float | None = None  # ... or <= maximum

    def holds(self, value: float) -> bool | None:
        if self.minimum is not None:
            return value >= self.minimum
        if self.maximum is not None:
            return value <= self.maximum
        return None


RATIOS: tuple[Ratio, ...] = (
    Ratio("rows page: API / plain json_agg (rows/s)", "rows_api", "rows_json_agg",
          ">= 0.6 at c=1 and c=4", (1, 4), minimum=0.6),
    # Time per page, so the goal reads as the "within 1.15x". Measured with both
    # statements in one pgbench run, transactions interleaved at random: two runs taken apart
    # differed by up to 30 % on this noisy machine for the same statement.
    Ratio("time per page: generated statement / plain json_agg (one pgbench run)",
          "mix_json_agg", "mix_generated", "<= 1.15", maximum=1.15),
    Ratio("time per page: generated statement / plain json_agg (separate pgbench runs)",
          "rows_json_agg", "rows_generated"),
    # The goal's reference: the same Connexion operation path (security, validation) as GET /,
    # so the ratio is what the pool and the database add. Against the bare Flask view it also
    # holds Connexion's per-operation work.
    Ratio("GET / / no-database operation in the spec (req/s)", "root", "no_db_spec", ">= 0.85",
          minimum=0.85),
    Ratio("GET / / no-database Flask view outside the spec (req/s)", "root", "no_db"),
    # The floors (bench/variants_wsgi.py): the most this stack allows, with none of the
    # service's own work. What the goals above can reach at most.
    Ratio("floor: the page in a bare Flask view / plain json_agg (rows/s)", "floor_page",
          "rows_json_agg"),
    Ratio("rows page: API / its floor (rows/s)", "rows_api", "floor_page"),
    Ratio("floor: select 1 in a bare Flask view / no-database Flask view (req/s)", "floor_root",
          "no_db"),
    Ratio("GET /: our pool / seed's pool", "root", "seed"),
    Ratio("GET /: our pool / new connection per request", "root", "connect"),
    Ratio("GET /: our pool / psycopg_pool", "root", "psycopg_pool"),
    Ratio("GET /: our pool / SQLAlchemy QueuePool", "root", "sqlalchemy"),
)
