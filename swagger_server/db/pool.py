"""A psycopg2 connection pool that keeps its connections, waits when full and heals itself.

psycopg2's ``ThreadedConnectionPool`` closes every returned connection beyond ``minconn``, raises
at once when exhausted and hands out connections that died while idle. :class:`ConnectionPool`
subclasses it and replaces those parts:

- returned connections stay open; idle ones beyond ``min_size`` close after ``max_idle``;
- ``getconn()`` waits up to ``acquire_timeout`` in FIFO order, then raises :class:`PoolTimeout`;
- a returned connection is rolled back, or discarded if broken or in an unknown state;
- before use, a connection is checked for free (is its socket readable while it should be
  silent? a terminated backend sends an error and closes) and pinged when idle longer than
  ``check_after_idle``; one dead connection makes every older idle one suspect;
- connections retire after ``max_lifetime`` minus up to 10 % jitter;
- it belongs to the process that opened it (:class:`PoolForkedError` elsewhere);
- a watchdog ends a statement that gets no answer past its deadline (a hung peer) and warns
  about connections checked out longer than ``leak_threshold`` (:mod:`swagger_server.db.watchdog`);
- while the database is down, at most one connection attempt is in flight and the others fail
  at once with :class:`DatabaseUnavailable`; attempts are spaced by a backoff;
- :meth:`stats` reports what it is doing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import select
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg2
import psycopg2.extensions
import psycopg2.pool

log = logging.getLogger(__name__)

Connection = psycopg2.extensions.connection

_STATUS = psycopg2.extensions
_LIFETIME_JITTER = 0.10
_LIBPQ_MIN_CONNECT_TIMEOUT = 2  # libpq treats connect_timeout=1 as 2

# Reconnect spacing while the database is down. PostgreSQL's own refusals (too many clients,
# authentication, no such database: each costs it a process) back off like psycopg_pool:
# 1 s +-10 %, doubling, capped at RECONNECT_MAX_DELAY. Every other failure costs the database
# nothing (refused, no socket file, reset, a timeout: nothing reached it) or is a server about to
# accept (starting up, shutting down, in recovery: SQLSTATE 57P03, answered by the postmaster):
# with one attempt in flight per worker those retry after a short flat delay, so a database
# that is back serves again within half a second (after a timeout: once the attempt in flight,
# bounded by CONNECT_TIMEOUT, has given up).
_BACKOFF_START = 1.0
_BACKOFF_JITTER = 0.10
_QUICK_RETRY = 0.4
_NOT_YET = (
    "is starting up",
    "is shutting down",
    "in recovery mode",
    "not yet accepting connections",
    "not accepting connections",
)


class PoolError(psycopg2.pool.PoolError):
    """Base class of the pool's own errors."""


class PoolTimeout(PoolError):
    """No connection became available within the acquire timeout."""


class PoolClosed(PoolError):
    """The pool has been closed."""


class PoolForkedError(PoolError):
    """The pool was used in a process other than the one that created it."""


class DatabaseUnavailable(PoolError):
    """A new connection could not be opened (database down, unreachable or refusing)."""


class PoolObserver(Protocol):
    """Told of each wait, checkout and new connection (metrics); optional, called inline."""

    def acquired(self, seconds: float) -> None: ...  # getconn()'s wait, failed ones too
    def released(self, seconds: float) -> None: ...  # how long a connection was checked out
    def connected(self, seconds: float) -> None: ...  # time to open a connection


@dataclass(eq=False)
class _Slot:
    conn: Connection
    created: float
    expires: float
    last_used: float = field(default=0.0)
    checked: float = field(default=0.0)  # last moment it was known alive
    taken: float = field(default=0.0)  # last checkout


@dataclass(eq=False)
class Checkout:
    """One use of a connection, watched by :class:`swagger_server.db.watchdog.Watchdog`."""

    conn: Connection
    taken: float
    long_lived: bool = False  # an export: no leak warning
    stack: str | None = None  # where it was taken, when leak detection is on
    warned: bool = False
    active_since: float | None = None  # when the watchdog first saw a statement running


class _Waiter:
    __slots__ = ("event", "grant")

    def __init__(self) -> None:
        self.event = threading.Event()
        # What the waiter was handed: a live slot, _NEW (capacity to open one) or _CLOSED.
        self.grant: _Slot | object | None = None


_NEW = object()
_CLOSED = object()

# Connections from a pool used after fork: never close or collect them here, since either would
# send a Terminate message down the socket the parent process still uses.
_ORPHANS: list[Connection] = []


class ConnectionPool(psycopg2.pool.ThreadedConnectionPool):
    """A thread-safe, fork-aware pool of psycopg2 connections for one process."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        acquire_timeout: float = 5.0,
        max_lifetime: float = 1800.0,
        max_idle: float = 300.0,
        check_after_idle: float = 10.0,
        connect_timeout: float = 5.0,
        application_name: str = "pgrest",
        configure: Callable[[Connection], None] | None = None,
        defaults: Callable[[Connection], None] | None = None,
        maintenance_interval: float = 1.0,
        query_deadline: float = 0.0,
        watch_interval: float = 0.25,
        leak_threshold: float = 0.0,
        reconnect_max_delay: float = 30.0,
        open: bool = True,
        **connect_kwargs: Any,
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}"
            )
        # minconn=0: the parent opens nothing; we open min_size ourselves, tolerating a database
        # that is down.
        super().__init__(0, max_size, dsn, **connect_kwargs)
        self.minconn = min_size
        self.min_size = min_size
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.check_after_idle = check_after_idle
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._configure = configure
        # Client-side state every user starts from (read-only, cursor factory): applied to a
        # new connection and to each returned one; no round trip.
        self._defaults = defaults
        self._maintenance_interval = maintenance_interval
        self.observer: PoolObserver | None = None
        self.query_deadline = query_deadline  # seconds without an answer; 0 = not watched
        self.watch_interval = watch_interval  # how often the watchdog looks
        self.leak_threshold = leak_threshold  # seconds checked out; 0 = off
        self.reconnect_max_delay = reconnect_max_delay

        self.closed = True  # until open()
        self.pid = os.getpid()
        self._idle: deque[_Slot] = deque()  # right end = most recently returned (LIFO use)
        self._in_use: dict[int, _Slot] = {}
        self._waiters: deque[_Waiter] = deque()
        self._size = 0  # open or opening connections, idle and in use
        self._suspect_before = 0.0  # idle slots not checked since then must be pinged
        self._db_down = False
        self._attempting = False  # a connection attempt in flight while the database is down
        self._next_attempt = 0.0
        self._backoff = 0.0
        self._down_reason = ""
        self.checkouts: dict[int, Checkout] = {}  # id(conn) -> its current use, for the watchdog
        self._counters = dict.fromkeys(
            (
                "requests_total",
                "timeouts_total",
                "errors_total",
                "discarded_total",
                "opened_total",
                "closed_total",
            ),
            0,
        )
        self._wait_ms_total = 0.0
        self._wake = threading.Event()  # wakes the maintenance thread early (close, dead conn)
        self._maintainer: threading.Thread | None = None
        self._watchdog: Any = None
        if open:
            self.open()

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Open ``min_size`` connections (best effort) and start the maintenance thread."""
        with self._lock:
            if not self.closed:
                return
            self.closed = False
            self.pid = os.getpid()
        self._wake.clear()
        self._fill()
        self._maintainer = threading.Thread(
            target=self._maintain, name=f"pool-maintenance-{self.pid}", daemon=True
        )
        self._maintainer.start()
        if self.query_deadline > 0 or self.leak_threshold > 0:
            from swagger_server.db.watchdog import (
                Watchdog,  # the pool module stays importable alone
            )

            self._watchdog = Watchdog(self)
            self._watchdog.start()
        log.info(
            "pool open: pid=%s min_size=%s max_size=%s connections=%s",
            self.pid, self.min_size, self.max_size, self._size,
        )

    def closeall(self) -> None:
        """Close every connection and wake every waiter with :class:`PoolClosed`."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            in_use = list(self._in_use.values())
            slots = list(self._idle) + in_use
            self._idle.clear()
            self._in_use.clear()
            self.checkouts.clear()
            self._size = 0
            while self._waiters:
                self._grant(self._waiters.popleft(), _CLOSED)
        self._wake.set()
        if os.getpid() != self.pid:
            _ORPHANS.extend(slot.conn for slot in slots)
            return
        for slot in in_use:
            # close() waits for a statement running in another thread to end (psycopg2 holds
            # the connection's lock meanwhile); cancel() does not, and ends that statement.
            with contextlib.suppress(Exception):
                slot.conn.cancel()
        for slot in slots:
            self._close(slot)
        if self._maintainer is not None and self._maintainer is not threading.current_thread():
            self._maintainer.join(timeout=5)
        if self._watchdog is not None:
            self._watchdog.stop()
        log.info("pool closed: pid=%s", self.pid)

    close = closeall

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closeall()

    # ------------------------------------------------------------------ checkout / return

    def getconn(
        self, key: Any = None, timeout: float | None = None, *, long_lived: bool = False
    ) -> Connection:
        """Take a live connection, waiting up to ``timeout`` (default ``acquire_timeout``).

        ``long_lived=True`` (exports) exempts this checkout from the leak warning; the deadline
        of each statement still applies.
        """
        if key is not None:
            raise PoolError("keyed connections are not supported")
        self._check_process()
        timeout = self.acquire_timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = start + timeout
        with self._lock:
            self._counters["requests_total"] += 1
        stack = None
        if self.leak_threshold > 0 and not long_lived:
            stack = "".join(traceback.format_stack(limit=16)[:-1])
        try:
            slot = self._checkout(deadline, timeout, long_lived, stack)
        finally:
            waited = time.monotonic() - start
            with self._lock:
                self._wait_ms_total += waited * 1000.0
            if self.observer is not None:
                self.observer.acquired(waited)
        return slot.conn

    def _checkout(
        self, deadline: float, timeout: float, long_lived: bool = False, stack: str | None = None
    ) -> _Slot:
        grant = self._reserve(deadline, timeout)
        if isinstance(grant, _Slot):
            # Watched from now on: the ping below can meet a hung peer too.
            self._watch(grant.conn, long_lived, stack)
        if isinstance(grant, _Slot) and time.monotonic() >= grant.expires:
            # Old, not dead: replaced without making the others suspect.
            self._unwatch(grant.conn)
            self._discard(grant, "past max_lifetime", count=False, free=False)
            grant = _NEW
        elif isinstance(grant, _Slot) and not self._alive(grant):
            # Dead: every idle connection checked before this moment is suspect too (the
            # database probably restarted): the maintenance thread pings them now, and a
            # checkout that gets one first pings it itself.
            self._suspect_before = time.monotonic()
            self._wake.set()  # wake the maintenance thread to test the other idle ones now
            self._unwatch(grant.conn)
            self._discard(grant, "dead on checkout", free=False)
            grant = _NEW  # its capacity opens a fresh connection
        if grant is _NEW:
            try:
                slot = self._connect(deadline)
            except BaseException:
                self._free_capacity()
                raise
            self._watch(slot.conn, long_lived, stack)
        else:
            slot = grant  # type: ignore[assignment]
        slot.taken = time.monotonic()
        with self._lock:
            self._in_use[id(slot.conn)] = slot
        return slot

    def _watch(self, conn: Connection, long_lived: bool = False, stack: str | None = None) -> None:
        if self._watchdog is None:
            return
        checkout = Checkout(conn=conn, taken=time.monotonic(), long_lived=long_lived, stack=stack)
        with self._lock:
            self.checkouts[id(conn)] = checkout

    def _unwatch(self, conn: Connection) -> None:
        with self._lock:
            self.checkouts.pop(id(conn), None)

    def putconn(self, conn: Connection, key: Any = None, close: bool = False) -> None:
        """Give a connection back: rolled back and kept, or discarded when unusable."""
        if os.getpid() != self.pid:
            _ORPHANS.append(conn)
            return
        with self._lock:
            slot = self._in_use.pop(id(conn), None)
            if slot is None:
                if self.closed:  # returned after closeall(): just close it
                    conn.close()
                    return
                raise PoolError("trying to put unkeyed connection")
        if self.observer is not None:
            self.observer.released(time.monotonic() - slot.taken)
        try:
            # Still watched during the rollback: it can meet a hung peer too.
            usable = not close and self._reset(conn)
        finally:
            self._unwatch(conn)  # before any close: the watchdog reads the connection's state
        if close:
            self._discard(slot, "closed by caller", count=False)
        elif not usable:
            self._discard(slot, "broken or in an unknown state on return")
        elif time.monotonic() >= slot.expires:
            self._discard(slot, "past max_lifetime", count=False)
        else:
            self._release(slot)

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Connection]:
        """``with pool.connection() as conn:`` takes a connection and always gives it back."""
        conn = self.getconn(timeout=timeout)
        try:
            yield conn
        finally:
            self.putconn(conn)

    def count_timeout(self) -> None:
        """A request that waited its whole ACQUIRE_TIMEOUT before it could even ask (admission
        control, swagger_server/web/admission.py): the same 503 pool-timeout, counted alike."""
        with self._lock:
            self._counters["timeouts_total"] += 1

    def stats(self) -> dict[str, int | float]:
        """A snapshot of the pool: sizes now and counters since it was created."""
        with self._lock:
            idle = len(self._idle)
            return {
                "pid": self.pid,
                "min_size": self.min_size,
                "max_size": self.max_size,
                "size": self._size,
                "idle": idle,
                "in_use": self._size - idle,
                "waiting": len(self._waiters),
                **self._counters,
                "wait_ms_total": round(self._wait_ms_total, 3),
            }

    # ------------------------------------------------------------------ internals (locking)

    def _check_process(self) -> None:
        if os.getpid() != self.pid:
            raise PoolForkedError(
                f"pool created in process {self.pid} used in process {os.getpid()}; "
                "create one pool per process after fork"
            )
        if self.closed:
            raise PoolClosed("the connection pool is closed")

    def _reserve(self, deadline: float, timeout: float) -> _Slot | object:
        """An idle slot, or _NEW with capacity reserved; waits in line when at max_size."""
        with self._lock:
            if self.closed:
                raise PoolClosed("the connection pool is closed")
            if self._idle:
                return self._idle.pop()
            if self._size < self.max_size and not self._waiters:
                self._size += 1
                return _NEW
            waiter = _Waiter()
            self._waiters.append(waiter)
        waiter.event.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            grant = waiter.grant
            if grant is None:  # timed out, nothing was handed over
                self._waiters.remove(waiter)
                self._counters["timeouts_total"] += 1
                in_use = self._size - len(self._idle)
        if grant is None:
            raise PoolTimeout(
                f"no connection available within {timeout:g}s "
                f"(max_size={self.max_size}, in_use={in_use})"
            )
        if grant is _CLOSED:
            raise PoolClosed("the connection pool was closed while waiting")
        return grant

    def _grant(self, waiter: _Waiter, grant: _Slot | object) -> None:
        # Lock held. Hand-off straight to the first waiter keeps the queue FIFO: a newcomer
        # cannot take the connection a waiter has been waiting for.
        waiter.grant = grant
        waiter.event.set()

    def _release(self, slot: _Slot) -> None:
        now = time.monotonic()
        slot.last_used = slot.checked = now
        with self._lock:
            if self.closed:
                pass
            elif self._waiters:
                self._grant(self._waiters.popleft(), slot)
                return
            else:
                self._idle.append(slot)
                return
        self._close(slot)

    def _free_capacity(self) -> None:
        """A slot's connection is gone: let the first waiter open a new one, or shrink."""
        with self._lock:
            if self._waiters and not self.closed:
                self._grant(self._waiters.popleft(), _NEW)
            else:
                self._size = max(0, self._size - 1)

    def _discard(self, slot: _Slot, why: str, *, count: bool = True, free: bool = True) -> None:
        with self._lock:
            if count:
                self._counters["discarded_total"] += 1
        log.debug("pool %s: closing a connection: %s", self.pid, why)
        self._close(slot)
        if free:
            self._free_capacity()

    def _close(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):
            slot.conn.close()
        with self._lock:
            self._counters["closed_total"] += 1

    # ------------------------------------------------------------------ connections

    def _connect(self, deadline: float | None = None) -> _Slot:
        timeout = self.connect_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        kwargs = dict(self._kwargs)
        kwargs["connect_timeout"] = max(_LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(timeout))
        kwargs.setdefault("application_name", self.application_name)
        self._may_attempt()
        started = time.monotonic()
        try:
            conn = psycopg2.connect(*self._args, **kwargs)
        except psycopg2.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = self._attempt_failed(str(exc), reason)
            if first:
                log.warning("pool %s: cannot connect to the database: %s", self.pid, reason)
            raise DatabaseUnavailable(f"cannot connect to the database: {reason}") from exc
        except BaseException:
            with self._lock:
                self._attempting = False
            raise
        if self._configure is not None or self._defaults is not None:
            try:
                if self._defaults is not None:
                    self._defaults(conn)
                if self._configure is not None:
                    self._configure(conn)
            except BaseException:
                conn.close()
                raise
        now = time.monotonic()
        if self.observer is not None:
            self.observer.connected(now - started)
        with self._lock:
            self._counters["opened_total"] += 1
            recovered = self._db_down
            self._db_down = self._attempting = False
            self._backoff = self._next_attempt = 0.0
            self._down_reason = ""
        if recovered:
            log.warning("pool %s: database reachable again", self.pid)
        lifetime = self.max_lifetime * (1.0 - random.uniform(0.0, _LIFETIME_JITTER))
        return _Slot(conn=conn, created=now, expires=now + lifetime, last_used=now, checked=now)

    def _may_attempt(self) -> None:
        """While the database is down: one attempt at a time, spaced; others fail at once."""
        with self._lock:
            if not self._db_down:
                return
            wait = self._next_attempt - time.monotonic()
            if self._attempting or wait > 0:
                self._counters["errors_total"] += 1
                raise DatabaseUnavailable(
                    f"cannot connect to the database: {self._down_reason} ("
                    + ("reconnecting" if self._attempting else f"next attempt in {wait:.1f}s")
                    + ")"
                )
            self._attempting = True

    def _attempt_failed(self, error: str, reason: str) -> bool:
        """Record a failed attempt and when the next may start; True on the first failure."""
        with self._lock:
            self._down_reason = reason
            self._counters["errors_total"] += 1
            first = not self._db_down
            self._db_down = True
            self._attempting = False
            refused_by_server = "FATAL" in error and not any(w in error for w in _NOT_YET)
            if not refused_by_server:
                delay = _QUICK_RETRY
            else:
                self._backoff = min(self.reconnect_max_delay,
                                    self._backoff * 2 if self._backoff else _BACKOFF_START)
                delay = self._backoff
            delay *= 1.0 + random.uniform(-_BACKOFF_JITTER, _BACKOFF_JITTER)
            self._next_attempt = time.monotonic() + delay
        return first

    def _alive(self, slot: _Slot) -> bool:
        """Cheap checks first; a round trip only when idle long, suspect or oddly readable."""
        conn = slot.conn
        if conn.closed:
            return False
        now = time.monotonic()
        must_ping = (
            now - slot.last_used > self.check_after_idle or slot.checked < self._suspect_before
        )
        if not must_ping and _readable(conn):
            # An idle connection has nothing to read unless the server sent something on its
            # own: almost always the FATAL of a terminated backend, then EOF.
            must_ping = True
        if not must_ping:
            return True
        if _ping(conn):
            slot.checked = now
            return True
        return False

    def _reset(self, conn: Connection) -> bool:
        """Bring a returned connection back to idle; False when it must be discarded."""
        if conn.closed:
            return False
        status = conn.info.transaction_status
        try:
            if status in (_STATUS.TRANSACTION_STATUS_INTRANS, _STATUS.TRANSACTION_STATUS_INERROR):
                conn.rollback()
            elif status != _STATUS.TRANSACTION_STATUS_IDLE:
                return False  # a query still running, or the connection is lost
            if self._defaults is not None:
                self._defaults(conn)  # e.g. get_db(readonly=False): read-only again
                return conn.info.transaction_status == _STATUS.TRANSACTION_STATUS_IDLE
            if conn.autocommit:
                conn.autocommit = False
            if (conn.readonly, conn.deferrable, conn.isolation_level) != (None, None, None):
                # get_db(readonly=False) and the like: back to the session defaults (read-only),
                # so the next user never inherits a writable connection. Client-side only.
                conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT",
                                 deferrable="DEFAULT")
        except psycopg2.Error:
            return False
        return conn.info.transaction_status == _STATUS.TRANSACTION_STATUS_IDLE

    # ------------------------------------------------------------------ maintenance

    def _maintain(self) -> None:
        while True:
            interval = self._maintenance_interval
            with self._lock:
                if self._db_down:  # be the one to reconnect as soon as the backoff allows
                    interval = min(interval, max(0.01, self._next_attempt - time.monotonic()))
            self._wake.wait(interval)
            with self._lock:
                if self.closed:
                    return
            self._wake.clear()
            try:
                self._check_suspects()
                self._retire_idle()
                self._fill()
            except Exception:  # never let the maintenance thread die
                log.exception("pool %s: maintenance failed", self.pid)

    def _check_suspects(self) -> None:
        """Ping, one at a time, idle connections not known alive since a dead one was found."""
        while True:
            with self._lock:
                suspects = [s for s in self._idle if s.checked < self._suspect_before]
                if not suspects:
                    return
                slot = suspects[0]
                self._idle.remove(slot)  # out of reach of getconn while it is tested
            self._watch(slot.conn)
            try:
                alive = slot.conn.closed == 0 and _ping(slot.conn)
            finally:
                self._unwatch(slot.conn)
            if alive:
                slot.checked = time.monotonic()
                self._release(slot)
            else:
                self._discard(slot, "dead while idle")

    def _retire_idle(self) -> None:
        """Close idle connections past max_lifetime, or idle past max_idle beyond min_size."""
        now = time.monotonic()
        retire: list[_Slot] = []
        with self._lock:
            keep: deque[_Slot] = deque()
            # Oldest-returned first, so the ones LIFO checkout left unused go first.
            for slot in self._idle:
                idle_too_long = now - slot.last_used > self.max_idle
                excess = self._size - len(retire) > self.min_size
                if now >= slot.expires or (idle_too_long and excess):
                    retire.append(slot)
                else:
                    keep.append(slot)
            self._idle = keep
            self._size -= len(retire)
        for slot in retire:
            log.debug("pool %s: retiring an idle connection", self.pid)
            self._close(slot)

    def _fill(self) -> None:
        """Open connections up to min_size; stop at the first failure (retried next round)."""
        while True:
            with self._lock:
                if self.closed or self._size >= self.min_size:
                    return
                self._size += 1
            try:
                slot = self._connect()
            except DatabaseUnavailable:
                self._free_capacity()
                return
            self._release(slot)


def _readable(conn: Connection) -> bool:
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg2.Error):
        return True


def _ping(conn: Connection) -> bool:
    try:
        conn.autocommit = True  # a bare statement: no BEGIN/ROLLBACK round trips
        # A plain cursor: no preamble for a ping (swagger_server/db/transaction.py).
        with conn.cursor(cursor_factory=psycopg2.extensions.cursor) as cur:
            cur.execute("SELECT 1")
        conn.autocommit = False
        return True
    except psycopg2.Error:
        return False
