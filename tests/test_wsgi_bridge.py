"""swagger_server/web/wsgi_bridge.py: a whole response goes to the event loop at once; a
streamed one (a second chunk) flows chunk by chunk as under a2wsgi."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from swagger_server.web import wsgi_bridge
from swagger_server.web.wsgi_bridge import BufferedWSGIMiddleware

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def app_of(chunks: list[bytes], status: str = "200 OK") -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response(status, [("Content-Type", "application/json")])
        yield from chunks
    return app


def serve(app: WSGIApp, method: str = "GET") -> tuple[list[dict[str, Any]], int]:
    """The ASGI messages sent, and how many hops the request's thread made to the loop."""
    sent: list[dict[str, Any]] = []
    hops = 0
    original = wsgi_bridge._Responder.send

    def counting(self: Any, message: Any) -> None:
        nonlocal hops
        hops += 1
        original(self, message)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": method, "path": "/", "root_path": "", "query_string": b"",
             "headers": [], "http_version": "1.1", "server": ("t", 80)}
    bridge = BufferedWSGIMiddleware(app)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wsgi_bridge._Responder, "send", counting)
        asyncio.run(bridge(scope, receive, send))
    bridge.executor.shutdown()
    return sent, hops


def test_a_one_chunk_response_is_sent_whole_by_the_loop_without_thread_hops() -> None:
    sent, hops = serve(app_of([b'{"a":1}']))
    assert hops == 0  # a2wsgi: start, chunk and end, each a round trip from the thread
    assert sent == [
        {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/json")]},
        {"type": "http.response.body", "body": b'{"a":1}'},
    ]


def test_an_empty_body_is_one_empty_message() -> None:
    sent, hops = serve(app_of([], status="204 No Content"))
    assert hops == 0
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 204 and sent[1]["body"] == b""


def test_a_second_chunk_makes_it_a_stream_sent_chunk_by_chunk() -> None:
    sent, hops = serve(app_of([b"a", b"b", b"c"]))
    assert hops == 5  # start, three chunks, the end
    assert sent[0]["type"] == "http.response.start"
    assert [(m["body"], m.get("more_body", False)) for m in sent[1:]] == [
        (b"a", True), (b"b", True), (b"c", True), (b"", False)]


def test_an_error_in_the_app_reaches_the_caller() -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        serve(broken)


def test_the_thread_pool_has_the_request_and_operators_threads() -> None:
    bridge = BufferedWSGIMiddleware(app_of([]))
    assert bridge.executor._max_workers == 12
    bridge.executor.shutdown()
