"""The pool's watchdog: ends statements a hung peer never answers, and reports leaked checkouts.

A database peer that accepts and acknowledges but never answers (a hung server, a middlebox that
lost its state) leaves libpq blocked in ``poll()`` forever: ``statement_timeout`` is enforced by
the server, which is the part that hangs, and TCP keepalives and ``tcp_user_timeout`` see
nothing wrong, since every packet is acknowledged. So one thread per pool looks, a few times per
margin, at every checked-out connection:

- a statement is running (libpq's transaction status is ACTIVE) and nothing has been received
  for ``query_deadline`` seconds (the statement timeout plus half the margin; the watchdog
  looks every quarter of the margin, so the request ends within the timeout plus the margin):
  the server would have answered by now, if only with its statement-timeout error. The socket
  is shut down (on a dup of its descriptor), libpq sees EOF, the request fails with a
  connection error (a 503) and the pool discards the connection when it comes back.
  "Nothing received" is the later of the moment the watchdog first saw the statement running
  and, over TCP, the kernel's time of the last data received (``TCP_INFO``), so the deadline is
  per statement, not per checkout: an export that runs for minutes fetches batches that each
  answer in time, and each answer restarts the clock.
- a checkout (not marked long-lived) older than ``leak_threshold``: one warning with the stack
  where the connection was taken.

Why a thread and not psycopg2's wait callback: the callback is process-global, makes every query
go through Python (green mode) and disables COPY; this thread costs one look at a few integers
per checked-out connection a few times per second, nothing per query.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.extensions

if TYPE_CHECKING:
    from swagger_server.db.pool import Checkout, ConnectionPool

log = logging.getLogger(__name__)

_ACTIVE = psycopg2.extensions.TRANSACTION_STATUS_ACTIVE
# struct tcp_info (linux/tcp.h): 8 one-byte fields, then u32s; tcpi_last_data_recv is the 12th.
_TCPI_LAST_DATA_RECV = struct.Struct("=I")
_TCPI_LAST_DATA_RECV_OFFSET = 8 + 11 * 4
_TCP_INFO_SIZE = 104
_MIN_INTERVAL = 0.05
_MAX_INTERVAL = 1.0


def last_received_ago(fd: int) -> float | None:
    """Seconds since the kernel last received data on this TCP socket; None if not TCP."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    finally:
        sock.close()
    if len(info) < _TCPI_LAST_DATA_RECV_OFFSET + 4:
        return None
    (ms,) = _TCPI_LAST_DATA_RECV.unpack_from(info, _TCPI_LAST_DATA_RECV_OFFSET)
    return ms / 1000.0


class Watchdog:
    """One daemon thread per pool; see the module docstring."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.deadline = pool.query_deadline
        self.leak_threshold = pool.leak_threshold
        self.interval = min(_MAX_INTERVAL, max(_MIN_INTERVAL, pool.watch_interval))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pool-watchdog-{pool.pid}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.look()
            except Exception:  # never let the watchdog die
                log.exception("pool %s: watchdog failed", self.pool.pid)

    def look(self) -> None:
        """One round over the current checkouts."""
        now = time.monotonic()
        hung: list[tuple[int, float]] = []
        with self.pool._lock:
            # Under the pool's lock: the pool unwatches a connection before it closes it, so
            # none is closed while its state is read here.
            checkouts = list(self.pool.checkouts.values())
            if self.deadline > 0:
                for checkout in checkouts:
                    quiet = self._quiet(checkout, now)
                    if quiet is not None and quiet > self.deadline:
                        with contextlib.suppress(OSError, psycopg2.Error):
                            hung.append((os.dup(checkout.conn.fileno()), quiet))
                        checkout.active_since = None
        for fd, quiet in hung:
            self._shut(fd, quiet)
        if self.leak_threshold > 0:
            for checkout in checkouts:
                self._check_leak(checkout, now)

    def _quiet(self, checkout: Checkout, now: float) -> float | None:
        """Seconds the running statement has gone without an answer; None when none runs."""
        conn = checkout.conn
        try:
            running = conn.closed == 0 and conn.info.transaction_status == _ACTIVE
            fd = conn.fileno() if running else -1
        except psycopg2.Error:
            running = False
        if not running:
            checkout.active_since = None
            return None
        if checkout.active_since is None:
            checkout.active_since = now
        quiet_since = checkout.active_since
        ago = last_received_ago(fd)
        if ago is not None:
            quiet_since = max(quiet_since, now - ago)
        return now - quiet_since

    def _shut(self, fd: int, quiet: float) -> None:
        """Shut the socket down under the blocked libpq call: it sees EOF and gives up."""
        log.warning(
            "pool %s: no answer from the database for %.1fs during a statement (limit %.1fs: "
            "STATEMENT_TIMEOUT + QUERY_DEADLINE_MARGIN / 2): closing the connection",
            self.pool.pid, quiet, self.deadline,
        )
        with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _check_leak(self, checkout: Checkout, now: float) -> None:
        if checkout.long_lived or checkout.warned or now - checkout.taken <= self.leak_threshold:
            return
        checkout.warned = True
        log.warning(
            "pool %s: a connection has been checked out for more than %gs (LEAK_THRESHOLD); "
            "not given back? It was taken at:\n%s",
            self.pool.pid, self.leak_threshold, (checkout.stack or "(stack not captured)").rstrip(),
        )
