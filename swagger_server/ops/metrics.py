"""Prometheus metrics: what they are, how each worker records them, and the scrape.

Under gunicorn, prometheus_client runs in multiprocess mode (the master made the directory,
:mod:`swagger_server.ops.metrics_files`): each worker writes its own files and ``GET /metrics``,
whichever worker answers, reads them all. Elsewhere (tests, ``python wsgi.py``) it is the one
process's registry.

The metrics are made on first use in the process that uses them (a worker, after fork), never
in the master, and in multiprocess mode whenever prometheus_client was imported: the library
picks its storage from the environment at import, and gunicorn.conf.py imports it before the
master names the directory.

What is recorded, and where:

- HTTP requests and their durations: :class:`MetricsMiddleware`, ASGI, by the route template of
  the spec (``/tables/{table}/rows``), never the raw path, so a client cannot make new series.
- The pool: its counters and sizes are read from ``pool.stats()`` by a sampler thread every
  ``SAMPLE_INTERVAL`` seconds and at each scrape (no cost per request); waits, checkout times
  and connection times come from the pool's observer hooks (:class:`PoolMetrics`).
- Catalog reloads, exports in progress and rows served: one call where each happens.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swagger_server.db.pool import ConnectionPool
from swagger_server.ops import metrics_files

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 1.0  # seconds between two readings of the pool's sizes and counters
OTHER = "other"  # the route of a request no operation of the spec matched (404, /ui/, ...)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
         10.0, 30.0)
_HELD = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_CONNECT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# pool.stats() counters -> metric names (each a counter fed by the growth between readings).
_POOL_COUNTERS = {
    "requests_total": ("pgrest_pool_acquires_total", "Connections asked of the pool."),
    "timeouts_total": ("pgrest_pool_timeouts_total",
                       "Requests that waited ACQUIRE_TIMEOUT for a connection in vain."),
    "errors_total": ("pgrest_pool_connect_errors_total", "Failed attempts to connect."),
    "discarded_total": ("pgrest_pool_discarded_connections_total",
                        "Connections dropped as dead or broken."),
    "opened_total": ("pgrest_pool_opened_connections_total", "Connections opened."),
    "closed_total": ("pgrest_pool_closed_connections_total", "Connections closed."),
}
# pool.stats() sizes -> host-wide gauges, summed over the live workers.
_POOL_SIZES = {
    "size": ("pgrest_pool_size_connections", "Open connections, all live workers."),
    "idle": ("pgrest_pool_idle_connections", "Idle connections, all live workers."),
    "in_use": ("pgrest_pool_in_use_connections", "Checked-out connections, all live workers."),
    "waiting": ("pgrest_pool_waiting_requests",
                "Requests waiting for a connection, all live workers."),
    "max_size": ("pgrest_pool_max_connections", "POOL_MAX_SIZE summed over the live workers."),
}
# ... and per worker (label pid), where one worker can be saturated while another idles.
_POOL_WORKER = {
    "in_use": ("pgrest_pool_worker_in_use_connections", "Checked-out connections of a worker."),
    "waiting": ("pgrest_pool_worker_waiting_requests",
                "Requests waiting for a connection in a worker."),
}


def multiprocess_dir() -> str | None:
    return os.environ.get(metrics_files.ENV) or None


class Metrics:
    """Every metric of the service, for this process."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess and not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
        # Multiprocess: the metrics write files and the scrape reads the directory; they are
        # registered nowhere (the library's own advice). Else: this registry.
        self.registry = CollectorRegistry()
        reg = None if self.multiprocess else self.registry
        self.http_requests = Counter(
            "pgrest_http_requests_total", "HTTP requests answered, by route template, method "
            "and status.", ["route", "method", "status"], registry=reg)
        self.http_duration = Histogram(
            "pgrest_http_request_duration_seconds", "Time from request to last byte sent, by "
            "route template and method.", ["route", "method"], buckets=_LATENCY, registry=reg)
        self.pool_counters = {
            key: Counter(name, doc, registry=reg) for key, (name, doc) in _POOL_COUNTERS.items()}
        self.pool_sizes = {
            key: Gauge(name, doc, multiprocess_mode="livesum", registry=reg)
            for key, (name, doc) in _POOL_SIZES.items()}
        self.pool_worker = {
            key: Gauge(name, doc, multiprocess_mode="liveall", registry=reg)
            for key, (name, doc) in _POOL_WORKER.items()}
        self.pool_worker_max = Gauge(
            "pgrest_pool_worker_max_connections", "POOL_MAX_SIZE of one worker.",
            multiprocess_mode="livemax", registry=reg)
        self.acquire_wait = Histogram(
            "pgrest_pool_acquire_wait_seconds", "Time getconn() took, timeouts included.",
            buckets=_WAIT, registry=reg)
        self.checkout = Histogram(
            "pgrest_pool_checkout_seconds", "How long connections stayed checked out.",
            buckets=_HELD, registry=reg)
        self.connect = Histogram(
            "pgrest_pool_connect_seconds", "Time to open a connection (successful ones).",
            buckets=_CONNECT, registry=reg)
        self.catalog_reloads = Counter(
            "pgrest_catalog_reloads_total", "Catalog reads from pg_catalog.", registry=reg)
        self.exports_in_progress = Gauge(
            "pgrest_exports_in_progress", "CSV/NDJSON exports streaming now, all live workers.",
            multiprocess_mode="livesum", registry=reg)
        self.rows_served = Counter(
            "pgrest_rows_served_total", "Rows sent by the data API, by format.", ["format"],
            registry=reg)
        self.pool_sampler = PoolSampler(self)
        # Children by label values: labels() takes a lock and builds a tuple each call.
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        counter = self._requests.get((route, method, status))
        if counter is None:
            counter = self._requests.setdefault(
                (route, method, status), self.http_requests.labels(route, method, str(status)))
        counter.inc()
        histogram = self._durations.get((route, method))
        if histogram is None:
            histogram = self._durations.setdefault(
                (route, method), self.http_duration.labels(route, method))
        histogram.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The scrape's body and content type: every live worker, and the dead ones' totals."""
        self.pool_sampler.sample()  # this worker's pool as of now
        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        metrics_files.LockedCollector(registry, path=multiprocess_dir())
        return generate_latest(registry), CONTENT_TYPE_LATEST


class PoolMetrics:
    """The pool's observer (``pool.observer``): one histogram observation per event."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def acquired(self, seconds: float) -> None:
        self._metrics.acquire_wait.observe(seconds)

    def released(self, seconds: float) -> None:
        self._metrics.checkout.observe(seconds)

    def connected(self, seconds: float) -> None:
        self._metrics.connect.observe(seconds)


class PoolSampler:
    """Copies the watched pool's ``stats()`` into the gauges and counters, every
    ``SAMPLE_INTERVAL`` on a thread of its own and when asked (a scrape, a worker's exit)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._observer = PoolMetrics(metrics)
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._seen: dict[str, int] = {}  # the watched pool's counters at the last reading
        self._thread: threading.Thread | None = None

    def watch(self, pool: ConnectionPool) -> None:
        """Record this pool from now on (a new one replaces the old; its counters go on)."""
        with self._lock:
            if pool is not self._pool:
                self._pool, self._seen = pool, {}
            if getattr(pool, "observer", None) is None:
                pool.observer = self._observer
        self.sample()  # right from the start, not a SAMPLE_INTERVAL later
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metrics-pool-sampler",
                                            daemon=True)
            self._thread.start()

    def sample(self) -> None:
        with self._lock:
            pool = self._pool
            if pool is None:
                return
            stats = pool.stats()
            m = self._metrics
            for key, counter in m.pool_counters.items():
                grown = int(stats[key]) - self._seen.get(key, 0)
                if grown > 0:
                    counter.inc(grown)
                self._seen[key] = int(stats[key])
            for key, gauge in m.pool_sizes.items():
                gauge.set(stats[key])
            for key, gauge in m.pool_worker.items():
                gauge.set(stats[key])
            m.pool_worker_max.set(stats["max_size"])

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_INTERVAL)
            try:
                self.sample()
            except Exception:  # never let the sampler die
                log.exception("metrics: reading the pool failed")


class MetricsMiddleware:
    """Counts every HTTP request by route template, method and status, and times it.

    Outermost of ours, with the access log: it sees answers our other middleware give too.
    The route is known after the call: Connexion's router writes the matched operation into
    ``scope["extensions"]``, which is shared with the copy of the scope it routes.
    """

    def __init__(self, app: ASGIApp, routes: dict[str, str], fixed_paths: frozenset[str]) -> None:
        self.app = app
        self.routes = routes  # operationId -> path template
        self.fixed_paths = fixed_paths  # templates without parameters (answered before routing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 0
        counted = False
        extensions = scope.setdefault("extensions", {})

        def count() -> None:
            nonlocal counted
            counted = True
            method = scope.get("method", "")
            get().request_done(self._route(scope, extensions),
                               method if method in _METHODS else OTHER, status,
                               time.monotonic() - start)

        length: int | None = None  # Content-Length, when the response declares one
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, length, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                length = _content_length(message)
            elif message["type"] == "http.response.body" and not counted:
                sent += len(message.get("body", b""))
                # Before the last byte leaves: a client that has its answer and asks another
                # worker for /metrics at once must find this request counted. The last byte
                # may come before the final (empty) body message: Content-Length tells.
                if not message.get("more_body") or (length is not None and sent >= length):
                    count()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            status = status or 500
            raise
        finally:
            # Not answered in full (an error, a client gone): counted now. Cancelled before
            # any answer (the server stopping): no request answered, nothing counted.
            if status and not counted:
                count()

    def _route(self, scope: Scope, extensions: dict[str, Any]) -> str:
        operation = (extensions.get("connexion_routing") or {}).get("operation_id")
        route = self.routes.get(operation) if operation else None
        if route is not None:
            return route
        path = scope.get("path", "")
        return path if path in self.fixed_paths else OTHER


def _content_length(start: Message) -> int | None:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def spec_routes(spec_file: Path) -> tuple[dict[str, str], frozenset[str]]:
    """operationId -> path template, and the templates without parameters, from the spec."""
    spec = yaml.safe_load(spec_file.read_text())
    routes: dict[str, str] = {}
    for path, item in (spec.get("paths") or {}).items():
        for operation in _operations(item):
            if operation.get("operationId"):
                routes[operation["operationId"]] = path
    return routes, frozenset(p for p in routes.values() if "{" not in p)


def _operations(item: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for method in ("get", "head", "post", "put", "patch", "delete", "options"):
        operation = item.get(method)
        if isinstance(operation, dict):
            yield operation


# ---------------------------------------------------------------------- the process's metrics

_lock = threading.Lock()
_metrics: Metrics | None = None
_pid = 0


def get() -> Metrics:
    """This process's metrics, made on first use (in a worker: after fork)."""
    global _metrics, _pid
    found = _metrics
    if found is not None and _pid == os.getpid():
        return found
    with _lock:
        if _metrics is None or _pid != os.getpid():
            _metrics, _pid = Metrics(), os.getpid()
        return _metrics


def watch_pool(pool: ConnectionPool) -> None:
    """Record ``pool``: its observer hooks now, its sizes and counters by sampling."""
    get().pool_sampler.watch(pool)


def flush() -> None:
    """A last reading of the pool (gunicorn ``worker_exit``, after the pool is closed)."""
    get().pool_sampler.sample()


def catalog_reloaded() -> None:
    get().catalog_reloads.inc()


def export_started() -> None:
    get().exports_in_progress.inc()


def export_ended() -> None:
    get().exports_in_progress.dec()


def rows_served(fmt: str, rows: int) -> None:
    """``fmt``: json, csv or ndjson."""
    if rows > 0:
        get().rows_served.labels(fmt).inc(rows)
