"""Bounds on what one page may cost: ``offset`` at most ``MAX_OFFSET`` (a 400 that points to
the cursor; offset links stop there) and ``count=exact`` within ``COUNT_TIMEOUT`` (the page
still answers, ``total`` null, ``X-Total-Count-Timed-Out: true``). Real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

MAX_OFFSET = 12
COUNT_TIMEOUT_MS = 300
SLOW_ROWS = 4000  # counting slow_count sleeps 4000 x 5 ms = 20 s: far past COUNT_TIMEOUT

SCHEMA = f"""
CREATE TABLE items (id integer PRIMARY KEY, v text);
INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 30) AS i;
CREATE TABLE nokey (n integer, label text);
INSERT INTO nokey SELECT i, 'n' || i FROM generate_series(1, 25) AS i;
-- ordered by t: six short keys, then long ones (no cursor can hold them), then short again
CREATE TABLE longkeys (id integer PRIMARY KEY, t text NOT NULL);
INSERT INTO longkeys
SELECT i, CASE WHEN i <= 6 THEN 's' WHEN i <= 10 THEN repeat('x', 20000) ELSE 'z' END
          || lpad(i::text, 3, '0')
FROM generate_series(1, 14) AS i;
-- every row counted costs 5 ms (pg_sleep is volatile: the count cannot skip it)
CREATE VIEW slow_count AS
SELECT g AS id, pg_sleep(0.005) IS NULL AS slept FROM generate_series(1, {SLOW_ROWS}) AS g;
-- a page of 3 rows (limit 2, plus one to see a next page) takes 0.6 s: over COUNT_TIMEOUT
CREATE VIEW slow_page AS
SELECT g AS id, pg_sleep(0.2) IS NULL AS slept FROM generate_series(1, 10) AS g;
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "bounds", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    # One connection: every request after a timed-out count gets that very connection.
    with app_client(dsn, api={"max_offset": MAX_OFFSET, "count_timeout": COUNT_TIMEOUT_MS},
                    pool={"min_size": 1, "max_size": 1}) as client:
        yield client


def get(client: TestClient, table: str, **params: Any) -> Any:
    return client.get(f"/tables/{table}/rows", params=params)


def next_url(response: Any) -> str | None:
    link = response.headers.get("link")
    return link[1:link.index(">")] if link else None


# ---------------------------------------------------------------------- MAX_OFFSET


def test_an_offset_up_to_max_offset_is_served(client: TestClient) -> None:
    r = get(client, "items", offset=MAX_OFFSET, limit=3, select="id")
    assert r.status_code == 200
    assert [row["id"] for row in r.json()["data"]] == [13, 14, 15]


@pytest.mark.parametrize("offset", [MAX_OFFSET + 1, 10**15, 2**63, 10**40])
def test_an_offset_over_max_offset_is_a_400_that_points_to_the_cursor(
    client: TestClient, offset: int
) -> None:
    r = get(client, "items", offset=offset)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"] == "/problems/invalid-parameter"
    assert body["parameter"] == "offset"
    assert f"at most {MAX_OFFSET}" in body["detail"]
    assert "cursor" in body["detail"]


def test_over_max_offset_a_keyless_relation_points_to_filters_and_exports(
    client: TestClient
) -> None:
    r = get(client, "nokey", offset=MAX_OFFSET + 1)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "no primary key" in detail and "filter" in detail and "CSV or NDJSON" in detail


def test_exports_are_bounded_by_max_offset_too(client: TestClient) -> None:
    r = client.get("/tables/items/rows", params={"offset": MAX_OFFSET + 1},
                   headers={"Accept": "text/csv"})
    assert r.status_code == 400
    assert r.json()["parameter"] == "offset"


def test_offset_links_of_a_keyless_relation_stop_at_max_offset(client: TestClient) -> None:
    """Pages by offset 0, 5, 10; the next (15) would be refused: no Link, and a header that
    says why, where the relation would go on."""
    url: str | None = "/tables/nokey/rows?limit=5&order=n"
    seen: list[int] = []
    last = None
    while url:
        last = client.get(url)
        assert last.status_code == 200, last.text
        seen += [row["n"] for row in last.json()["data"]]
        url = next_url(last)
    assert seen == list(range(1, 16))
    assert last is not None and last.headers["x-offset-limit-reached"] == "true"
    # The true end of a relation is not a limit reached.
    end = get(client, "nokey", limit=5, order="n", offset=10, filter="n.lte.15")
    assert next_url(end) is None and "x-offset-limit-reached" not in end.headers


def walk(client: TestClient, url: str) -> tuple[list[int], list[int], Any]:
    """Follow Link to the end: the ids seen, the offsets linked to, the last response."""
    seen: list[int] = []
    offsets: list[int] = []
    next_page: str | None = url
    while next_page:
        r = client.get(next_page)
        assert r.status_code == 200, r.text
        seen += [row["id"] for row in r.json()["data"]]
        next_page = next_url(r)
        if next_page is not None and "offset=" in next_page:
            offsets.append(int(next_page.split("offset=")[1].split("&")[0]))
    return seen, offsets, r


def test_an_offset_link_after_a_cursor_stops_at_max_offset(client: TestClient, dsn: str
                                                           ) -> None:
    """Pages end on ids 2, 4, 6 (cursors), then 8 and 10, whose 20 KB keys make no cursor: those
    link by offset, counted from the first row (8, 10). With MAX_OFFSET 7 the link to offset 8
    is never made: the walk ends there, and says so."""
    url = "/tables/longkeys/rows?order=t&limit=2&select=id"
    seen, offsets, last = walk(client, url)
    assert seen == list(range(1, 15)) and offsets == [8, 10]
    assert "x-offset-limit-reached" not in last.headers
    with app_client(dsn, api={"max_offset": 7}) as low:
        seen, offsets, last = walk(low, url)
    assert seen == list(range(1, 9)) and offsets == []
    assert last.headers["x-offset-limit-reached"] == "true"


# ---------------------------------------------------------------------- COUNT_TIMEOUT


def test_a_count_past_count_timeout_leaves_total_null_and_says_so(client: TestClient) -> None:
    start = time.monotonic()
    r = get(client, "slow_count", limit=2, count="exact")
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.text
    body = r.json()
    assert [row["id"] for row in body["data"]] == [1, 2]
    assert "total" in body and body["total"] is None
    assert r.headers["x-total-count-timed-out"] == "true"
    assert "x-total-count" not in r.headers
    assert elapsed < SLOW_ROWS * 0.005 / 2  # far from the 20 s a whole count takes


@pytest.mark.parametrize("counted", ["slow_count", "items"])
def test_after_a_count_the_connection_has_its_full_timeout_again(
    client: TestClient, counted: str
) -> None:
    """The lowered timeout is local to the count's transaction, whether the count ran out or
    not: the next request on the same (only) connection runs a 0.6 s page, twice
    COUNT_TIMEOUT, without being cancelled."""
    assert get(client, counted, limit=2, count="exact").status_code == 200
    r = get(client, "slow_page", limit=2)
    assert r.status_code == 200, r.text
    assert [row["id"] for row in r.json()["data"]] == [1, 2]
    assert client.get("/pool").json()["discarded_total"] == 0


def test_a_count_within_count_timeout_is_exact(client: TestClient) -> None:
    r = get(client, "items", limit=2, count="exact", filter="id.gt.10")
    assert r.json()["total"] == 20
    assert r.headers["x-total-count"] == "20"
    assert "x-total-count-timed-out" not in r.headers
    r = get(client, "slow_count", limit=2, count="estimated")  # the planner: no count run
    assert r.status_code == 200 and isinstance(r.json()["total"], int)
    assert "x-total-count-timed-out" not in r.headers
