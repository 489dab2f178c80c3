"""The Flask app behind ASGI: a2wsgi, with whole responses handed to the event loop at once.

Why: a2wsgi passes every piece of a response (its start, each body chunk, the end) from the
request's thread to the event loop one at a time, and the thread waits for the loop to take
each: three thread-to-loop round trips for a plain JSON response, each a wake-up of the loop
and of the thread and a GIL hand-over. Here the thread keeps the start and the first chunk;
if the body ends there (every response that is not streamed: Flask sends a page in one
chunk), the loop sends them when the view's future completes, the one hand-over that remains.
A response with a second chunk (a CSV/NDJSON export) is streamed exactly as a2wsgi does, from
that chunk on, so exports keep their flow control and disconnect handling.

The thread pool is sized here too: :data:`~swagger_server.web.admission.REQUEST_THREADS` plus
:data:`~swagger_server.web.admission.OPS_THREADS` (Connexion 3.3 offers no setting for it).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any

from a2wsgi.wsgi import Body, WSGIMiddleware, WSGIResponder, build_environ

from swagger_server.web.admission import OPS_THREADS, REQUEST_THREADS

_Start = dict[str, Any]


class BufferedWSGIMiddleware(WSGIMiddleware):
    """a2wsgi's ``WSGIMiddleware`` whose HTTP responses go through :class:`_Responder`."""

    def __init__(self, app: Any, workers: int = REQUEST_THREADS + OPS_THREADS) -> None:
        super().__init__(app, workers=workers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await _Responder(self.app, self.executor, self.send_queue_size)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _Responder(WSGIResponder):
    """One request. ``start_response`` only records; the body decides how it is sent."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._start: _Start | None = None
        self._streaming = False
        # Made only for a streamed response (a2wsgi makes one for every request).
        self._sender: asyncio.Task[None] | None = None
        self._asgi_send: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        environ = build_environ(scope, Body(self.loop, receive))
        context = contextvars.copy_context()
        run = functools.partial(context.run, self.wsgi)
        self._asgi_send = send
        try:
            whole = await self.loop.run_in_executor(self.executor, run, environ,
                                                    self.start_response)
            if self._sender is not None:  # streamed: the sender task sends the rest
                await self.send_queue.put(None)
                await self._sender
            if self.exc_info is not None:
                raise self.exc_info[0].with_traceback(self.exc_info[1], self.exc_info[2])
            if whole is not None:
                start, body = whole
                await send(start)
                await send({"type": "http.response.body", "body": body})
        finally:
            if self._sender is not None and not self._sender.done():
                self._sender.cancel()
                await asyncio.gather(self._sender, return_exceptions=True)

    async def _start_sender(self) -> None:
        self._sender = self.loop.create_task(self.sender(self._asgi_send))

    def start_response(self, status: str, response_headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        self.exc_info = exc_info
        if self._start is None:
            code, _ = status.split(" ", 1)
            self._start = {
                "type": "http.response.start", "status": int(code),
                "headers": [(name.strip().encode("latin1").lower(),
                             value.strip().encode("latin1")) for name, value in response_headers],
            }
        return self._write

    def wsgi(self, environ: Any, start_response: Any) -> tuple[_Start, bytes] | None:
        """Runs in the request's thread: the whole response, or None once it was streamed."""
        iterable = self.app(environ, start_response)
        try:
            first: bytes | None = None
            for chunk in iterable:
                if self._streaming:
                    self._send_chunk(chunk)
                elif first is None:
                    first = chunk
                else:  # a second chunk: a stream, sent as it comes from here on
                    self._begin_stream()
                    self._send_chunk(first)
                    self._send_chunk(chunk)
            if not self._streaming:
                assert self._start is not None, "the app returned without start_response"
                return self._start, first or b""
            self.send({"type": "http.response.body", "body": b""})
            return None
        finally:
            getattr(iterable, "close", lambda: None)()

    def _write(self, chunk: bytes) -> None:
        """WSGI's legacy ``write()``: streams."""
        if not self._streaming:
            self._begin_stream()
        self._send_chunk(chunk)

    def _begin_stream(self) -> None:
        self._streaming = True
        self.response_started = True
        asyncio.run_coroutine_threadsafe(self._start_sender(), self.loop).result()
        assert self._start is not None
        self.send(self._start)

    def _send_chunk(self, chunk: bytes) -> None:
        self.send({"type": "http.response.body", "body": chunk, "more_body": True})
