"""The demo's roles and row-level security (sql/demo_roles.sql): loaded with the demo, added to
a demo loaded by an older version, idempotent, and doing what README's tutorial says."""

from __future__ import annotations

import contextlib

import psycopg2

from swagger_server.db import demo
from tests.pg import TestDatabase, create_database


def one(dsn: str, statement: str, role: str | None = None, claims: str = "") -> object:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        if role:
            cur.execute("SELECT set_config('role', %s, true), "
                        "set_config('request.jwt.claims', %s, true)", (role, claims))
        cur.execute(statement)
        return cur.fetchone()[0]


def policies(dsn: str) -> int:
    return int(one(dsn, "SELECT count(*) FROM pg_policies WHERE schemaname = 'public'"))


def test_roles_and_policies_come_with_the_demo_and_do_what_the_readme_says(
        database: TestDatabase) -> None:
    dsn = create_database(database, "demoroles")
    assert demo.seed(dsn) is True
    assert policies(dsn) == 3
    assert demo.seed(dsn) is False  # again: nothing changes
    assert policies(dsn) == 3
    own_addresses = one(dsn, "SELECT count(*) FROM addresses", "web_user", '{"sub": "42"}')
    assert own_addresses == one(dsn, "SELECT count(*) FROM addresses WHERE customer_id = 42")
    assert 0 < own_addresses < one(dsn, "SELECT count(*) FROM addresses")
    assert one(dsn, "SELECT has_table_privilege('web_anon', 'tags', 'SELECT')") is True
    assert one(dsn, "SELECT has_table_privilege('web_anon', 'addresses', 'SELECT')") is False
    mine = one(dsn, "SELECT count(*) FROM orders", "web_user", '{"sub": "42"}')
    assert mine == one(dsn, "SELECT count(*) FROM orders WHERE customer_id = 42") and mine
    assert one(dsn, "SELECT count(DISTINCT order_id) FROM order_items", "web_user",
               '{"sub": "42"}') == mine
    assert one(dsn, "SELECT count(*) FROM orders", "web_user", '{"sub": "abc"}') == 0
    assert one(dsn, "SELECT count(*) FROM orders", "web_user", "") == 0
    assert one(dsn, "SELECT has_table_privilege('web_anon', 'orders', 'SELECT')") is False
    # product_sales aggregates order_items: each customer sees the totals of their own items.
    units = "SELECT coalesce(sum(units), 0) FROM product_sales"
    own = ("SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o "
           "ON o.id = i.order_id WHERE o.customer_id = {}")
    for sub in (42, 43):
        assert one(dsn, units, "web_user", f'{{"sub": "{sub}"}}') == one(dsn, own.format(sub))
    assert one(dsn, units, "web_user", '{"sub": "42"}') != one(dsn, units, "web_user",
                                                              '{"sub": "43"}')
    assert one(dsn, units, "web_user", '{"sub": "42"}') < one(dsn, units)
    assert one(dsn, "SELECT has_table_privilege('web_anon', 'products', 'SELECT')") is True


def test_a_demo_loaded_by_an_older_version_gets_its_roles(database: TestDatabase) -> None:
    dsn = create_database(database, "demoold")
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(demo.SQL_FILE.read_text(encoding="utf-8"))  # the tables alone
    assert policies(dsn) == 0
    assert demo.seed(dsn) is False  # the data is left as it is...
    assert policies(dsn) == len(demo.POLICIES)  # ...and the roles and policies are added
