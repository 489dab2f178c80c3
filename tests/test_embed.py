"""Embedding related rows in ``select`` (README "Related data"): each relationship kind, nesting,
aliases, ``!inner`` with pagination and counts, embedded filters/order/limit, ambiguity and
hints, JSON paths, exports, row by key, limits, hostile input, and one statement per request."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.data.catalog import view_column_origins
from swagger_server.db.transaction import PreambleCursor
from tests.pg import TestDatabase, seeded_database

SCHEMA = """
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE addresses (id integer PRIMARY KEY, city text NOT NULL);
CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer_id integer REFERENCES customers,
    billing integer NOT NULL CONSTRAINT orders_billing_fkey REFERENCES addresses,
    shipping integer NOT NULL CONSTRAINT orders_shipping_fkey REFERENCES addresses,
    status text NOT NULL,
    total numeric(10, 2) NOT NULL,
    prefs jsonb NOT NULL DEFAULT '{}',
    note text
);
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price numeric(10, 2));
CREATE TABLE order_items (
    order_id integer REFERENCES orders,
    line_no integer,
    product_id integer NOT NULL REFERENCES products,
    qty integer NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE tags (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE product_tags (
    product_id integer REFERENCES products,
    tag_id integer REFERENCES tags,
    PRIMARY KEY (product_id, tag_id)
);
CREATE TABLE shipments (
    id integer PRIMARY KEY, order_id integer, line_no integer,
    CONSTRAINT shipments_item_fkey FOREIGN KEY (order_id, line_no) REFERENCES order_items
);
CREATE TABLE "odd.names" ("id.x" integer PRIMARY KEY, "orders.id" integer REFERENCES orders);
CREATE VIEW order_view AS SELECT id AS order_no, customer_id, status FROM orders;
CREATE VIEW computed AS SELECT id + 0 AS id, customer_id + 0 AS customer_id FROM orders;

INSERT INTO customers VALUES (1, 'Ada'), (2, 'Bob'), (3, 'Cy');
INSERT INTO addresses VALUES (1, 'Berlin'), (2, 'Paris');
INSERT INTO orders VALUES
    (1, 1, 1, 2, 'paid', 10, '{"theme": "dark", "lang": {"code": "de"}, "list": [7, 8]}', NULL),
    (2, 1, 1, 1, 'new', 20, '{"theme": "light"}', NULL),
    (3, 2, 2, 2, 'paid', 30, '{}', NULL),
    (4, 2, 2, 1, 'new', 40, '{}', NULL),
    (5, NULL, 1, 1, 'new', 50, '{}', NULL);
INSERT INTO products VALUES (1, 'Pen', 2.50), (2, 'Ink', 5.00), (3, 'Pad', 1.00);
INSERT INTO order_items VALUES (1, 1, 1, 1), (1, 2, 2, 5), (1, 3, 3, 2), (2, 1, 1, 3),
                               (3, 1, 2, 60);
INSERT INTO tags VALUES (1, 'red'), (2, 'blue');
INSERT INTO product_tags VALUES (1, 1), (1, 2), (2, 2);
INSERT INTO shipments VALUES (1, 1, 2);
INSERT INTO "odd.names" VALUES (1, 1);
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "embed", SCHEMA)


@pytest.fixture
def client(client_for: Callable[..., TestClient]) -> TestClient:
    return client_for()


def rows(client: TestClient, table: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/tables/{table}/rows", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def bad(client: TestClient, url: str, **params: Any) -> dict[str, Any]:
    response = client.get(url, params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


def snapshot(dsn: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT relname, n_live_tup FROM pg_stat_user_tables ORDER BY relname")
        tables = cur.fetchall()
        cur.execute("SELECT md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o")
        return [*tables, cur.fetchone()]


# ------------------------------------------------------------------ catalog


def test_the_catalog_lists_foreign_keys_both_ways(client: TestClient) -> None:
    orders = client.get("/tables/orders").json()
    assert {(fk["name"], tuple(fk["columns"]), fk["references"]["name"])
            for fk in orders["foreign_keys"]} == {
        ("orders_billing_fkey", ("billing",), "addresses"),
        ("orders_shipping_fkey", ("shipping",), "addresses"),
        ("orders_customer_id_fkey", ("customer_id",), "customers")}
    assert {(r["table"], tuple(r["columns"])) for r in orders["referenced_by"]} == {
        ("order_items", ("order_id",)), ("odd.names", ("orders.id",))}
    # composite keys keep their column order
    shipments = client.get("/tables/shipments").json()
    assert shipments["foreign_keys"] == [{
        "name": "shipments_item_fkey", "columns": ["order_id", "line_no"],
        "references": {"schema": "public", "name": "order_items",
                       "columns": ["order_id", "line_no"]}}]
    items = client.get("/tables/order_items").json()
    assert ["shipments", ["order_id", "line_no"], ["order_id", "line_no"]] in [
        [r["table"], r["columns"], r["referenced_columns"]] for r in items["referenced_by"]]


def test_a_view_inherits_the_keys_of_columns_it_selects_unchanged(client: TestClient) -> None:
    view = client.get("/tables/order_view").json()
    assert [(fk["columns"], fk["references"]["name"]) for fk in view["foreign_keys"]] == [
        (["customer_id"], "customers")]
    assert ("order_items", ["order_id"], ["order_no"]) in [
        (r["table"], r["columns"], r["referenced_columns"]) for r in view["referenced_by"]]
    computed = client.get("/tables/computed").json()
    assert computed["foreign_keys"] == [] and computed["referenced_by"] == []
    data = rows(client, "order_view", select="order_no,customer:customers(name),"
                "items:order_items(line_no)", order="order_no", limit=2)
    assert data == [{"order_no": 1, "customer": {"name": "Ada"},
                     "items": [{"line_no": 1}, {"line_no": 2}, {"line_no": 3}]},
                    {"order_no": 2, "customer": {"name": "Ada"}, "items": [{"line_no": 1}]}]


def test_relationships_only_between_exposed_relations(
        client_for: Callable[..., TestClient]) -> None:
    client = client_for(exclude=("customers",))
    orders = client.get("/tables/orders").json()
    assert "customers" not in {fk["references"]["name"] for fk in orders["foreign_keys"]}
    problem = bad(client, "/tables/orders/rows", select="id,customers(name)")
    assert problem["detail"] == "select: no table or view named 'customers' to embed"


def test_view_origins_read_only_the_top_level_target_list() -> None:
    """A subquery's target entries (inside the range table) are not the view's columns."""
    tree = ("({QUERY :commandType 1 :rtable ({RANGETBLENTRY :subquery {QUERY :targetList "
            "({TARGETENTRY :expr {VAR} :resno 1 :resname x :resorigtbl 99 :resorigcol 9 "
            ":resjunk false})}}) :targetList ({TARGETENTRY :expr {VAR :varno 1} :resno 1 "
            ":resname a\\{b :resorigtbl 42 :resorigcol 3 :resjunk false} {TARGETENTRY :expr "
            "{OPEXPR} :resno 2 :resname c :resorigtbl 0 :resorigcol 0 :resjunk false}) "
            ":override 0})")
    assert view_column_origins(tree) == {1: (42, 3)}


# ------------------------------------------------------------------ relationship kinds


def test_many_to_one_is_an_object_or_null(client: TestClient) -> None:
    data = rows(client, "orders", select="id,customer:customers(name)", order="id")
    assert [r["customer"] for r in data] == [
        {"name": "Ada"}, {"name": "Ada"}, {"name": "Bob"}, {"name": "Bob"}, None]
    assert list(data[0]) == ["id", "customer"]


def test_one_to_many_is_an_array_never_null(client: TestClient) -> None:
    data = rows(client, "orders", select="id,order_items(line_no,qty)")
    assert data[0]["order_items"] == [{"line_no": 1, "qty": 1}, {"line_no": 2, "qty": 5},
                                      {"line_no": 3, "qty": 2}]
    assert [r["order_items"] for r in data[3:]] == [[], []]
    customers = rows(client, "customers", select="name,orders(id)")
    assert customers == [{"name": "Ada", "orders": [{"id": 1}, {"id": 2}]},
                         {"name": "Bob", "orders": [{"id": 3}, {"id": 4}]},
                         {"name": "Cy", "orders": []}]


def test_many_to_many_through_a_junction_table(client: TestClient) -> None:
    assert rows(client, "products", select="name,tags(name)") == [
        {"name": "Pen", "tags": [{"name": "red"}, {"name": "blue"}]},
        {"name": "Ink", "tags": [{"name": "blue"}]},
        {"name": "Pad", "tags": []}]
    assert rows(client, "tags", select="name,products(name)", filter="id.eq.2") == [
        {"name": "blue", "products": [{"name": "Pen"}, {"name": "Ink"}]}]
    # order_items is no junction: product_id is outside its primary key
    problem = bad(client, "/tables/orders/rows", select="id,products(name)")
    assert "no relationship between orders and products" in problem["detail"]


def test_a_composite_foreign_key_joins_on_every_column(client: TestClient) -> None:
    assert rows(client, "shipments", select="id,item:order_items(order_id,line_no,qty)") == [
        {"id": 1, "item": {"order_id": 1, "line_no": 2, "qty": 5}}]
    data = rows(client, "order_items", select="order_id,line_no,shipments(id)",
                filter="order_id.eq.1")
    assert [r["shipments"] for r in data] == [[], [{"id": 1}], []]


def test_nesting_three_deep_and_the_depth_limit(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    data = rows(client, "customers", select="name,orders(id,order_items(qty,"
                "product:products(name)))", filter="id.eq.1")
    assert data == [{"name": "Ada", "orders": [
        {"id": 1, "order_items": [{"qty": 1, "product": {"name": "Pen"}},
                                  {"qty": 5, "product": {"name": "Ink"}},
                                  {"qty": 2, "product": {"name": "Pad"}}]},
        {"id": 2, "order_items": [{"qty": 3, "product": {"name": "Pen"}}]}]}]
    problem = bad(client, "/tables/customers/rows",
                  select="name,orders(id,order_items(qty,products(name,tags(name))))")
    assert problem["parameter"] == "select" and "MAX_EMBED_DEPTH" in problem["detail"]
    shallow = client_for(max_embed_depth=1)
    assert "at most 1 deep" in bad(shallow, "/tables/orders/rows",
                                   select="id,order_items(products(name))")["detail"]
    few = client_for(max_embeds=2)
    assert "MAX_EMBEDS" in bad(few, "/tables/orders/rows",
                               select="id,customers(name),order_items(qty),"
                                      "a:addresses!billing(city)")["detail"]
    assert len(rows(few, "orders", select="id,customers(name),order_items(qty)")) == 5


def test_aliases_star_and_empty_embeds(client: TestClient) -> None:
    data = rows(client, "orders", select="no:id,who:customers(*),lines:order_items()",
                filter="id.eq.2")
    assert data == [{"no": 2, "who": {"id": 1, "name": "Ada"}, "lines": [{}]}]
    problem = bad(client, "/tables/orders/rows", select="id,id:total")
    assert "two items named 'id'" in problem["detail"]
    assert rows(client, "orders", select="id:id", filter="id.eq.1") == [{"id": 1}]
    # PostgreSQL cuts names at 63 bytes: a longer alias (or JSON key) would lose its end
    long = "é" * 32
    assert "longer than 63 bytes" in bad(client, "/tables/orders/rows",
                                         select=f"{long}:id")["detail"]
    assert "longer than 63 bytes" in bad(client, "/tables/orders/rows",
                                         select=f"prefs->>{long}")["detail"]
    assert rows(client, "orders", select=f"{long[:31]}:id", filter="id.eq.1") == [
        {long[:31]: 1}]


@pytest.mark.parametrize(("select", "expected"), [
    ("o:id", {"o": 1}),
    ("id,o:order_items(qty)", {"id": 1, "o": [{"qty": 1}, {"qty": 5}, {"qty": 2}]}),
    ("id,order_items(o:qty)", {"id": 1, "order_items": [{"o": 1}, {"o": 5}, {"o": 2}]}),
    ("id,order_items(g:qty.sum())", {"id": 1, "order_items": [{"g": 8}]}),
    ("x:count()", {"x": 1}),
])
def test_names_of_the_statements_aliases_are_ordinary_names(
        client_for: Callable[..., TestClient], select: str, expected: dict[str, Any]) -> None:
    """The statements name their derived rows ``o``, ``x``, ``g``: a field of that name must not
    be taken for the whole row (``row_to_json(o)`` would read the field)."""
    client = client_for(aggregates="on")
    assert rows(client, "orders", select=select, filter="id.eq.1") == [expected]
    ndjson = client.get("/tables/orders/rows", params={"select": select, "filter": "id.eq.1"},
                        headers={"Accept": "application/x-ndjson"})
    assert json.loads(ndjson.text) == expected, ndjson.text
    if "count()" not in select:
        assert client.get("/tables/orders/rows/1", params={"select": select}).json() == expected


# ------------------------------------------------------------------ filters, order, limit


def test_embedded_filters_narrow_the_array_not_the_parents(client: TestClient) -> None:
    data = rows(client, "orders", select="id,order_items(line_no,qty)",
                filter=["order_items.qty.gt.1", "status.eq.paid"])
    assert data == [{"id": 1, "order_items": [{"line_no": 2, "qty": 5}, {"line_no": 3, "qty": 2}]},
                    {"id": 3, "order_items": [{"line_no": 1, "qty": 60}]}]
    nested = rows(client, "customers", select="name,orders(id,order_items(qty))",
                  filter=["orders.order_items.qty.gte.5", "orders.id.lt.4"])
    assert nested[0]["orders"] == [{"id": 1, "order_items": [{"qty": 5}]},
                                   {"id": 2, "order_items": []}]
    assert nested[1]["orders"] == [{"id": 3, "order_items": [{"qty": 60}]}]


def test_embedded_order_and_limit(client: TestClient) -> None:
    response = client.get("/tables/orders/rows", params={
        "select": "id,order_items(line_no)", "order": "order_items.line_no.desc,id.desc",
        "limit.order_items": "2", "filter": "id.in.(1,2)"})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        {"id": 2, "order_items": [{"line_no": 1}]},
        {"id": 1, "order_items": [{"line_no": 3}, {"line_no": 2}]}]
    nested = client.get("/tables/customers/rows", params={
        "select": "name,orders(id,order_items(line_no))", "limit.orders.order_items": "1",
        "limit.orders": "1", "filter": "id.eq.1"})
    assert nested.json()["data"] == [{"name": "Ada", "orders": [
        {"id": 1, "order_items": [{"line_no": 1}]}]}]
    for name, value, why in [
        ("limit.nosuch", "1", "no embed named 'nosuch'"),
        ("limit.customers", "1", "single object"),
        ("limit.order_items", "0", "between 1 and 100 (MAX_EMBED_ROWS)"),
        ("limit.order_items", "x", "expected an integer"),
    ]:
        problem = bad(client, "/tables/orders/rows",
                      **{"select": "id,customers(name),order_items(qty)", name: value})
        assert problem["parameter"] == name and why in problem["detail"], problem
    assert "embeds nothing" in bad(client, "/tables/orders/rows",
                                   **{"limit.order_items": "1"})["detail"]
    assert "nothing to order" in bad(client, "/tables/orders/rows",
                                     select="id,customers(name)",
                                     order="customers.name")["detail"]


def test_a_column_of_the_relation_wins_over_an_embed_prefix(client: TestClient) -> None:
    """``orders.id`` is a column of "odd.names": the filter is on it, not on an embed."""
    data = rows(client, "odd.names", select='"id.x",orders(id)', filter="orders.id.eq.1")
    assert data == [{"id.x": 1, "orders": {"id": 1}}]
    assert rows(client, "odd.names", select='"id.x",orders(id)', filter="orders.id.eq.2") == []
    assert rows(client, "odd.names", select='"id.x",orders(id)',
                filter="orders.status.eq.new") == [{"id.x": 1, "orders": None}]


def test_inner_keeps_parents_with_a_matching_child_for_pages_and_counts(
        client: TestClient) -> None:
    params = {"select": "id,order_items!inner(qty)", "filter": "order_items.qty.gt.2",
              "limit": 2, "count": "exact"}
    first = client.get("/tables/orders/rows", params=params)
    body = first.json()
    assert body["total"] == 3 and first.headers["x-total-count"] == "3"
    assert body["data"] == [{"id": 1, "order_items": [{"qty": 5}]},
                            {"id": 2, "order_items": [{"qty": 3}]}]
    second = client.get("/tables/orders/rows",
                        params={**params, "cursor": body["next_cursor"]}).json()
    assert second["data"] == [{"id": 3, "order_items": [{"qty": 60}]}]
    assert second["next_cursor"] is None
    estimated = client.get("/tables/orders/rows", params={**params, "count": "estimated"})
    assert estimated.status_code == 200
    by_offset = rows(client, "orders", select="id,order_items!inner(qty)",
                     filter="order_items.qty.gt.2", offset=2)
    assert by_offset == [{"id": 3, "order_items": [{"qty": 60}]}]
    # without a filter: parents with any child
    assert [r["id"] for r in rows(client, "orders", select="id,order_items!inner()")] == [1, 2, 3]
    assert client.get("/tables/orders/rows/4", params={"select": "id,order_items!inner(qty)"}
                      ).status_code == 404


# ------------------------------------------------------------------ ambiguity and hints


def test_two_keys_to_one_table_are_ambiguous_until_hinted(client: TestClient) -> None:
    problem = bad(client, "/tables/orders/rows", select="id,addresses(city)")
    assert problem["type"] == "/problems/ambiguous-embed" and problem["parameter"] == "select"
    assert sorted(c["hint"] for c in problem["candidates"]) == ["orders_billing_fkey",
                                                               "orders_shipping_fkey"]
    assert {c["kind"] for c in problem["candidates"]} == {"many-to-one"}
    data = rows(client, "orders", select="id,bill:addresses!orders_billing_fkey(city),"
                "ship:addresses!shipping(city)", filter="id.eq.1")
    assert data == [{"id": 1, "bill": {"city": "Berlin"}, "ship": {"city": "Paris"}}]
    reverse = rows(client, "addresses", select="city,billed:orders!billing(id),"
                   "shipped:orders!orders_shipping_fkey(id)", filter="id.eq.2")
    assert reverse == [{"city": "Paris", "billed": [{"id": 3}, {"id": 4}],
                        "shipped": [{"id": 1}, {"id": 3}]}]
    assert "no relationship matching 'nosuch'" in bad(
        client, "/tables/orders/rows", select="id,addresses!nosuch(city)")["detail"]
    assert "relation[!hint][!inner]" in bad(
        client, "/tables/orders/rows", select="id,addresses!a!b(city)")["detail"]


# ------------------------------------------------------------------ JSON paths


def test_json_paths_in_select(client: TestClient) -> None:
    data = rows(client, "orders", select="id,prefs->>theme,code:prefs->lang->>code,"
                "lang:prefs->lang,second:prefs->list->1,prefs->>missing", filter="id.eq.1")
    assert data == [{"id": 1, "theme": "dark", "code": "de", "lang": {"code": "de"},
                     "second": 8, "missing": None}]
    assert "not json" in bad(client, "/tables/orders/rows", select="status->>x")["detail"]
    assert "must be the path's last step" in bad(client, "/tables/orders/rows",
                                     select="prefs->>lang->code")["detail"]
    assert "empty key" in bad(client, "/tables/orders/rows", select="prefs->>")["detail"]
    nested = rows(client, "customers", select="name,orders(theme:prefs->>theme)",
                  filter="id.eq.1")
    assert nested == [{"name": "Ada", "orders": [{"theme": "dark"}, {"theme": "light"}]}]


def test_json_path_keys_are_values_never_sql(client: TestClient, dsn: str) -> None:
    before = snapshot(dsn)
    data = rows(client, "orders", select="x:prefs->>'; DROP TABLE orders; --", filter="id.eq.1")
    assert data == [{"x": None}]
    assert snapshot(dsn) == before


# ------------------------------------------------------------------ exports, row by key


def test_exports_nest_embeds(client: TestClient) -> None:
    params = {"select": "id,customer:customers(name),order_items(qty),theme:prefs->>theme",
              "filter": "id.in.(1,5)"}
    ndjson = client.get("/tables/orders/rows", params=params,
                        headers={"Accept": "application/x-ndjson"})
    assert ndjson.status_code == 200, ndjson.text
    assert [json.loads(line) for line in ndjson.text.splitlines()] == [
        {"id": 1, "customer": {"name": "Ada"}, "order_items": [{"qty": 1}, {"qty": 5}, {"qty": 2}],
         "theme": "dark"},
        {"id": 5, "customer": None, "order_items": [], "theme": None}]
    text = client.get("/tables/orders/rows", params=params, headers={"Accept": "text/csv"}).text
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["id", "customer", "order_items", "theme"]
    assert json.loads(table[1][1]) == {"name": "Ada"} and table[1][3] == "dark"
    assert json.loads(table[1][2]) == [{"qty": 1}, {"qty": 5}, {"qty": 2}]
    assert table[2] == ["5", "", "[]", ""]  # NULL (no customer) is an empty cell, as ever


def test_row_by_key_takes_embeds(client: TestClient) -> None:
    response = client.get("/tables/orders/rows/1",
                          params={"select": "id,customer:customers(name),order_items(line_no)"})
    assert response.json() == {"id": 1, "customer": {"name": "Ada"},
                               "order_items": [{"line_no": 1}, {"line_no": 2}, {"line_no": 3}]}


# ------------------------------------------------------------------ hostile input


@pytest.mark.parametrize("select", [
    "id,customers(name", "id,customers(name))", "id,(name)", "id,customers()x",
    'id,"customers(name)', "id,customers!(name)", ":id", "id,:customers(name)",
    "id,customers(nosuch)", "id,nosuch(id)", "id,pg_class(relname)",
    "id,information_schema.tables(table_name)", "id,customers(name,orders(id,customers(id,"
    "orders(id))))", "(" * 5000 + ")" * 5000, "a(" * 3000 + ")" * 3000,
    "id,customers!inner!inner(name)", "id,\"x\"\"y\"(a)", "id,prefs->", "id,prefs->->a",
    "id,customers(name)->x", "id;select 1", "id,customers(name;drop table orders)",
    "id," + "c:customers(name)," * 20,
], ids=lambda s: s[:40])
def test_hostile_select_is_a_400_and_changes_nothing(client: TestClient, dsn: str,
                                                     select: str) -> None:
    before = snapshot(dsn)
    problem = bad(client, "/tables/orders/rows", select=select)
    assert problem["parameter"] == "select"
    assert snapshot(dsn) == before


@pytest.mark.parametrize(("name", "value"), [
    ("filter", "order_items.qty.gt.x'); drop table orders; --"),
    ("filter", "order_items.nosuch.eq.1"),
    ("filter", "order_items.qty.zz.1"),
    ("order", "order_items.nosuch.desc"),
    ("order", "order_items.qty.sideways"),
    ("limit.order_items", "1e3"),
    ("limit.order_items.x", "1"),
])
def test_hostile_embedded_parameters_are_400s(client: TestClient, dsn: str, name: str,
                                               value: str) -> None:
    before = snapshot(dsn)
    problem = bad(client, "/tables/orders/rows",
                  **{"select": "id,order_items(qty)", name: value})
    assert problem["parameter"] == name
    assert snapshot(dsn) == before


def test_a_per_embed_limit_logs_no_error(client: TestClient,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Connexion logs an error for each query parameter outside the spec that it passes to a
    view; ``limit.<embed>`` is one by design and must not fill the log."""
    with caplog.at_level("DEBUG"):
        response = client.get("/tables/orders/rows", params={
            "select": "id,order_items(qty)", "limit.order_items": "1"})
    assert response.status_code == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_only_limit_takes_a_per_embed_suffix(client: TestClient) -> None:
    """The spec marks ``limit`` ``x-per-embed``: ``limit.<embed>`` passes strict validation,
    other dotted names stay unknown parameters."""
    for name in ("select.order_items", "filter.x", "limits.order_items", "limit_x"):
        problem = bad(client, "/tables/orders/rows", **{"select": "id,order_items(qty)",
                                                        name: "1"})
        assert problem["invalid-params"] == [{"name": name, "reason": "unknown query parameter"}]
    assert bad(client, "/tables/orders/rows", **{"limit.": "1"})["parameter"] == "limit."


# ------------------------------------------------------------------ aggregates


def test_aggregates_are_off_by_default(client: TestClient) -> None:
    problem = bad(client, "/tables/orders/rows", select="status,total.sum()")
    assert "AGGREGATES" in problem["detail"] and problem["parameter"] == "select"
    assert "AGGREGATES" in bad(client, "/tables/orders/rows", select="count()")["detail"]


def test_aggregates_group_by_the_other_fields(client_for: Callable[..., TestClient]) -> None:
    client = client_for(aggregates="on")
    assert rows(client, "orders", select="status,total.sum(),n:count(),total.avg(),"
                "low:total.min(),total.max()") == [
        {"status": "new", "sum": 110.00, "n": 3, "avg": 36.6666666666666667, "low": 20.00,
         "max": 50.00},
        {"status": "paid", "sum": 40.00, "n": 2, "avg": 20.0000000000000000, "low": 10.00,
         "max": 30.00}]
    assert rows(client, "orders", select="count()", filter="status.eq.new") == [{"count": 3}]
    assert rows(client, "orders", select="theme:prefs->>theme,count()") == [
        {"theme": "dark", "count": 1}, {"theme": "light", "count": 1}, {"theme": None, "count": 3}]
    # order by an output field; pages by offset; count counts groups
    first = client.get("/tables/orders/rows", params={
        "select": "customer_id,count()", "order": "count.desc", "limit": 2, "count": "exact"})
    assert first.json() == {"data": [{"customer_id": 1, "count": 2},
                                     {"customer_id": 2, "count": 2}],
                            "next_cursor": None, "total": 3}
    assert "offset=2" in first.headers["link"]
    assert rows(client, "orders", select="customer_id,count()", order="count.desc",
                offset=2) == [{"customer_id": None, "count": 1}]
    assert "offset" in bad(client, "/tables/orders/rows", select="status,count()",
                           cursor="x")["detail"]
    assert "a field of select" in bad(client, "/tables/orders/rows", select="status,count()",
                                      order="total")["detail"]
    assert "nothing to aggregate" in bad(client, "/tables/orders/rows/1",
                                         select="count()")["detail"]
    assert "take no embeds" in bad(client, "/tables/orders/rows",
                                   select="count(),customers(name)")["detail"]


def test_aggregates_inside_an_embed_and_in_exports(
        client_for: Callable[..., TestClient]) -> None:
    client = client_for(aggregates="on")
    assert rows(client, "orders", select="id,order_items(qty.sum(),lines:count())",
                filter="id.in.(1,4)") == [
        {"id": 1, "order_items": [{"sum": 8, "lines": 3}]},
        {"id": 4, "order_items": [{"sum": None, "lines": 0}]}]
    assert rows(client, "customers", select="name,orders(status,count())", filter="id.eq.1"
                ) == [{"name": "Ada", "orders": [{"status": "new", "count": 1},
                                                 {"status": "paid", "count": 1}]}]
    assert "only a one-to-many" in bad(client, "/tables/orders/rows",
                                       select="id,customers(count())")["detail"]
    params = {"select": "status,total.sum()", "order": "status"}
    ndjson = client.get("/tables/orders/rows", params=params,
                        headers={"Accept": "application/x-ndjson"}).text
    assert [json.loads(line) for line in ndjson.splitlines()] == [
        {"status": "new", "sum": 110.00}, {"status": "paid", "sum": 40.00}]
    text = client.get("/tables/orders/rows", params=params, headers={"Accept": "text/csv"}).text
    assert list(csv.reader(io.StringIO(text))) == [["status", "sum"], ["new", "110.00"],
                                                  ["paid", "40.00"]]


# ------------------------------------------------------------------ one statement


EXECUTED: list[str] = []


def _counting(execute: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps the pool's cursor class's execute: every statement a request sends is recorded."""

    def counted(self: Any, query: Any, vars: Any = None) -> Any:
        EXECUTED.append(query.as_string(self) if hasattr(query, "as_string") else str(query))
        return execute(self, query, vars)

    return counted


def test_an_embedding_request_runs_one_statement(
        client_for: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_for(max_embed_depth=4)
    # Every pooled connection's cursors are PreambleCursors (db/transaction.py).
    monkeypatch.setattr(PreambleCursor, "execute", _counting(PreambleCursor.execute))
    db.close_pool()
    assert client.get("/tables/orders").status_code == 200  # the catalog, read once
    EXECUTED.clear()
    plain = client.get("/tables/orders/rows", params={"select": "id,total", "limit": 2})
    assert plain.status_code == 200
    plain_count = len(EXECUTED)
    EXECUTED.clear()
    embedded = client.get("/tables/customers/rows", params={
        "select": "id,orders(id,b:addresses!billing(city),order_items(qty,products(name,"
                  "tags(name))))", "limit": 2, "filter": "orders.order_items.qty.gt.1"})
    assert embedded.status_code == 200, embedded.text
    assert embedded.json()["data"][0]["orders"][0]["order_items"][0]["products"]["tags"]
    statements = list(EXECUTED)
    assert len(statements) == plain_count and statements, statements
    page = [s for s in statements if "json_agg" in s]
    assert len(page) == 1 and all(f'"{t}"' in page[0] for t in (
        "customers", "orders", "addresses", "order_items", "products", "tags", "product_tags"))
