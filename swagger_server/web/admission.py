"""Admission control: a request waits for a request thread at most until its deadline.

Why: Flask views run in a2wsgi's thread pool, whose queue is unbounded. Under more concurrent
requests than threads, a request used to wait in that queue, unseen and for as long as the
backlog took (measured: p99 2.1 s against ACQUIRE_TIMEOUT 1 s, no 503 at all), before it ever
asked the pool, whose own wait ``ACQUIRE_TIMEOUT`` bounded only the last part.

Here each request waits on the event loop, in FIFO order, for one of the worker's request
threads, until ``ACQUIRE_TIMEOUT`` after it arrived at the worker (stamped by
:class:`ArrivalStamp`, outermost); past that it gets 503 ``/problems/pool-timeout`` with
``Retry-After``, having cost no thread. Admitted, it finds a thread at once (there are never
more admitted requests than threads), and :mod:`swagger_server.db.deadline` tells ``get_db``
how much of the deadline is left for the pool. So a request's wait, all of it, stays within
``ACQUIRE_TIMEOUT``.

Two lanes, so that operators still see what happens while the data requests queue: the
``/metrics``, ``/health/*`` and ``/pool`` paths take one of :data:`OPS_THREADS` threads of
their own, which the worker's thread pool gets on top of its :data:`REQUEST_THREADS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from swagger_server import db
from swagger_server.db.deadline import set_deadline
from swagger_server.errors import POOL_TIMEOUT, RETRY_AFTER_SECONDS

# a2wsgi's default thread count, which the README documents as the worker's request threads.
REQUEST_THREADS = 10
# Threads for the operators' paths, added to the pool so they never take one from requests.
OPS_THREADS = 2
OPS_PATHS = frozenset({"/metrics", "/health/ready", "/health/live", "/pool"})
_ARRIVED = "arrived_monotonic"


class ArrivalStamp:
    """Outermost: notes when the request reached the worker (``scope["state"]``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[_ARRIVED] = time.monotonic()
        await self.app(scope, receive, send)


class Lane:
    """``slots`` requests at once; the others wait in FIFO order, each until its deadline."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.free = slots
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def enter(self, deadline: float) -> bool:
        """True once a slot is ours (give it back with :meth:`leave`); False at the deadline."""
        if self.free and not self._waiters:
            self.free -= 1
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(remaining, _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if _granted(waiter):  # cancelled just after a slot was handed over: hand it on
                self.leave()
            raise
        finally:
            timer.cancel()
            if not _granted(waiter):
                # Expired or cancelled; leave() may have dropped it from the line already.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def leave(self) -> None:
        # Straight to the first waiter: a newcomer cannot overtake the queue.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.free += 1


def _granted(waiter: asyncio.Future[bool]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.result()


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class AdmissionControl:
    """Admits a request to the worker's threads (see the module's docstring)."""

    def __init__(self, app: ASGIApp, acquire_timeout: float,
                 request_threads: int = REQUEST_THREADS, ops_threads: int = OPS_THREADS) -> None:
        self.app = app
        self.acquire_timeout = acquire_timeout
        self.requests = Lane(request_threads)
        self.ops = Lane(ops_threads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        deadline = state.get(_ARRIVED, time.monotonic()) + self.acquire_timeout
        lane = self.ops if _local_path(scope) in OPS_PATHS else self.requests
        if not await lane.enter(deadline):
            db.count_wait_timeout()  # /pool and pgrest_pool_timeouts_total count every one
            await _busy(send, state.get("request_id", ""), self.acquire_timeout)
            return
        try:
            set_deadline(deadline)
            await self.app(scope, receive, send)
        finally:
            lane.leave()


def _local_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _busy(send: Send, request_id: str, timeout: float) -> None:
    problem: dict[str, Any] = {
        "type": POOL_TIMEOUT, "title": "Service Unavailable", "status": 503,
        "detail": f"The service is busy: no request thread and database connection became free "
                  f"within {timeout:g}s; retry shortly.",
    }
    if request_id:
        problem["request_id"] = request_id
    body = json.dumps(problem).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode("ascii")),
        (b"content-length", str(len(body)).encode("ascii"))]})
    await send({"type": "http.response.body", "body": body})
