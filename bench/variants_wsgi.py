"""The service's app for the benchmark: the same app (``wsgi.py``'s), plus ``GET /bench/no-db``,
a Flask view that touches no database (the stack's own cost: ASGI middleware, Connexion, the
a2wsgi thread hop, Flask; ``/health/live`` is answered before all that, on the event loop); and,
for the reference variants, another pool behind ``get_db()``.

``BENCH_POOL`` picks the pool (the views, Connexion stack and worker class stay the same):

- ``ours`` (default): the service's own ConnectionPool, untouched;
- ``seed``: psycopg2's ThreadedConnectionPool(1, 20), as the seed pooled;
- ``connect``: a new connection per request, closed after it;
- ``psycopg_pool``: psycopg 3's ConnectionPool(MAX_SIZE, MAX_SIZE);
- ``sqlalchemy``: SQLAlchemy's QueuePool(MAX_SIZE, no overflow) with pre_ping (an engine's).

Used by bench/ (``gunicorn bench.variants_wsgi:application``), never in production.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import yaml
from flask import Response, jsonify
from psycopg2.pool import ThreadedConnectionPool

from swagger_server import config, db
from swagger_server.app import SPEC_DIR, SPEC_FILE, create_app
from swagger_server.config import Settings, load_settings

NO_DB_PATH = "/bench/no-db"
NO_DB_SPEC_PATH = "/bench/no-db-spec"
FLOOR_PAGE_PATH = "/bench/floor-page"
FLOOR_ROOT_PATH = "/bench/floor-root"


class _Seed:
    def __init__(self, settings: Settings) -> None:
        self._pool = ThreadedConnectionPool(1, 20, settings.database.dsn,
                                            application_name=f"seed worker {os.getpid()}")

    def getconn(self, timeout: float | None = None) -> Any:
        return _Wrapped(self._pool.getconn())  # waits for nothing: raises when exhausted

    def putconn(self, wrapped: _Wrapped) -> None:
        self._pool.putconn(wrapped.conn)  # closed unless fewer than minconn=1 are idle


class _Connect:
    def __init__(self, settings: Settings) -> None:
        self._dsn = settings.database.dsn

    def getconn(self, timeout: float | None = None) -> Any:
        return _Wrapped(psycopg2.connect(self._dsn,
                                         application_name=f"connect worker {os.getpid()}"))

    def putconn(self, wrapped: _Wrapped) -> None:
        wrapped.conn.close()


class _Wrapped:
    """What get_db() needs of a connection: ``cursor()``, and a ``cursor_factory`` that the
    request's role binding sets (psycopg 3 has its own, which must not be set to None;
    SQLAlchemy's proxy takes no new attributes)."""

    cursor_factory = None

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def cursor(self) -> Any:
        return _Cursor(self.conn.cursor())


class _Cursor:
    """A reference pool's cursor as an app would use it: ``execute_alone`` (the service's
    one-message transaction, swagger_server/db/transaction.py) is a plain ``execute`` in a
    transaction (BEGIN, the statement, the ROLLBACK when the connection goes back)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute_alone(self, query: Any, vars: Any = None) -> Any:
        return self._cursor.execute(query, vars)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()


class _PsycopgPool:
    def __init__(self, settings: Settings) -> None:
        from psycopg_pool import ConnectionPool

        size = settings.pool.max_size
        self._pool = ConnectionPool(settings.database.dsn, min_size=size, max_size=size,
                                    kwargs={"application_name": f"psycopg_pool {os.getpid()}"},
                                    open=True)

    def getconn(self, timeout: float | None = None) -> Any:
        return _Wrapped(self._pool.getconn(timeout=timeout))

    def putconn(self, wrapped: _Wrapped) -> None:
        wrapped.conn.rollback()  # as our pool does; psycopg_pool would warn, then roll back
        self._pool.putconn(wrapped.conn)


class _SqlAlchemy:
    def __init__(self, settings: Settings) -> None:
        from sqlalchemy import create_engine

        dsn = settings.database.dsn
        # An engine, as an app would use it: pre_ping needs its dialect. QueuePool is its default.
        self._engine = create_engine(
            "postgresql+psycopg2://",
            creator=lambda: psycopg2.connect(dsn, application_name=f"sqlalchemy {os.getpid()}"),
            pool_size=settings.pool.max_size, max_overflow=0, pool_pre_ping=True)

    def getconn(self, timeout: float | None = None) -> Any:  # QueuePool: its own pool_timeout
        return _Wrapped(self._engine.raw_connection())  # a proxy of the psycopg2 connection

    def putconn(self, wrapped: _Wrapped) -> None:
        wrapped.conn.close()  # back to the pool, rolled back


POOLS: dict[str, Callable[[Settings], Any]] = {
    "seed": _Seed, "connect": _Connect, "psycopg_pool": _PsycopgPool, "sqlalchemy": _SqlAlchemy,
}

_pool: Any = None
_pid = 0
_lock = threading.Lock()


def _variant_pool(settings: Settings | None = None) -> Any:
    """This worker's variant pool, made on first use (after the fork)."""
    global _pool, _pid
    with _lock:
        if _pool is None or _pid != os.getpid():
            _pool = POOLS[os.environ["BENCH_POOL"]](load_settings())
            _pid = os.getpid()
        return _pool


def no_db() -> Response:
    return jsonify(status="ok")


# The floors: what this stack does at its least for a rows page and for GET /. A Flask view
# outside the spec (no Connexion operation: routing, security, validation), the same pool and
# get_db(), the service's own statement for the benchmark's page and its body, and nothing
# else: no query parsing, catalog, cursor, Link, metrics of the page. The service's routes are
# measured against them (bench/variants.py RATIOS).
_page_statement: bytes | None = None


def floor_page() -> Response:
    global _page_statement
    if _page_statement is None:
        from bench.statements import generated
        from bench.variants import PAGE, TABLE
        _page_statement = generated(config.process_settings().database.dsn, TABLE,
                                    PAGE).encode()
    with db.get_db().cursor() as cur:
        psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cur)
        cur.execute_alone(_page_statement)
        rows = cur.fetchone()[0] or b""
    return Response(b"".join((b'{"data":[', rows, b'],"next_cursor":null}')),
                    mimetype="application/json")


def floor_root() -> Response:
    with db.get_db().cursor() as cur:
        cur.execute_alone("SELECT 1")
        rows = cur.fetchall()
    return jsonify(rows)


_variant = os.environ.get("BENCH_POOL", "ours")
if _variant != "ours":
    if _variant not in POOLS:
        raise RuntimeError(f"BENCH_POOL={_variant!r}: one of ours, {', '.join(POOLS)}")
    db.get_pool = _variant_pool  # get_db() and close_db() look it up at call time


def _spec_with_reference() -> Path:
    """swagger/swagger.yaml plus ``GET /bench/no-db-spec``: an operation like ``GET /`` (same
    security, parameter validation, Connexion operation path) that touches no database, so that
    GET / against it measures what the database adds, and only that. Written to a folder of
    this process's own, removed at exit."""
    spec = yaml.safe_load((SPEC_DIR / SPEC_FILE).read_text())
    spec["paths"][NO_DB_SPEC_PATH] = {"get": {
        "operationId": "bench.variants_wsgi.no_db",
        "responses": {"200": {"description": "A constant.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }}
    folder = Path(tempfile.mkdtemp(prefix="pgrest-bench-spec-"))
    atexit.register(shutil.rmtree, folder, True)
    (folder / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


# The service's app as wsgi.py makes it under gunicorn, from the spec plus the reference route.
application = create_app(config.process_settings(), spec_dir=_spec_with_reference())

# Not in the spec: Connexion passes the request on to Flask, unvalidated, like any unknown path.
application.add_url_rule(NO_DB_PATH, "bench_no_db", no_db)
application.add_url_rule(FLOOR_PAGE_PATH, "bench_floor_page", floor_page)
application.add_url_rule(FLOOR_ROOT_PATH, "bench_floor_root", floor_root)
