# ruff: noqa: E501 (the test rows read best one per line)
"""GET /tables/{table}/rows (JSON pages) and /rows/{key}: filters, select, order, limits, counts,
rendering of every common type, views without a key, statement timeout. Real PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.app import create_app
from tests.conftest import app_client, make_settings
from tests.pg import TestDatabase, seeded_database

SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE items (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    qty     integer,
    price   numeric(30, 10),
    big     numeric,
    ratio   double precision,
    flag    boolean,
    born    date,
    at      timestamptz,
    doc     jsonb,
    raw     json,
    tags    text[],
    blob    bytea,
    mood    mood,
    code    char(3),
    uid     uuid
);
INSERT INTO items VALUES
 (1, 'apple',    5,    1.5,   12345678901234567890.123456789012345678, 0.5,  true,  '2020-01-31',
  '2024-03-01 12:00:00+00', '{"a": 1, "b": [1, 2]}', '{"x": null}', '{red,green}', '\x00ff10', 'happy', 'abc',
  '00000000-0000-0000-0000-000000000001'),
 (2, 'Banana',   NULL, 2.25,  1,  'NaN', false, '2021-02-28', '2024-03-02 00:00:00+00', '[]', '1', '{}', '', 'sad', 'x',
  '00000000-0000-0000-0000-000000000002'),
 (3, 'cherry',   12,   NULL,  -0.000000000000000001, 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 'date, "dried"', 5, 10,  0, -1.25, true, '1999-12-31', '1999-12-31 23:59:59.123456+00', '{"k": "v"}', '"s"', '{"a,b","c\"d"}', '\xdeadbeef', 'ok', 'zz', NULL),
 (5, 'elder%_*', 0, 0.1, 2, 1e-300, false, '2000-02-29', '2000-02-29 00:00:00+00', 'null', 'null', '{NULL,x}', NULL, 'ok', NULL, NULL),
 (6, 'fig',      NULL, 3,     3, 2,     NULL,  '2022-06-15', '2022-06-15 10:30:00+02', '{}', '{}', '{only}', '\x41', 'happy', 'fig', NULL),
 (7, 'Ünïcødé ☃', 7, 7,    7, 7,     true,  '2023-07-07', '2023-07-07 07:07:07+00', '{"emoji": "😀"}', '[1]', '{😀}', NULL, 'sad', NULL, NULL);
CREATE TABLE pairs (a integer, b text, val integer NOT NULL, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT i % 5, 'k' || (i / 5), i FROM generate_series(0, 49) AS i;
INSERT INTO pairs VALUES (1, 'with,comma', 1000), (1, 'with"quote', 1001);
CREATE VIEW items_view AS SELECT id, name, qty FROM items;
CREATE TABLE nokey (n integer, label text);
INSERT INTO nokey SELECT i, 'n' || i FROM generate_series(1, 25) AS i;
CREATE VIEW slow AS SELECT g AS id, pg_sleep(0.3) IS NULL AS slept FROM generate_series(1, 20) AS g;
CREATE TABLE refs (id integer PRIMARY KEY, rel regclass, typ regtype, fn regproc);
INSERT INTO refs VALUES (1, 'items', 'integer', 'now'), (2, 'pairs', 'text', 'version');
CREATE VIEW ratios AS SELECT id, 1 / (id - 3) AS inverse FROM generate_series(1, 5) AS id;
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "rows", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str, route: Callable[[str], Any]) -> Iterator[TestClient]:
    url, database = route(dsn)  # directly, then through PgBouncer (transaction mode)
    with app_client(url, database=database, api={"max_rows": 50, "default_limit": 4}) as client:
        yield client


def rows(client: TestClient, table: str = "items", **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/tables/{table}/rows", params={"limit": 50, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def ids(client: TestClient, *filters: str, **params: Any) -> list[int]:
    return [row["id"] for row in rows(client, filter=list(filters), **params)]


def problem(client: TestClient, path: str, status: int = 400, **params: Any) -> dict[str, Any]:
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


# ---------------------------------------------------------------------- filters


@pytest.mark.parametrize(("flt", "expected"), [
    ("qty.eq.5", [1, 4]),
    ("qty.neq.5", [3, 5, 7]),  # NULLs never match neq (SQL semantics)
    ("qty.lt.5", [5]),
    ("qty.lte.5", [1, 4, 5]),
    ("qty.gt.5", [3, 7]),
    ("qty.gte.7", [3, 7]),
    ("price.eq.1.5", [1]),  # numeric: the value holds a dot
    ("price.gt.2.2", [2, 4, 6, 7]),
    ("big.eq.12345678901234567890.123456789012345678", [1]),
    ("ratio.gt.1", [2, 3, 6, 7]),  # NaN and Infinity sort above every number
    ("born.lt.2000-01-01", [4]),
    ("born.gte.2022-06-15", [6, 7]),
    ("at.gt.2024-03-01T11:00:00Z", [1, 2]),
    ("at.eq.2022-06-15T08:30:00Z", [6]),  # the same instant written in another zone
    ("at.lt.2000-01-01 01:00:00+01", [4]),  # "+" must reach PostgreSQL intact
    ("name.eq.apple", [1]),
    ("name.eq.date, \"dried\"", [4]),
    ("name.gt.d", [4, 5, 6, 7]),
    ("mood.eq.happy", [1, 6]),
    ("mood.gt.sad", [1, 4, 5, 6]),  # enum order, not alphabetical
    ("uid.eq.00000000-0000-0000-0000-000000000002", [2]),
    ("code.eq.x", [2]),  # char(3): padding does not matter
    ("flag.eq.true", [1, 4, 7]),
    ("doc.eq.{\"k\":\"v\"}", [4]),  # jsonb equality
    ("tags.eq.{only}", [6]),
    ("blob.eq.\\x41", [6]),
])
def test_comparison_filters_per_type(client: TestClient, flt: str, expected: list[int]) -> None:
    assert ids(client, flt) == expected


@pytest.mark.parametrize(("flt", "expected"), [
    ("name.like.*an*", [2]),
    ("name.ilike.*AN*", [2]),
    ("name.like.?pple", []),  # only * is a wildcard besides SQL's own % and _
    ("name.like.elder%_*", [5]),
    ("name.ilike.ünï*", [7]),
    ("qty.like.1*", [3]),  # like works on the text of any type
    ("id.in.(1,3,5)", [1, 3, 5]),
    ("name.in.(apple,\"date, \"\"dried\"\"\",fig)", [1, 4, 6]),
    ("mood.in.(ok)", [4, 5]),
    ("id.in.()", []),
    ("qty.is.null", [2, 6]),
    ("qty.is.notnull", [1, 3, 4, 5, 7]),
    ("flag.is.true", [1, 4, 7]),
    ("flag.is.false", [2, 5]),
    ("flag.is.null", [3, 6]),
])
def test_pattern_list_and_is_filters(client: TestClient, flt: str, expected: list[int]) -> None:
    assert ids(client, flt) == expected


def test_every_filter_must_hold(client: TestClient) -> None:
    assert ids(client, "qty.gte.5", "flag.is.true", "name.neq.apple") == [4, 7]


def test_a_column_name_holding_dots_and_a_value_holding_ops(client: TestClient) -> None:
    assert ids(client, "name.eq.x.eq.y") == []


@pytest.mark.parametrize(("flt", "column"), [
    ("qty.eq.abc", "qty"),
    ("qty.gt.99999999999", "qty"),
    ("at.gt.yesterday-ish", "at"),
    ("born.eq.2021-02-30", "born"),
    ("uid.eq.123", "uid"),
    ("mood.eq.angry", "mood"),
    ("doc.eq.{nope", "doc"),
    ("id.in.(1,two,3)", "id"),
    ("price.lt.1e9999999", "price"),
    ("tags.eq.not-an-array", "tags"),
])
def test_a_value_the_type_rejects_is_a_400_naming_the_column(
    client: TestClient, flt: str, column: str
) -> None:
    body = problem(client, "/tables/items/rows", filter=flt)
    assert body["type"] == "/problems/invalid-value"
    assert body["column"] == column
    assert repr(column) in body["detail"]
    assert client.get("/tables/items/rows").status_code == 200  # the connection is fine


@pytest.mark.parametrize(("flt", "fragment"), [
    ("nope.eq.1", "no column 'nope'"),
    ("qty.foo.1", "expected <column>.<op>.<value>"),
    ("qty", "expected <column>.<op>.<value>"),
    ("qty.eq", "expected <column>.<op>.<value>"),
    ("qty.is.maybe", "is takes null"),
    ("qty.is.true", "needs a boolean column"),
    ("qty.in.1,2", "in takes a list"),
    ("name.in.(\"open)", "unterminated"),
])
def test_malformed_filters_are_400(client: TestClient, flt: str, fragment: str) -> None:
    body = problem(client, "/tables/items/rows", filter=flt)
    assert body["type"] == "/problems/invalid-parameter"
    assert fragment in body["detail"]


def test_an_operator_the_type_lacks_is_a_400(client: TestClient) -> None:
    body = problem(client, "/tables/items/rows", filter="raw.eq.1")  # json has no equality
    assert body["type"] == "/problems/unsupported-operation"
    body = problem(client, "/tables/items/rows", order="raw")
    assert body["type"] == "/problems/unsupported-operation"


@pytest.mark.parametrize(("flt", "column"), [
    ("rel.eq.nosuchtable", "rel"),  # UndefinedTable, as for a dropped table
    ("rel.in.(items,nosuch.schema_table)", "rel"),
    ("typ.eq.nosuchtype", "typ"),  # UndefinedObject, as for a dropped type
    ("fn.eq.nosuchfunction", "fn"),  # UndefinedFunction, as for an operator the type lacks
    ("fn.eq.lower", "fn"),  # AmbiguousFunction
])
def test_a_reg_value_naming_nothing_is_a_400_not_a_catalog_change(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, flt: str, column: str
) -> None:
    from swagger_server.controllers import tables_controller

    reloads: list[int] = []
    monkeypatch.setattr(tables_controller.CACHE, "invalidate", lambda: reloads.append(1))
    body = problem(client, "/tables/refs/rows", filter=flt)
    assert body["type"] == "/problems/invalid-value"
    assert body["column"] == column and body["parameter"] == "filter"
    assert reloads == []  # the worker's catalog stays as it is
    assert [r["id"] for r in rows(client, "refs", filter="rel.eq.pairs")] == [2]
    assert [r["id"] for r in rows(client, "refs", filter="typ.eq.int4")] == [1]


def test_a_server_side_data_error_is_a_500_not_the_clients_fault(client: TestClient) -> None:
    for params in ({}, {"filter": "id.gte.1"}, {"filter": "id.in.(2,3)"}):
        r = client.get("/tables/ratios/rows", params=params)  # division by zero in the view
        assert r.status_code == 500, r.text
        body = r.json()
        assert body["type"] == "/problems/internal-error" and body["request_id"]
    assert rows(client, "ratios", filter="id.neq.3") == [
        {"id": 1, "inverse": -0}, {"id": 2, "inverse": -1}, {"id": 4, "inverse": 1},
        {"id": 5, "inverse": 0}]


@pytest.mark.parametrize("op", ["like", "ilike"])
def test_a_like_pattern_postgresql_rejects_is_a_400_naming_the_column(
    client: TestClient, op: str
) -> None:
    for pattern in ("apple\\", "*\\", "a\\\\\\"):  # ends with an unescaped escape
        body = problem(client, "/tables/items/rows", filter=f"name.{op}.{pattern}")
        assert body["type"] == "/problems/invalid-value"
        assert body["column"] == "name" and "escape character" in body["detail"]
    assert ids(client, f"name.{op}.elder\\%*") == [5]  # an escaped % is a literal %
    assert ids(client, f"name.{op}.x\\\\") == []  # an escaped backslash is fine


@pytest.mark.parametrize(("param", "values"), [
    ("select", ["id", "name"]),
    ("order", ["id", "name"]),
    ("limit", ["1", "2"]),
    ("limit", ["1", "1"]),
    ("offset", ["0", "1"]),
    ("cursor", ["a.b", "c.d"]),
    ("count", ["exact", "estimated"]),
])
def test_a_single_valued_parameter_given_twice_is_a_400(
    client: TestClient, param: str, values: list[str]
) -> None:
    for accept in ("application/json", "text/csv"):
        r = client.get("/tables/items/rows", params={param: values},
                       headers={"Accept": accept})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["type"] == "/problems/invalid-parameter" and body["parameter"] == param
        assert param in body["detail"]
    if param == "select":
        body = problem(client, "/tables/items/rows/1", select=values)
        assert body["parameter"] == "select"


# ---------------------------------------------------------------------- select and order


def test_select_returns_those_columns_in_that_order(client: TestClient) -> None:
    r = client.get("/tables/items/rows", params={"select": "name,id", "limit": 2})
    assert r.json()["data"] == [{"name": "apple", "id": 1}, {"name": "Banana", "id": 2}]
    assert list(r.json()["data"][0]) == ["name", "id"]
    body = problem(client, "/tables/items/rows", select="id,secret")
    assert "no column 'secret'" in body["detail"]
    assert problem(client, "/tables/items/rows", select="id,,name")["parameter"] == "select"


def test_order_with_directions_and_nulls(client: TestClient) -> None:
    assert ids(client, order="qty") == [5, 1, 4, 7, 3, 2, 6]  # NULLs last, id breaks ties
    assert ids(client, order="qty.desc") == [2, 6, 3, 7, 1, 4, 5]  # NULLs first
    assert ids(client, order="qty.desc.nullslast") == [3, 7, 1, 4, 5, 2, 6]
    assert ids(client, order="qty.asc.nullsfirst") == [2, 6, 5, 1, 4, 7, 3]
    assert ids(client, order="qty.nullsfirst,name.desc") == [6, 2, 5, 4, 1, 7, 3]
    assert ids(client, order="id.desc") == [7, 6, 5, 4, 3, 2, 1]


@pytest.mark.parametrize("order", ["qty.up", "qty.desc.asc", "qty.nullsfirst.desc.x", "nope",
                                   "qty,qty", "qty.desc.nullsfirst.nullslast"])
def test_bad_orders_are_400(client: TestClient, order: str) -> None:
    assert problem(client, "/tables/items/rows", order=order)["parameter"] == "order"


# ---------------------------------------------------------------------- limits, offset, count


def test_limits(client: TestClient) -> None:
    r = client.get("/tables/items/rows")
    assert len(r.json()["data"]) == 4  # DEFAULT_LIMIT
    assert r.json()["next_cursor"]
    assert 'rel="next"' in r.headers["link"]
    assert len(rows(client, limit=50)) == 7
    problem(client, "/tables/items/rows", limit=51)  # above MAX_ROWS
    problem(client, "/tables/items/rows", limit=0)
    problem(client, "/tables/items/rows", limit="ten")


def test_offset(client: TestClient) -> None:
    assert [r["id"] for r in rows(client, offset=5)] == [6, 7]
    assert rows(client, offset=100_000) == []  # MAX_OFFSET, the default
    assert "cursor" in problem(client, "/tables/items/rows", offset=100_001)["detail"]
    problem(client, "/tables/items/rows", offset=-1)


def test_last_page_has_no_next(client: TestClient) -> None:
    r = client.get("/tables/items/rows", params={"limit": 7})
    assert r.json()["next_cursor"] is None
    assert "link" not in r.headers


def test_counts(client: TestClient) -> None:
    r = client.get("/tables/items/rows", params={"count": "exact", "limit": 2,
                                                  "filter": "qty.is.notnull"})
    assert r.json()["total"] == 5
    assert r.headers["x-total-count"] == "5"
    assert len(r.json()["data"]) == 2
    r = client.get("/tables/items/rows", params={"count": "estimated"})
    assert 1 <= r.json()["total"] <= 20
    assert r.headers["x-total-count"] == str(r.json()["total"])
    assert "total" not in client.get("/tables/items/rows").json()
    problem(client, "/tables/items/rows", count="roughly")


# ---------------------------------------------------------------------- rendering


def test_types_render_to_sensible_json(client: TestClient) -> None:
    r = client.get("/tables/items/rows", params={"limit": 7})
    data = {row["id"]: row for row in r.json()["data"]}
    apple = data[1]
    assert apple["qty"] == 5 and isinstance(apple["qty"], int)
    assert apple["price"] == 1.5
    assert apple["ratio"] == 0.5
    assert apple["flag"] is True
    assert apple["born"] == "2020-01-31"
    assert apple["at"].startswith("2024-03-01T12:00:00")  # ISO 8601 with the offset
    assert apple["doc"] == {"a": 1, "b": [1, 2]}
    assert apple["raw"] == {"x": None}
    assert apple["tags"] == ["red", "green"]
    assert base64.b64decode(apple["blob"]) == b"\x00\xff\x10"
    assert apple["mood"] == "happy"
    assert apple["code"] == "abc"
    assert apple["uid"] == "00000000-0000-0000-0000-000000000001"
    assert data[2]["ratio"] == "NaN" and data[3]["ratio"] == "Infinity"
    assert data[2]["blob"] == ""
    assert data[4]["tags"] == ["a,b", 'c"d']
    assert data[5]["tags"] == [None, "x"]
    assert data[5]["doc"] is None  # a JSON null in jsonb reads as null too
    assert data[7]["name"] == "Ünïcødé ☃" and data[7]["doc"] == {"emoji": "😀"}
    assert all(v is None for k, v in data[3].items() if k not in ("id", "name", "qty", "big",
                                                                    "ratio"))
    # numeric: every digit reaches the client, as a JSON number
    exact = json.loads(r.text, parse_float=Decimal)["data"]
    assert exact[0]["big"] == Decimal("12345678901234567890.123456789012345678")
    assert exact[2]["big"] == Decimal("-0.000000000000000001")
    assert exact[0]["price"] == Decimal("1.5000000000")
    assert '"big":12345678901234567890.123456789012345678' in r.text


# ---------------------------------------------------------------------- row by key


def test_row_by_key(client: TestClient) -> None:
    r = client.get("/tables/items/rows/4")
    assert r.status_code == 200
    assert r.json()["name"] == 'date, "dried"'
    assert client.get("/tables/items/rows/4", params={"select": "id,qty"}).json() == {
        "id": 4, "qty": 5}
    assert problem(client, "/tables/items/rows/99", 404)["type"] == "/problems/not-found"
    body = problem(client, "/tables/items/rows/abc")
    assert body["column"] == "id"
    assert "1-column primary key" in problem(client, "/tables/items/rows/1,2")["detail"]


def test_row_by_composite_key(client: TestClient) -> None:
    assert client.get("/tables/pairs/rows/3,k2").json() == {"a": 3, "b": "k2", "val": 13}
    assert client.get('/tables/pairs/rows/1,"with,comma"').json()["val"] == 1000
    assert client.get('/tables/pairs/rows/1,"with""quote"').json()["val"] == 1001
    problem(client, "/tables/pairs/rows/3", 400)
    problem(client, "/tables/pairs/rows/3,k2,x", 400)
    problem(client, "/tables/pairs/rows/3,nope", 404)
    assert problem(client, "/tables/pairs/rows/x,k2")["column"] == "a"


def test_keyless_relations_page_by_offset(client: TestClient) -> None:
    seen: list[int] = []
    url: str | None = "/tables/nokey/rows?limit=10&order=n.desc"
    while url:
        r = client.get(url)
        assert r.status_code == 200
        assert r.json()["next_cursor"] is None
        seen += [row["n"] for row in r.json()["data"]]
        link = r.headers.get("link")
        url = link[1:link.index(">")] if link else None
    assert seen == list(range(25, 0, -1))
    body = problem(client, "/tables/nokey/rows", cursor="abc.def")
    assert "no primary key" in body["detail"]
    assert "no primary key" in problem(client, "/tables/items_view/rows/1")["detail"]
    assert rows(client, "items_view", order="id")[0] == {"id": 1, "name": "apple", "qty": 5}


def test_cursor_and_offset_together_are_400(client: TestClient) -> None:
    cursor = client.get("/tables/items/rows", params={"limit": 2}).json()["next_cursor"]
    body = problem(client, "/tables/items/rows", cursor=cursor, offset=2)
    assert "together" in body["detail"]


def test_unknown_query_parameters_are_400(client: TestClient) -> None:
    assert client.get("/tables/items/rows", params={"sort": "id"}).status_code == 400


# ---------------------------------------------------------------------- statement timeout


def test_statement_timeout_is_a_504_and_the_connection_comes_back_clean(dsn: str) -> None:
    db.close_pool()
    app = create_app(make_settings(dsn, pool={"statement_timeout": 200, "max_size": 1,
                                               "min_size": 1}))
    client = app.test_client()
    try:
        for accept in ("application/json", "application/x-ndjson", "text/csv"):
            r = client.get("/tables/slow/rows", headers={"Accept": accept})
            assert r.status_code == 504, r.text
            assert r.json()["type"] == "/problems/statement-timeout"
            # max_size=1: the next request needs that very connection, idle and clean
            r = client.get("/tables/items/rows", params={"limit": 1})
            assert r.status_code == 200
            stats = client.get("/pool").json()
            assert (stats["in_use"], stats["size"]) == (0, 1)
    finally:
        db.close_pool()
