"""Embedding under the caller's role, on the demo shop with its roles and row-level security:
what a role cannot read cannot be embedded (the same message as at the top level, naming it),
and RLS applies inside embeds."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import psycopg2
import pytest
from starlette.testclient import TestClient

from swagger_server.db import demo
from tests.pg import TestDatabase, create_database

SECRET = "test-secret-for-the-embed-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def role() -> str:
    return f"embcols_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def shop(database: TestDatabase, role: str) -> str:
    """The demo, plus a role reading orders whole but customers' id and name only."""
    dsn = create_database(database, "embedroles")
    assert demo.seed(dsn) is True
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"CREATE ROLE {role} NOLOGIN; GRANT {role} TO CURRENT_USER; "
                    f"GRANT USAGE ON SCHEMA public TO {role}; "
                    f"GRANT SELECT ON orders TO {role}; "
                    f"GRANT SELECT (id, name) ON customers TO {role}; "
                    f"CREATE POLICY every_order ON orders FOR SELECT TO {role} USING (true)")
    return dsn


def token(sub: int = 42, role: str = "web_user") -> dict[str, str]:
    now = int(time.time())
    value = jwt.encode({"sub": str(sub), "role": role, "iat": now, "exp": now + 600}, SECRET,
                       algorithm="HS256")
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def client(shop: str, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(shop, auth={"jwt_secret": SECRET, "anonymous_role": "web_anon"})


def get(client: TestClient, url: str, headers: dict[str, str] | None = None,
        **params: Any) -> Any:
    return client.get(url, params=params, headers=headers or {})


def test_row_level_security_applies_inside_embeds(client: TestClient, shop: str) -> None:
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM orders WHERE customer_id = 42 ORDER BY id")
        own = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT count(*) FROM orders WHERE customer_id = 43")
        assert cur.fetchone()[0] > 0  # 43 has orders: customer 42 must not see them
    response = get(client, "/tables/customers/rows", token(42),
                   select="id,orders(id,order_items(line_no))", filter="id.in.(42,43)")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [c["id"] for c in data] == [42, 43]
    assert [o["id"] for o in data[0]["orders"]] == own and data[1]["orders"] == []
    assert all(o["order_items"] for o in data[0]["orders"])
    # addresses are the caller's own too: another customer's billing address is null
    mine = get(client, "/tables/orders/rows", token(42),
               select="id,bill:addresses!billing_address_id(customer_id)", limit=3).json()
    assert {o["bill"]["customer_id"] for o in mine["data"]} == {42}
    as_43 = get(client, "/tables/customers/rows", token(43),
                select="id,addresses(customer_id)", filter="id.eq.42").json()["data"]
    assert as_43 == [{"id": 42, "addresses": []}]


def test_what_a_role_cannot_read_cannot_be_embedded(client: TestClient, role: str) -> None:
    # anonymous (web_anon): products, tags and product_tags only
    tags = get(client, "/tables/products/rows", select="id,tags(name)", limit=1)
    assert tags.status_code == 200 and isinstance(tags.json()["data"][0]["tags"], list)
    top = get(client, "/tables/order_items/rows")
    assert top.status_code == 404 and "'order_items'" in top.json()["detail"]
    embedded = get(client, "/tables/products/rows", select="id,order_items(quantity)")
    assert embedded.status_code == 400
    assert embedded.json()["detail"] == ("select: no table or view named 'order_items' to "
                                         "embed")
    # a role with some columns only: the others are unknown, as at the top level
    headers = token(role=role)
    top_column = get(client, "/tables/customers/rows", headers, select="id,email")
    inside = get(client, "/tables/orders/rows", headers, select="id,customers(email)")
    assert top_column.status_code == inside.status_code == 400
    assert top_column.json()["detail"] == inside.json()["detail"] == (
        "select: customers has no column 'email'")
    star = get(client, "/tables/orders/rows", headers, select="id,customers(*)", limit=1)
    assert star.status_code == 200, star.text
    assert list(star.json()["data"][0]["customers"]) == ["id", "name"]
    # orders' other relations are not readable to it: no relationship
    items = get(client, "/tables/orders/rows", headers, select="id,order_items(line_no)")
    assert items.status_code == 400 and "'order_items'" in items.json()["detail"]


def test_groups_on_an_embed_see_what_the_role_sees(client: TestClient, role: str) -> None:
    """``or.<embed>`` names the embedded relation's columns as the role's catalog has them, and
    RLS still decides the rows: a group cannot reach another customer's orders."""
    headers = token(role=role)
    hidden = get(client, "/tables/orders/rows", headers,
                 **{"select": "id,customers(name)", "or.customers": "(email.like.*a*,id.eq.1)"})
    assert hidden.status_code == 400, hidden.text
    assert hidden.json()["parameter"] == "or.customers"
    assert "customers has no column 'email'" in hidden.json()["detail"]
    as_43 = get(client, "/tables/customers/rows", token(43), **{
        "select": "id,orders(id)", "filter": "id.eq.42",
        "or.orders": "(customer_id.eq.42,customer_id.eq.43)"})
    assert as_43.status_code == 200, as_43.text
    assert as_43.json()["data"] == [{"id": 42, "orders": []}]
    own = get(client, "/tables/customers/rows", token(42), **{
        "select": "id,orders(id)", "filter": "id.eq.42",
        "or.orders": "(customer_id.eq.42,customer_id.eq.43)"})
    assert own.json()["data"][0]["orders"], own.text
