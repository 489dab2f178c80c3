"""Boolean groups (``or=``, ``and=``, ``not.or=``, ``not.and=``, nested), their quoting, the
limits against abuse, and hostile input in the new filter syntax: a 400 (or a 200 where the
text is merely data), never a 5xx, and the database unchanged. Real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server.data import filters
from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database
from tests.test_hostile_inputs import CORPUS, snapshot

SCHEMA = r"""
CREATE TYPE state AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE orders (
    id      integer PRIMARY KEY,
    status  state NOT NULL,
    total   numeric(10, 2) NOT NULL,
    coupon  text,
    note    text,
    tags    text[],
    doc     jsonb,
    body    text
);
INSERT INTO orders VALUES
 (1, 'new',     10.00,  NULL,   'plain',             '{a}',   '{"k": "x"}', 'cheap shoes'),
 (2, 'paid',    2000.00, 'SAVE', 'a, b (c)',         '{b}',   '{"k": "y"}', 'red shirt'),
 (3, 'shipped', 500.00, NULL,   'say "hi"',          '{a,b}', '{"k": "x"}', 'blue shoes'),
 (4, 'paid',    5.00,   'FREE', NULL,                '{}',    NULL,         NULL),
 (5, 'new',     1500.00, NULL,  'x),or(id.gt.0',     NULL,    '{"k": "z"}', 'shoes');
CREATE TABLE victims (id integer PRIMARY KEY, name text NOT NULL, doc jsonb, body text);
INSERT INTO victims VALUES (1, 'v1', '{"a": 1}', 'some text'), (2, 'v2', '{"a": 2}', 'more');
CREATE TABLE canary (id integer PRIMARY KEY);
INSERT INTO canary VALUES (1);
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "groups", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    with app_client(dsn, pool={"statement_timeout": 2000}) as client:
        yield client


def ids(client: TestClient, **params: Any) -> list[int]:
    r = client.get("/tables/orders/rows", params={"select": "id", **params})
    assert r.status_code == 200, r.text
    return [row["id"] for row in r.json()["data"]]


def problem(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/tables/orders/rows", params=params)
    assert r.status_code == 400, r.text
    return r.json()


# ------------------------------------------------------------------ semantics


@pytest.mark.parametrize(("params", "expected"), [
    ({"or": "(status.eq.new,total.gt.1000)"}, [1, 2, 5]),
    ({"and": "(status.eq.new,total.gt.1000)"}, [5]),
    ({"not.or": "(status.eq.new,total.gt.1000)"}, [3, 4]),
    ({"not.and": "(status.eq.new,total.gt.1000)"}, [1, 2, 3, 4]),
    ({"or": "(id.eq.1,and(total.gt.100,coupon.is.null))"}, [1, 3, 5]),
    ({"or": "(id.eq.4,not.and(status.eq.new,total.lt.100))"}, [2, 3, 4, 5]),
    ({"and": "(total.gt.1,or(status.eq.paid,and(tags.cs.{a},not.or(id.eq.1))))"}, [2, 3, 4]),
    ({"or": "(status.not.in.(new,paid),coupon.eq.FREE)"}, [3, 4]),
    ({"or": "(doc->>k.eq.y,body.wfts(english).shoe)"}, [1, 2, 3, 5]),
    ({"or": "(id.eq.1)"}, [1]),
    ({"or": "( id.eq.1 , id.eq.2 )"}, [1, 2]),   # blanks around items are dropped
])
def test_groups(client: TestClient, params: dict[str, str], expected: list[int]) -> None:
    assert ids(client, **params) == expected


def test_groups_and_filters_all_hold_together(client: TestClient) -> None:
    assert ids(client, **{"or": ["(status.eq.new,status.eq.paid)", "(total.lt.100,id.eq.5)"],
                          "filter": "id.neq.4"}) == [1, 5]
    assert ids(client, **{"or": "(status.eq.new,status.eq.paid)",
                          "not.or": "(id.eq.1,id.eq.2)", "and": "(total.gt.1)"}) == [4, 5]


@pytest.mark.parametrize(("group", "expected"), [
    ('(note.eq."a, b (c)",id.eq.4)', [2, 4]),
    ('(note.eq."say ""hi""")', [3]),
    ('(note.eq."x),or(id.gt.0")', [5]),
    ('(note.like."*, b*")', [2]),
    ('(note.in.("a, b (c)",plain))', [1, 2]),
    ('(tags.cs."{a,b}")', [3]),
    ("(tags.cs.{a,b})", [3]),                  # braces keep an array literal whole
    ("(tags.ov.{b,c},id.eq.1)", [1, 2, 3]),
    ('(doc.cs.{"k": "x"},id.eq.4)', [1, 3, 4]),
    ('(note.eq."{",note.eq."}")', []),
    ('(note.eq.plain,note.eq."")', [1]),
])
def test_values_with_commas_parentheses_or_quotes_are_double_quoted(
        client: TestClient, group: str, expected: list[int]) -> None:
    assert ids(client, **{"or": group}) == expected


def test_an_unquoted_value_cannot_escape_its_condition(client: TestClient) -> None:
    """``x),or(id.gt.0`` unquoted is split as grammar: a 400, never a wider match."""
    r = client.get("/tables/orders/rows", params={"or": "(note.eq.x),or(id.gt.0)"})
    assert r.status_code == 400


@pytest.mark.parametrize(("group", "column"), [
    ("(total.gt.abc)", "total"),
    ("(id.eq.1,and(status.eq.lost))", "status"),
    ("(doc->k.eq.notjson)", "doc"),
])
def test_a_bad_value_in_a_group_names_the_group_parameter(client: TestClient, group: str,
                                                          column: str) -> None:
    body = problem(client, **{"not.or": group})
    assert body["type"] == "/problems/invalid-value"
    assert body["parameter"] == "not.or" and body["column"] == column


def test_a_bad_pattern_in_a_group_is_a_400(client: TestClient) -> None:
    body = problem(client, **{"or": "(note.like.x\\)"})
    assert body["type"] == "/problems/invalid-value" and body["parameter"] == "or"


@pytest.mark.parametrize(("group", "words"), [
    ("status.eq.new", "expected a list in parentheses"),
    ("(status.eq.new", "expected a list in parentheses"),
    ("(status.eq.new))", "unbalanced parentheses"),
    ("(status.eq.new,and(id.eq.1)", "unbalanced parentheses"),
    ("((status.eq.new)", "unbalanced parentheses"),
    ("(status.eq.new)(", "expected a list in parentheses"),
    ("(id.eq.1),(id.eq.2)", "unbalanced parentheses"),
    ("()", "empty condition"),
    ("(id.eq.1,)", "empty condition"),
    ("(id.eq.1,,id.eq.2)", "empty condition"),
    ('(note.eq."open)', "unterminated double quote"),
    ('(note.eq."a"b)', "a quoted value must be one"),
    ("(xor(id.eq.1))", "has no column 'xor(id'"),
    ("(nosuch.eq.1)", "has no column 'nosuch'"),
    ("(id.eq.1,and(nosuch.eq.1))", "has no column 'nosuch'"),
    ("(and())", "empty condition"),
    ("(tags.cs.{a,b)", "unbalanced braces"),
    ("(note.eq.})", "unbalanced braces"),
])
def test_malformed_groups_are_400s_naming_the_parameter(client: TestClient, group: str,
                                                        words: str) -> None:
    body = problem(client, **{"and": group})
    assert body["type"] == "/problems/invalid-parameter" and body["parameter"] == "and"
    assert words in body["detail"]


def test_groups_are_repeatable_and_documented_in_the_spec(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/tables/{table}/rows"]["get"]["parameters"]
              if "name" in p}
    for name in ("or", "and", "not.or", "not.and"):
        assert (params[name]["style"], params[name]["explode"]) == ("form", True)
        assert params[name]["schema"]["type"] == "array"
    text = " ".join(params["or"]["description"].split())
    assert f"nest at most {filters.MAX_GROUP_DEPTH} deep" in text
    assert f"at most {filters.MAX_GROUP_CONDITIONS} conditions" in text


def test_groups_apply_to_exports_and_counts(client: TestClient) -> None:
    r = client.get("/tables/orders/rows", params={"select": "id", "or": "(id.eq.1,id.eq.3)"},
                   headers={"Accept": "text/csv"})
    assert r.text == "id\n1\n3\n"
    r = client.get("/tables/orders/rows", params={"or": "(id.eq.1,id.eq.3)", "count": "exact",
                                                  "limit": 1})
    assert r.json()["total"] == 2
    nxt = client.get("/tables/orders/rows", params={
        "or": "(id.eq.1,id.eq.3)", "limit": 1, "cursor": r.json()["next_cursor"]})
    assert [row["id"] for row in nxt.json()["data"]] == [3]


# ------------------------------------------------------------------ limits


def nested(depth: int) -> str:
    """A group ``depth`` levels deep: (id.eq.1,and(id.eq.1,and(...)))."""
    text = "id.gt.0"
    for _ in range(depth - 1):
        text = f"id.gt.0,and({text})"
    return f"({text})"


def test_groups_nest_up_to_the_limit(client: TestClient) -> None:
    assert ids(client, **{"or": nested(filters.MAX_GROUP_DEPTH)}) == [1, 2, 3, 4, 5]
    body = problem(client, **{"or": nested(filters.MAX_GROUP_DEPTH + 1)})
    assert body["detail"] == f"or: or/and groups nest at most {filters.MAX_GROUP_DEPTH} deep"
    assert body["type"] == "/problems/invalid-parameter"


def test_a_deep_pile_of_parentheses_is_a_quick_400(client: TestClient) -> None:
    for text in ("(" + "and(" * 5_000 + "id.eq.1" + ")" * 5_001,
                 "(" * 10_000 + ")" * 10_000, "(" + "(" * 20_000):
        body = problem(client, **{"or": text})
        assert body["parameter"] == "or"


def test_the_conditions_in_all_groups_are_bounded(client: TestClient) -> None:
    most = filters.MAX_GROUP_CONDITIONS
    at_most = "(" + ",".join(f"id.eq.{i}" for i in range(most)) + ")"
    assert ids(client, **{"or": at_most}) == [1, 2, 3, 4, 5]
    over = "(" + ",".join(f"id.eq.{i}" for i in range(most + 1)) + ")"
    body = problem(client, **{"or": over})
    assert body["detail"] == f"or: at most {most} conditions in or/and groups"
    half = "(" + ",".join(f"id.eq.{i}" for i in range(most // 2 + 1)) + ")"
    body = problem(client, **{"or": half, "and": half})
    assert f"at most {most} conditions" in body["detail"]
    huge = "(" + ",".join("id.eq.1" for _ in range(5000)) + ")"
    assert f"at most {most} conditions" in problem(client, **{"or": huge})["detail"]


def test_in_lists_inside_groups_are_bounded_too(client: TestClient) -> None:
    values = ",".join(str(i) for i in range(filters.MAX_IN_VALUES + 1))
    body = problem(client, **{"or": f"(id.in.({values}))"})
    assert f"at most {filters.MAX_IN_VALUES} values" in body["detail"]


def test_a_json_path_is_bounded(client: TestClient) -> None:
    path = "->k" * (filters.MAX_JSON_PATH + 1)
    for params in ({"filter": f"doc{path}.eq.1"}, {"order": f"doc{path}"},
                   {"or": f"(doc{path}.eq.1)"}):
        body = problem(client, **params)
        assert f"at most {filters.MAX_JSON_PATH} keys" in body["detail"]


# ------------------------------------------------------------------ hostile input


def hostile(value: str) -> Iterator[tuple[dict[str, Any], bool]]:
    """(params, may_be_200) for ``value`` in every position of the new syntax."""
    quoted = '"' + value.replace('"', '""') + '"'
    yield {"filter": f"doc->{value}.eq.1"}, True
    yield {"filter": f"doc->{quoted}->>x.eq.1"}, True
    yield {"filter": f"doc->>{value}.eq.x"}, True
    yield {"filter": f"body.wfts({value}).x"}, False
    yield {"filter": f"body.fts(english).{value}"}, True
    yield {"filter": f"body.wfts.{value}"}, True
    yield {"filter": f"name.not.eq.{value}"}, True
    yield {"filter": f"name.isdistinct.{value}"}, True
    yield {"filter": f"doc.cs.{value}"}, True
    yield {"filter": f"id.{value}.eq.1"}, False
    yield {"or": value}, False
    yield {"or": f"({value})"}, False
    yield {"or": f"(name.eq.{value})"}, True
    yield {"or": f"(name.eq.{quoted})"}, True
    yield {"and": f"(id.eq.1,or({value}))"}, False
    yield {"not.or": f"(doc->{quoted}.eq.1)"}, True
    yield {"order": f"doc->{value}"}, True
    yield {"order": f"doc->>{quoted}.desc"}, True


def test_hostile_inputs_in_the_new_syntax_never_500(client: TestClient, dsn: str) -> None:
    before = snapshot(dsn)
    failures = []
    for value in [*CORPUS, "->", "->>", "a->", "(((", ")))", "\"\"\"", "and(", "or()",
                  "not.", "en)glish", "english'::regconfig)", "1'::jsonb)--"]:
        for params, may_be_200 in hostile(value):
            r = client.get("/tables/victims/rows", params=params)
            ok = 400 <= r.status_code < 500 or (may_be_200 and r.status_code == 200)
            if not ok:
                failures.append((value[:40], {k: str(p)[:60] for k, p in params.items()},
                                 r.status_code, r.text[:200]))
    assert not failures, failures[:20]
    assert snapshot(dsn) == before
    assert client.get("/pool").json()["in_use"] == 0
