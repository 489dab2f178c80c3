"""Keyset pagination: walking whole tables in every kind of order (mixed directions, NULLs
first and last, composite keys) visits each row exactly once, also while rows are inserted
between pages; bad cursors are 400s. Real PostgreSQL."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2.extensions
import pytest
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.app import create_app
from tests.conftest import app_client, make_settings
from tests.pg import TestDatabase, seeded_database

# 400 rows; a and b have many duplicates and NULLs, so the tiebreaker and the NULL handling of
# the keyset predicate both matter.
SCHEMA = """
CREATE TABLE walk (
    id integer PRIMARY KEY,
    a  integer,
    b  text,
    c  timestamptz NOT NULL,
    d  numeric
);
INSERT INTO walk
SELECT i,
       CASE WHEN i % 7 = 0 THEN NULL ELSE i % 5 END,
       CASE WHEN i % 4 = 0 THEN NULL ELSE chr(97 + i % 3) END,
       timestamptz '2024-01-01' + (i % 13) * interval '1 hour',
       CASE WHEN i % 11 = 0 THEN NULL ELSE (i % 9) / 4.0 END
FROM generate_series(1, 400) AS i;
CREATE TABLE pairs (x integer, y text, v integer, PRIMARY KEY (x, y));
INSERT INTO pairs SELECT i % 6, 'y' || (i % 17), i FROM generate_series(1, 102) AS i;
CREATE TABLE growing (id integer PRIMARY KEY, grp integer);
INSERT INTO growing SELECT i * 10, i % 3 FROM generate_series(1, 60) AS i;
CREATE TABLE other (id integer PRIMARY KEY);
INSERT INTO other SELECT generate_series(1, 10);
CREATE TABLE deep (id integer PRIMARY KEY, v text);
INSERT INTO deep SELECT i, 'v' || i FROM generate_series(1, 100000) AS i;
-- ordered by t: six short keys, four of 20 KB, four short ones again
CREATE TABLE longkeys (id integer PRIMARY KEY, t text NOT NULL);
INSERT INTO longkeys
SELECT i, CASE WHEN i <= 6 THEN 's' WHEN i <= 10 THEN repeat('x', 20000) ELSE 'z' END
          || lpad(i::text, 3, '0')
FROM generate_series(1, 14) AS i;
"""

# API order -> the same order in SQL (the primary key appended as the API does)
ORDERS = {
    "": "id",
    "id.desc": "id DESC",
    "a": "a, id",
    "a.desc": "a DESC, id",
    "a.nullsfirst": "a NULLS FIRST, id",
    "a.desc.nullslast": "a DESC NULLS LAST, id",
    "a.desc.nullslast,b": "a DESC NULLS LAST, b, id",
    "b.desc.nullsfirst,a.asc.nullslast": "b DESC NULLS FIRST, a NULLS LAST, id",
    "b.nullsfirst,a.desc,id.desc": "b NULLS FIRST, a DESC, id DESC",
    "c.desc,a": "c DESC, a, id",
    "c,id.desc": "c, id DESC",
    "d.desc.nullslast,c.desc,b.nullsfirst": "d DESC NULLS LAST, c DESC, b NULLS FIRST, id",
}


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "keyset", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str, route: Callable[[str], Any]) -> Iterator[TestClient]:
    url, database = route(dsn)  # directly, then through PgBouncer (transaction mode)
    with app_client(url, database=database) as client:
        yield client


def expected(dsn: str, sql_order: str, where: str = "true") -> list[int]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id FROM walk WHERE {where} ORDER BY {sql_order}")
        return [r[0] for r in cur.fetchall()]


def walk(client: TestClient, table: str, limit: int, **params: Any) -> Iterator[dict[str, Any]]:
    """Follow next_cursor to the end, yielding each row."""
    query: dict[str, Any] = {"limit": limit, **params}
    for _ in range(10_000):
        r = client.get(f"/tables/{table}/rows", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        yield from body["data"]
        if body["next_cursor"] is None:
            assert "link" not in r.headers
            return
        assert f"cursor={body['next_cursor']}" in r.headers["link"]
        query["cursor"] = body["next_cursor"]
    raise AssertionError("no end in sight")


# Every order with pages of 37; pages of one row (every row a page boundary) for two of them.
WALKS = [(order, 37) for order in ORDERS] + [("", 1), ("a.desc.nullslast,b", 1)]


@pytest.mark.parametrize(("order", "limit"), WALKS)
def test_walks_the_whole_table_in_any_order(client: TestClient, dsn: str, order: str,
                                            limit: int) -> None:
    params = {"order": order} if order else {}
    got = [row["id"] for row in walk(client, "walk", limit, **params)]
    assert got == expected(dsn, ORDERS[order])


def test_walks_with_filters_and_select(client: TestClient, dsn: str) -> None:
    got = [row["id"] for row in walk(client, "walk", 13, order="b.desc,a.nullsfirst",
                                     filter=["c.gte.2024-01-01T05:00:00Z", "a.neq.2"],
                                     select="id")]
    assert got == expected(dsn, "b DESC, a NULLS FIRST, id",
                           "c >= '2024-01-01T05:00:00Z' AND a <> 2")


def test_walks_a_composite_key(client: TestClient, dsn: str) -> None:
    got = [(r["x"], r["y"]) for r in walk(client, "pairs", 10)]
    assert got == sorted(got) and len(got) == len(set(got)) == 102
    got = [(r["v"], r["x"], r["y"]) for r in walk(client, "pairs", 9, order="v.desc")]
    assert [v for v, _, _ in got] == list(range(102, 0, -1))


def test_rows_inserted_between_pages_skip_nothing_and_repeat_nothing(
    client: TestClient, database: TestDatabase, dsn: str
) -> None:
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        for order in ("", "grp.desc", "grp.nullsfirst,id.desc"):
            with conn.cursor() as cur:
                cur.execute("DELETE FROM growing WHERE id % 10 <> 0")
                cur.execute("SELECT id FROM growing")
                before = {r[0] for r in cur.fetchall()}
            seen: list[int] = []
            query: dict[str, Any] = {"limit": 7, **({"order": order} if order else {})}
            n = 0
            while True:
                body = client.get("/tables/growing/rows", params=query).json()
                seen += [row["id"] for row in body["data"]]
                if body["next_cursor"] is None:
                    break
                query["cursor"] = body["next_cursor"]
                n += 1
                with conn.cursor() as cur:  # rows land before, after and at the current spot
                    cur.execute("INSERT INTO growing VALUES (%s, NULL), (%s, %s), (%s, %s)",
                                (n * 10 + 1, n * 10 + 3, n % 3, 10_000 + n, n % 3))
            assert len(seen) == len(set(seen)), f"a row came twice in order {order!r}"
            assert before <= set(seen), f"a row was skipped in order {order!r}"


def scans_of(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == relation else []
    for child in plan.get("Plans", []):
        found += scans_of(child, relation)
    return found


def test_deep_pages_use_the_keyset_not_an_offset(
    client: TestClient, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement the API runs for a page deep into 100,000 rows reads about as many rows
    as the first page does: index scans that start at the cursor's key, no OFFSET past the
    page (the probe that looks for a next page skips the page's own rows, ``limit - 1``, or
    with a one-column key looks once past the page's last key)."""
    from swagger_server.data import query
    ran: list[tuple[Any, dict[str, Any]]] = []
    page_sql = query.page_sql

    def capture(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        ran.append(page_sql(*args, **kwargs))
        return ran[-1]

    monkeypatch.setattr(query, "page_sql", capture)
    first = client.get("/tables/deep/rows", params={"limit": 10})
    assert [r["id"] for r in first.json()["data"]] == list(range(1, 11))
    # A legitimate cursor deep in the table: the one after a page fetched by offset.
    cursor = client.get("/tables/deep/rows", params={"limit": 10, "offset": 90_000}
                        ).json()["next_cursor"]
    deep = client.get("/tables/deep/rows", params={"limit": 10, "cursor": cursor})
    assert [r["id"] for r in deep.json()["data"]] == list(range(90_011, 90_021))
    assert len(ran) == 3

    actual: list[int] = []
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        for statement, params in (ran[0], ran[2]):
            text = cur.mogrify(statement, params).decode()
            assert re.findall(r"OFFSET \d+", text.upper()) in ([], ["OFFSET 9"]), text
            cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {text}")
            plan = cur.fetchone()[0][0]["Plan"]
            scans = scans_of(plan, "deep")
            assert 1 <= len(scans) <= 2, plan  # the page, and the probe when there is one
            for scan in scans:
                assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
                assert scan.get("Rows Removed by Filter", 0) == 0
            actual.append(sum(scan["Actual Rows"] for scan in scans))
        # Each scan starts at the cursor's key, or (a one-column key's probe) at the page's
        # last key, one index look past the page.
        assert any("90010" in s["Index Cond"] for s in scans), scans
        assert all("id" in s["Index Cond"] and ("90010" in s["Index Cond"]
                                                 or "p.k" in s["Index Cond"]) for s in scans)
    assert actual[0] <= 22 and actual[1] <= 22, actual  # an offset would read 90,000 more


def follow_links(client: TestClient, url: str) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Each page's body and its Link URL, following Link to the end."""
    next_url: str | None = url
    while next_url:
        r = client.get(next_url)
        assert r.status_code == 200, r.text
        link = r.headers.get("link")
        next_url = link[1:link.index(">")] if link else None
        yield r.json(), next_url


def test_a_cursor_too_long_to_issue_gives_way_to_an_offset_link(client: TestClient) -> None:
    """A 20 KB order value would make a cursor no proxy takes: the page links by offset
    instead, counted from the first row also after a cursor; cursors resume afterwards."""
    seen: list[int] = []
    links: list[str] = []
    for body, link in follow_links(client, "/tables/longkeys/rows?order=t&limit=2&select=id"):
        seen += [r["id"] for r in body["data"]]
        cursor = body["next_cursor"]
        assert cursor is None or len(cursor) <= 4096
        if link is not None:
            assert ("cursor=" in link) == (cursor is not None)
            links.append("cursor" if cursor is not None else link[link.index("offset="):])
        else:
            assert cursor is None
    assert seen == list(range(1, 15))
    # pages end on ids 2, 4, 6 (short), 8, 10 (20 KB), 12 (short), then 14: the last
    assert links == ["cursor", "cursor", "cursor", "offset=8", "offset=10", "cursor"]
    huge = client.get("/tables/longkeys/rows", params={"order": "t", "limit": 1,
                                                       "offset": 6})
    assert huge.json()["next_cursor"] is None
    assert "offset=7" in huge.headers["link"] and len(huge.headers["link"]) < 200


# ---------------------------------------------------------------------- bad cursors


def first_cursor(client: TestClient, table: str = "walk", **params: Any) -> str:
    cursor = client.get(f"/tables/{table}/rows", params={"limit": 3, **params}).json()[
        "next_cursor"]
    assert cursor
    return cursor


def assert_bad_cursor(client: TestClient, cursor: str, table: str = "walk",
                      **params: Any) -> None:
    r = client.get(f"/tables/{table}/rows", params={"cursor": cursor, **params})
    assert r.status_code == 400, r.text
    # about:blank: Connexion's own check of the spec's maxLength, before the handler
    assert r.json()["type"] in ("/problems/invalid-cursor", "/problems/invalid-parameter",
                                "about:blank")


def test_tampered_cursors_are_400(client: TestClient) -> None:
    cursor = first_cursor(client)
    for i in range(0, len(cursor), 3):
        flipped = cursor[:i] + ("A" if cursor[i] != "A" else "B") + cursor[i + 1:]
        if flipped != cursor:
            assert_bad_cursor(client, flipped)
    body, sig = cursor.split(".")
    for garbled in ("", ".", "abc", "a.b.c", body, f"{body}.", f".{sig}", "%%%", "é.é",
                    cursor + "x", cursor[:-1], "x" * 20000, body + "." + sig[::-1]):
        assert_bad_cursor(client, garbled)


def test_cursors_from_another_table_or_order_are_400(client: TestClient) -> None:
    assert_bad_cursor(client, first_cursor(client, "other"))
    assert_bad_cursor(client, first_cursor(client), order="a")
    assert_bad_cursor(client, first_cursor(client, order="a"))
    assert_bad_cursor(client, first_cursor(client, order="a"), order="a.desc")
    assert_bad_cursor(client, first_cursor(client, order="a.nullsfirst"), order="a")
    # the same order written differently is the same order
    cursor = first_cursor(client, order="a.asc.nullslast")
    assert client.get("/tables/walk/rows", params={"cursor": cursor, "order": "a"}
                      ).status_code == 200


def test_a_cursor_signed_by_another_deployment_is_400(dsn: str, client: TestClient) -> None:
    cursor = first_cursor(client)
    db.close_pool()
    other = create_app(make_settings(dsn, api={"cursor_secret": "another secret"})).test_client()
    try:
        r = other.get("/tables/walk/rows", params={"cursor": cursor})
        assert r.status_code == 400
        assert "another deployment" in r.json()["detail"]
        own = first_cursor(other)
        assert other.get("/tables/walk/rows", params={"cursor": own}).status_code == 200
    finally:
        db.close_pool()


def test_a_forged_cursor_with_a_valid_signature_but_bad_values_is_400(dsn: str) -> None:
    from swagger_server.data import cursors
    settings = make_settings(dsn)
    secret = cursors.secret_for("")
    fp = cursors.fingerprint(["public", "walk", [["id", "integer", False, False]]])
    db.close_pool()
    client = create_app(settings).test_client()
    try:
        good = cursors.encode(secret, fp, ["5"])
        assert client.get("/tables/walk/rows", params={"cursor": good, "limit": 1}
                          ).json()["data"][0]["id"] == 6
        for values in (["not a number"], ["1", "2"], [], [5]):
            token = cursors.encode(secret, fp, values)  # type: ignore[arg-type]
            assert_bad_cursor(client, token)
    finally:
        db.close_pool()
