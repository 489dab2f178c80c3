"""gunicorn settings and hooks, read from ./gunicorn.conf.py by ``gunicorn wsgi:application``.

- The master starts the embedded PostgreSQL when no database is configured (``on_starting``),
  builds the app once to fail fast on a broken spec or setting, and stops the server on exit.
- Each worker creates its own pool after fork (``post_fork``) and closes it (``worker_exit``).
- Every stop signal to the master ends the workers through ``worker_exit``
  (``post_worker_init``, swagger_server/lifecycle.py): TERM gracefully (requests in flight
  finish, within ``graceful_timeout``), INT and QUIT quickly (they get a second).
"""

from __future__ import annotations

import sys

from swagger_server import db, embedded, lifecycle
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
    if _settings.server.worker_class == "uvicorn":
        # Every stop signal and max_requests end the worker through worker_exit, cleanly.
        lifecycle.prepare(worker, graceful_timeout)


def worker_exit(server, worker):
    db.close_pool()
