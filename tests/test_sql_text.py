"""The data API's statements as text (swagger_server/data/sqltext.py): identifiers quoted exactly
as libpq quotes them, odd names working end to end, and what is made once (a column's or
relation's quoted name, per catalog object; a cursor's fingerprint, per relation, order and
role) never shared between relations, column sets, reloaded catalogs, orders or roles. Real
PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg2
import pytest
from psycopg2 import sql
from starlette.testclient import TestClient

from swagger_server.controllers import tables_controller
from swagger_server.data import cursors, query
from swagger_server.data.catalog import CACHE, Column, Relation
from swagger_server.data.filters import PathStep
from swagger_server.data.sqltext import compose, ident, quote_ident
from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

ODD_SCHEMA = 'Odd "Schema" ü'
ODD_TABLE = 'Tab le "Q" {x} é'
SCHEMA = """
CREATE SCHEMA "Odd ""Schema"" ü";
CREATE TABLE "Odd ""Schema"" ü"."Tab le ""Q"" {x} é" (
    "Id" integer PRIMARY KEY, "we""ird col" text, "ünï cödé" text, "a b {c}" integer,
    "UPPER" bytea);
INSERT INTO "Odd ""Schema"" ü"."Tab le ""Q"" {x} é"
SELECT i, 'w' || i, 'ü' || i, i % 3, decode(lpad(to_hex(i), 2, '0'), 'hex')
FROM generate_series(1, 7) i;
-- psycopg2 reads "%" in a statement run with parameters: names with it in every kind of statement.
CREATE TABLE "per%cent" (id integer PRIMARY KEY, "a%b" text, "%(p0)s" integer, "%s" text);
INSERT INTO "per%cent" SELECT i, 'a' || i, i % 3, 's' || i FROM generate_series(1, 7) i;
CREATE TABLE "kid%s" (id integer PRIMARY KEY, "pc%id" integer REFERENCES "per%cent" (id),
                      "v%" text);
INSERT INTO "kid%s" SELECT i, 1 + i % 7, 'v' || i FROM generate_series(1, 10) i;
-- ... and in type names: an enum, a domain, a type of a schema holding one.
CREATE TYPE "mo%od" AS ENUM ('x', 'y');
CREATE DOMAIN "d%" AS integer;
CREATE SCHEMA "s%ch";
CREATE TYPE "s%ch".feel AS ENUM ('p', 'q');
CREATE TABLE typed (id "d%" PRIMARY KEY, m "mo%od", f "s%ch".feel);
INSERT INTO typed SELECT i, (ARRAY['x', 'y'])[1 + i % 2]::"mo%od",
                         (ARRAY['p', 'q'])[1 + i % 2]::"s%ch".feel FROM generate_series(1, 5) i;
CREATE TABLE moody (id "mo%od" PRIMARY KEY, v text);
INSERT INTO moody VALUES ('x', 'one'), ('y', 'two');
-- A domain with a collation of its own, under a column with another; a column with one.
CREATE DOMAIN ctext AS text COLLATE "C";
CREATE TABLE collated (code ctext COLLATE "POSIX" PRIMARY KEY, name text COLLATE "C");
INSERT INTO collated SELECT chr(96 + i) || i, 'N' || chr(96 + i) FROM generate_series(1, 9) i;
CREATE TABLE blobs_a (id integer PRIMARY KEY, v bytea);
CREATE TABLE blobs_b (id integer PRIMARY KEY, v text);
CREATE TABLE swapped (id integer PRIMARY KEY, v text);
INSERT INTO blobs_a VALUES (1, '\\x0102'::bytea);
INSERT INTO blobs_b VALUES (1, 'plain');
INSERT INTO swapped VALUES (1, '\\x0102');
"""

NAMES = ["plain", "UPPER", "we\"ird", '"', '""x""', "with space", " padded ", "ünï cödé",
         "{braces}", "a.b", "semi;colon", "back\\slash", "it's", "日本語", "100%", "%(p0)s",
         "%s", "%%"]


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "sqltext", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    with app_client(dsn, api={"schemas": ("public", ODD_SCHEMA)}) as client:
        yield client


def _column(name: str, base_type: str = "int4", type_: str = "integer") -> Column:
    return Column(name=name, type=type_, display_type=type_, nullable=False,
                  base_type=base_type, is_array=False)


# ------------------------------------------------------------------ quoting


def test_identifiers_are_quoted_exactly_as_libpq_quotes_them(dsn: str) -> None:
    """Once psycopg2 has read the statement with its parameters (as every data API statement
    runs), which turns the ``%%`` written for a ``%`` back into one."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        def read(text: str) -> str:
            return cur.mogrify(text, {}).decode()

        for name in NAMES:
            libpq = sql.Identifier(name).as_string(conn)
            assert read(quote_ident(name)) == libpq, name
            assert (quote_ident(name) == libpq) == ("%" not in name), name
            assert read(ident(name).as_string(conn)) == libpq, name
            assert read(_column(name).quoted) == libpq
            relation = Relation(schema=name, name=name + "t", kind="table", oid=1,
                                primary_key=(), columns=(), estimated_rows=None)
            assert read(relation.quoted) == sql.Identifier(name, name + "t").as_string(conn)


def test_quoted_names_select_what_they_name_in_postgresql(dsn: str) -> None:
    """Each quoted name is the identifier it came from (PostgreSQL gives the column's name),
    in a statement run with parameters."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        statement = compose(["SELECT ", ", ".join(f"1 AS {quote_ident(n)}" for n in NAMES),
                             ", CAST(%(p0)s AS integer) AS p"])
        cur.execute(statement, {"p0": "7"})
        assert [d.name for d in cur.description] == [*NAMES, "p"]
        assert cur.fetchone()[-1] == 7


def test_compose_keeps_text_and_composables_in_order(dsn: str) -> None:
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        mixed = compose(["SELECT ", "CAST(", sql.Placeholder("p0"), " AS integer)", " AS ",
                         sql.Identifier("a b"), ", 2 AS ", quote_ident('c"d')])
        assert mixed.as_string(conn) == 'SELECT CAST(%(p0)s AS integer) AS "a b", 2 AS "c""d"'
        with conn.cursor() as cur:
            cur.execute(mixed, {"p0": "7"})
            assert cur.fetchone() == (7, 2)
            assert [d.name for d in cur.description] == ["a b", 'c"d']
        assert compose(["SELECT ", "1"]).as_string(conn) == "SELECT 1"
        assert compose([]).as_string(conn) == ""


# ------------------------------------------------------------------ odd names end to end


def _odd_rows(client: TestClient, **params: Any) -> Any:
    r = client.get(f"/tables/{quote(ODD_TABLE)}/rows", params=params)
    assert r.status_code == 200, r.text
    return r


def test_odd_names_page_by_cursor_and_filter(client: TestClient) -> None:
    rows, params = [], {"limit": "3", "order": '"we""ird col".desc',
                        "filter": "a b {c}.gt.0"}
    while True:
        body = _odd_rows(client, **params).json()
        rows += body["data"]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    wanted = sorted((i for i in range(1, 8) if i % 3 > 0), key=lambda i: f"w{i}", reverse=True)
    assert [r["Id"] for r in rows] == wanted
    assert rows[0] == {"Id": wanted[0], 'we"ird col': f"w{wanted[0]}",
                       "ünï cödé": f"ü{wanted[0]}", "a b {c}": wanted[0] % 3,
                       "UPPER": _base64_byte(wanted[0])}


def _base64_byte(i: int) -> str:
    import base64
    return base64.b64encode(bytes([i])).decode()


def test_odd_names_select_count_and_row_by_key(client: TestClient) -> None:
    r = _odd_rows(client, select='"ünï cödé","UPPER",Id', count="exact", order="Id.desc")
    body = r.json()
    assert body["total"] == 7
    assert list(body["data"][0]) == ["ünï cödé", "UPPER", "Id"]
    assert body["data"][0] == {"ünï cödé": "ü7", "UPPER": _base64_byte(7), "Id": 7}
    assert _odd_rows(client, count="estimated").json()["total"] >= 0
    one = client.get(f"/tables/{quote(ODD_TABLE)}/rows/5")
    assert one.status_code == 200, one.text
    assert one.json()["we\"ird col"] == "w5"


def test_odd_names_export_as_csv_and_ndjson(client: TestClient) -> None:
    csv = client.get(f"/tables/{quote(ODD_TABLE)}/rows", headers={"Accept": "text/csv"},
                     params={"order": "Id", "filter": "Id.lte.2"})
    assert csv.status_code == 200, csv.text
    assert csv.text.splitlines() == [
        'Id,"we""ird col",ünï cödé,a b {c},UPPER',
        f'1,"w1","ü1",1,"{_base64_byte(1)}"', f'2,"w2","ü2",2,"{_base64_byte(2)}"']
    nd = client.get(f"/tables/{quote(ODD_TABLE)}/rows",
                    headers={"Accept": "application/x-ndjson"}, params={"select": "Id,UPPER"})
    assert nd.status_code == 200, nd.text
    assert len(nd.text.splitlines()) == 7
    assert nd.text.splitlines()[0] == f'{{"Id":1,"UPPER":"{_base64_byte(1)}"}}'


def test_names_with_percent_signs_work_in_every_statement(dsn: str) -> None:
    """A column named ``a%b`` used to make every statement naming it a 500: psycopg2 read its
    ``%`` as a placeholder. Pages by cursor, order, filter, select, counts, a row by key,
    exports, embeds both ways and aggregates."""
    def path_part(name: str) -> str:
        # Quoted twice: Starlette's test client unquotes a path httpx has already decoded
        # (a real server, curl for one, takes /tables/per%25cent/rows as it should).
        return quote(quote(name, safe=""), safe="")

    with app_client(dsn, api={"aggregates": "on"}) as client:
        rows_url = f"/tables/{path_part('per%cent')}/rows"

        def get(url: str, **params: Any) -> Any:
            r = client.get(url, params=params)
            assert r.status_code == 200, r.text
            return r

        rows, params = [], {"limit": "2", "order": '"%(p0)s".desc', "filter": "a%b.neq.a1",
                            "count": "exact"}
        while True:
            body = get(rows_url, **params).json()
            assert body["total"] == 6
            rows += body["data"]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        assert [r["id"] for r in rows] == [2, 5, 4, 7, 3, 6]  # %(p0)s = id % 3, down; then id
        assert rows[0] == {"id": 2, "a%b": "a2", "%(p0)s": 2, "%s": "s2"}
        assert get(rows_url, select="%s,a%b", limit="1").json()["data"] == [
            {"%s": "s1", "a%b": "a1"}]
        assert get(rows_url, count="estimated", offset="6").json()["data"][0]["id"] == 7
        assert get(f"{rows_url}/5").json() == {"id": 5, "a%b": "a5", "%(p0)s": 2, "%s": "s5"}
        csv = client.get(rows_url, headers={"Accept": "text/csv"}, params={"filter": "id.lte.2"})
        assert csv.status_code == 200, csv.text
        assert csv.text.splitlines() == ['id,a%b,%(p0)s,%s', '1,"a1",1,"s1"', '2,"a2",2,"s2"']
        nd = client.get(rows_url, headers={"Accept": "application/x-ndjson"},
                        params={"select": "a%b", "filter": "id.eq.3"})
        assert nd.status_code == 200, nd.text
        assert nd.text.splitlines() == ['{"a%b":"a3"}']
        kids = get(rows_url, select="id,kid%s(v%)", filter="id.eq.2").json()["data"]
        assert kids == [{"id": 2, "kid%s": [{"v%": "v1"}, {"v%": "v8"}]}]
        parent = get(f"/tables/{path_part('kid%s')}/rows", select="id,per%cent(a%b)",
                     filter="id.eq.3").json()["data"]
        assert parent == [{"id": 3, "per%cent": {"a%b": "a4"}}]
        groups = get(rows_url, select="%(p0)s,id.count()", order="%(p0)s").json()["data"]
        assert groups == [{"%(p0)s": 0, "count": 2}, {"%(p0)s": 1, "count": 3},
                          {"%(p0)s": 2, "count": 2}]


def test_type_names_with_percent_signs_cast_values(client: TestClient) -> None:
    """Values are cast to the column's type as the catalog spells it: a ``%`` there (an enum
    ``mo%od``, a domain ``d%``, a type of schema ``s%ch``) was a 500 in filters, cursors and
    rows by key."""
    def rows(**params: str) -> Any:
        r = client.get("/tables/typed/rows", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    assert [r["id"] for r in rows(filter="m.eq.y")["data"]] == [1, 3, 5]
    assert [r["id"] for r in rows(filter="f.in.(p)")["data"]] == [2, 4]
    first = rows(limit="2")
    assert [r["id"] for r in rows(limit="2", cursor=first["next_cursor"])["data"]] == [3, 4]
    assert client.get("/tables/typed/rows/4").json() == {"id": 4, "m": "x", "f": "p"}
    assert client.get("/tables/moody/rows/y").json() == {"id": "y", "v": "two"}
    bad = client.get("/tables/typed/rows", params={"filter": "m.eq.zzz"})
    assert bad.status_code == 400, bad.text
    assert bad.json()["column"] == "m"


def test_values_compared_with_a_collated_column_take_its_collation(client: TestClient) -> None:
    """A value cast to a domain with a collation of its own ("C") compared with a column of
    another ("POSIX") was an error PostgreSQL raises ("could not determine which collation"):
    a 500 for cursors, filters and a row by key. The value now takes the column's collation."""
    def rows(**params: str) -> Any:
        r = client.get("/tables/collated/rows", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    codes, params = [], {"limit": "4", "order": "code.desc"}
    while True:
        body = rows(**params)
        codes += [r["code"] for r in body["data"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert codes == [chr(96 + i) + str(i) for i in range(9, 0, -1)]
    assert [r["code"] for r in rows(filter="code.gt.g7")["data"]] == ["h8", "i9"]
    assert [r["code"] for r in rows(filter="code.in.(a1,c3)")["data"]] == ["a1", "c3"]
    assert [r["code"] for r in rows(filter="name.lt.Nc")["data"]] == ["a1", "b2"]
    assert client.get("/tables/collated/rows/e5").json() == {"code": "e5", "name": "Ne"}


# ------------------------------------------------------------------ caches keyed right


def test_two_relations_with_one_column_name_keep_their_own_row_object(
        client: TestClient) -> None:
    """blobs_a.v is bytea (base64 in JSON), blobs_b.v text: the row object of one is never the
    other's, whichever comes first (a cache keyed on column names would fail this)."""
    for _ in range(2):
        assert client.get("/tables/blobs_b/rows").json()["data"] == [{"id": 1, "v": "plain"}]
        assert client.get("/tables/blobs_a/rows").json()["data"] == [{"id": 1, "v": "AQI="}]


def test_column_sets_in_another_order_keep_their_own_object(client: TestClient) -> None:
    for select, keys in (("id,v", ["id", "v"]), ("v,id", ["v", "id"]), ("v", ["v"])):
        r = client.get("/tables/blobs_a/rows", params={"select": select})
        assert list(r.json()["data"][0]) == keys
    assert client.get("/tables/blobs_a/rows/1", params={"select": "v"}).json() == {"v": "AQI="}


def test_a_reloaded_catalog_renders_a_changed_type_anew(dsn: str) -> None:
    """swapped.v turns from text into bytea: after the reload its JSON is base64, not what the
    first catalog's columns rendered (a cache keyed on the relation or names would fail this)."""
    with app_client(dsn) as client:
        assert client.get("/tables/swapped/rows").json()["data"] == [{"id": 1, "v": "\\x0102"}]
        with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("ALTER TABLE swapped ALTER COLUMN v TYPE bytea USING v::bytea")
        try:
            CACHE.invalidate()
            assert client.get("/tables/swapped/rows").json()["data"] == [{"id": 1, "v": "AQI="}]
        finally:
            with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
                conn.autocommit = True
                cur.execute("ALTER TABLE swapped ALTER COLUMN v TYPE text "
                            "USING encode(v, 'escape')")
            CACHE.invalidate()


def test_the_cached_fingerprint_is_the_computed_one_for_every_key_part() -> None:
    """Keys differing in one part only (relation, column type, direction, NULLS, JSON path,
    role) get different fingerprints, each the one computed without a cache."""
    jb = Column(name="j", type="jsonb", display_type="jsonb", nullable=True, base_type="jsonb",
                is_array=False)
    int4, int8 = _column("id"), _column("id", "int8", "bigint")
    orders = [
        (query.OrderTerm(int4),), (query.OrderTerm(int8),), (query.OrderTerm(int4, desc=True),),
        (query.OrderTerm(int4, nulls_first=True),),
        (query.OrderTerm(jb, path=(PathStep("->", 1),)), query.OrderTerm(int4)),
        (query.OrderTerm(jb, path=(PathStep("->", "1"),)), query.OrderTerm(int4)),
    ]
    keys = [("public", t, o, role) for t in ("a", "b") for o in orders for role in (None, "r")]
    seen = {}
    for _ in range(2):
        for schema, name, order, role in keys:
            parts: list[object] = [schema, name, [t.spec() for t in order]]
            if role is not None:
                parts.append({"role": role})
            got = tables_controller._order_fingerprint(schema, name, order, role)
            assert got == cursors.fingerprint(parts)
            seen[(schema, name, order, role)] = got
    assert len(set(seen.values())) == len(keys)
