"""Settings per transaction, never per session: what a transaction pooler (PgBouncer) keeps.

PgBouncer in transaction mode hands each transaction to whichever server connection is free and
does not forward startup ``options``: a session setting would be lost, or worse, reach another
client. So:

- **read-only**, in every mode: pooled connections start their transactions with
  ``BEGIN READ ONLY`` (psycopg2's ``readonly``, client-side: no round trip);
  ``get_db(readonly=False)`` makes that ``BEGIN READ WRITE`` for one request, and the pool puts
  it back (:func:`connection_defaults`);
- **the rest** travels in a **preamble**, one ``SELECT set_config(name, value, true), ...``
  sent in front of the statement that opens a transaction (``preamble; statement`` in one
  ``execute``: one round trip). ``set_config(..., true)`` is transaction-local: COMMIT or
  ROLLBACK undoes it. Behind a pooler it carries ``statement_timeout`` and the DSN's ``-c``
  settings (directly those are startup options, free per transaction:
  :func:`swagger_server.db.transaction_settings`); with auth, the role's settings, the role and
  the claims follow in the same ``SELECT`` (swagger_server/auth/request.py).

A request's one read (a page, a row, ``GET /``) is a transaction of one message
(:meth:`PreambleCursor.execute_alone`): ``SET TRANSACTION READ ONLY; preamble; statement``,
which PostgreSQL runs as one implicit transaction: one round trip instead of three (``BEGIN``,
the statement, the pool's ``ROLLBACK``), same guarantees.

The connection's ``cursor_factory`` is a :class:`PreambleBinding`; its cursors
(:class:`PreambleCursor`) add the preamble. Every checkout gets it (requests, exports, the
catalog, health), since it is set on the connection itself, when opened and whenever it comes
back to the pool. A request with a role replaces it with a binding whose preamble starts with the
connection's settings and restores it afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as PlainCursor

PARAM_PREFIX = "_tx_"  # the settings' named parameters in a preamble
# First in a transaction of one message (PreambleCursor.execute_alone): the BEGIN READ ONLY of
# a transaction without BEGIN. Directly, the session default is read-only too; behind a pooler
# this is all there is.
_READ_ONLY = b"SET TRANSACTION READ ONLY;\n"


def settings_items(settings: Sequence[tuple[str, str]], params: dict[str, Any],
                   prefix: str = PARAM_PREFIX) -> list[sql.Composable]:
    """``set_config(name, value, true)`` per setting, names and values as bound parameters
    (added to ``params``)."""
    items: list[sql.Composable] = []
    for index, (name, value) in enumerate(settings):
        params[f"{prefix}n{index}"] = name
        params[f"{prefix}v{index}"] = value
        items.append(sql.SQL("set_config({}, {}, true)").format(
            sql.Placeholder(f"{prefix}n{index}"), sql.Placeholder(f"{prefix}v{index}")))
    return items


def settings_preamble(settings: Sequence[tuple[str, str]]) -> tuple[sql.Composed, dict[str, Any]]:
    """The preamble of the service's own settings: ``(statement, params)``."""
    params: dict[str, Any] = {}
    items = settings_items(settings, params)
    return sql.SQL("SELECT ") + sql.SQL(", ").join(items), params


class BindingSpent(RuntimeError):
    """A statement on a connection bound to a request's role that cannot carry the preamble
    (autocommit, or the binding already cleared): refused rather than run without it."""


class PreambleBinding:
    """A connection's ``cursor_factory``: cursors that open each transaction with the preamble.

    ``settings`` are the (name, value) pairs the preamble sets, kept so that a request's binding
    can start with them (:meth:`swagger_server.auth.request.attach`). In autocommit mode every
    statement is its own transaction: the preamble goes in front of each (a multi-statement
    string runs as one implicit transaction), unless ``autocommit_ok`` is False (a role binding:
    refused, see :class:`BindingSpent`).
    """

    autocommit_ok = True

    def __init__(self, preamble: tuple[Any, Any] | None,
                 settings: Sequence[tuple[str, str]] = (),
                 base: PreambleBinding | None = None) -> None:
        self._preamble = preamble
        self.settings = tuple(settings)
        self.base = base  # what detach() puts back
        self._lock = threading.Lock()

    @classmethod
    def of_settings(cls, settings: Sequence[tuple[str, str]]) -> PreambleBinding:
        return cls(settings_preamble(settings) if settings else None, settings)

    def __call__(self, conn: Connection, name: str | None = None) -> PreambleCursor:
        cursor = PreambleCursor(conn, name)
        cursor.binding = self
        return cursor

    def take(self) -> tuple[Any, Any] | None:
        with self._lock:
            return self._preamble

    def head(self, cursor: PlainCursor, preamble: tuple[Any, Any]) -> bytes:
        """The preamble as the bytes sent, quoted once and kept: it never changes for this
        binding, and quoting it per transaction cost more than the server's work for it."""
        head = self._head
        if head is None:
            head = self._head = cursor.mogrify(*preamble)
        return head

    def clear(self) -> None:
        with self._lock:
            self._preamble = None
            self._spent = True

    _head: bytes | None = None

    _spent = False

    @property
    def spent(self) -> bool:
        return self._spent


class PreambleCursor(PlainCursor):
    """Prepends the binding's preamble to a statement that starts a transaction."""

    binding: PreambleBinding | None = None

    _alone = False  # set by execute_alone for the statement it runs

    def execute_alone(self, query: Any, vars: Any = None) -> None:
        """Run a read-only ``query`` as a transaction of its own, in one round trip.

        When no transaction is open on a read-only connection: no ``BEGIN`` before it and no
        ``ROLLBACK`` when the connection goes back to the pool (two round trips of three for a
        request's one statement). ``SET TRANSACTION READ ONLY``, the preamble and the query go
        in one message, which PostgreSQL runs as one implicit transaction (so
        ``set_config(..., true)`` holds for the query and ends with it; a pooler hands the
        message to one server connection). The connection is left idle, committed: only for
        a statement that reads, after which the caller needs nothing of the same transaction
        (a later statement opens a new one, with the preamble again).

        Otherwise (a transaction already open, a writable connection, autocommit, a named
        cursor): a plain :meth:`execute`, in the open transaction.
        """
        conn = self.connection
        if (self.name is not None or conn.autocommit or conn.readonly is not True
                or conn.info.transaction_status != TRANSACTION_STATUS_IDLE):
            return self.execute(query, vars)
        # Client-side switches only: psycopg2 sends nothing for them while readonly is DEFAULT
        # (with readonly on, leaving autocommit would send a SET: a round trip, session state).
        conn.readonly = None
        conn.autocommit = True
        self._alone = True
        try:
            self.execute(query, vars)
        finally:
            self._alone = False
            if not conn.closed:
                conn.autocommit = False
                conn.readonly = True

    def execute(self, query: Any, vars: Any = None) -> None:
        if self._alone:
            return self._execute_alone(query, vars)
        preamble = self._pending()
        if preamble is None:
            return super().execute(query, vars)
        assert self.binding is not None
        head = self.binding.head(self, preamble)
        if self.name is not None:
            # A named (server-side) cursor's statement goes into a DECLARE: no room in front.
            # The preamble then costs its own round trip (the data API's exports DECLARE
            # through a plain cursor instead).
            PlainCursor(self.connection).execute(head)
            return super().execute(query, vars)
        # Interpolated client-side (as psycopg2 always does), each with its own parameters:
        # any parameter style and a literal % in either keep working.
        body = self.mogrify(query, vars) if vars is not None else _text(query, self)
        return super().execute(head + b";\n" + body)

    def _execute_alone(self, query: Any, vars: Any) -> None:
        binding = self.binding
        head = _READ_ONLY
        if binding is not None:
            preamble = binding.take()
            if preamble is None and binding.spent:
                raise BindingSpent("the request's role binding was already cleared")
            if preamble is not None:
                head += binding.head(self, preamble) + b";\n"
        body = self.mogrify(query, vars) if vars is not None else _text(query, self)
        return super().execute(head + body)

    def executemany(self, query: Any, vars_list: Any) -> None:
        preamble = self._pending()
        if preamble is not None and self.binding is not None:
            # its own round trip: rare, and correct
            super().execute(self.binding.head(self, preamble))
        return super().executemany(query, vars_list)

    def callproc(self, procname: Any, parameters: Any = None) -> Any:
        preamble = self._pending()
        if preamble is not None and self.binding is not None:
            super().execute(self.binding.head(self, preamble))
        return super().callproc(procname, parameters)

    def _pending(self) -> tuple[Any, Any] | None:
        """The preamble, when this statement will open a transaction; refuses
        (:class:`BindingSpent`) a statement that would run without a role binding's preamble."""
        binding = self.binding
        conn = self.connection
        if binding is None:
            return None
        if conn.autocommit:
            if not binding.autocommit_ok:
                raise BindingSpent("autocommit: no transaction to set the request's role in")
        elif conn.info.transaction_status != TRANSACTION_STATUS_IDLE:
            return None  # inside the transaction the preamble opened
        preamble = binding.take()
        if preamble is None and binding.spent:
            raise BindingSpent("the request's role binding was already cleared")
        return preamble


def _text(query: Any, cursor: Any) -> bytes:
    if isinstance(query, bytes):
        return query
    if isinstance(query, str):
        return query.encode("utf-8")
    return query.as_string(cursor.connection).encode("utf-8")


def connection_defaults(binding: PreambleBinding) -> Any:
    """The pool's per-connection defaults: applied when a connection opens and whenever it
    comes back (client-side only, no round trip): transactions ``BEGIN READ ONLY``, default
    isolation, and the cursors that carry the preamble."""

    def apply(conn: Connection) -> None:
        if conn.autocommit:
            conn.autocommit = False
        conn.set_session(readonly=True, isolation_level="DEFAULT", deferrable="DEFAULT")
        conn.cursor_factory = binding

    return apply
