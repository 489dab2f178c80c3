"""gunicorn settings and hooks, read from ./gunicorn.conf.py by ``gunicorn wsgi:application``.

- The master reads the settings once, here; ``on_starting`` starts the embedded PostgreSQL when
  no database is configured, makes the cursor key, warns about misspelt variables and a pool
  budget the database cannot honour, builds the app once to fail fast on a broken spec or
  setting, and stops the server on exit.
- Each worker inherits the master's settings object through fork: its pool (``post_fork``) and
  its app (``wsgi.application``) use it, never a second read of the files. It closes its pool
  in ``worker_exit``.
- Every stop signal to the master ends the workers through ``worker_exit``
  (``post_worker_init``, swagger_server/ops/lifecycle.py): TERM gracefully (requests in flight
  finish, within ``graceful_timeout``), INT and QUIT quickly (they get a second).
"""

from __future__ import annotations

import sys

# Module-level names are gunicorn settings when they match one (``config`` does): import names.
from swagger_server import db
from swagger_server.app import StartupError, create_app
from swagger_server.auth.settings import DEV_JWT_SECRET
from swagger_server.config import (
    DEMO_AUTH_NOTE,
    ConfigError,
    load_settings,
    process_settings,
    set_process_settings,
    unknown_variables,
    with_embedded_dsn,
)
from swagger_server.data import cursors
from swagger_server.db import embedded
from swagger_server.ops import (
    allocator,
    capacity,
    lifecycle,
    metrics,
    metrics_files,
    schema_reload,
)

try:
    _settings = set_process_settings(load_settings())
except ConfigError as exc:
    sys.exit(f"configuration error: {exc}")

bind = [_settings.server.bind]
workers = _settings.server.workers
# uvicorn-worker by default: the stall guard can abort a stalled client's socket only under it,
# and its stop and recycle paths are the tested ones (README "Worker class").
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
# log (swagger_server/ops/access_log.py) goes to stdout at INFO whatever LOG_LEVEL says: it is
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

def on_starting(server):
    global _settings
    # Before any worker is forked: they inherit PROMETHEUS_MULTIPROC_DIR and find it empty.
    metrics_files.prepare()
    for warning in unknown_variables():
        server.log.warning(warning)
    embedded.start_if_needed(_settings)
    # The same settings, now with the embedded DSN: what every worker inherits.
    _settings = set_process_settings(with_embedded_dsn(_settings))
    if not _settings.api.cursor_secret:
        cursors.generated_secret()  # made before fork: every worker signs with the same key
        server.log.warning(cursors.RANDOM_KEY_WARNING)
    try:
        create_app(_settings)
    except (StartupError, ConfigError) as exc:
        server.log.error("cannot start: %s", exc)
        on_exit(server)
        sys.exit(1)
    server.log.info("database: %s (%s)", _settings.database.safe_dsn, _settings.database.source)
    if _settings.database.embedded and _settings.auth.jwt_secret == DEV_JWT_SECRET:
        server.log.warning(DEMO_AUTH_NOTE)
    note = schema_reload.startup_note(_settings)
    if note:
        server.log.warning(note)  # once, here: behind a pooler without LISTEN_URL
    _check_connection_budget(server)


def _check_connection_budget(server):
    """Warn when the workers' connections do not fit the server's max_connections: each
    worker's pool (POOL_MAX_SIZE) plus its schema-reload listener (one, outside the pool).
    Behind a transaction pooler the pools are PgBouncer's clients, not PostgreSQL's (its
    max_client_conn and default_pool_size: README "Scaling out"); only the listeners, which
    connect directly (LISTEN_URL), are counted against PostgreSQL."""
    database = _settings.database
    if database.dsn is None:
        return
    listeners = 1 if schema_reload.listening(_settings) else 0
    if database.behind_pooler:
        if not listeners:
            return
        warning = capacity.connection_budget_warning(
            database.listen_dsn, server.cfg.workers, 0, listeners)
    else:
        warning = capacity.connection_budget_warning(
            database.dsn, server.cfg.workers, _settings.pool.max_size, listeners)
    if warning:
        server.log.warning(warning)


def on_exit(server):
    # The handle lives in the embedded module: this file is executed again on SIGHUP.
    embedded.stop_owned()
    metrics_files.remove_owned()  # like the embedded server's handle: SIGHUP re-runs this file


def post_fork(server, worker):
    # A page's buffers reused, not mapped afresh per request (an operator's MALLOC_* win).
    kept = allocator.keep_large_buffers()
    server.log.debug("worker %s: malloc thresholds %s", worker.pid, "set" if kept else "left")
    metrics.watch_pool(db.init_pool(process_settings()))  # the master's settings, inherited
    schema_reload.start_listener(process_settings())  # NOTIFY <RELOAD_CHANNEL>, 'reload schema'


def post_worker_init(worker):
    schema_reload.reload_on_usr1()  # the master forwards USR1 (reopen logs): reload the catalog too
    if _settings.server.worker_class == "uvicorn":
        # Every stop signal and max_requests end the worker through worker_exit, cleanly.
        lifecycle.prepare(worker, graceful_timeout)


def worker_exit(server, worker):
    schema_reload.stop_listener()
    db.close_pool()
    metrics.flush()  # the pool's last counts (its closings too) before the worker is gone


def child_exit(server, worker):
    # In the master, the worker gone: its counters join the merged totals, its files go, so
    # that a scrape reads as many files after 200 recycles as after none.
    metrics_dir = metrics.multiprocess_dir()
    if metrics_dir is not None:
        metrics_files.merge_dead(metrics_dir, worker.pid)
