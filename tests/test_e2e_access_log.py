"""The access log through a real gunicorn master: one line per request on stdout, no query values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import TestDatabase
from tests.server import GunicornServer, run_sql, scratch_database, wait_for

pytestmark = pytest.mark.e2e

ROWS = 3000
SECRET = "SECRET123"


def access_line(server: GunicornServer, request_id: str) -> re.Match[str] | None:
    pattern = (r"\[INFO\] (?P<method>\S+) (?P<target>\S+) status=(?P<status>\d+) "
               r"ms=(?P<ms>\d+\.\d) bytes=(?P<bytes>\d+) request_id=" + re.escape(request_id) + "$")
    return re.search(pattern, server.stdout(), re.MULTILINE)


@pytest.fixture(scope="module")
def items_db(database: TestDatabase) -> Iterator[str]:
    with scratch_database(database, "access") as dsn:
        run_sql(dsn, "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        run_sql(dsn, "INSERT INTO items SELECT i, 'item number ' || i "
                    f"FROM generate_series(1, {ROWS}) i")
        yield dsn


def test_each_request_logs_one_line_without_query_values(items_db: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": items_db, "SERVER_WORKERS": "2"}
    with GunicornServer(tmp_path, env) as server:
        bad = server.get(f"/tables/items/rows?limit=5&cursor={SECRET}",
                         headers={"X-Request-ID": "rid-bad-cursor"})
        export = server.get(f"/tables/items/rows?limit={ROWS}",
                            headers={"Accept": "text/csv", "X-Request-ID": "rid-export"})
        page = server.get("/tables/items/rows?select=id&filter=name.eq.x%20y",
                          headers={"X-Request-ID": "rid-page"})
        assert (bad.status, export.status, page.status) == (400, 200, 200)
        assert wait_for(lambda: access_line(server, "rid-page") is not None, timeout=5), (
            server.stdout()[-2000:]
        )
        lines = {rid: access_line(server, rid) for rid in ("rid-bad-cursor", "rid-export")}

    bad_line, export_line = lines["rid-bad-cursor"], lines["rid-export"]
    assert bad_line is not None and export_line is not None, server.stdout()[-2000:]
    assert bad_line["method"] == "GET"
    assert bad_line["target"] == "/tables/items/rows?limit&cursor"
    assert bad_line["status"] == "400"
    assert int(bad_line["bytes"]) == len(bad.body)
    # The streamed export: every chunk counted.
    assert export_line["target"] == "/tables/items/rows?limit"
    assert export_line["status"] == "200"
    assert int(export_line["bytes"]) == len(export.body) > ROWS * 10
    assert float(export_line["ms"]) > 0
    assert access_line(server, "rid-page")["target"] == "/tables/items/rows?select&filter"
    # Exactly one line per request.
    assert server.stdout().count("request_id=rid-export") == 1
    for stream in (server.stdout(), server.stderr()):
        assert SECRET not in stream
        assert "x%20y" not in stream


def test_access_log_off_writes_no_line(items_db: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": items_db, "SERVER_WORKERS": "1", "SERVER_ACCESS_LOG": "off"}
    with GunicornServer(tmp_path, env) as server:
        assert server.get("/tables/items/rows?limit=2",
                          headers={"X-Request-ID": "rid-quiet"}).status == 200
        assert server.get("/nope", headers={"X-Request-ID": "rid-quiet-404"}).status == 404
    assert "rid-quiet" not in server.stdout() + server.stderr()
    assert "status=" not in server.stdout()
