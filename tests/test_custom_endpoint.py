"""GET /customers/{id}/summary: the README's example of a hand-written endpoint, on the demo."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.config import PROJECT_ROOT
from swagger_server.db import demo
from tests.conftest import app_client
from tests.pg import TestDatabase, create_database

# Customers the demo does not have: one whose total shows exactness (30.30, which a float
# turns into 30.3), one without orders.
EXTRA = """
INSERT INTO customers (id, email, name, country, signed_up_at, loyalty_points, tags, preferences)
VALUES (20001, 'exact@example.com', 'Exact Cents', 'DE', '2024-01-01+00', 0, '{}', '{}'),
       (20002, 'idle@example.com', 'No Orders', 'FR', '2024-01-01+00', 0, '{}', '{}');
INSERT INTO orders (id, customer_id, status, ordered_at, total, shipping)
VALUES (90001, 20001, 'paid', '2024-02-01 10:00:00.25+00', 10.10, '{}'),
       (90002, 20001, 'paid', '2024-03-01 12:30:00+00', 20.20, '{}');
"""


@pytest.fixture(scope="module")
def shop(database: TestDatabase) -> str:
    dsn = create_database(database, "custom")
    assert demo.seed(dsn) is True
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(EXTRA)
    return dsn


@pytest.fixture(scope="module")
def client(shop: str) -> Iterator[TestClient]:
    with app_client(shop) as client:
        yield client


def exact(text: str) -> Any:
    """Parsed JSON whose numbers stay as their text, so 30.30 and 30.3 differ."""
    return json.loads(text, parse_float=lambda s: ("number", s),
                      parse_int=lambda s: ("number", s))


def test_a_demo_customer_matches_the_data_api(client: TestClient) -> None:
    response = client.get("/customers/42/summary")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    summary = exact(response.text)
    # The same facts, read through the data API instead
    customer = client.get("/tables/customers/rows/42").json()
    orders = json.loads(client.get(
        "/tables/orders/rows?filter=customer_id.eq.42&select=total,ordered_at"
        "&order=ordered_at.desc&limit=1000").text, parse_float=Decimal)["data"]
    assert orders  # the demo gives customer 42 some orders
    assert summary == {
        "id": ("number", "42"),
        "name": customer["name"],
        "orders": ("number", str(len(orders))),
        "total_spent": ("number", str(sum(o["total"] for o in orders))),
        "last_order_at": orders[0]["ordered_at"],
    }


def test_total_spent_keeps_every_digit(client: TestClient) -> None:
    summary = exact(client.get("/customers/20001/summary").text)
    assert summary["total_spent"] == ("number", "30.30")  # not the float 30.3
    assert summary["orders"] == ("number", "2")
    assert summary["last_order_at"] == "2024-03-01T12:30:00+00:00"


def test_a_customer_without_orders(client: TestClient) -> None:
    summary = client.get("/customers/20002/summary").json()
    assert summary == {"id": 20002, "name": "No Orders", "orders": 0, "total_spent": 0,
                       "last_order_at": None}


def test_an_unknown_customer_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/customers/9999999999/summary")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "/problems/not-found"
    assert body["detail"] == "No customer with id 9999999999"
    assert body["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", "12345678901", "%20", "4%2C2"])
def test_a_bad_id_is_a_400_problem(client: TestClient, bad: str) -> None:
    response = client.get(f"/customers/{bad}/summary")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400


def test_a_database_without_the_demo_says_so(database: TestDatabase) -> None:
    with app_client(create_database(database, "nodemo")) as client:
        response = client.get("/customers/42/summary")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert "no demo tables" in response.json()["detail"]
        # and the connection went back clean: the next request on it works
        assert client.get("/").json() == [[1]]
        assert db.get_pool().stats()["discarded_total"] == 0


def test_the_readme_walks_through_the_repos_own_code() -> None:
    """Each code block of README's "Add an endpoint" that names a file is that file's text
    (``...`` lines skip parts), in order: the walk-through cannot drift from the example."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Add an endpoint\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```\w*\n(.*?)^```$", section, flags=re.S | re.M)
    checked = 0
    for block in blocks:
        first, _, body = block.partition("\n")
        path = PROJECT_ROOT / first.removeprefix("# ").strip()
        if not first.startswith("# ") or not path.is_file():
            continue
        text, position = path.read_text(encoding="utf-8"), 0
        for part in re.split(r"^\.\.\.\n", body, flags=re.M):
            found = text.find(part, position)
            assert found >= 0, f"README's excerpt of {path.name} is not in it:\n{part}"
            position = found + len(part)
        checked += 1
    assert checked == 4  # the spec, the controller, its test, the writing example
