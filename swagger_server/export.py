"""Streamed exports (CSV, NDJSON) from a server-side cursor, in constant memory.

The view opens a named cursor (``DECLARE ... CURSOR``, inside the connection's read-only
transaction) and fetches the first batch itself, so that a bad value, a statement timeout or an
unavailable database still get a proper 4xx/5xx. It then hands the connection to a
:class:`RowStream`, the WSGI body, which fetches ``batch`` lines at a time (each line built by
PostgreSQL) and gives the connection back to the pool exactly once: when the export ends, fails,
the server closes the body, the client disconnects (seen through ASGI ``http.disconnect``), or
at worst when the body is collected.

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

from swagger_server.pool import Connection, ConnectionPool

log = logging.getLogger(__name__)

BATCH_ROWS = 2000


class RowStream:
    """An iterable of bytes over a named cursor; owns ``conn`` until it is released."""

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
    ) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self._cursor = cursor
        self._pending = first
        self._header = header
        self._batch = batch
        self._disconnected = disconnected or (lambda: False)
        self._on_release = on_release
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
                    rows = self._cursor.fetchmany(self._batch)
            except BaseException:
                self._release()
                raise
            if not rows:
                self._release()
                raise StopIteration
            self.rows += len(rows)
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
            if not conn.closed and conn.info.transaction_status == \
                    psycopg2.extensions.TRANSACTION_STATUS_INTRANS:
                self._cursor.close()  # CLOSE the portal; the pool rolls back the transaction
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
) -> RowStream:
    """DECLARE the cursor and fetch the first batch here, where errors still have a status.

    On error the caller still owns ``conn``; on success the returned stream owns it.
    """
    cursor = conn.cursor(name=f"export_{uuid.uuid4().hex[:12]}")
    cursor.itersize = batch
    cursor.execute(statement, params)
    first = cursor.fetchmany(batch)
    watcher = _disconnect_watcher(environ)
    stream = RowStream(
        pool, conn, cursor, first, header=header, batch=batch,
        disconnected=watcher.done if watcher is not None else None,
        on_release=watcher.cancel if watcher is not None else None,
    )
    if watcher is not None:
        watcher.add_done_callback(lambda done: _on_disconnect(done, stream))
    return stream


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
