"""Boolean groups on an embed (README "Related data", ``or.<embed>=(...)``): they narrow the
embedded rows as ``filter=<embed>...`` does, nest by dotted path, count in the request's group
limit, decide ``!inner`` parents, apply in exports; bad names and hostile input are 400s."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server.data.filters import MAX_GROUP_CONDITIONS, MAX_GROUP_DEPTH
from tests.pg import TestDatabase, seeded_database
from tests.test_embed import SCHEMA, bad, snapshot


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "embed_groups", SCHEMA)


@pytest.fixture
def client(client_for: Callable[..., TestClient]) -> TestClient:
    return client_for()


def rows(client: TestClient, table: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/tables/{table}/rows", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def items(client: TestClient, **groups: str) -> dict[int, list[tuple[int, int]]]:
    """Orders 1 to 3 with their (line_no, qty) under the given groups on order_items."""
    data = rows(client, "orders", select="id,order_items(line_no,qty)", filter="id.in.(1,2,3)",
                **groups)
    return {r["id"]: [(i["line_no"], i["qty"]) for i in r["order_items"]] for r in data}


# order_items: order 1 has (1, qty 1, product 1), (2, qty 5, product 2), (3, qty 2, product 3);
# order 2 has (1, qty 3, product 1); order 3 has (1, qty 60, product 2).


def test_each_group_narrows_the_embedded_rows_not_the_parents(client: TestClient) -> None:
    group = "(qty.gt.4,product_id.eq.3)"
    assert items(client, **{"or.order_items": group}) == {1: [(2, 5), (3, 2)], 2: [],
                                                          3: [(1, 60)]}
    assert items(client, **{"not.or.order_items": group}) == {1: [(1, 1)], 2: [(1, 3)], 3: []}
    assert items(client, **{"and.order_items": "(qty.gt.1,qty.lt.10)"}) == {
        1: [(2, 5), (3, 2)], 2: [(1, 3)], 3: []}
    assert items(client, **{"not.and.order_items": "(qty.gt.1,qty.lt.10)"}) == {
        1: [(1, 1)], 2: [], 3: [(1, 60)]}
    # nested groups inside, and with the embed's filters and another group: all must hold
    assert items(client, **{"or.order_items": "(line_no.eq.1,and(qty.gt.1,product_id.eq.3))"}
                 ) == {1: [(1, 1), (3, 2)], 2: [(1, 3)], 3: [(1, 60)]}
    assert rows(client, "orders", select="id,order_items(line_no)", filter=[
        "id.in.(1,2,3)", "order_items.qty.lt.50"], **{
        "or.order_items": ["(line_no.eq.1,line_no.eq.2)", "(qty.gt.2,product_id.eq.1)"]}) == [
        {"id": 1, "order_items": [{"line_no": 1}, {"line_no": 2}]},
        {"id": 2, "order_items": [{"line_no": 1}]}, {"id": 3, "order_items": []}]


def test_columns_are_the_embedded_relations_own(client: TestClient) -> None:
    """``id`` and ``status`` inside ``or.orders`` are the orders' columns, though the parent
    (customers) has an ``id`` too and the embedded row's own object holds both names."""
    data = rows(client, "customers", select="id,orders(id,status)",
                **{"or.orders": "(id.eq.1,status.eq.new)"})
    assert data == [{"id": 1, "orders": [{"id": 1, "status": "paid"}, {"id": 2, "status": "new"}]},
                    {"id": 2, "orders": [{"id": 4, "status": "new"}]},
                    {"id": 3, "orders": []}]
    # a many-to-one embed takes a group too: no match is null
    assert rows(client, "orders", select="id,customers(name)", filter="id.in.(1,3)",
                **{"or.customers": "(name.eq.Ada,name.eq.Cy)"}) == [
        {"id": 1, "customers": {"name": "Ada"}}, {"id": 3, "customers": None}]
    problem = bad(client, "/tables/orders/rows", **{"select": "id,order_items(qty)",
                                                    "or.order_items": "(status.eq.new)"})
    assert problem["parameter"] == "or.order_items"
    assert "order_items has no column 'status'" in problem["detail"], problem


def test_nested_embeds_by_dotted_path_and_aliases(client: TestClient) -> None:
    nested = rows(client, "customers", select="name,orders(id,order_items(qty))",
                  filter="id.in.(1,2)", **{"or.orders.order_items": "(qty.eq.1,qty.eq.60)",
                                           "not.and.orders": "(id.gt.0,status.eq.new)"})
    assert nested == [{"name": "Ada", "orders": [{"id": 1, "order_items": [{"qty": 1}]}]},
                      {"name": "Bob", "orders": [{"id": 3, "order_items": [{"qty": 60}]}]}]
    aliased = rows(client, "customers", select="name,bought:orders(id,items:order_items(qty))",
                   filter="id.eq.1", **{"and.bought.items": "(qty.gte.2,qty.lte.3)"})
    assert aliased == [{"name": "Ada", "bought": [{"id": 1, "items": [{"qty": 2}]},
                                             {"id": 2, "items": [{"qty": 3}]}]}]


def test_inner_keeps_parents_whose_child_passes_the_group(client: TestClient) -> None:
    params = {"select": "id,order_items!inner(qty)",
              "or.order_items": "(qty.gt.50,product_id.eq.3)", "limit": 1, "count": "exact"}
    first = client.get("/tables/orders/rows", params=params)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["total"] == 2 and body["data"] == [{"id": 1, "order_items": [{"qty": 2}]}]
    second = client.get("/tables/orders/rows", params={**params, "cursor": body["next_cursor"]})
    assert second.json()["data"] == [{"id": 3, "order_items": [{"qty": 60}]}]
    assert second.json()["next_cursor"] is None
    # negated: parents with a child outside the group
    assert [r["id"] for r in rows(client, "orders", select="id,order_items!inner()", **{
        "not.or.order_items": "(qty.gt.2)"})] == [1]


def test_exports_apply_embed_groups(client: TestClient) -> None:
    params = {"select": "id,order_items(qty)", "filter": "id.in.(1,3)",
              "not.or.order_items": "(qty.eq.1,qty.eq.60)"}
    ndjson = client.get("/tables/orders/rows", params=params,
                        headers={"Accept": "application/x-ndjson"})
    assert ndjson.status_code == 200, ndjson.text
    assert [json.loads(line) for line in ndjson.text.splitlines()] == [
        {"id": 1, "order_items": [{"qty": 5}, {"qty": 2}]}, {"id": 3, "order_items": []}]
    text = client.get("/tables/orders/rows", params=params, headers={"Accept": "text/csv"}).text
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["id", "order_items"]
    assert [(r[0], json.loads(r[1])) for r in table[1:]] == [
        ("1", [{"qty": 5}, {"qty": 2}]), ("3", [])]


def test_aggregated_embeds_take_groups(client_for: Callable[..., TestClient]) -> None:
    client = client_for(aggregates="on")
    assert rows(client, "orders", select="id,order_items(qty.sum(),count())", filter="id.eq.1",
                **{"or.order_items": "(line_no.eq.1,line_no.eq.3)"}) == [
        {"id": 1, "order_items": [{"sum": 3, "count": 2}]}]


@pytest.mark.parametrize(("name", "value", "why"), [
    ("or.nosuch", "(qty.eq.1)", "no embed named 'nosuch'"),
    ("not.and.order_items.nosuch", "(qty.eq.1)", "no embed named 'nosuch'"),
    ("and.customers.orders", "(id.eq.1)", "no embed named 'orders'"),
    ("or.", "(qty.eq.1)", "expected or.<embed>"),
    ("not.or.", "(qty.eq.1)", "expected not.or.<embed>"),
    ("or.order_items", "qty.eq.1", "expected a list in parentheses"),
])
def test_a_group_naming_no_embed_is_a_400_naming_the_parameter(
        client: TestClient, name: str, value: str, why: str) -> None:
    problem = bad(client, "/tables/orders/rows",
                  **{"select": "id,customers(name),order_items(qty)", name: value})
    assert problem["parameter"] == name and why in problem["detail"], problem
    assert problem["type"] == "/problems/invalid-parameter"


def test_a_group_on_an_embed_needs_one(client: TestClient) -> None:
    problem = bad(client, "/tables/orders/rows", **{"or.order_items": "(qty.eq.1)"})
    assert problem["parameter"] == "or.order_items" and "embeds nothing" in problem["detail"]
    problem = bad(client, "/tables/orders/rows", **{"select": "id,status",
                                                    "or.order_items": "(qty.eq.1)"})
    assert "embeds nothing" in problem["detail"]


def test_only_group_names_take_an_embed_suffix(client: TestClient) -> None:
    """``or``, ``and``, ``not.or``, ``not.and`` are ``x-per-embed`` in the spec: with a suffix
    they pass strict validation; other dotted names stay unknown parameters."""
    for name in ("not.order_items", "nor.order_items", "not.xor.order_items", "ors.order_items"):
        problem = bad(client, "/tables/orders/rows", **{"select": "id,order_items(qty)",
                                                        name: "(qty.eq.1)"})
        assert problem["invalid-params"] == [{"name": name, "reason": "unknown query parameter"}]


def test_embed_groups_log_no_error(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        response = client.get("/tables/orders/rows", params={
            "select": "id,order_items(qty)", "or.order_items": "(qty.eq.1)",
            "not.and.order_items": "(qty.eq.1,qty.eq.2)"})
    assert response.status_code == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_values_in_embed_groups_are_checked_as_the_child_columns(client: TestClient) -> None:
    """A value the embedded column's type refuses names the group parameter and the column."""
    problem = bad(client, "/tables/orders/rows", **{"select": "id,order_items(qty)",
                                                    "or.order_items": "(line_no.eq.1,qty.gt.x)"})
    assert problem["type"] == "/problems/invalid-value"
    assert (problem["parameter"], problem["column"]) == ("or.order_items", "qty")
    problem = bad(client, "/tables/customers/rows", **{
        "select": "id,orders(id,order_items(qty))",
        "not.or.orders.order_items": "(qty.in.(1,2,three))"})
    assert (problem["parameter"], problem["column"]) == ("not.or.orders.order_items", "qty")
    # like patterns are checked before the query, also inside an embed's group
    problem = bad(client, "/tables/orders/rows", **{"select": "id,customers(name)",
                                                    "or.customers": "(name.like.Ada\\)"})
    assert problem["parameter"] == "or.customers" and "escape" in problem["detail"], problem
    problem = bad(client, "/tables/orders/rows", **{"select": "id,customers(name)",
                                                    "or.customers": "(name.fts.a &)"})
    assert problem["parameter"] == "or.customers", problem


def test_embed_groups_count_in_the_request_limits(client: TestClient) -> None:
    half = MAX_GROUP_CONDITIONS // 2
    top = "(" + ",".join(f"id.eq.{i}" for i in range(half)) + ")"
    child = "(" + ",".join(f"qty.eq.{i}" for i in range(MAX_GROUP_CONDITIONS - half)) + ")"
    params = {"select": "id,order_items(qty)", "or": top, "or.order_items": child}
    assert client.get("/tables/orders/rows", params=params).status_code == 200
    problem = bad(client, "/tables/orders/rows", **{**params, "and.order_items": "(qty.eq.1)"})
    assert problem["parameter"] == "and.order_items"
    assert f"at most {MAX_GROUP_CONDITIONS} conditions" in problem["detail"]
    deep = "(" + "or(" * MAX_GROUP_DEPTH + "qty.eq.1" + ")" * MAX_GROUP_DEPTH + ")"
    problem = bad(client, "/tables/orders/rows", **{"select": "id,order_items(qty)",
                                                    "or.order_items": deep})
    assert problem["parameter"] == "or.order_items" and "nest at most" in problem["detail"]


@pytest.mark.parametrize("value", [
    "(qty.eq.1'); drop table orders; --)",
    "(qty.eq.1",
    "(qty.eq.1))",
    '(qty.eq."1)',
    "(qty.eq.1,,qty.eq.2)",
    "()",
    "(or())",
    "(and(qty.eq.1)",
    "(qty.in.(1,2)",
    "(qty.eq.1;select 1)",
    "(qty->a.eq.1)",
    "(qty.zz.1)",
    "(" * 3000 + ")" * 3000,
    "(qty.eq.\x00)",
    "(qty.is.maybe)",
    "(qty.wfts(x).a)",
    "(\"qty\".eq.1)",
], ids=lambda s: s[:30])
def test_hostile_embed_groups_are_400s_and_change_nothing(client: TestClient, dsn: str,
                                                         value: str) -> None:
    before = snapshot(dsn)
    problem = bad(client, "/tables/orders/rows",
                  **{"select": "id,order_items(qty)", "not.or.order_items": value})
    assert problem["parameter"] == "not.or.order_items", problem
    assert "unknown query parameter" not in problem["detail"]  # read, not turned away
    assert snapshot(dsn) == before
