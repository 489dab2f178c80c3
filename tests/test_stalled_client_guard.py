"""StalledClientGuard, the ASGI plumbing alone: a send that never completes is given up after
the stall timeout, the client's transport aborted, the app told the client is gone, and what it
sends afterwards dropped (not raised: that would strand a2wsgi's thread). No database involved;
tests/test_e2e_exports.py shows the whole path through gunicorn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from swagger_server.web.middleware import StalledClientGuard

STALL = 0.2


class Transport:
    def __init__(self) -> None:
        self.aborted = 0

    def abort(self) -> None:
        self.aborted += 1


class StuckServer:
    """A server whose client stopped reading: the first body send never completes."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.sent: list[dict[str, Any]] = []
        self.never = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await self.never.wait()
        self.sent.append(message)

    async def receive(self) -> dict[str, Any]:
        await self.never.wait()  # the client neither sends nor leaves
        return {"type": "http.disconnect"}


def run(app: Any, server: Any) -> None:
    guard = StalledClientGuard(app, stall_timeout=STALL)
    asyncio.run(asyncio.wait_for(guard({"type": "http", "method": "GET", "path": "/x"},
                                       server.receive, server.send), timeout=5))


def test_a_stalled_send_is_cut_the_client_looks_gone_and_later_sends_are_dropped() -> None:
    server = StuckServer()
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        waiting = asyncio.ensure_future(receive())  # an export's disconnect watcher
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
        seen.append(await asyncio.wait_for(waiting, timeout=1))
        await send({"type": "http.response.body", "body": b"y", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        seen.append(await receive())

    run(app, server)
    assert seen == [{"type": "http.disconnect"}] * 2
    assert server.transport.aborted == 1
    assert [m["type"] for m in server.sent] == ["http.response.start"]


def test_a_reading_client_is_not_disturbed() -> None:
    class Server:
        transport = Transport()

        def __init__(self) -> None:
            self.sent: list[bytes] = []

        async def send(self, message: dict[str, Any]) -> None:
            await asyncio.sleep(STALL / 4)  # slow, but each chunk goes within the timeout
            self.sent.append(message.get("body", b""))

        async def receive(self) -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

    server = Server()
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"a", b"b", b"c", b"d", b"e", b"f"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    run(app, server)
    assert received == [{"type": "http.request", "body": b"", "more_body": False}]
    assert b"".join(server.sent) == b"abcdef"
    assert server.transport.aborted == 0


def test_a_cancellation_that_is_not_the_cut_still_cancels() -> None:
    """A server shutting down cancels the request: the guard must not swallow that."""
    server = StuckServer()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    async def main() -> None:
        guard = StalledClientGuard(app, stall_timeout=60)
        request = asyncio.ensure_future(guard({"type": "http"}, server.receive, server.send))
        await asyncio.sleep(STALL)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(asyncio.wait_for(main(), timeout=5))
    assert server.transport.aborted == 0
