"""Streamed exports (CSV, NDJSON) from a server-side cursor, in constant memory.

The view opens a server-side cursor (``DECLARE ... CURSOR``, inside the connection's read-only
transaction) and fetches the first batch itself, so that a bad value, a statement timeout or an
unavailable database still get a proper 4xx/5xx. It then hands the connection to a
:class:`RowStream`, the WSGI body, which fetches ``batch`` lines at a time (each line built by
PostgreSQL) and gives the connection back to the pool exactly once: when the export ends, fails,
the server closes the body, the client disconnects (seen through ASGI ``http.disconnect``; a
client that stops reading is made to look disconnected by
:class:`swagger_server.web.middleware.StalledClientGuard`), or at worst when the body is collected.

Between two fetches the backend is idle in a transaction. As a server-side backstop, the
export's transaction sets ``idle_in_transaction_session_timeout`` (transaction-local, in the
same round trip as the ``DECLARE``): should the service ever lose track of a stream, PostgreSQL
ends the session itself.

At most ``MAX_EXPORTS`` run at once per worker (:class:`ExportSlots`): an export holds a request
thread and a connection for as long as its client reads.

The connection is taken from the pool directly, not through ``flask.g``: the request's teardown
runs before the body is iterated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import psycopg2
from psycopg2 import sql

from swagger_server.auth.request import detach
from swagger_server.data import query
from swagger_server.db.pool import Connection, ConnectionPool
from swagger_server.ops import metrics

log = logging.getLogger(__name__)

BATCH_ROWS = 2000


class RowStream:
    """An iterable of bytes over a server-side cursor; owns ``conn`` until it is released."""

    def __init__(
        self,
        pool: ConnectionPool,
        conn: Connection,
        cursor: Any,
        first: list[tuple[str]],
        header: bytes = b"",
        batch: int = BATCH_ROWS,
        disconnected: Callable[[], bool] | None = None,
        on_release: Callable[[], None] | None = None,
        fetch: Callable[[], list[tuple[str]]] | None = None,
        rows_format: str = "",
    ) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self._cursor = cursor
        self._fetch = fetch or (lambda: cursor.fetchmany(batch))
        self._pending = first
        self._header = header
        self._disconnected = disconnected or (lambda: False)
        self._on_release = on_release
        self._rows_format = rows_format  # label of the rows-served metric; "" counts nothing
        self._lock = threading.Lock()
        self.rows = 0

    def __iter__(self) -> RowStream:
        return self

    def __next__(self) -> bytes:
        # The lock keeps close() (from another thread when the client goes away) from
        # releasing the connection in the middle of a FETCH.
        with self._lock:
            if self._conn is None:
                raise StopIteration
            if self._header:
                chunk, self._header = self._header, b""
                return chunk
            try:
                if self._pending:
                    rows, self._pending = self._pending, []
                elif self._disconnected():
                    log.info("export: client gone after %s rows; stopping", self.rows)
                    rows = []
                else:
                    rows = self._fetch()
            except BaseException:
                self._release()
                raise
            if not rows:
                self._release()
                raise StopIteration
            self.rows += len(rows)
        if self._rows_format:
            metrics.rows_served(self._rows_format, len(rows))
        return ("\n".join([r[0] for r in rows]) + "\n").encode("utf-8")

    def close(self) -> None:
        """End the export and give the connection back; safe to call any number of times."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(psycopg2.Error):
            self._cursor.close()  # client side only: the pool's rollback ends the portal
        detach(conn)  # no preamble of this request may reach the connection's next user
        self._pool.putconn(conn)
        if self._on_release is not None:
            self._on_release()

    def __del__(self) -> None:
        # Last resort for a body nobody closed: never leak a pooled connection.
        if getattr(self, "_conn", None) is not None:
            with contextlib.suppress(Exception):
                self.close()


def open_stream(
    pool: ConnectionPool,
    conn: Connection,
    statement: sql.Composable,
    params: dict[str, Any],
    header: bytes = b"",
    environ: dict[str, Any] | None = None,
    batch: int = BATCH_ROWS,
    idle_timeout_ms: int = 0,
    on_release: Callable[[], None] | None = None,
    rows_format: str = "",
) -> RowStream:
    """DECLARE the cursor and fetch the first batch here, where errors still have a status.

    One round trip: the transaction-local ``idle_in_transaction_session_timeout`` (when
    ``idle_timeout_ms`` > 0), the ``DECLARE`` and the first ``FETCH``. ``on_release`` runs once,
    when the stream gives the connection back. On error the caller still owns ``conn`` (and
    ``on_release`` has not run); on success the returned stream owns both.
    """
    opening, fetch_sql = query.declare_sql(f"export_{uuid.uuid4().hex[:12]}", statement, batch,
                                           idle_timeout_ms)
    cursor = conn.cursor()
    try:
        cursor.execute(opening, params)
        first = cursor.fetchall()
    except BaseException:
        cursor.close()
        raise

    def fetch() -> list[tuple[str]]:
        cursor.execute(fetch_sql)
        return cursor.fetchall()

    watcher = _disconnect_watcher(environ)

    def released() -> None:
        if watcher is not None:
            watcher.cancel()
        if on_release is not None:
            on_release()

    stream = RowStream(
        pool, conn, cursor, first, header=header, batch=batch,
        disconnected=watcher.done if watcher is not None else None,
        on_release=released, fetch=fetch, rows_format=rows_format,
    )
    if watcher is not None:
        watcher.add_done_callback(lambda done: _on_disconnect(done, stream))
    return stream


class ExportSlots:
    """At most ``limit`` exports at once in this worker; :meth:`take` never waits."""

    def __init__(self, limit: int) -> None:
        self._free = threading.BoundedSemaphore(limit)

    def take(self) -> Callable[[], None] | None:
        """A slot's release function (safe to call more than once), or None when all are taken."""
        if not self._free.acquire(blocking=False):
            return None
        metrics.export_started()
        lock = threading.Lock()
        held = [True]

        def release() -> None:
            with lock:
                if not held[0]:
                    return
                held[0] = False
            self._free.release()
            metrics.export_ended()

        return release


def _on_disconnect(done: Future[Any], stream: RowStream) -> None:
    """The client went away: give the connection back now, whatever the WSGI thread does.

    Under gunicorn's asgi worker a body chunk sent to a client that stopped reading can block
    the WSGI thread for good; the connection must not stay with it. Runs on a fresh thread:
    close() may wait for a FETCH to finish, which the event loop must not.
    """
    if done.cancelled():
        return
    threading.Thread(target=stream.close, name="export-abort", daemon=True).start()


def _disconnect_watcher(environ: dict[str, Any] | None) -> Future[Any] | None:
    """A future that completes when the client disconnects (ASGI ``http.disconnect``).

    Under Connexion's a2wsgi bridge, ``wsgi.input`` keeps the ASGI ``receive`` and event loop;
    after the (empty) request body, ``receive()`` returns only when the client goes away. Without
    that bridge, exports simply run to their end.
    """
    body = (environ or {}).get("wsgi.input")
    receive = getattr(body, "receive", None)
    loop = getattr(body, "loop", None)
    if receive is None or not isinstance(loop, asyncio.AbstractEventLoop):
        return None
    async def wait_for_disconnect() -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return

    try:
        return asyncio.run_coroutine_threadsafe(wait_for_disconnect(), loop)
    except RuntimeError:  # loop closed
        return None
