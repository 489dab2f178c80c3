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

import os
import threading
from collections.abc import Callable
from typing import Any

import psycopg2
from flask import Response, jsonify
from psycopg2.pool import ThreadedConnectionPool

from swagger_server import db
from swagger_server.config import Settings, load_settings

NO_DB_PATH = "/bench/no-db"


class _Seed:
    def __init__(self, settings: Settings) -> None:
        self._pool = ThreadedConnectionPool(1, 20, settings.database.dsn,
                                            application_name=f"seed worker {os.getpid()}")

    def getconn(self, timeout: float | None = None) -> Any:
        return self._pool.getconn()  # the seed waits for nothing: it raises when exhausted

    def putconn(self, conn: Any) -> None:
        self._pool.putconn(conn)  # closed unless fewer than minconn=1 are idle: the seed's cost


class _Connect:
    def __init__(self, settings: Settings) -> None:
        self._dsn = settings.database.dsn

    def getconn(self, timeout: float | None = None) -> Any:
        return psycopg2.connect(self._dsn, application_name=f"connect worker {os.getpid()}")

    def putconn(self, conn: Any) -> None:
        conn.close()


class _Wrapped:
    """What get_db() needs of a connection: ``cursor()``, and a ``cursor_factory`` that the
    request's role binding sets (psycopg 3 has its own, which must not be set to None;
    SQLAlchemy's proxy takes no new attributes)."""

    cursor_factory = None

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def cursor(self) -> Any:
        return self.conn.cursor()


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


_variant = os.environ.get("BENCH_POOL", "ours")
if _variant != "ours":
    if _variant not in POOLS:
        raise RuntimeError(f"BENCH_POOL={_variant!r}: one of ours, {', '.join(POOLS)}")
    db.get_pool = _variant_pool  # get_db() and close_db() look it up at call time
from wsgi import application  # noqa: E402 (the service's app itself, whatever wsgi.py does)

# Not in the spec: Connexion passes the request on to Flask, unvalidated, like any unknown path.
application.add_url_rule(NO_DB_PATH, "bench_no_db", no_db)
