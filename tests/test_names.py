"""Names in requests: dotted names resolve in linear time (a URL of dots costs milliseconds, not
seconds), a quoted name is exact (whitespace kept), an unknown order column is named as asked,
and a TABLES / EXCLUDE pattern that matches nothing is logged. Real PostgreSQL where it counts."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server.data import catalog, query
from swagger_server.data.catalog import CACHE, Catalog, Column, Relation
from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

SCHEMA = """
CREATE SCHEMA "a.b";
CREATE TABLE spaced (id integer PRIMARY KEY, " padded" text, "padded" text, "x.y" integer);
INSERT INTO spaced VALUES (1, 'with blank', 'without', 2), (2, 'b', 'a', 1);
CREATE TABLE "a.b".inner (id integer PRIMARY KEY);
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "names", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    with app_client(dsn, api={"schemas": ("public", "a.b")}) as client:
        yield client


def _column(name: str) -> Column:
    return Column(name=name, type="integer", display_type="integer", nullable=False,
                  base_type="int4", is_array=False)


def _relation() -> Relation:
    return Relation(schema="public", name="t", kind="table", oid=1, primary_key=("id",),
                    columns=(_column("id"), _column("a.b"), _column("x")), estimated_rows=None)


def _cpu_seconds(call: Callable[[], Any]) -> float:
    start = time.process_time()
    with contextlib.suppress(query.QueryError):
        call()
    return time.process_time() - start


# ------------------------------------------------------------------ linear resolution


@pytest.mark.parametrize("text", ["." * 32_767, "a." * 16_384, "id." + ".eq" * 10_000])
def test_dotted_names_cost_linear_time_not_one_join_per_dot(text: str) -> None:
    """The quadratic code took 6 s (resolve), 3 s (filter) and 4 s (order) of CPU on 32 KB of
    dots (26 s, 12 s, 16 s on 64 KB); linear code takes about a millisecond. The bound is 50x
    above the linear figure and 6x below the quadratic one."""
    relation = _relation()
    cat = Catalog(relations=(relation,), schemas=("public", "a"), loaded_at=0.0)
    spent = {
        "resolve": _cpu_seconds(lambda: cat.resolve(text)),
        "filter": _cpu_seconds(lambda: query.parse_filter(relation, text)),
        "order": _cpu_seconds(lambda: query.parse_order(relation, text)),
    }
    assert all(seconds < 0.5 for seconds in spent.values()), spent


def test_the_catalog_index_is_built_once_per_load_not_per_lookup() -> None:
    relation = _relation()
    cat = Catalog(relations=(relation,), schemas=("public",), loaded_at=0.0)
    assert cat.index == {("public", "t"): relation}
    index = cat.index
    assert cat.resolve("t") is relation and cat.resolve("public.t") is relation
    assert cat.index is index


def test_dotted_names_still_resolve_where_they_end(client: TestClient) -> None:
    assert client.get("/tables/a.b.inner").json()["schema"] == "a.b"
    r = client.get("/tables/spaced/rows", params={"filter": "x.y.eq.2", "order": "x.y.desc"})
    assert [row["id"] for row in r.json()["data"]] == [1]
    r = client.get("/tables/spaced/rows", params={"order": "x.y.asc.nullsfirst"})
    assert [row["id"] for row in r.json()["data"]] == [2, 1]


def test_a_url_of_dots_is_a_quick_4xx(client: TestClient) -> None:
    dots = "." * 30_000
    start = time.monotonic()
    statuses = [
        client.get(f"/tables/{dots}x/rows").status_code,
        client.get("/tables/spaced/rows", params={"filter": dots}).status_code,
        client.get("/tables/spaced/rows", params={"order": dots}).status_code,
    ]
    assert statuses == [404, 400, 400]
    assert time.monotonic() - start < 5  # the quadratic code needed about 8 s of CPU


# ------------------------------------------------------------------ quoted names, messages


def test_a_quoted_name_is_exact_whitespace_included(client: TestClient) -> None:
    r = client.get("/tables/spaced/rows", params={"select": '" padded",padded', "order": "id"})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0] == {" padded": "with blank", "padded": "without"}
    r = client.get("/tables/spaced/rows", params={"select": 'id, " padded"'})
    assert list(r.json()["data"][0]) == ["id", " padded"]
    r = client.get("/tables/spaced/rows", params={"select": " padded "})  # unquoted: stripped
    assert list(r.json()["data"][0]) == ["padded"]
    r = client.get("/tables/spaced/rows", params={"select": "id", "order": '" padded".desc'})
    assert [row["id"] for row in r.json()["data"]] == [1, 2]  # 'with blank' > 'b'
    r = client.get("/tables/spaced/rows", params={"select": "id", "order": '"padded".desc'})
    assert [row["id"] for row in r.json()["data"]] == [1, 2]  # 'without' > 'a'
    r = client.get("/tables/spaced/rows",
                   params={"select": "id", "order": '"padded" . desc . nullsfirst'})
    assert r.status_code == 400, r.text  # suffixes follow the quote without blanks
    # Quoted means exact: the suffix is not looked for inside the quotes.
    r = client.get("/tables/spaced/rows", params={"select": "id", "order": '"padded.desc"'})
    assert r.status_code == 400 and "'padded.desc'" in r.json()["detail"]
    r = client.get("/tables/spaced/rows", params={"select": "id", "order": '"padded".sideways'})
    assert r.status_code == 400 and "sideways" in r.json()["detail"]
    r = client.get("/tables/spaced/rows", params={"select": '"  padded"'})
    assert r.status_code == 400 and "'  padded'" in r.json()["detail"]


@pytest.mark.parametrize(("order", "named"), [
    ("nosuch.desc", "nosuch"),
    ("nosuch.asc.nullslast", "nosuch"),
    ("nosuch", "nosuch"),
    ("no.such.desc", "no.such"),
])
def test_an_unknown_order_column_is_named_without_its_suffixes(
    client: TestClient, order: str, named: str
) -> None:
    r = client.get("/tables/spaced/rows", params={"order": order})
    assert r.status_code == 400
    assert r.json()["detail"] == f"order: spaced has no column {named!r}"


def test_an_unknown_filter_column_is_named_up_to_its_operator(client: TestClient) -> None:
    r = client.get("/tables/spaced/rows", params={"filter": "no.such.eq.1"})
    assert r.status_code == 400
    assert r.json()["detail"] == "filter: spaced has no column 'no.such'"


# ------------------------------------------------------------------ patterns matching nothing


def test_a_pattern_that_matches_nothing_is_logged_once(
    dsn: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "_warned", set())
    caplog.set_level(logging.WARNING, logger="swagger_server.data.catalog")
    api = {"exclude": ("Spaced", "public.spaced"), "tables": ("*", "nosuch*"), "catalog_ttl": 0}
    CACHE.invalidate()
    with app_client(dsn, api=api) as client:
        assert client.get("/tables/spaced").status_code == 404  # excluded by its exact name
        assert client.get("/tables").status_code == 200  # reloaded (TTL 0): no second warning
    lines = [r.getMessage() for r in caplog.records if "matches no" in r.getMessage()]
    assert len(lines) == 2, lines
    assert any("EXCLUDE pattern 'Spaced'" in line for line in lines)
    assert any("TABLES pattern 'nosuch*'" in line for line in lines)
    assert all("case-sensitive" in line for line in lines)
    CACHE.invalidate()
