"""The demo shop: loads fast, deterministically, once; serves the README's examples; never
replaces anything of the user's; only the embedded server's start seeds it."""

from __future__ import annotations

import contextlib
import time

import psycopg2
import pytest
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.app import create_app
from swagger_server.db import demo
from tests.conftest import make_settings
from tests.pg import TestDatabase, create_database


def counts(dsn: str) -> dict[str, int]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        found = {}
        for table in demo.TABLES:
            cur.execute(f"SELECT count(*) FROM public.{table}")
            found[table] = cur.fetchone()[0]
        return found


@pytest.fixture(scope="module")
def shop(database: TestDatabase) -> str:
    dsn = create_database(database, "demo")
    started = time.monotonic()
    assert demo.seed(dsn) is True
    assert time.monotonic() - started < 10  # "a few seconds at most" (about 1 s here)
    return dsn


@pytest.fixture(scope="module")
def client(shop: str) -> TestClient:
    db.close_pool()
    yield create_app(make_settings(shop)).test_client()
    db.close_pool()


def test_the_demo_is_realistic_and_deterministic(shop: str, database: TestDatabase) -> None:
    first = counts(shop)
    assert first["customers"] == 10_000 and first["products"] == 1_000
    assert first["orders"] == 30_000 and first["product_sales"] == 1_000
    assert sum(first.values()) > 100_000
    other = create_database(database, "demo2")
    assert demo.seed(other) is True
    assert counts(other) == first
    query = "SELECT md5(string_agg(o::text, '|' ORDER BY id)) FROM public.orders o"
    with contextlib.closing(psycopg2.connect(shop)) as a, contextlib.closing(
            psycopg2.connect(other)) as b, a.cursor() as ca, b.cursor() as cb:
        ca.execute(query)
        cb.execute(query)
        assert ca.fetchone() == cb.fetchone()


def test_seeding_twice_changes_nothing(shop: str) -> None:
    before = counts(shop)
    assert demo.seed(shop) is False
    assert counts(shop) == before


def test_a_user_table_of_the_same_name_is_left_alone(database: TestDatabase) -> None:
    dsn = create_database(database, "demo_user")
    with contextlib.closing(TestDatabase(dsn=dsn, kind="x").connect()) as conn, \
            conn.cursor() as cur:
        cur.execute("CREATE TABLE public.orders (mine integer)")
    assert demo.seed(dsn) is False
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        assert cur.fetchone()[0] == 1


def test_demo_data_of_an_older_version_is_replaced(database: TestDatabase) -> None:
    """An embedded data directory seeded by an older version gets the current demo (here: the
    first demo's five tables, marked by its comment)."""
    dsn = create_database(database, "demo_old")
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(demo.SQL_FILE.read_text(encoding="utf-8"))
        cur.execute("DROP TABLE product_tags, tags, addresses CASCADE; "
                    "ALTER TABLE orders DROP COLUMN billing_address_id")
        for kind, name in (("TABLE", "customers"), ("TABLE", "products"), ("TABLE", "orders"),
                           ("TABLE", "order_items"), ("VIEW", "product_sales")):
            cur.execute(f"COMMENT ON {kind} {name} IS "
                        "'pgrest demo data (swagger_server/sql/demo.sql)'")
    assert demo.seed(dsn) is True
    assert counts(dsn)["product_tags"] > 1000
    assert demo.seed(dsn) is False  # now current: left alone


def test_a_failure_is_logged_not_raised() -> None:
    assert demo.seed_embedded("host=/nonexistent port=1 connect_timeout=2") is False


def test_the_readme_examples_answer(client: TestClient) -> None:
    tables = client.get("/tables").json()["tables"]
    assert [t["name"] for t in tables] == ["addresses", "customers", "order_items", "orders",
                                           "product_sales", "product_tags", "products", "tags"]
    assert client.get("/tables/orders").json()["primary_key"] == ["id"]
    page = client.get("/tables/orders/rows", params={
        "select": "id,status,total,ordered_at", "filter": ["status.eq.shipped",
                                                           "total.gt.1000"],
        "order": "total.desc", "limit": 3, "count": "exact"})
    body = page.json()
    assert len(body["data"]) == 3 and body["total"] > 100 and body["next_cursor"]
    totals = [row["total"] for row in body["data"]]
    assert totals == sorted(totals, reverse=True)
    nxt = client.get("/tables/orders/rows", params={
        "select": "id,status,total,ordered_at", "filter": ["status.eq.shipped", "total.gt.1000"],
        "order": "total.desc", "limit": 3, "cursor": body["next_cursor"]}).json()
    assert nxt["data"][0]["total"] <= totals[-1]
    assert client.get("/tables/order_items/rows/1,1").json()["order_id"] == 1
    customer = client.get("/tables/customers/rows/1").json()
    assert isinstance(customer["tags"], list) and isinstance(customer["preferences"], dict)
    product = client.get("/tables/products/rows/1").json()
    assert isinstance(product["checksum"], str) and len(product["checksum"]) == 24  # base64
    csv = client.get("/tables/products/rows", headers={"Accept": "text/csv"},
                     params={"select": "sku,name,price", "filter": "category.eq.Software"})
    assert csv.text.startswith("sku,name,price\n") and 'Game ""Deluxe, Edition"""' in csv.text
    sales = client.get("/tables/product_sales/rows", params={"order": "revenue.desc",
                                                             "limit": 5})
    assert sales.json()["next_cursor"] is None and "offset=5" in sales.headers["link"]
