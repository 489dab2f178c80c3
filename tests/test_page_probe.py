"""The page statement's two forms (swagger_server/data/query.py): a plain page of a table walks
its rows twice (``_probed_page_sql``: the JSON, then a probe of the key columns), any other page
numbers them once (``_windowed_page_sql``). Both must answer the same, byte for byte: the JSON
text, the rows fetched (``limit + 1`` when a next page exists) and the key of row ``limit``.
Real PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from starlette.testclient import TestClient

from swagger_server.config import ApiSettings
from swagger_server.data import catalog, embed, query
from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

ROWS = 23
SCHEMA = f"""
CREATE TABLE t (id integer PRIMARY KEY, a integer, b text, blob bytea, doc jsonb, extra text);
INSERT INTO t
SELECT i, CASE WHEN i % 4 = 0 THEN NULL ELSE i % 5 END, 'b' || (i % 3),
       CASE WHEN i % 2 = 0 THEN decode(lpad(to_hex(i), 4, '0'), 'hex') END,
       jsonb_build_object('k', i % 6, 's', 'x' || i), 'e'
FROM generate_series(1, {ROWS}) i;
CREATE TABLE pair (x integer, y integer, v text, PRIMARY KEY (x, y));
INSERT INTO pair SELECT i % 4, i, 'v' || i FROM generate_series(1, 17) i;
-- Columns named as the statements' own aliases and result columns.
CREATE TABLE clash (r integer, x integer, k integer, p integer, j integer, n integer,
                    keys integer, PRIMARY KEY (k, x));
INSERT INTO clash SELECT i, i % 2, i, i, i, i, i FROM generate_series(1, 9) i;
CREATE TABLE empty_t (id integer PRIMARY KEY, v text);
-- One-column keys of other types: the page's last key is their max() (min() going down).
CREATE TABLE coded (code varchar(8) PRIMARY KEY, v integer);
INSERT INTO coded SELECT 'c' || lpad(i::text, 2, '0') || CASE WHEN i % 3 = 0 THEN 'Z' ELSE 'a' END,
                         i FROM generate_series(1, 13) i;
-- A type of another schema named like a built-in one: it has no max().
CREATE TYPE public.int4 AS (a integer);
CREATE TABLE lookalike (id public.int4 PRIMARY KEY, v integer);
INSERT INTO lookalike SELECT ROW(i)::public.int4, i FROM generate_series(1, 7) i;
-- A one-column key named like the statement's aliases.
CREATE TABLE clash1 (p integer PRIMARY KEY, k integer, x integer, j text, n integer, r integer);
INSERT INTO clash1 SELECT i, i, i, 'j' || i, i, i FROM generate_series(1, 9) i;
CREATE TABLE stamped (at timestamptz PRIMARY KEY, amount numeric(8, 2));
INSERT INTO stamped SELECT '2026-01-01 00:00:00.5+00'::timestamptz + i * interval '1 hour',
                           i * 1.50 FROM generate_series(1, 13) i;
CREATE TABLE nokey (v integer);
INSERT INTO nokey SELECT i % 3 FROM generate_series(1, 11) i;
CREATE VIEW v AS SELECT id, a, b FROM t;
CREATE MATERIALIZED VIEW mv AS SELECT id, a FROM t;
CREATE TABLE secured (id integer PRIMARY KEY, v text);
ALTER TABLE secured ENABLE ROW LEVEL SECURITY;
CREATE POLICY odd ON secured USING (id % 2 = 1);
INSERT INTO secured SELECT i, 's' || i FROM generate_series(1, 5) i;
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pageprobe_reader') THEN
        CREATE ROLE pageprobe_reader NOLOGIN;
    END IF;
END $$;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO pageprobe_reader;
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "pageprobe", SCHEMA)


@pytest.fixture(scope="module")
def conn(dsn: str) -> Iterator[Any]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        yield conn


@pytest.fixture(scope="module")
def cat(conn: Any) -> catalog.Catalog:
    return catalog.load(conn, ApiSettings())


def _query(cat: catalog.Catalog, table: str, *, order: str | None = None,
           select: str | None = None, limit: int = 5, offset: int = 0,
           after: list[str | None] | None = None) -> query.RowsQuery:
    relation = cat.resolve(table)
    assert relation is not None
    terms, unique = query.parse_order(relation, order)
    return query.RowsQuery(relation=relation, columns=query.parse_select(relation, select),
                           order=terms, unique=unique, limit=limit, offset=offset, after=after)


def _run(conn: Any, built: tuple[Any, dict[str, Any]]) -> tuple[str, int, list[str] | None]:
    with conn.cursor() as cur:
        cur.execute(*built)
        return cur.fetchone()


def _same(conn: Any, q: query.RowsQuery) -> tuple[str, int, list[str] | None]:
    probed = _run(conn, query._probed_page_sql(q))
    windowed = _run(conn, query._windowed_page_sql(q))
    assert probed[0] == windowed[0]  # the JSON text itself, not only what it parses to
    assert probed[1] == windowed[1]
    if q.unique and probed[1] > q.limit:
        assert probed[2] == windowed[2]
    return probed


ORDERS = [None, "id.desc", "a.desc", "a.nullsfirst", "a.desc.nullslast,b", "b.desc", "doc->>s",
          "doc->k.desc", "blob"]


@pytest.mark.parametrize("order", ORDERS)
def test_every_page_to_the_end_is_the_same_in_both_forms(conn: Any, cat: catalog.Catalog,
                                                          order: str | None) -> None:
    for limit in (1, 4, 5, 22, 23, 24, 40):
        seen: list[Any] = []
        after = None
        for _ in range(ROWS + 2):
            q = _query(cat, "t", order=order, limit=limit, after=after)
            data, fetched, key = _same(conn, q)
            seen += json.loads("[" + (data or "") + "]")
            if fetched <= limit:
                break
            after = key
        # Every row once, in the order asked: the pages followed by key cover the table.
        assert sorted(r["id"] for r in seen) == list(range(1, ROWS + 1)), (order, limit)


@pytest.mark.parametrize(("limit", "offset"),
                         list(itertools.product((1, 5, 23), (0, 3, 18, 22, 23, 30))))
def test_pages_by_offset_are_the_same_in_both_forms(conn: Any, cat: catalog.Catalog,
                                                    limit: int, offset: int) -> None:
    data, fetched, _ = _same(conn, _query(cat, "t", order="a", limit=limit, offset=offset))
    rows = max(0, min(limit, ROWS - offset))
    assert len(json.loads("[" + (data or "") + "]")) == rows
    assert fetched == rows + (1 if offset + limit < ROWS else 0)


def test_composite_keys_no_key_and_no_rows_are_the_same_in_both_forms(
        conn: Any, cat: catalog.Catalog) -> None:
    after = None
    rows = 0
    while True:
        data, fetched, key = _same(conn, _query(cat, "pair", order="v.desc", limit=3,
                                                after=after))
        rows += len(json.loads("[" + (data or "") + "]"))
        if fetched <= 3:
            break
        assert len(key) == 3  # v, then the key's x and y
        after = key
    assert rows == 17
    for offset in (0, 9, 11):
        _same(conn, _query(cat, "nokey", limit=3, offset=offset))  # no order: the count alone
    assert _same(conn, _query(cat, "empty_t", limit=3))[:2] == (None, 0)
    for order in (None, "n.desc", "keys", "r.desc,j"):
        after, rows = None, 0
        while True:
            data, fetched, key = _same(conn, _query(cat, "clash", order=order, limit=2,
                                                    after=after))
            assert all(set(row) == {"r", "x", "k", "p", "j", "n", "keys"}
                       for row in json.loads("[" + (data or "") + "]"))
            rows += len(json.loads("[" + (data or "") + "]"))
            if fetched <= 2:
                break
            after = key
        assert rows == 9, order


@pytest.mark.parametrize(("table", "order"), [("coded", None), ("coded", "code.desc"),
                                              ("stamped", None), ("stamped", "at.desc"),
                                              ("clash1", None), ("clash1", "p.desc"),
                                              ("empty_t", "id.desc")])
def test_one_column_keys_of_other_types_are_the_same_in_both_forms(
        conn: Any, cat: catalog.Catalog, table: str, order: str | None) -> None:
    for limit in (1, 4, 13, 14):
        after, rows = None, 0
        while True:
            q = _query(cat, table, order=order, limit=limit, after=after)
            assert "LIMIT 2 OFFSET" not in query._probed_page_sql(q)[0].as_string(conn)
            data, fetched, key = _same(conn, q)
            rows += len(json.loads("[" + (data or "") + "]"))
            if fetched <= limit:
                break
            after = key
        assert rows == {"empty_t": 0, "clash1": 9}.get(table, 13), (table, order, limit)


def test_the_probe_walks_the_rows_twice_only_without_a_one_column_key_in_the_page(
        conn: Any, cat: catalog.Catalog) -> None:
    def walks_twice(q: query.RowsQuery) -> bool:
        return "LIMIT 2 OFFSET" in query._probed_page_sql(q)[0].as_string(conn)

    assert not walks_twice(_query(cat, "t"))
    assert not walks_twice(_query(cat, "t", order="id.desc", after=["7"]))
    assert walks_twice(_query(cat, "t", select="b,a"))  # the key is not among the columns
    assert walks_twice(_query(cat, "pair"))  # a two-column key
    assert walks_twice(_query(cat, "t", order="a"))  # a, then id: two columns
    assert walks_twice(_query(cat, "t", offset=3))
    # public.int4 is not PostgreSQL's int4: no max() for it, so the rows are walked twice.
    assert walks_twice(_query(cat, "lookalike"))
    after, rows = None, 0
    while True:
        data, fetched, key = _same(conn, _query(cat, "lookalike", limit=3, after=after))
        rows += len(json.loads("[" + (data or "") + "]"))
        if fetched <= 3:
            break
        after = key
    assert rows == 7


def test_a_column_list_and_bytea_are_the_same_in_both_forms(conn: Any,
                                                             cat: catalog.Catalog) -> None:
    data, _, _ = _same(conn, _query(cat, "t", select="blob,b", order="a.desc", limit=6))
    first = json.loads("[" + (data or "") + "]")[0]
    assert list(first) == ["blob", "b"]  # only what was selected: the order's a is not there


def test_plain_pages_of_plain_storage_take_the_probe_and_the_rest_the_window(
        conn: Any, cat: catalog.Catalog) -> None:
    def form(q: query.RowsQuery) -> str:
        text = query.page_sql(q)[0].as_string(conn)
        return "window" if "row_number() OVER" in text else "probe"

    assert form(_query(cat, "t")) == "probe"
    assert form(_query(cat, "t", order="id.desc")) == "probe"  # the index, backwards
    assert form(_query(cat, "t", after=["7"])) == "probe"  # from a cursor
    assert form(_query(cat, "pair", order="x.desc,y.desc")) == "probe"
    # Another order would sort the table twice, an offset skip its rows twice.
    assert form(_query(cat, "t", order="a.desc", after=["1", "2"])) == "window"
    assert form(_query(cat, "t", order="b")) == "window"
    assert form(_query(cat, "pair", order="y")) == "window"  # (y, x): not the index's order
    assert form(_query(cat, "pair", order="x,y.desc")) == "window"  # two directions
    assert form(_query(cat, "t", offset=5)) == "window"
    assert form(_query(cat, "nokey")) == "window"
    # A view's query, a policy or a filter would run twice: these number their rows once.
    assert form(_query(cat, "v")) == "window"
    # Row-level security: on for a role it applies to, whose policy would run twice; not for
    # the superuser reading this catalog, who bypasses it.
    assert form(_query(cat, "secured")) == "probe"
    assert form(_query(cat, "mv")) == "window"  # no primary key: no index to walk
    with conn.cursor() as cur:
        cur.execute("SET ROLE pageprobe_reader")
        try:
            as_reader = catalog.load(conn, ApiSettings())
        finally:
            cur.execute("RESET ROLE")
    assert form(_query(as_reader, "secured")) == "window"
    assert form(_query(as_reader, "t")) == "probe"
    data, _, _ = _same(conn, _query(cat, "secured", limit=2))  # the superuser sees all five
    assert [r["id"] for r in json.loads("[" + (data or "") + "]")] == [1, 2]
    filtered = _query(cat, "t")
    filtered.filters = (query.parse_filter(filtered.relation, "a.eq.1"),)
    assert form(filtered) == "window"
    shaped = _query(cat, "t")
    shaped.shape = embed.parse(cat, shaped.relation, "id,alias:b", 3, 20)
    assert form(shaped) == "window"


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    with app_client(dsn) as client:
        yield client


def test_the_api_follows_next_links_through_a_probed_table(client: TestClient) -> None:
    url = "/tables/t/rows?limit=6&order=a.desc.nullslast"
    ids: list[int] = []
    while url:
        r = client.get(url)
        assert r.status_code == 200, r.text
        ids += [row["id"] for row in r.json()["data"]]
        url = r.links.get("next", {}).get("url", "")
    assert sorted(ids) == list(range(1, ROWS + 1))
    assert len(ids) == ROWS


def test_a_descending_page_of_a_not_null_key_walks_the_index_backwards(
        conn: Any, cat: catalog.Catalog) -> None:
    """``DESC NULLS LAST`` (or ``ASC NULLS FIRST``) made PostgreSQL sort the whole table; a NOT
    NULL column holds no NULLs, so its order says no NULLS at all and the index serves it."""
    for q in (_query(cat, "t", order="id.desc.nullslast", limit=3),
              _query(cat, "t", order="id.nullsfirst", limit=3),
              _query(cat, "t", order="a.desc.nullslast", limit=3)):  # a is nullable: it stays
        statement, params = query.page_sql(q)
        text = statement.as_string(conn)
        with conn.cursor() as cur:
            cur.execute("SET enable_seqscan = off")
            cur.execute("EXPLAIN " + text, params)
            plan = "\n".join(r[0] for r in cur.fetchall())
            cur.execute("RESET enable_seqscan")
        if q.order[0].column.nullable:
            assert "NULLS LAST" in text
        else:
            assert "NULLS" not in text.split("ORDER BY", 1)[1].split("LIMIT", 1)[0]
            assert "Sort" not in plan, plan
            assert ("Backward" in plan) == q.order[0].desc, plan
