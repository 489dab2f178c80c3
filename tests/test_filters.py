"""The filter grammar's operators on every type family they apply to: ``not.``, ``isdistinct``,
arrays and ranges (``cs cd ov``), JSON paths, full-text search. Real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE things (
    id      integer PRIMARY KEY,
    name    text,
    qty     integer,
    price   numeric(10, 2),
    flag    boolean,
    mood    mood,
    born    date,
    at      timestamptz,
    uid     uuid,
    tags    text[],
    nums    integer[],
    during  daterange,
    span    int4range,
    doc     jsonb,
    raw     json,
    body    text,
    search  tsvector
);
INSERT INTO things VALUES
 (1, 'apple', 5, 1.50, true, 'happy', '2020-01-31', '2024-03-01 12:00:00+00',
  '00000000-0000-0000-0000-000000000001', '{red,green}', '{1,2,3}', '[2024-01-01,2024-02-01)',
  '[1,10)', '{"lang": "de", "n": 3, "settings": {"theme": "dark"}, "list": ["a", "b"]}',
  '{"lang": "de", "n": 3}', 'The quick brown foxes jumped over lazy dogs',
  to_tsvector('english', 'The quick brown foxes jumped over lazy dogs')),
 (2, 'Banana', NULL, 2.25, false, 'sad', '2021-02-28', '2024-03-02 00:00:00+00',
  '00000000-0000-0000-0000-000000000002', '{blue}', '{4}', '[2024-03-01,2024-04-01)',
  '[20,30)', '{"lang": "en", "n": 10, "settings": {"theme": "light"}, "list": ["c"]}',
  '{"lang": "en", "n": 10}', 'Cheap shoes and red shirts for sale',
  to_tsvector('english', 'Cheap shoes and red shirts for sale')),
 (3, NULL, 12, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL),
 (4, 'cherry, "dried"', 5, 10.00, true, 'ok', '1999-12-31', '1999-12-31 23:59:59+00',
  '00000000-0000-0000-0000-000000000004', '{red,blue,"a,b"}', '{}', 'empty', '[5,6)',
  '{"lang": "fr", "n": 2.5, "settings": {}, "list": [], "a.b": "dotted"}', '{"lang": "fr"}',
  'Der schnelle braune Fuchs springt', to_tsvector('german', 'Der schnelle braune Fuchs springt')),
 (5, 'date (fresh)', 0, 0.10, false, 'ok', '2000-02-29', '2000-02-29 00:00:00+00',
  '00000000-0000-0000-0000-000000000005', '{}', '{2,5}', '[2023-12-15,2024-01-15)', '[1,2)',
  '{"n": null, "settings": {"theme": "dark"}}', '{}', 'shoes, cheap ones; running shoes',
  to_tsvector('english', 'shoes, cheap ones; running shoes'));
CREATE TABLE victims (id integer PRIMARY KEY, name text);
INSERT INTO victims VALUES (1, 'one'), (2, 'two');
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "filters", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    with app_client(dsn, api={"max_rows": 50, "default_limit": 50}) as client:
        yield client


def ids(client: TestClient, **params: Any) -> list[int]:
    r = client.get("/tables/things/rows", params={"select": "id", **params})
    assert r.status_code == 200, r.text
    return [row["id"] for row in r.json()["data"]]


def problem(client: TestClient, status: int = 400, table: str = "things",
            **params: Any) -> dict[str, Any]:
    r = client.get(f"/tables/{table}/rows", params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


# ------------------------------------------------------------------ not. and isdistinct


@pytest.mark.parametrize(("flt", "plain", "negated"), [
    ("qty.eq.5", [1, 4], [3, 5]),             # NULL qty matches neither (SQL NOT)
    ("qty.neq.5", [3, 5], [1, 4]),
    ("qty.lt.5", [5], [1, 3, 4]),
    ("qty.lte.5", [1, 4, 5], [3]),
    ("qty.gt.5", [3], [1, 4, 5]),
    ("qty.gte.5", [1, 3, 4], [5]),
    ("name.like.*an*", [2], [1, 4, 5]),
    ("name.ilike.b*", [2], [1, 4, 5]),
    ("mood.in.(ok,sad)", [2, 4, 5], [1]),
    ("name.in.()", [], [1, 2, 3, 4, 5]),
    ("qty.is.null", [2], [1, 3, 4, 5]),
    ("flag.is.true", [1, 4], [2, 3, 5]),
    ("flag.is.false", [2, 5], [1, 3, 4]),
    ("qty.isdistinct.5", [2, 3, 5], [1, 4]),
    ("tags.cs.{red}", [1, 4], [2, 5]),
    ("during.ov.[2024-01-10,2024-01-20)", [1, 5], [2, 4]),
    ("body.wfts(english).cheap shoes", [2, 5], [1, 4]),
    ("doc->>lang.eq.de", [1], [2, 4]),
])
def test_not_negates_every_kind_of_operator(client: TestClient, flt: str, plain: list[int],
                                            negated: list[int]) -> None:
    column, _, rest = flt.partition(".")
    assert ids(client, filter=flt) == plain
    assert ids(client, filter=f"{column}.not.{rest}") == negated


@pytest.mark.parametrize(("flt", "expected"), [
    ("name.isdistinct.apple", [2, 3, 4, 5]),      # NULL name included, unlike neq
    ("name.neq.apple", [2, 4, 5]),
    ("price.isdistinct.1.5", [2, 3, 4, 5]),
    ("flag.isdistinct.true", [2, 3, 5]),
    ("mood.isdistinct.ok", [1, 2, 3]),
    ("born.isdistinct.2020-01-31", [2, 3, 4, 5]),
    ("at.isdistinct.2024-03-01T12:00:00Z", [2, 3, 4, 5]),
    ("uid.isdistinct.00000000-0000-0000-0000-000000000001", [2, 3, 4, 5]),
    ("tags.isdistinct.{blue}", [1, 3, 4, 5]),
    ("doc->lang.isdistinct.\"de\"", [2, 3, 4, 5]),
    ("name.not.isdistinct.apple", [1]),
])
def test_isdistinct_is_a_null_safe_neq_on_every_type(client: TestClient, flt: str,
                                                     expected: list[int]) -> None:
    assert ids(client, filter=flt) == expected


@pytest.mark.parametrize(("flt", "expected"), [
    ("name.not.eq.apple", [2, 4, 5]),
    ("price.not.gt.2", [1, 5]),
    ("flag.not.eq.true", [2, 5]),
    ("mood.not.eq.ok", [1, 2]),
    ("mood.not.lt.ok", [1, 4, 5]),            # enum order: sad < ok < happy
    ("born.not.lt.2020-01-01", [1, 2]),
    ("at.not.gte.2024-01-01T00:00:00Z", [4, 5]),
    ("uid.not.in.(00000000-0000-0000-0000-000000000001)", [2, 4, 5]),
    ("qty.not.is.null", [1, 3, 4, 5]),
    ("name.not.like.*e*", [2]),
    ("name.not.ilike.*E*", [2]),
])
def test_not_on_each_type_family(client: TestClient, flt: str, expected: list[int]) -> None:
    assert ids(client, filter=flt) == expected


def test_a_negated_value_is_still_checked_by_its_type(client: TestClient) -> None:
    body = problem(client, filter="qty.not.eq.abc")
    assert body["type"] == "/problems/invalid-value" and body["column"] == "qty"


# ------------------------------------------------------------------ arrays and ranges


@pytest.mark.parametrize(("flt", "expected"), [
    ("tags.cs.{red}", [1, 4]),
    ("tags.cs.{red,blue}", [4]),
    ("tags.cs.{\"a,b\"}", [4]),
    ("tags.cs.{}", [1, 2, 4, 5]),
    ("tags.cd.{red,green,blue}", [1, 2, 5]),
    ("tags.ov.{green,blue}", [1, 2, 4]),
    ("nums.cs.{2}", [1, 5]),
    ("nums.cd.{1,2,3,4}", [1, 2, 4]),
    ("nums.ov.{5,4}", [2, 5]),
    ("during.cs.[2024-01-10,2024-01-11)", [1, 5]),
    ("during.cd.[2023-01-01,2025-01-01)", [1, 2, 4, 5]),   # the empty range is in every range
    ("during.ov.[2024-01-10,2024-03-02)", [1, 2, 5]),
    ("during.ov.(,)", [1, 2, 5]),
    ("span.cs.[2,3)", [1]),
    ("span.cd.[0,10]", [1, 4, 5]),
    ("span.ov.[9,21)", [1, 2]),
    ("doc.cs.{\"lang\": \"de\"}", [1]),
    ("doc.cd.{\"n\": null, \"settings\": {\"theme\": \"dark\"}, \"x\": 1}", [5]),
    ("doc->settings.cs.{\"theme\": \"dark\"}", [1, 5]),
    ("doc->list.cs.[\"a\"]", [1]),
])
def test_containment_and_overlap(client: TestClient, flt: str, expected: list[int]) -> None:
    assert ids(client, filter=flt) == expected


@pytest.mark.parametrize("flt", ["tags.cs.red", "during.ov.2024-01-01", "nums.cs.{x}",
                                 "span.cs.[3,1)"])
def test_a_bad_array_or_range_literal_is_a_400_naming_the_column(client: TestClient,
                                                                   flt: str) -> None:
    body = problem(client, filter=flt)
    assert body["type"] == "/problems/invalid-value"
    assert body["column"] == flt.partition(".")[0] and body["parameter"] == "filter"


@pytest.mark.parametrize("flt", ["qty.cs.5", "name.ov.x", "doc.ov.{}", "flag.cd.true"])
def test_containment_on_a_type_without_it_is_unsupported(client: TestClient, flt: str) -> None:
    body = problem(client, filter=flt)
    assert body["type"] == "/problems/unsupported-operation"
    assert body["parameter"] == "filter"


# ------------------------------------------------------------------ JSON paths


@pytest.mark.parametrize(("flt", "expected"), [
    ("doc->>lang.eq.de", [1]),
    ("doc->>lang.in.(de,fr)", [1, 4]),
    ("doc->>lang.is.null", [3, 5]),
    ("doc->>lang.like.*e*", [1, 2]),
    ("doc->>n.gt.2.5", [1]),                  # text: '3' > '2.5', '10' < '2.5'
    ("doc->n.gt.2.5", [1, 2]),                # jsonb: numbers compare as numbers
    ("doc->n.eq.3", [1]),
    ("doc->n.eq.null", [5]),                  # JSON null, not SQL NULL
    ("doc->n.is.null", [3]),
    ("doc->lang.eq.\"de\"", [1]),
    ("doc->settings->>theme.eq.dark", [1, 5]),
    ("doc->settings->theme.eq.\"light\"", [2]),
    ("doc->list->0.eq.\"a\"", [1]),
    ("doc->list->>-1.eq.c", [2]),
    ("doc->>\"a.b\".eq.dotted", [4]),
    ("doc->\"list\"->>0.eq.a", [1]),
    ("raw->>lang.eq.en", [2]),
    ("raw->n.gte.3", [1, 2]),                 # json compared as jsonb
    ("doc->>lang.not.eq.de", [2, 4]),
    ("doc->>lang.isdistinct.de", [2, 3, 4, 5]),
])
def test_json_paths_in_filters(client: TestClient, flt: str, expected: list[int]) -> None:
    assert ids(client, filter=flt) == expected


def test_a_json_path_value_must_be_json_after_an_arrow(client: TestClient) -> None:
    body = problem(client, filter="doc->lang.eq.de")
    assert body["type"] == "/problems/invalid-value" and body["column"] == "doc"
    assert "jsonb" in body["detail"]


@pytest.mark.parametrize(("flt", "words"), [
    ("name->a.eq.1", "needs a json or jsonb column"),
    ("doc->>a->b.eq.1", "->> gives text and must be the path's last step"),
    ("doc->.eq.1", "empty key"),
    ("doc->\"a.eq.1", "unterminated double quote"),
    ("doc->a", "expected .<op>.<value> after the JSON path"),
    ("doc->a.nosuch.1", "expected <column>.<op>.<value> (or <column>.not.<op>.<value>)"),
    ("doc" + "->a" * 17 + ".eq.1", "at most 16 keys in a JSON path"),
    ("doc->>a.is.true", "is.true needs a boolean column"),
])
def test_bad_json_paths_are_400s(client: TestClient, flt: str, words: str) -> None:
    body = problem(client, filter=flt)
    assert body["type"] == "/problems/invalid-parameter" and body["parameter"] == "filter"
    assert words in body["detail"]


def test_sixteen_path_keys_are_allowed(client: TestClient) -> None:
    assert ids(client, filter="doc" + "->a" * 15 + "->>b.is.null") == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("order", "expected"), [
    ("doc->>lang", [1, 2, 4, 3, 5]),              # NULLs last, then the key
    ("doc->>lang.desc", [3, 5, 4, 2, 1]),
    ("doc->>lang.desc.nullslast", [4, 2, 1, 3, 5]),
    ("doc->n", [5, 4, 1, 2, 3]),                  # jsonb order: null < numbers; SQL NULL last
    ("doc->>n", [2, 4, 1, 3, 5]),                 # text order: '10' < '2.5' < '3'
    ("doc->settings->>theme.asc,id.desc", [5, 1, 2, 4, 3]),
    ("\"doc\"->>lang.asc.nullsfirst", [3, 5, 1, 2, 4]),
    ("raw->n.desc", [3, 4, 5, 2, 1]),
])
def test_json_paths_in_order(client: TestClient, order: str, expected: list[int]) -> None:
    assert ids(client, order=order) == expected


@pytest.mark.parametrize("order", ["doc->>lang", "doc->>lang.desc", "doc->n.desc.nullslast",
                                   "doc->settings->>theme,doc->>lang.desc",
                                   "doc->>n.asc.nullsfirst"])
def test_cursors_follow_json_path_orders_without_skipping_or_repeating(
        client: TestClient, order: str) -> None:
    everything = ids(client, order=order)
    seen: list[int] = []
    params: dict[str, Any] = {"select": "id", "order": order, "limit": 2}
    for _ in range(5):
        r = client.get("/tables/things/rows", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [row["id"] for row in body["data"]]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == everything and len(seen) == 5


def test_a_cursor_is_bound_to_its_json_path(client: TestClient) -> None:
    first = client.get("/tables/things/rows", params={"order": "doc->>lang", "limit": 2}).json()
    for other in ("doc->>n", "doc->lang", "raw->>lang", "doc->>lang.desc"):
        r = client.get("/tables/things/rows", params={
            "order": other, "limit": 2, "cursor": first["next_cursor"]})
        assert r.status_code == 400 and r.json()["type"] == "/problems/invalid-cursor", other


def test_order_by_the_same_path_twice_is_a_400(client: TestClient) -> None:
    body = problem(client, order="doc->>lang,doc->>lang.desc")
    assert "appears twice" in body["detail"]
    assert ids(client, order="doc->>lang,doc->lang,doc") == [1, 2, 4, 5, 3]


@pytest.mark.parametrize("order", ["doc->>lang.sideways", "name->x", "doc->"])
def test_bad_json_path_orders_are_400s(client: TestClient, order: str) -> None:
    body = problem(client, order=order)
    assert body["parameter"] == "order"


# ------------------------------------------------------------------ full-text search


@pytest.mark.parametrize(("flt", "expected"), [
    ("body.fts.cheap & shoe", [2, 5]),
    ("body.fts(english).fox & dog", [1]),
    ("body.fts(english).run:*", [5]),
    ("body.plfts(english).cheap shoes", [2, 5]),
    ("body.plfts.cheap shoes", [2, 5]),
    ("body.phfts(english).cheap shoes", [2]),
    ("body.phfts(english).running shoes", [5]),
    ("body.wfts(english).cheap shoes", [2, 5]),
    ("body.wfts(english).\"cheap shoes\"", [2]),
    ("body.wfts(english).shoes -red", [5]),
    ("body.wfts(english).fox or shirt", [1, 2]),
    ("body.wfts(german).füchse", []),
    ("body.wfts(german).fuchs", [4]),
    ("body.wfts(simple).foxes", [1]),
    ("body.wfts(simple).fox", []),            # no stemming in simple
    ("body.wfts(pg_catalog.english).fox", [1]),
    ("search.fts(english).fox & dog", [1]),
    ("search.plfts.cheap shoes", [2, 5]),
    ("search.phfts(english).cheap shoes", [2]),
    ("search.wfts(english).shoes -red", [5]),
    ("search.wfts(german).fuchs", [4]),
    ("doc->>lang.wfts(simple).de", [1]),
    ("name.not.wfts(english).apple", [2, 4, 5]),
])
def test_full_text_search(client: TestClient, flt: str, expected: list[int]) -> None:
    assert ids(client, filter=flt) == expected


@pytest.mark.parametrize("language", ["klingon", "english'; DROP TABLE victims; --",
                                      "\"english\"x", "pg_catalog.nosuch"])
def test_an_unknown_text_search_configuration_is_a_400(client: TestClient,
                                                       language: str) -> None:
    body = problem(client, filter=f"body.wfts({language}).shoes")
    assert body["type"] == "/problems/invalid-value" and body["parameter"] == "filter"
    assert body["column"] == "body" and "regconfig" in body["detail"]


@pytest.mark.parametrize("query", ["cheap &", "&", "(shoes", "a ! b"])
def test_a_tsquery_syntax_error_is_a_400(client: TestClient, query: str) -> None:
    body = problem(client, filter=f"body.fts(english).{query}")
    assert body["type"] == "/problems/invalid-value" and body["column"] == "body"


@pytest.mark.parametrize("flt", ["qty.wfts.5", "flag.fts.x", "born.plfts.x"])
def test_text_search_on_a_type_without_text_is_unsupported(client: TestClient,
                                                            flt: str) -> None:
    assert problem(client, filter=flt)["type"] == "/problems/unsupported-operation"


@pytest.mark.parametrize("language", ["0", "3748", " 12 ", "+1", "-1"])
def test_a_language_is_a_name_not_an_oid(client: TestClient, language: str) -> None:
    """regconfig takes digits as an oid; one naming no configuration failed with PostgreSQL's
    internal error "cache lookup failed for text search configuration": a 500."""
    body = problem(client, filter=f"body.wfts({language}).shoes")
    assert "name (e.g. english)" in body["detail"]


@pytest.mark.parametrize("flt", ["name.eq(english).x", "name.in(english).(a)"])
def test_only_text_search_takes_a_language(client: TestClient, flt: str) -> None:
    assert "take a language" in problem(client, filter=flt)["detail"]


def test_text_search_with_a_language_uses_an_expression_index(dsn: str) -> None:
    """The README's advice: the index expression ``to_tsvector('english', body)`` matches the
    filter's, whose language is a bound value (folded to a constant by PostgreSQL)."""
    import contextlib

    import psycopg2

    from swagger_server.data import filters, query
    from swagger_server.data.catalog import Column

    body = Column(name="body", type="text", display_type="text", nullable=True,
                  base_type="text", is_array=False)
    params = query._Params()
    condition = filters.filter_sql(
        filters.Filter(body, "wfts", ("cheap shoes",), language="english"), params)
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE big_docs AS SELECT g AS id, 'document ' || g AS body "
                    "FROM generate_series(1, 2000) g")
        cur.execute("CREATE INDEX big_docs_fts ON big_docs "
                    "USING gin (to_tsvector('english', body))")
        cur.execute("ANALYZE big_docs")
        cur.execute("SET enable_seqscan = off")
        statement = psycopg2.sql.SQL("EXPLAIN SELECT id FROM big_docs r WHERE {}").format(
            condition)
        cur.execute(statement, params.values)
        plan = "\n".join(row[0] for row in cur.fetchall())
        conn.rollback()
    assert "big_docs_fts" in plan, plan


@pytest.mark.parametrize("flt", [
    "body.wfts.x " + "-" * 40, "body.wfts(english)." + "- " * 17 + "x",
    "body.fts." + "!" * 40 + "x", "body.fts(english)." + "! " * 17 + "x",
    "search.fts." + "!" * 33 + "fox",
])
def test_a_pile_of_negations_is_a_400_not_postgresqls_internal_error(client: TestClient,
                                                                    flt: str) -> None:
    """From 32 negations in a row PostgreSQL failed with "tsquery stack too small" (XX000): a
    500. 16 are allowed; more is a 400 before the query."""
    body = problem(client, filter=flt)
    assert "at most 16 negations" in body["detail"] and body["parameter"] == "filter"
    assert ids(client, filter="body.wfts(english).shoes " + "-red " * 16) == [5]
    assert ids(client, filter="body.fts(english).shoes & " + "!" * 15 + "red") == [5]
    assert ids(client, filter="body.plfts." + "-" * 40 + "cheap") == [2, 5]  # no operators


def test_a_query_too_deep_for_postgresql_is_a_400(client: TestClient) -> None:
    body = problem(client, filter="body.plfts." + "x " * 20_000)
    assert body["status"] == 400 and body["type"] == "/problems/invalid-value"


def test_range_and_array_literals_inside_groups(client: TestClient) -> None:
    """Braces keep an array literal whole; a range's comma and half-open bracket need quotes."""
    assert ids(client, **{"or": '(during.ov."[2024-01-10,2024-01-20)",id.eq.2)'}) == [1, 2, 5]
    assert ids(client, **{"or": "(tags.cs.{red,blue},nums.ov.{4,5})"}) == [2, 4, 5]
    r = client.get("/tables/things/rows", params={"or": "(during.ov.[2024-01-10,2024-01-20))"})
    assert r.status_code == 400
