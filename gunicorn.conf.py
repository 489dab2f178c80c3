"""gunicorn settings and hooks, read from ./gunicorn.conf.py by ``gunicorn wsgi:application``.

- The master starts the embedded PostgreSQL when no database is configured (``on_starting``),
  builds the app once to fail fast on a broken spec or setting, and stops the server on exit.
- Each worker creates its own pool after fork (``post_fork``) and closes it (``worker_exit``).
- Every stop signal to the master ends the workers through ``worker_exit``
  (``post_worker_init``): TERM gracefully (requests in flight finish, up to ``graceful_timeout``),
  INT and QUIT quickly (requests in flight are dropped).
"""

from __future__ import annotations

import functools
import signal
import sys

from swagger_server import db, embedded
from swagger_server.app import StartupError, create_app
from swagger_server.config import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as exc:
    sys.exit(f"configuration error: {exc}")

bind = [_settings.server.bind]
workers = _settings.server.workers
# uvicorn-worker by default: gunicorn's native "asgi" worker strands a request thread for good
# on every download the client aborts (measured; README "Worker class").
worker_class = {"uvicorn": "uvicorn_worker.UvicornWorker", "asgi": "asgi"}[
    _settings.server.worker_class
]
timeout = _settings.server.timeout
graceful_timeout = _settings.server.timeout
max_requests = _settings.server.max_requests
max_requests_jitter = _settings.server.max_requests_jitter
keepalive = 5
# gunicorn 27's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl): two
# deployments would fight over it. Nothing here uses it.
control_socket_disable = True
loglevel = _settings.server.log_level
# gunicorn's own loggers stay as they are; ours go to the same stream (stderr), once. The access
# log (swagger_server/access_log.py) goes to stdout at INFO whatever LOG_LEVEL says: it is
# switched by ACCESS_LOG alone.
logconfig_dict = {
    "loggers": {
        "swagger_server": {
            "level": _settings.server.log_level.upper(),
            "handlers": ["error_console"],
            "propagate": False,
        },
        "swagger_server.access": {
            "level": "INFO",
            "handlers": ["console"],
            "propagate": False,
        },
    },
}

_embedded_server: embedded.EmbeddedPostgres | None = None
# Share of graceful_timeout a worker waits for requests in flight on TERM; the rest is for
# closing the pool before the master's SIGKILL.
GRACE_SHARE = 0.8
# Seconds a worker waits for requests in flight on the master's INT or QUIT (a quick stop).
QUICK_GRACE = 1.0


def on_starting(server):
    global _embedded_server, _settings
    _embedded_server = embedded.start_if_needed(_settings)
    _settings = load_settings()  # now with the embedded DSN, for the workers to inherit
    try:
        create_app(_settings)
    except (StartupError, ConfigError) as exc:
        server.log.error("cannot start: %s", exc)
        on_exit(server)
        sys.exit(1)
    server.log.info("database: %s (%s)", _settings.database.safe_dsn, _settings.database.source)


def on_exit(server):
    if _embedded_server is not None:
        _embedded_server.stop()


def post_fork(server, worker):
    db.init_pool(_settings)


def post_worker_init(worker):
    if _settings.server.worker_class != "uvicorn":
        return
    _hand_plain_sockets_to_uvicorn(worker)
    # uvicorn waits for requests in flight without a limit by default; the master SIGKILLs a
    # worker after graceful_timeout. Stop waiting a little before, so worker_exit still runs.
    worker.config.timeout_graceful_shutdown = graceful_timeout * GRACE_SHARE
    # After its graceful shutdown, uvicorn puts the default handlers back and re-raises the
    # signal: the worker would die by it and skip worker_exit, leaving its pool unclosed.
    # Turn the re-raised signal into a normal exit.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_normally)
    # The master sends SIGQUIT on its own INT or QUIT. uvicorn-worker hands SIGQUIT to
    # worker.handle_exit, which only sets a flag that nothing reads: the worker would serve on
    # until the master SIGKILLs it after graceful_timeout, its pool never closed.
    worker.handle_exit = functools.partial(_quick_exit, worker)


def _hand_plain_sockets_to_uvicorn(worker) -> None:
    """Give uvicorn the listening sockets themselves, not gunicorn's wrappers around them.

    uvloop closes the file descriptor of a socket it serves on when it stops; a plain socket
    it then detaches, but a wrapper it closes a second time, which gunicorn's wrapper logs as
    "Error while closing socket [Errno 9] Bad file descriptor" (once per worker, at every stop).
    A second close of a number is also a race: another thread may have just been given it.
    """
    worker.sockets = [getattr(sock, "sock", sock) for sock in worker.sockets]


def _quick_exit(worker, signum, frame) -> None:
    """A quick stop, as gunicorn defines INT and QUIT: requests in flight get QUICK_GRACE.

    SIGTERM is what starts uvicorn's own shutdown (stop accepting, close idle connections,
    wait for the others, cancel what is left after timeout_graceful_shutdown); uvicorn then
    re-raises it, and _exit_normally turns that into an exit through worker_exit.
    """
    worker.config.timeout_graceful_shutdown = QUICK_GRACE
    signal.raise_signal(signal.SIGTERM)


def _exit_normally(signum, frame):
    sys.exit(0)


def worker_exit(server, worker):
    db.close_pool()
