"""Schema reload on demand: ``NOTIFY pgrest, 'reload schema'`` empties every worker's catalog.

One :class:`ReloadListener` thread per worker process (started in gunicorn's ``post_fork``,
stopped in ``worker_exit``; usable outside gunicorn too) holds its own autocommit connection,
``LISTEN``s on ``[API] RELOAD_CHANNEL`` and waits on its socket with a short timeout. A
notification whose payload is ``reload schema`` or empty invalidates the catalog cache; any
other payload is ignored (the channel may be shared with other tools).

A lost connection is retried every ``RETRY_DELAY`` seconds; once back, the cache is invalidated
once, since notifications sent meanwhile were missed. Logged once when listening, once when
lost, once when back. ``CATALOG_TTL`` stays the fallback.

The listener connects to ``[POSTGRES] LISTEN_URL`` when set, else to the main DSN. Behind a
transaction pooler (``[POSTGRES] POOLER = transaction``) LISTEN cannot go through it (the
pooler hands the session to other clients between transactions, and the notifications with
it): without a LISTEN_URL there is no listener, and the master says so once at start
(:func:`startup_note`); the TTL and SIGUSR1 still reload.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import threading
from types import FrameType

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from swagger_server.config import Settings
from swagger_server.data import catalog
from swagger_server.db import _TCP_DEFAULTS, SERVICE_NAME

log = logging.getLogger(__name__)

RELOAD_PAYLOADS = frozenset({"reload schema", ""})
POLL_INTERVAL = 0.25  # seconds between checks of the stop flag while the socket is quiet
RETRY_DELAY = 1.0  # seconds between attempts to get the connection back


class ReloadListener:
    def __init__(self, settings: Settings, cache: catalog.CatalogCache | None = None) -> None:
        dsn = settings.database.listen_dsn
        assert dsn is not None, "no DSN to LISTEN on (behind a pooler without LISTEN_URL)"
        self._dsn = dsn
        self._channel = settings.api.reload_channel
        self._cache = cache or catalog.CACHE
        self._params = listener_params(settings, dsn)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reload-listener", daemon=True)
        self.reloads = 0  # invalidations done (notifications and reconnections)

    def start(self) -> ReloadListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self._dsn, **self._params)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return conn

    def _invalidate(self) -> None:
        self._cache.invalidate()
        self.reloads += 1

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except psycopg2.Error as exc:
                if not lost:
                    log.warning("schema reload listener cannot connect (retrying every %ss): %s",
                                RETRY_DELAY, str(exc).strip())
                    lost = True
                self._stop.wait(RETRY_DELAY)
                continue
            if lost:
                log.info("schema reload listener back on channel %r", self._channel)
                self._invalidate()  # notifications sent while away were missed
                lost = False
            else:
                log.info("schema reload listener on channel %r", self._channel)
            try:
                self._listen(conn)
            except (psycopg2.Error, OSError) as exc:
                log.warning("schema reload listener lost its connection: %s", str(exc).strip())
                lost = True
                self._stop.wait(RETRY_DELAY)
            finally:
                conn.close()

    def _listen(self, conn: psycopg2.extensions.connection) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([conn], [], [], POLL_INTERVAL)
            if not readable:
                continue
            conn.poll()  # raises OperationalError when the server is gone
            notifies, conn.notifies[:] = list(conn.notifies), []
            if any(n.payload.strip() in RELOAD_PAYLOADS for n in notifies):
                log.info("schema reload requested: catalog invalidated")
                self._invalidate()


def listener_params(settings: Settings, dsn: str) -> dict[str, object]:
    """The listener's connection parameters besides ``dsn``'s own (which win): the pool's TCP
    defaults, its timeout, its own application name. No options: it only LISTENs."""
    given = psycopg2.extensions.parse_dsn(dsn)
    params: dict[str, object] = {k: v for k, v in _TCP_DEFAULTS.items() if k not in given}
    # libpq wants whole seconds.
    params["connect_timeout"] = max(1, math.ceil(float(
        given.get("connect_timeout", settings.pool.connect_timeout))))
    if "application_name" not in given:
        # Not "pgrest worker ...": that name counts the pools' connections.
        params["application_name"] = f"{SERVICE_NAME} listener {os.getpid()}"
    return params


def listening(settings: Settings) -> bool:
    """Whether each worker runs a listener (and so holds one connection outside its pool)."""
    return bool(settings.api.reload_channel) and settings.database.listen_dsn is not None


def startup_note(settings: Settings) -> str | None:
    """The master's one line at start when LISTEN is unavailable behind a pooler."""
    if not settings.api.reload_channel or listening(settings):
        return None
    reason = ("LISTEN_URL is off" if settings.database.listen_url == "off" else
              "POSTGRES_POOLER=transaction and no POSTGRES_LISTEN_URL")
    return (f"schema reload: no NOTIFY listener ({reason}); catalogs reload after "
            f"CATALOG_TTL ({settings.api.catalog_ttl:g} s) or on SIGUSR1 to the master")


_listener: ReloadListener | None = None


def start_listener(settings: Settings) -> ReloadListener | None:
    """This process's listener (gunicorn ``post_fork``); none when RELOAD_CHANNEL is empty or
    there is nothing to LISTEN on (:func:`startup_note`)."""
    global _listener
    stop_listener()
    if not listening(settings):
        return None
    _listener = ReloadListener(settings).start()
    return _listener


def stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def reload_on_usr1() -> None:
    """SIGUSR1 (forwarded to every worker by gunicorn's master) also reloads the catalog,
    besides gunicorn's own reopening of log files (``post_worker_init``)."""
    previous = signal.getsignal(signal.SIGUSR1)

    def handler(signum: int, frame: FrameType | None) -> None:
        # In a thread: the main thread may be inside the cache's lock when the signal lands.
        threading.Thread(target=catalog.CACHE.invalidate, name="reload-usr1").start()
        log.info("SIGUSR1: catalog invalidated")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGUSR1, handler)
