"""The worker's connection pool and its Flask integration (``get_db`` / ``close_db``).

Under gunicorn, ``post_fork`` calls :func:`init_pool` so each worker has its pool before its
first request and ``worker_exit`` calls :func:`close_pool`. Elsewhere (tests, ``python wsgi.py``)
:func:`get_pool` creates it once, under a lock, on first use.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

import psycopg2.extensions
from flask import Flask, current_app, g
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from swagger_server.auth import request as request_auth
from swagger_server.config import Settings, option_settings
from swagger_server.db import deadline
from swagger_server.db.pool import Connection, ConnectionPool
from swagger_server.db.transaction import PreambleBinding, connection_defaults

log = logging.getLogger(__name__)

SERVICE_NAME = "pgrest"

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


_READ_ONLY_SWITCH = re.compile(r"default[_-]transaction[_-]read[_-]only", re.IGNORECASE)
_READ_ONLY_NAMES = ("default_transaction_read_only", "transaction_read_only")


def _dsn_options(settings: Settings) -> str:
    assert settings.database.dsn is not None
    return psycopg2.extensions.parse_dsn(settings.database.dsn).get("options", "").strip()


# Directly, always ours whatever the DSN says (a session default, besides BEGIN READ ONLY).
_ENFORCED_OPTIONS = "-c default_transaction_read_only=on"


def connect_options(settings: Settings, user_options: str = "") -> str:
    """Directly on PostgreSQL: session settings sent in the startup packet, which cost nothing
    per transaction (the session is the service's alone).

    PostgreSQL applies the ``-c`` switches in order and the last one for a name wins, so the
    order says who wins: our defaults first, then the DSN's ``options`` (a user's
    ``statement_timeout`` or ``search_path`` beats ours), then what the service enforces.
    Behind a transaction pooler there are none: see :func:`transaction_settings`.
    """
    defaults = f"-c statement_timeout={settings.pool.statement_timeout}"
    return " ".join(part for part in (defaults, user_options.strip(), _ENFORCED_OPTIONS) if part)


def transaction_settings(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Behind a transaction pooler (``POSTGRES_POOLER=transaction``): what every transaction
    sets first, in its preamble (swagger_server/db/transaction.py), since the session is not
    ours and PgBouncer refuses startup ``options``: ``statement_timeout`` (``STATEMENT_TIMEOUT``,
    or the DSN's own ``-c statement_timeout``, which wins as it does directly), then each of the
    DSN's other ``-c`` settings. Read-only is not among them: transactions begin ``READ ONLY``
    in every mode (:func:`swagger_server.db.transaction.connection_defaults`).

    Directly: nothing (the startup options carry them, :func:`connect_options`), so a request
    without auth sends no preamble at all.
    """
    if not settings.database.behind_pooler:
        return ()
    # Checked at start (config.py): only -c settings.
    given = option_settings(_dsn_options(settings))
    timeout = next((value for name, value in reversed(given) if name == "statement_timeout"),
                   str(settings.pool.statement_timeout))
    return (("statement_timeout", timeout), *(
        (name, value) for name, value in given
        if name != "statement_timeout" and name not in _READ_ONLY_NAMES))


def _startup_settings(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The DSN's ``-c`` settings (for the warning about read-only); () when not parseable:
    then they go to PostgreSQL as they are, directly."""
    try:
        return option_settings(_dsn_options(settings))
    except ValueError:
        return ()


# Over TCP, notice a peer that vanished (no ACKs) instead of waiting for the kernel's two-hour
# keepalive default; ignored on Unix sockets. tcp_user_timeout: sent data unacknowledged this
# long means the peer is gone (a long query is not affected: the server acknowledges the query
# at once).
_TCP_DEFAULTS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


def connection_params(settings: Settings, pid: int | None = None) -> dict[str, Any]:
    """The pool's connection parameters merged with the DSN's: a parameter the DSN gives wins
    (application_name, connect_timeout, keepalives*, tcp_user_timeout).

    Keyword arguments to ``psycopg2.connect`` replace the DSN's parameters of the same name,
    so only what the DSN leaves unset is passed. ``options``: directly, ours combined with the
    DSN's (:func:`connect_options`); behind a pooler an empty string (PgBouncer refuses the
    parameter; libpq then sends none, not even ``PGOPTIONS``): the settings travel per
    transaction instead (:func:`transaction_settings`).
    """
    assert settings.database.dsn is not None
    given = psycopg2.extensions.parse_dsn(settings.database.dsn)
    params: dict[str, Any] = {k: v for k, v in _TCP_DEFAULTS.items() if k not in given}
    params["options"] = ("" if settings.database.behind_pooler
                         else connect_options(settings, given.get("options", "")))
    params["application_name"] = given.get(
        "application_name", f"{SERVICE_NAME} worker {pid or os.getpid()}"
    )
    # Validated at start (config.py): a whole number of seconds >= 1.
    params["connect_timeout"] = float(given.get("connect_timeout", settings.pool.connect_timeout))
    return params


def create_pool(settings: Settings) -> ConnectionPool:
    if settings.database.dsn is None:
        raise RuntimeError(
            "no database configured: set DATABASE_URL or [POSTGRES] URL, "
            "or start the embedded PostgreSQL first"
        )
    pool = settings.pool
    pid = os.getpid()
    log.info("creating pool for pid %s on %s", pid, settings.database.safe_dsn)
    params = connection_params(settings, pid)
    if _READ_ONLY_SWITCH.search(_dsn_options(settings)) or any(
            name in _READ_ONLY_NAMES for name, _ in _startup_settings(settings)):
        log.warning("the DSN's options set default_transaction_read_only: ignored, transactions "
                    "start read-only unless the service's code asks otherwise")
    binding = PreambleBinding.of_settings(transaction_settings(settings))
    return ConnectionPool(
        settings.database.dsn,
        min_size=pool.min_size,
        max_size=pool.max_size,
        acquire_timeout=pool.acquire_timeout,
        max_lifetime=pool.max_lifetime,
        max_idle=pool.max_idle,
        check_after_idle=pool.check_after_idle,
        # The watchdog looks every quarter of the margin and acts after half of it: a statement
        # with no answer ends within STATEMENT_TIMEOUT + QUERY_DEADLINE_MARGIN. No statement
        # timeout, no deadline.
        query_deadline=(pool.statement_timeout / 1000 + pool.query_deadline_margin / 2
                        if pool.statement_timeout else 0.0),
        watch_interval=pool.query_deadline_margin / 4,
        leak_threshold=pool.leak_threshold,
        reconnect_max_delay=pool.reconnect_max_delay,
        defaults=connection_defaults(binding),
        **params,
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


def count_wait_timeout() -> None:
    """Count a request turned away before it reached the pool, if this process has one."""
    pool = _pool
    if pool is not None and pool.pid == os.getpid() and not pool.closed:
        pool.count_timeout()


def close_pool() -> None:
    """Close this process's pool (gunicorn ``worker_exit``, test teardown)."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool.pid == os.getpid():
            _pool.closeall()
        _pool = None


def get_db(readonly: bool = True) -> Connection:
    """The request's connection, taken from the pool on first use and kept on ``flask.g``.

    With auth configured, its transactions run as the request's role, with its claims (the
    preamble travels with each transaction's first statement: swagger_server/auth/request.py);
    a role the service may not become is a 403 here, before anything runs.

    Its transactions are read-only (``BEGIN READ ONLY``). ``get_db(readonly=False)`` makes the
    request's transactions ``READ WRITE``: call it before the request's first query, and commit
    yourself (``with conn:`` commits on success, rolls back on an exception). What is not
    committed is rolled back when the request ends, and the pool makes the connection read-only
    again for the next request. Later ``get_db()`` calls in that request get the same connection.
    """
    if "db" not in g:
        pool = get_pool()
        # What is left of ACQUIRE_TIMEOUT since the request arrived (swagger_server/db/deadline.py).
        conn = pool.getconn(timeout=deadline.time_left())
        try:
            request_auth.attach(conn)  # the request's role (no-op when auth is off)
        except BaseException:
            pool.putconn(conn)
            raise
        g.db = conn
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
        request_auth.detach(conn)
        pool.putconn(conn)


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)
