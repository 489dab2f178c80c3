"""The worker's connection pool and its Flask integration (``get_db`` / ``close_db``).

Under gunicorn, ``post_fork`` calls :func:`init_pool` so each worker has its pool before its
first request and ``worker_exit`` calls :func:`close_pool`. Elsewhere (tests, ``python wsgi.py``)
:func:`get_pool` creates it once, under a lock, on first use.
"""

from __future__ import annotations

import logging
import os
import threading

from flask import Flask, current_app, g
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from swagger_server.config import Settings
from swagger_server.pool import Connection, ConnectionPool

log = logging.getLogger(__name__)

SERVICE_NAME = "pgrest"

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


def connect_options(settings: Settings) -> str:
    """Session defaults sent in the startup packet: no extra round trip per connection."""
    # The service only reads: every transaction is read-only unless a caller says otherwise.
    return (
        f"-c statement_timeout={settings.pool.statement_timeout} "
        "-c default_transaction_read_only=on"
    )


def create_pool(settings: Settings) -> ConnectionPool:
    if settings.database.dsn is None:
        raise RuntimeError(
            "no database configured: set DATABASE_URL or [POSTGRES] URL, "
            "or start the embedded PostgreSQL first"
        )
    pool = settings.pool
    pid = os.getpid()
    log.info("creating pool for pid %s on %s", pid, settings.database.safe_dsn)
    return ConnectionPool(
        settings.database.dsn,
        min_size=pool.min_size,
        max_size=pool.max_size,
        acquire_timeout=pool.acquire_timeout,
        max_lifetime=pool.max_lifetime,
        max_idle=pool.max_idle,
        check_after_idle=pool.check_after_idle,
        connect_timeout=pool.connect_timeout,
        application_name=f"{SERVICE_NAME} worker {pid}",
        options=connect_options(settings),
        # Over TCP, notice a peer that vanished (no ACKs) instead of waiting for the kernel's
        # two-hour keepalive default; ignored on Unix sockets.
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        # Sent data unacknowledged this long: the peer is gone (a long query is not affected:
        # the server acknowledges the query at once).
        tcp_user_timeout=10_000,
    )


def init_pool(settings: Settings) -> ConnectionPool:
    """Create this process's pool now (gunicorn ``post_fork``), replacing an inherited one."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool.pid == os.getpid():
            _pool.closeall()
        _pool = create_pool(settings)
        return _pool


def get_pool(settings: Settings | None = None) -> ConnectionPool:
    """This process's pool, created once under a lock on first use."""
    global _pool
    pool = _pool
    if pool is not None and pool.pid == os.getpid() and not pool.closed:
        return pool
    with _pool_lock:
        # Without the lock, concurrent first requests would each create a pool.
        if _pool is None or _pool.pid != os.getpid() or _pool.closed:
            _pool = create_pool(settings or current_app.config["SETTINGS"])
        return _pool


def close_pool() -> None:
    """Close this process's pool (gunicorn ``worker_exit``, test teardown)."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool.pid == os.getpid():
            _pool.closeall()
        _pool = None


def get_db(readonly: bool = True) -> Connection:
    """The request's connection, taken from the pool on first use and kept on ``flask.g``.

    Its transactions are read-only (the session default). ``get_db(readonly=False)`` makes the
    request's transactions ``READ WRITE``: call it before the request's first query, and commit
    yourself (``with conn:`` commits on success, rolls back on an exception). What is not
    committed is rolled back when the request ends, and the pool makes the connection read-only
    again for the next request. Later ``get_db()`` calls in that request get the same connection.
    """
    if "db" not in g:
        pool = get_pool()
        g.db = pool.getconn()
        g.db_pool = pool  # given back to this pool, even if the process pool changes meanwhile
    conn = g.db
    if not readonly and conn.readonly is not False:
        if conn.info.transaction_status != TRANSACTION_STATUS_IDLE:
            # psycopg2 can only change it between transactions; committing the caller's read
            # transaction behind its back would be a surprise.
            raise RuntimeError(
                "get_db(readonly=False) must come before the request's first query "
                "(a read-only transaction is already open)"
            )
        conn.readonly = False  # psycopg2 then starts each transaction with BEGIN READ WRITE
    return conn


def close_db(e: BaseException | None = None) -> None:
    """Give the request's connection back; the pool rolls back what was not committed."""
    conn = g.pop("db", None)
    pool = g.pop("db_pool", None)
    if conn is not None and pool is not None:
        pool.putconn(conn)


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)
