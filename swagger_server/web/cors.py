"""CORS (Starlette's middleware) whose refused preflight is problem+json like every other error.

Starlette answers a preflight it refuses with ``400 text/plain "Disallowed CORS origin"``; a
client that reads problem+json everywhere else, and the request id, got lost there.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from swagger_server.errors import CORS_REJECTED

# What Starlette lists as failed -> the request header at fault (RFC 9457 invalid-params).
_FAILED_HEADER = {
    "origin": "Origin",
    "method": "Access-Control-Request-Method",
    "headers": "Access-Control-Request-Headers",
    "private-network": "Access-Control-Request-Private-Network",
}


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        failed = bytes(response.body).decode().removeprefix("Disallowed CORS ").split(", ")
        return _RefusedPreflight(failed, dict(response.headers))


class _RefusedPreflight(Response):
    """The 400 body is built when sent: only then is the request id (in the scope) known."""

    media_type = "application/problem+json"

    def __init__(self, failed: list[str], headers: dict[str, str]) -> None:
        self.failed = failed
        kept = {k: v for k, v in headers.items()
                if k.lower() not in ("content-type", "content-length")}
        super().__init__(b"", status_code=400, headers=kept)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = "CORS preflight refused: " + ", ".join(self.failed) + " not allowed"
        body = {
            "type": CORS_REJECTED, "title": "Bad Request", "status": 400, "detail": detail,
            "invalid-params": [{"name": _FAILED_HEADER.get(f, f), "reason": f"{f} not allowed"}
                               for f in self.failed],
            "request_id": scope.get("state", {}).get("request_id", ""),
        }
        self.body = json.dumps(body).encode()
        self.headers["content-length"] = str(len(self.body))
        await super().__call__(scope, receive, send)
