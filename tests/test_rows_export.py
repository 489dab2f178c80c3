"""Streamed exports: CSV and NDJSON row counts and content, filters/select/order applied, limits,
errors before the first byte, constant memory, and the connection given back exactly once
(also when the client leaves mid-stream). Real PostgreSQL."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.app import create_app
from swagger_server.controllers import tables_controller
from swagger_server.data import export
from swagger_server.data.export import RowStream
from tests.conftest import make_settings
from tests.pg import TestDatabase, seeded_database

NDJSON = {"Accept": "application/x-ndjson"}
CSV = {"Accept": "text/csv"}
BIG = 60_000

SCHEMA = f"""
CREATE TABLE big (id integer PRIMARY KEY, label text NOT NULL, amount numeric(12, 2),
                  at timestamptz NOT NULL, doc jsonb, tags text[], blob bytea);
INSERT INTO big
SELECT i, 'row ' || i || repeat('x', 60), CASE WHEN i % 10 = 0 THEN NULL ELSE i / 100.0 END,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute',
       jsonb_build_object('i', i), ARRAY['a', 'b' || i], '\\x0102'
FROM generate_series(1, {BIG}) AS i;
CREATE TABLE tricky (id integer PRIMARY KEY, t text, n numeric, b boolean, d date, arr text[]);
INSERT INTO tricky VALUES
  (1, 'plain', 1.5, true, '2024-02-29', '{{x}}'),
  (2, 'comma, here', -2, false, NULL, '{{"a,b"}}'),
  (3, 'quote " here', NULL, NULL, '1999-01-01', NULL),
  (4, E'new\\nline', 0, true, NULL, '{{}}'),
  (5, '', 12345678901234567890.5, NULL, NULL, '{{NULL}}'),
  (6, NULL, 3, false, NULL, NULL);
CREATE VIEW slow AS SELECT g AS id, pg_sleep(0.3) IS NULL AS slept FROM generate_series(1, 20) AS g;
CREATE TABLE docs (id integer PRIMARY KEY, doc json, note text);
INSERT INTO docs VALUES
  (1, E'{{\n  "a": 1,\n  "b": [1,\r\n 2]\n}}', E'line\nbreak'),
  (2, E'\n[\n]\n', NULL),
  (3, '"text\\nwith an escaped newline"', 'x'),
  (4, NULL, E'cr\r');
CREATE TABLE empty_cols ();
INSERT INTO empty_cols DEFAULT VALUES;
INSERT INTO empty_cols DEFAULT VALUES;
INSERT INTO empty_cols DEFAULT VALUES;
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "export", SCHEMA)


@pytest.fixture(scope="module")
def app(dsn: str, route: Callable[[str], Any]):
    url, database = route(dsn)  # directly, then through PgBouncer (transaction mode)
    db.close_pool()
    yield create_app(make_settings(url, database=database, api={"max_export_rows": 100_000}))
    db.close_pool()


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return app.test_client()


def in_use(client: TestClient) -> int:
    return client.get("/pool").json()["in_use"]


def test_ndjson_exports_every_row_as_one_object_per_line(client: TestClient) -> None:
    r = client.get("/tables/big/rows", headers=NDJSON)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = r.text.split("\n")
    assert lines[-1] == ""  # every line ends with a newline
    objects = [json.loads(line) for line in lines[:-1]]
    assert len(objects) == BIG
    assert [o["id"] for o in objects] == list(range(1, BIG + 1))
    first = objects[0]
    assert first["amount"] == 0.01 and first["doc"] == {"i": 1} and first["tags"] == ["a", "b1"]
    assert first["at"] == "2024-01-01T00:01:00+00:00" and first["blob"] == "AQI="
    assert objects[9]["amount"] is None
    assert in_use(client) == 0


def test_csv_exports_a_header_and_every_row(client: TestClient) -> None:
    r = client.get("/tables/big/rows", headers=CSV, params={"select": "id,amount,at,tags"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["id", "amount", "at", "tags"]
    assert len(table) == BIG + 1
    assert table[1] == ["1", "0.01", "2024-01-01T00:01:00+00:00", '["a","b1"]']
    assert table[10][1] == ""  # NULL
    assert in_use(client) == 0


def test_csv_quoting_nulls_and_empty_strings(client: TestClient) -> None:
    r = client.get("/tables/tricky/rows", headers=CSV)
    assert r.text.splitlines()[0] == "id,t,n,b,d,arr"
    rows = list(csv.reader(io.StringIO(r.text)))[1:]
    assert [row[1] for row in rows] == ["plain", "comma, here", 'quote " here', "new\nline",
                                        "", ""]
    assert rows[4][2] == "12345678901234567890.5"
    assert rows[0][3:] == ["true", "2024-02-29", '["x"]']
    assert rows[1][5] == '["a,b"]'
    # NULL is an empty cell, the empty string a quoted one (as PostgreSQL's COPY does)
    raw = r.text.splitlines()
    assert raw[-1] == "6,,3,false,,"
    assert ',"",' in raw[-2]


def test_exports_honour_filters_select_order_and_limit(client: TestClient) -> None:
    r = client.get("/tables/big/rows", headers=NDJSON, params={
        "filter": ["id.gt.100", "amount.is.notnull"], "select": "id", "order": "id.desc",
        "limit": 5000})
    ids = [json.loads(line)["id"] for line in r.text.splitlines()]
    assert len(ids) == 5000
    assert ids[:3] == [BIG - 1, BIG - 2, BIG - 3] and all(i % 10 for i in ids)
    r = client.get("/tables/big/rows", headers=CSV, params={"filter": "id.lte.3",
                                                             "select": "label"})
    assert len(r.text.splitlines()) == 4


def test_an_export_stops_at_max_export_rows(dsn: str) -> None:
    db.close_pool()
    client = create_app(make_settings(dsn, api={"max_export_rows": 1234})).test_client()
    try:
        r = client.get("/tables/big/rows", headers=NDJSON)
        assert len(r.text.splitlines()) == 1234
        assert client.get("/tables/big/rows", headers=CSV, params={"limit": 1235}
                          ).status_code == 400
    finally:
        db.close_pool()


def test_errors_come_before_the_first_byte(client: TestClient) -> None:
    for headers in (NDJSON, CSV):
        r = client.get("/tables/big/rows", headers=headers, params={"filter": "id.eq.x"})
        assert r.status_code == 400
        assert r.json()["column"] == "id"
        assert client.get("/tables/nope/rows", headers=headers).status_code == 404
        assert client.get("/tables/big/rows", headers=headers, params={"count": "exact"}
                          ).status_code == 400
    assert in_use(client) == 0


DOCS = [
    {"id": 1, "doc": {"a": 1, "b": [1, 2]}, "note": "line\nbreak"},
    {"id": 2, "doc": [], "note": None},
    {"id": 3, "doc": "text\nwith an escaped newline", "note": "x"},
    {"id": 4, "doc": None, "note": "cr\r"},
]


def test_json_values_with_raw_line_breaks_stay_one_row_per_ndjson_line(
    client: TestClient,
) -> None:
    r = client.get("/tables/docs/rows", headers=NDJSON)
    assert r.status_code == 200
    assert r.text.endswith("\n") and "\r" not in r.text
    lines = r.text.split("\n")[:-1]
    assert len(lines) == len(DOCS)
    assert [json.loads(line) for line in lines] == DOCS
    # A JSON page and a CSV export carry the same values (raw line breaks are harmless there).
    assert client.get("/tables/docs/rows").json()["data"] == DOCS
    table = list(csv.reader(io.StringIO(client.get("/tables/docs/rows", headers=CSV).text,
                                        newline="")))
    assert table[0] == ["id", "doc", "note"] and len(table) == len(DOCS) + 1
    assert [json.loads(row[1]) if row[1] else None for row in table[1:]] == \
        [d["doc"] for d in DOCS]
    assert [row[2] for row in table[1:]] == ["line\nbreak", "", "x", "cr\r"]


def test_a_relation_without_columns_exports_an_empty_line_per_row(client: TestClient) -> None:
    assert client.get("/tables/empty_cols/rows").json()["data"] == [{}, {}, {}]
    r = client.get("/tables/empty_cols/rows", headers=NDJSON)
    assert r.status_code == 200 and r.text == "{}\n{}\n{}\n"
    r = client.get("/tables/empty_cols/rows", headers=CSV)
    assert r.status_code == 200
    assert r.text == "\n" * 4  # an empty header line, then an empty line per row (as COPY)
    assert list(csv.reader(io.StringIO(r.text))) == [[]] * 4
    assert in_use(client) == 0


def _stream(app, path: str, accept: str) -> RowStream:
    flask_app = app.app
    with flask_app.test_request_context(path, headers={"Accept": accept}):
        response = tables_controller.get_rows(path.split("/")[2])
    assert isinstance(response.response, RowStream)  # streamed, not materialised
    return response.response


@pytest.mark.parametrize("accept", ["application/x-ndjson", "text/csv"])
def test_memory_stays_flat_while_streaming(app, accept: str) -> None:
    stream = _stream(app, "/tables/big/rows", accept)
    total = 0
    tracemalloc.start()
    try:
        for chunk in stream:
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 8_000_000  # the whole export went through...
    assert peak < total / 4  # ...holding a few batches at most
    assert peak < 3_000_000


def test_the_connection_comes_back_once_when_the_client_leaves_early(
    app, client: TestClient
) -> None:
    pool = db.get_pool()
    before = pool.stats()
    stream = _stream(app, "/tables/big/rows", "application/x-ndjson")
    assert pool.stats()["in_use"] == before["in_use"] + 1
    next(stream)
    next(stream)
    stream.close()  # what the server does when the client disconnects
    stream.close()
    assert pool.stats()["in_use"] == before["in_use"]
    with pytest.raises(StopIteration):
        next(stream)
    assert pool.stats()["in_use"] == before["in_use"]
    assert pool.stats()["discarded_total"] == before["discarded_total"]  # given back clean
    # an abandoned body is collected without leaking its connection
    stream = _stream(app, "/tables/big/rows", "text/csv")
    next(stream)
    del stream
    assert pool.stats()["in_use"] == before["in_use"]
    assert client.get("/tables/big/rows/1").status_code == 200


def test_disconnect_watcher_releases_the_connection(app) -> None:
    import asyncio
    import threading


    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    gone = asyncio.Event()

    async def receive() -> dict[str, str]:
        await gone.wait()
        return {"type": "http.disconnect"}

    class Body(io.BytesIO):  # what a2wsgi puts in wsgi.input: its receive and loop
        def __init__(self) -> None:
            super().__init__(b"")
            self.receive, self.loop = receive, loop

    pool = db.get_pool()
    before = pool.stats()["in_use"]
    try:
        with app.app.test_request_context("/tables/big/rows",
                                          headers={"Accept": "application/x-ndjson"},
                                          input_stream=Body()):
            response = tables_controller.get_rows("big")
        stream = response.response
        next(stream)
        assert pool.stats()["in_use"] == before + 1
        loop.call_soon_threadsafe(gone.set)
        for _ in range(100):
            if pool.stats()["in_use"] == before:
                break
            threading.Event().wait(0.02)
        assert pool.stats()["in_use"] == before
        with pytest.raises(StopIteration):
            next(stream)
    finally:
        loop.call_soon_threadsafe(loop.stop)



# ---------------------------------------------------------------------- denial of service


def test_max_exports_bounds_the_exports_running_at_once(dsn: str) -> None:
    """Over MAX_EXPORTS: 503 problem+json with Retry-After; pages still served; a slot comes
    back when an export ends, also when it failed before its first byte."""
    db.close_pool()
    bounded = create_app(make_settings(dsn, api={"max_exports": 2}))
    client = bounded.test_client()
    try:
        running = [_stream(bounded, "/tables/big/rows", "application/x-ndjson"),
                   _stream(bounded, "/tables/big/rows", "text/csv")]
        r = client.get("/tables/big/rows", headers=NDJSON)
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["retry-after"] == "5"
        assert r.json()["type"] == "/problems/too-many-exports"
        assert "MAX_EXPORTS" in r.json()["detail"]
        assert client.get("/tables/big/rows", params={"limit": 1}).status_code == 200  # JSON
        running.pop().close()
        for _ in range(3):  # failures give their slot back
            assert client.get("/tables/big/rows", headers=CSV,
                              params={"filter": "id.eq.x"}).status_code == 400
        r = client.get("/tables/big/rows", headers=CSV, params={"limit": 2})
        assert r.status_code == 200 and r.text.count("\n") == 3
        assert client.get("/tables/big/rows", headers=CSV).status_code == 200
        running.pop().close()
        assert client.get("/pool").json()["in_use"] == 0
    finally:
        db.close_pool()


def _backend_alive(admin: TestDatabase, pid: int) -> bool:
    with contextlib.closing(admin.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone()[0] == 1


def test_an_export_sets_idle_in_transaction_timeout_for_its_transaction_only(dsn: str) -> None:
    """The backstop: EXPORT_STALL_TIMEOUT + 5 s, set in the export's transaction only."""
    db.close_pool()
    app = create_app(make_settings(dsn, api={"export_stall_timeout": 1.5},
                                   pool={"min_size": 1, "max_size": 1}))
    show = "SHOW idle_in_transaction_session_timeout"
    try:
        stream = _stream(app, "/tables/big/rows", "text/csv")
        with stream._conn.cursor() as cur:  # the stream's own transaction
            cur.execute(show)
            assert cur.fetchone()[0] == "6500ms"
        stream.close()
        with db.get_pool().connection() as conn, conn.cursor() as cur:  # max_size 1: the same
            cur.execute(show)
            assert cur.fetchone()[0] == "0"
    finally:
        db.close_pool()


def test_postgresql_ends_an_export_left_idle_past_its_backstop(
    dsn: str, database: TestDatabase
) -> None:
    """Should the service lose track of a stream, the server ends its session by itself; the
    stream then fails and gives the broken connection back."""
    db.close_pool()
    pool = db.create_pool(make_settings(dsn))
    try:
        conn = pool.getconn()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        statement = sql.SQL("SELECT id::text FROM big")
        stream = export.open_stream(pool, conn, statement, {}, batch=10, idle_timeout_ms=300)
        next(stream)
        deadline = time.monotonic() + 10
        while _backend_alive(database, pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _backend_alive(database, pid)
        with pytest.raises(psycopg2.OperationalError):
            for _ in stream:
                pass
        assert pool.stats()["in_use"] == 0
    finally:
        pool.closeall()


def test_a_huge_stall_timeout_keeps_the_backstop_within_what_postgresql_takes(dsn: str) -> None:
    db.close_pool()
    client = create_app(make_settings(dsn, api={"export_stall_timeout": 1e9})).test_client()
    try:
        r = client.get("/tables/big/rows", headers=CSV, params={"limit": 2})
        assert r.status_code == 200, r.text
        assert r.text.count("\n") == 3
    finally:
        db.close_pool()
