"""The access log middleware on a tiny ASGI app: what a line says, and what it never says."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from swagger_server.ops.access_log import MAX_TEXT, AccessLogMiddleware

LOGGER = "swagger_server.access"


def http_scope(raw_path: bytes, query: bytes = b"", method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": raw_path.decode("latin-1"),
            "raw_path": raw_path, "query_string": query, "headers": [],
            "state": {"request_id": "rid-1"}}


def run(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(AccessLogMiddleware(app)(scope, receive, send))
    return sent


async def chunked(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for chunk in (b"a" * 100, b"b" * 50, b""):
        await send({"type": "http.response.body", "body": chunk, "more_body": bool(chunk)})


def only_line(caplog: pytest.LogCaptureFixture) -> str:
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_line_counts_every_chunk_and_names_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sent = run(chunked, http_scope(b"/tables/t/rows", b"cursor=abc&limit=5&flag"))
    assert len(sent) == 4
    line = only_line(caplog)
    assert line.startswith("GET /tables/t/rows?cursor&limit&flag status=200 ms=")
    assert line.endswith(" bytes=150 request_id=rid-1")
    assert "abc" not in line


def test_client_text_cannot_forge_lines_or_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    run(chunked, http_scope(b"/a\nGET /forged status=200\x00 \xff", b"x\r\ny=1"))
    line = only_line(caplog)
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    assert line.startswith("GET /a\\x0aGET\\x20/forged\\x20status=200\\x00\\x20\\xff?x\\x0d\\x0ay ")
    run(chunked, http_scope(b"/" + b"a" * (MAX_TEXT * 4)))
    long_line = [r.getMessage() for r in caplog.records if r.name == LOGGER][-1]
    assert len(long_line) < MAX_TEXT + 200
    assert "a..." in long_line


def test_an_unhandled_error_is_logged_as_500_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run(broken, http_scope(b"/x"))
    assert " status=500 " in only_line(caplog)
    assert "boom" not in only_line(caplog)
