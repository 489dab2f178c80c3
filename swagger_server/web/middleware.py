"""ASGI middleware of our own around Connexion: request ids, path guard, stalled clients, liveness.

They run on the worker's event loop, before Flask's views get one of the 10 request threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# C0 controls and DEL: one regex search, not a Python-level test per character of the path.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class RequestIdMiddleware:
    """Gives each request an id (a sane incoming ``X-Request-ID`` or a new one) and echoes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ControlCharacterGuard:
    """ASGI middleware: a path holding a control character (CR, LF, NUL, ...) is a 404 at once.

    Why: Flask's router matches ``/tables/a%0Ab`` to ``/tables/{table}`` while Connexion's does
    not, so the handler runs outside Connexion's operation context and fails with a 500
    (measured with Connexion 3.3). No exposed name holds a control character anyway.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        if _CONTROL_CHARACTER.search(path):
            body = json.dumps({
                "type": "/problems/not-found", "title": "Not Found", "status": 404,
                "detail": "No such resource (the path holds a control character).",
                "request_id": scope.get("state", {}).get("request_id", ""),
            }).encode()
            await send({"type": "http.response.start", "status": 404, "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode("ascii"))]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


_DISCONNECT: Message = {"type": "http.disconnect"}


class StalledClientGuard:
    """Cuts a response whose client stops reading, so that it frees its thread and connection.

    Why: a streamed export is a WSGI body iterated in one of a2wsgi's threads; each chunk goes
    through a queue of 10 to a task that awaits the server's ``send``, which (uvicorn) waits for
    the socket to drain. A client that keeps its socket open but stops reading blocks that send
    for good, so the thread blocks on the full queue and holds its database connection idle in
    a transaction. Here a response ``send`` may wait ``stall_timeout`` at most. On expiry:

    * the client's transport is aborted when the server's ``send`` reveals it (uvicorn's is a
      method of an object with ``transport``), so the socket does not wait for a reader;
    * ``receive`` answers ``http.disconnect``, which the export's watcher turns into giving its
      connection back (:mod:`swagger_server.data.export`), whatever the server;
    * the blocked send returns, and later sends are dropped, as servers drop what is sent after
      a disconnect. Raising instead would kill a2wsgi's sender task and leave the thread
      blocked on the queue for ever.

    It must be outermost (before Connexion's own middleware), to see the server's ``send``.
    """

    def __init__(self, app: ASGIApp, stall_timeout: float) -> None:
        self.app = app
        self.stall_timeout = stall_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = _SendWatch(self.stall_timeout, scope, receive, send)
        try:
            await self.app(scope, watch.receive, watch.send)
        finally:
            watch.stop()


class _SendWatch:
    """One request's sends under a stall timeout.

    One timer per request rather than one per send (``asyncio.wait_for`` costs a task and a
    timer per call, some 30 us here, twice per request): sends record when they started, and
    the timer, re-armed while the response goes on, checks the one in progress. A stalled send
    and a waiting receive are interrupted by cancelling their task, a cancellation that is
    taken back (``uncancel``) where it lands.
    """

    def __init__(self, timeout: float, scope: Scope, receive: Receive, send: Send) -> None:
        self.timeout = timeout
        self.scope = scope
        self._receive = receive
        self._send = send
        self.cut = False
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[Any] | None = None
        self._since = 0.0
        self._receiving: set[asyncio.Task[Any]] = set()

    async def send(self, message: Message) -> None:
        if self.cut:
            return
        if not message["type"].startswith("http.response."):
            await self._send(message)
            return
        task = asyncio.current_task()
        self._sending, self._since = task, self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._since + self.timeout, self._check)
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if not self._taken_back(task):
                raise
        finally:
            self._sending = None

    async def receive(self) -> Message:
        if self.cut:
            return _DISCONNECT
        task = asyncio.current_task()
        assert task is not None
        self._receiving.add(task)
        try:
            return await self._receive()
        except asyncio.CancelledError:
            if not self._taken_back(task):
                raise
            return _DISCONNECT
        finally:
            self._receiving.discard(task)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._sending is None:
            return  # re-armed by the next send
        due = self._since + self.timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        self.cut = True
        aborted = _abort_transport(self._send)
        log.warning("client took nothing for %ss: response cut%s (%s %s request_id=%s)",
                    self.timeout, "" if aborted else " (socket left to close)",
                    self.scope.get("method"), self.scope.get("path"),
                    self.scope.get("state", {}).get("request_id", ""))
        self._sending.cancel()
        for task in self._receiving:
            task.cancel()

    def _taken_back(self, task: asyncio.Task[Any] | None) -> bool:
        """Was this cancellation ours (the cut)? Then it is undone; someone else's stands."""
        if not self.cut or task is None:
            return False
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        return uncancel is None or uncancel() == 0


def _abort_transport(send: Send) -> bool:
    """Abort the client's socket behind a server's ``send``, if it can be found; True if so.

    asyncio's ``close()`` would wait for the unread buffer to drain, i.e. for ever.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if not callable(abort):
        return False
    abort()
    return True


class LiveProbe:
    """``GET /health/live`` answered here, on the event loop, without a request thread.

    A liveness probe decides whether the worker is restarted: it must say whether the process
    and its event loop are alive, and keep answering while every request thread is busy (slow
    queries, long exports), which a restart would not cure. The spec keeps the path for
    documentation; with a query string the request goes on to Connexion, which validates it.
    """

    PATH = "/health/live"
    BODY = b'{"status":"ok"}\n'

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("path") != self.PATH
                or scope.get("method") not in ("GET", "HEAD") or scope.get("query_string")):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.BODY)).encode("ascii"))]})
        body = b"" if scope["method"] == "HEAD" else self.BODY
        await send({"type": "http.response.body", "body": body})
