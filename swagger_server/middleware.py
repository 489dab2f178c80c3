"""ASGI middleware of our own, outermost around Connexion: request ids, path guard."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
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
