"""Admission control (swagger_server/web/admission.py) and the request's acquire deadline.

The end-to-end bound under overload is in tests/test_e2e_overload.py; here the parts: the FIFO
lane with deadlines, the 503 answered on the event loop, the operators' lane, and ``get_db``
waiting for a connection only for what is left of the deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from typing import Any

import flask
import pytest

from swagger_server import db
from swagger_server.app import create_app
from swagger_server.db import deadline
from swagger_server.db.pool import PoolTimeout
from swagger_server.web.admission import (
    OPS_THREADS,
    REQUEST_THREADS,
    AdmissionControl,
    ArrivalStamp,
    Lane,
)
from tests.conftest import make_settings

# ------------------------------------------------------------------ the lane


def test_a_lane_admits_its_slots_at_once_and_then_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        lane = Lane(2)
        far = time.monotonic() + 10
        assert await lane.enter(far) and await lane.enter(far)
        order: list[int] = []

        async def wait(n: int) -> None:
            assert await lane.enter(far)
            order.append(n)

        waiting = [asyncio.create_task(wait(n)) for n in range(3)]
        await asyncio.sleep(0.01)
        assert order == [] and lane.waiting == 3
        for _ in range(3):
            lane.leave()
            await asyncio.sleep(0.01)
        await asyncio.gather(*waiting)
        assert lane.free == 0  # the three hold the slots handed to them
        return order

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_a_waiter_gives_up_at_its_deadline_and_leaves_the_line() -> None:
    async def scenario() -> None:
        lane = Lane(1)
        assert await lane.enter(time.monotonic() + 10)
        start = time.monotonic()
        assert await lane.enter(start + 0.1) is False
        assert 0.09 <= time.monotonic() - start < 2
        assert lane.waiting == 0
        assert await lane.enter(time.monotonic()) is False  # past its deadline: no wait
        lane.leave()
        assert lane.free == 1
        assert await lane.enter(time.monotonic() + 1)  # nobody left in line: at once

    asyncio.run(scenario())


def test_a_slot_handed_to_a_cancelled_waiter_goes_on_to_the_next() -> None:
    async def scenario() -> None:
        lane = Lane(1)
        far = time.monotonic() + 10
        assert await lane.enter(far)
        first = asyncio.create_task(lane.enter(far))
        second = asyncio.create_task(lane.enter(far))
        await asyncio.sleep(0.01)
        lane.leave()  # handed to first ...
        first.cancel()  # ... which is cancelled before it runs
        assert await second is True
        with pytest.raises(asyncio.CancelledError):
            await first
        assert lane.waiting == 0 and lane.free == 0

    asyncio.run(scenario())


def test_a_waiter_cancelled_in_line_leaves_it() -> None:
    async def scenario() -> None:
        lane = Lane(1)
        assert await lane.enter(time.monotonic() + 10)
        waiter = asyncio.create_task(lane.enter(time.monotonic() + 10))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert lane.waiting == 0
        lane.leave()
        assert lane.free == 1

    asyncio.run(scenario())


# ------------------------------------------------------------------ the middleware


class Blocking:
    """An inner app that holds every request until released; records the deadline it saw."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.time_left: list[float | None] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.time_left.append(deadline.time_left())
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "",
             "query_string": b"", "headers": [], "state": {"request_id": "rid-1"}}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    # A request task of its own, as the server runs it (the deadline lives in its context).
    await asyncio.create_task(app(scope, receive, send), context=contextvars.copy_context())
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"")
                                                                 for m in sent[1:])


def test_past_acquire_timeout_a_request_gets_a_503_problem_without_a_thread() -> None:
    async def scenario() -> None:
        inner = Blocking()
        app = ArrivalStamp(AdmissionControl(inner, acquire_timeout=0.2, request_threads=1))
        holder = asyncio.create_task(call(app, "/tables/t/rows"))
        await asyncio.sleep(0.01)
        start = time.monotonic()
        status, headers, body = await call(app, "/tables/t/rows")
        assert 0.18 <= time.monotonic() - start < 2
        assert status == 503
        assert headers[b"content-type"] == b"application/problem+json"
        assert headers[b"retry-after"] == b"1"
        problem = json.loads(body)
        assert problem["type"] == "/problems/pool-timeout" and problem["status"] == 503
        assert problem["request_id"] == "rid-1" and "0.2s" in problem["detail"]
        assert len(inner.time_left) == 1  # the refused request never reached the app
        inner.release.set()
        assert (await holder)[0] == 200

    asyncio.run(scenario())


def test_an_admitted_request_carries_what_is_left_of_its_deadline() -> None:
    async def scenario() -> None:
        inner = Blocking()
        app = ArrivalStamp(AdmissionControl(inner, acquire_timeout=1.0, request_threads=1))
        first = asyncio.create_task(call(app, "/"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(call(app, "/"))
        await asyncio.sleep(0.3)
        inner.release.set()  # first answers, second is admitted after ~0.3 s in line
        await asyncio.gather(first, second)
        early, late = inner.time_left
        assert early is not None and late is not None
        assert early > 0.9
        assert 0.0 < late < 0.75

    asyncio.run(scenario())


def test_operators_paths_have_threads_of_their_own() -> None:
    async def scenario() -> None:
        inner = Blocking()
        app = ArrivalStamp(AdmissionControl(inner, acquire_timeout=0.2, request_threads=1,
                                            ops_threads=2))
        holder = asyncio.create_task(call(app, "/tables/t/rows"))
        await asyncio.sleep(0.01)
        probes = [asyncio.create_task(call(app, path)) for path in ("/metrics", "/pool")]
        await asyncio.sleep(0.05)
        assert len(inner.time_left) == 3  # both admitted beside the busy request lane
        inner.release.set()
        assert [(await p)[0] for p in probes] == [200, 200]
        await holder

    asyncio.run(scenario())


# ------------------------------------------------------------------ get_db and the deadline


@pytest.fixture
def app(database) -> flask.Flask:
    db.close_pool()
    app = flask.Flask(__name__)
    app.config["SETTINGS"] = make_settings(
        database.dsn, pool={"min_size": 0, "max_size": 1, "acquire_timeout": 30})
    db.init_app(app)
    yield app
    db.close_pool()


def test_get_db_waits_for_a_connection_only_until_the_request_deadline(app) -> None:
    held = db.get_pool(app.config["SETTINGS"]).getconn()
    try:
        def request() -> None:
            deadline.set_deadline(time.monotonic() + 0.3)
            with app.app_context():
                db.get_db()

        start = time.monotonic()
        with pytest.raises(PoolTimeout):
            contextvars.copy_context().run(request)
        assert time.monotonic() - start < 5  # not the pool's ACQUIRE_TIMEOUT of 30 s
    finally:
        db.get_pool().putconn(held)


def test_the_app_runs_views_in_request_plus_operators_threads(database) -> None:
    db.close_pool()
    try:
        app = create_app(make_settings(database.dsn))
        executor = app._middleware_app.asgi_app.executor
        assert executor._max_workers == REQUEST_THREADS + OPS_THREADS == 12
    finally:
        db.close_pool()


def test_a_request_turned_away_by_admission_counts_as_a_pool_timeout(app) -> None:
    """/pool's timeouts_total (and pgrest_pool_timeouts_total) count every 503 pool-timeout,
    also those answered before the request could ask the pool."""
    pool = db.get_pool(app.config["SETTINGS"])
    before = pool.stats()["timeouts_total"]

    async def scenario() -> None:
        inner = Blocking()
        admission = ArrivalStamp(AdmissionControl(inner, acquire_timeout=0.1,
                                                  request_threads=1))
        holder = asyncio.create_task(call(admission, "/tables/t/rows"))
        await asyncio.sleep(0.01)
        assert (await call(admission, "/tables/t/rows"))[0] == 503
        inner.release.set()
        await holder

    asyncio.run(scenario())
    assert pool.stats()["timeouts_total"] == before + 1
