"""Review of embedding (issue #9): embedded arrays are bounded (``MAX_EMBED_ROWS``), ``select``
is bounded and parsed in linear time, columns named like the statements' row aliases, self
references and junctions with two keys to one table, aggregated embeds' limit and order."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.pg import TestDatabase, seeded_database

SCHEMA = """
CREATE TABLE parent (id integer PRIMARY KEY);
CREATE TABLE child (id integer PRIMARY KEY, parent_id integer REFERENCES parent, kind text);
INSERT INTO parent VALUES (1), (2);
INSERT INTO child SELECT g, 1, 'k' || (g % 150) FROM generate_series(1, 150) g;
INSERT INTO child VALUES (1000, 2, 'a');
-- columns named like the statements' aliases (row_to_json(o), (x), (g); s, j, n, p, r, e1, k0)
CREATE TABLE t (id integer PRIMARY KEY, o integer, x integer, g integer, s integer, j integer,
                n integer, p integer, r integer, e1 integer, k0 integer);
CREATE TABLE c (id integer PRIMARY KEY, t_id integer REFERENCES t, o text, x text, g text);
INSERT INTO t VALUES (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
INSERT INTO c VALUES (1, 1, 'z', 'y', 'w');
CREATE TABLE employees (id integer PRIMARY KEY, name text NOT NULL,
                        manager_id integer CONSTRAINT employees_manager_fkey REFERENCES employees);
INSERT INTO employees VALUES (1, 'Ann', NULL), (2, 'Ben', 1), (3, 'Cat', 1), (4, 'Dan', 2);
CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE follows (
    follower_id integer CONSTRAINT follows_follower_fkey REFERENCES users,
    followee_id integer CONSTRAINT follows_followee_fkey REFERENCES users,
    PRIMARY KEY (follower_id, followee_id)
);
INSERT INTO users VALUES (1, 'u1'), (2, 'u2'), (3, 'u3');
INSERT INTO follows VALUES (1, 2), (1, 3), (2, 3);
CREATE TABLE docs (id integer PRIMARY KEY, jb jsonb NOT NULL);
INSERT INTO docs VALUES (1, '{"a.b": 1, "a": {"b": 2}, "c:d": 3, "0": "zero", "e\\"f": 4,
                             "list": [5, 6]}');
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "embedreview", SCHEMA)


def rows(client: TestClient, table: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/tables/{table}/rows", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def bad(client: TestClient, url: str, **params: Any) -> dict[str, Any]:
    response = client.get(url, params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


# ------------------------------------------------------------------ 1. MAX_EMBED_ROWS


def test_embedded_array_is_capped_by_default(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    data = rows(client, "parent", select="id,child(id)", filter="id.eq.1")
    assert [c["id"] for c in data[0]["child"]] == list(range(1, 101))  # 150 children, 100 shown


def test_max_embed_rows_caps_pages_row_by_key_and_exports(
        client_for: Callable[..., TestClient]) -> None:
    client = client_for(max_embed_rows=7)
    data = rows(client, "parent", select="id,child(id)", filter="id.eq.1")
    assert len(data[0]["child"]) == 7
    row = client.get("/tables/parent/rows/1", params={"select": "id,child(id)"})
    assert row.status_code == 200 and len(row.json()["child"]) == 7
    ndjson = client.get("/tables/parent/rows", params={"select": "id,child(id)"},
                        headers={"Accept": "application/x-ndjson"})
    assert ndjson.status_code == 200
    assert [len(json.loads(line)["child"]) for line in ndjson.text.splitlines()] == [7, 1]


def test_limit_embed_may_lower_the_cap_only(client_for: Callable[..., TestClient]) -> None:
    client = client_for(max_embed_rows=7)
    data = rows(client, "parent", select="id,child(id)", filter="id.eq.1",
                **{"limit.child": "3"})
    assert [c["id"] for c in data[0]["child"]] == [1, 2, 3]
    problem = bad(client, "/tables/parent/rows", select="id,child(id)", **{"limit.child": "8"})
    assert problem["parameter"] == "limit.child"
    assert "MAX_EMBED_ROWS" in problem["detail"]


def test_aggregated_embed_groups_are_capped(client_for: Callable[..., TestClient]) -> None:
    client = client_for(max_embed_rows=5, aggregates="on")
    data = rows(client, "parent", select="id,child(kind,count())", filter="id.eq.1")
    assert len(data[0]["child"]) == 5  # 150 groups of one


# ------------------------------------------------------------------ 2. select's size


def test_select_items_are_bounded(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    problem = bad(client, "/tables/parent/rows", select=",".join(["*"] * 1665))
    assert problem["parameter"] == "select" and "at most 1664 items" in problem["detail"]
    nested = "id,child(" + ",".join(["*"] * 1665) + ")"
    assert "at most 1664 items" in bad(client, "/tables/parent/rows", select=nested)["detail"]


def test_many_stars_and_aliases_within_the_bound(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    stars = rows(client, "child", select=",".join(["*"] * 1664), filter="id.eq.1")
    assert stars == [{"id": 1, "parent_id": 1, "kind": "k1"}]
    aliases = ",".join(f"a{i}:id" for i in range(1600))
    data = rows(client, "child", select=aliases, filter="id.eq.1")
    assert list(data[0]) == [f"a{i}" for i in range(1600)]


# ------------------------------------------------------------------ 3. columns named o, x, g


T_ROW = {"id": 1, "o": 2, "x": 3, "g": 4, "s": 5, "j": 6, "n": 7, "p": 8, "r": 9, "e1": 10,
         "k0": 11}
C_ROW = {"id": 1, "t_id": 1, "o": "z", "x": "y", "g": "w"}


def test_columns_named_like_row_aliases(client_for: Callable[..., TestClient]) -> None:
    client = client_for(aggregates="on")
    assert rows(client, "t") == [T_ROW]
    assert rows(client, "t", select="id,o,x,g") == [{"id": 1, "o": 2, "x": 3, "g": 4}]
    row = client.get("/tables/t/rows/1")
    assert row.status_code == 200 and row.json() == T_ROW
    ndjson = client.get("/tables/t/rows", headers={"Accept": "application/x-ndjson"})
    assert ndjson.status_code == 200 and json.loads(ndjson.text) == T_ROW
    csv_text = client.get("/tables/t/rows", params={"select": "o,c(o)"},
                          headers={"Accept": "text/csv"})
    assert csv_text.status_code == 200
    assert csv_text.text.splitlines() == ["o,c", '2,"[{""o"":""z""}]"']
    assert rows(client, "t", select="o:id,x:o") == [{"o": 1, "x": 2}]
    assert rows(client, "t", select="id,c(*)") == [{"id": 1, "c": [C_ROW]}]
    assert rows(client, "c", select="o,t(o,x,g)") == [
        {"o": "z", "t": {"o": 2, "x": 3, "g": 4}}]
    row = client.get("/tables/t/rows/1", params={"select": "o,c(o)"})
    assert row.status_code == 200 and row.json() == {"o": 2, "c": [{"o": "z"}]}


def test_aggregates_with_columns_named_like_row_aliases(
        client_for: Callable[..., TestClient]) -> None:
    client = client_for(aggregates="on")
    assert rows(client, "t", select="x,count()") == [{"x": 3, "count": 1}]
    assert rows(client, "t", select="g:id,x:count()") == [{"g": 1, "x": 1}]
    assert rows(client, "t", select="id,c(g,count())") == [{"id": 1, "c": [{"g": "w",
                                                                            "count": 1}]}]
    ndjson = client.get("/tables/t/rows", params={"select": "x,count()"},
                        headers={"Accept": "application/x-ndjson"})
    assert ndjson.status_code == 200 and json.loads(ndjson.text) == {"x": 3, "count": 1}


# ------------------------------------------------------------------ 4. a key seen both ways


def test_self_reference_both_directions(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    data = rows(client, "employees", order="id",
                select="name,boss:employees!manager_id(name),"
                       "team:employees!manager_id.reverse(name)")
    assert data == [
        {"name": "Ann", "boss": None, "team": [{"name": "Ben"}, {"name": "Cat"}]},
        {"name": "Ben", "boss": {"name": "Ann"}, "team": [{"name": "Dan"}]},
        {"name": "Cat", "boss": {"name": "Ann"}, "team": []},
        {"name": "Dan", "boss": {"name": "Ben"}, "team": []}]
    by_name = rows(client, "employees", filter="id.eq.2",
                   select="id,m:employees!employees_manager_fkey(id),"
                          "r:employees!employees_manager_fkey.reverse(id)")
    assert by_name == [{"id": 2, "m": {"id": 1}, "r": [{"id": 4}]}]
    problem = bad(client, "/tables/employees/rows", select="id,employees(id)")
    assert problem["type"] == "/problems/ambiguous-embed"
    hints = sorted(c["hint"] for c in problem["candidates"])
    assert hints == ["employees_manager_fkey", "employees_manager_fkey.reverse"]
    for hint in hints:  # each candidate's hint picks it
        rows(client, "employees", select=f"id,employees!{hint}(id)")


def test_junction_with_two_keys_to_one_table(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    data = rows(client, "users", order="id",
                select="name,following:users!followee_id(name),"
                       "followers:users!follows_follower_fkey(name)")
    assert data == [
        {"name": "u1", "following": [{"name": "u2"}, {"name": "u3"}], "followers": []},
        {"name": "u2", "following": [{"name": "u3"}], "followers": [{"name": "u1"}]},
        {"name": "u3", "following": [], "followers": [{"name": "u1"}, {"name": "u2"}]}]
    problem = bad(client, "/tables/users/rows", select="id,users(id)")
    hints = sorted(c["hint"] for c in problem["candidates"])
    assert hints == ["follows_followee_fkey", "follows_follower_fkey"]
    assert bad(client, "/tables/users/rows",
               select="id,users!follows(id)")["type"] == "/problems/ambiguous-embed"
    # the junction itself, one-to-many by either key, as before
    assert rows(client, "users", filter="id.eq.1", select="id,follows!follower_id(followee_id)") \
        == [{"id": 1, "follows": [{"followee_id": 2}, {"followee_id": 3}]}]


# ------------------------------------------------------------------ 5. strict numbers, names


@pytest.mark.parametrize("name", ["limit", "offset", "limit.child"])
@pytest.mark.parametrize("value", ["1_0", "\u0663", " 3", "3 ", "+3", "0x3", "3.0", ""])
def test_numbers_are_ascii_digits_only(client_for: Callable[..., TestClient], name: str,
                                       value: str) -> None:
    client = client_for()
    problem = bad(client, "/tables/parent/rows", select="id,child(id)", **{name: value})
    assert problem["parameter"] == name and "integer" in problem["detail"]  # or Connexion's


def test_huge_numbers_are_out_of_range(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    for name in ("limit", "offset", "limit.child"):  # Connexion refuses the first two first
        problem = bad(client, "/tables/parent/rows", select="id,child(id)", **{name: "9" * 5000})
        assert problem["parameter"] == name
    for name, why in (("limit", "must be between"), ("offset", "at most"),
                      ("limit.child", "must be between")):
        problem = bad(client, "/tables/parent/rows", select="id,child(id)", **{name: "9" * 19})
        assert problem["parameter"] == name and why in problem["detail"], problem
    problem = bad(client, "/tables/parent/rows", select="id,child(id)",
                  **{"limit.child": "9" * 5000})
    assert "must be between" in problem["detail"]
    assert rows(client, "parent", select="id,child(id)", limit="0001", offset="1",
                **{"limit.child": "02"}) == [{"id": 2, "child": [{"id": 1000}]}]


def test_limit_embed_with_a_trailing_dot(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    problem = bad(client, "/tables/parent/rows", select="id,child(id)", **{"limit.child.": "3"})
    assert problem["parameter"] == "limit.child."


def test_select_json_keys_parse_as_in_filters(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    data = rows(client, "docs", select='jb->"a.b",x:jb->a->>b,jb->"c:d",jb->>"0",'
                                       'q:jb->"e""f",jb->list->-1')
    assert data == [{"a.b": 1, "x": "2", "c:d": 3, "0": "zero", "q": 4, "-1": 6}]
    # the same quoted key in filters and order
    assert rows(client, "docs", select="id", filter='jb->"a.b".eq.1', order='jb->"a.b".desc') \
        == [{"id": 1}]
    problem = bad(client, "/tables/docs/rows", select="jb->a.b")
    assert problem["parameter"] == "select" and '"a.b"' in problem["detail"]
    assert "unterminated" in bad(client, "/tables/docs/rows", select='jb->"a')["detail"]


def test_aggregated_embed_takes_order_and_limit(client_for: Callable[..., TestClient]) -> None:
    client = client_for(aggregates="on")
    data = rows(client, "parent", select="id,child(kind,n:count())",
                order="id,child.kind.desc", **{"limit.child": "2"})
    assert data == [{"id": 1, "child": [{"kind": "k99", "n": 1}, {"kind": "k98", "n": 1}]},
                    {"id": 2, "child": [{"kind": "a", "n": 1}]}]
    totals = rows(client, "parent", select="id,child(n:count(),top:id.max())",
                  order="child.top.desc")
    assert totals == [{"id": 1, "child": [{"n": 150, "top": 150}]},
                      {"id": 2, "child": [{"n": 1, "top": 1000}]}]
    problem = bad(client, "/tables/parent/rows", select="id,child(kind,count())",
                  order="child.nosuch.desc")
    assert problem["parameter"] == "order" and "names a field of select" in problem["detail"]
