"""The access log: one line per request, written by an ASGI middleware outermost around our app.

A line holds the method, the path, the names (never the values) of the query parameters, the
status, the time to the last byte in milliseconds, the response body bytes and the request id:

    GET /tables/orders/rows?select&cursor status=200 ms=12.3 bytes=4521 request_id=0f5c...

Query values are dropped because they may hold secrets (a cursor, a token someone put in a URL);
the names are enough to see what kind of request it was. Client-supplied text is logged in its
raw, percent-encoded form with anything unprintable escaped, so a request cannot forge log
lines, and is cut at ``MAX_TEXT`` characters. With ``[SERVER] ACCESS_LOG = off`` the middleware
is not installed at all: it costs nothing.
"""

from __future__ import annotations

import logging
import time

import connexion
from connexion.middleware import MiddlewarePosition
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swagger_server.config import Settings

log = logging.getLogger("swagger_server.access")

MAX_TEXT = 512  # characters of path or parameter names kept; a longer one is cut and marked


def install(app: connexion.FlaskApp, settings: Settings) -> None:
    """Add the middleware when the access log is on. Call it before any other middleware of
    ours, so it is the outermost and sees every response, those they answer themselves too."""
    if settings.server.access_log == "on":
        app.add_middleware(AccessLogMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            status = status or 500  # Starlette's outermost middleware answers it with a 500
            raise
        finally:
            # Cancelled before any answer (server stopping): status "-".
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s status=%s ms=%.1f bytes=%d request_id=%s",
                    _printable(scope.get("method", "-").encode("latin-1", "replace")),
                    _target(scope),
                    status or "-", (time.monotonic() - start) * 1000, sent,
                    scope.get("state", {}).get("request_id", "-"),
                )


def _target(scope: Scope) -> str:
    """The raw path and the query parameter names: ``/tables/t/rows?select&cursor``."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8")
    path = _printable(raw_path.split(b"?", 1)[0])
    query: bytes = scope.get("query_string", b"")
    if not query:
        return path
    names = [part.split(b"=", 1)[0] for part in query.split(b"&") if part]
    return f"{path}?{_printable(b'&'.join(names))}"


def _printable(raw: bytes) -> str:
    """ASCII without spaces or control characters; any other byte as ``\\xNN``."""
    text = raw[:MAX_TEXT].decode("latin-1")
    if not (text.isascii() and text.isprintable()) or " " in text:
        text = "".join(ch if " " < ch < "\x7f" else f"\\x{ord(ch):02x}" for ch in text)
    return text + ("..." if len(raw) > MAX_TEXT else "")
