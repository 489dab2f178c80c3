"""GET /tables and /tables/{table}: exposure rules (SCHEMAS, TABLES, EXCLUDE; unexposed looks
exactly like missing), schema.name lookup, columns and keys, refresh after CATALOG_TTL."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.app import create_app
from swagger_server.data.catalog import CACHE
from tests.conftest import make_settings
from tests.pg import TestDatabase, seeded_database

SCHEMA = """
CREATE SCHEMA app;
CREATE SCHEMA hidden;
CREATE TABLE public.things (id bigint PRIMARY KEY, name varchar(20) NOT NULL, price numeric(10,2));
CREATE TABLE public.secrets (id integer PRIMARY KEY, token text);
CREATE TABLE public.audit_log (at timestamptz, what text);
CREATE TABLE app.things (code char(3), n integer, note text, PRIMARY KEY (n, code));
CREATE TABLE app.only_here (id integer PRIMARY KEY);
CREATE TABLE hidden.vault (id integer PRIMARY KEY);
CREATE VIEW app.thing_names AS SELECT name FROM public.things;
CREATE MATERIALIZED VIEW app.counts AS SELECT count(*) AS n FROM public.things;
INSERT INTO public.things SELECT i, 'thing ' || i, i FROM generate_series(1, 50) AS i;
ANALYZE public.things;
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "catalog", SCHEMA)


@pytest.fixture
def client_for(dsn: str) -> Callable[..., TestClient]:
    def make(**api: Any) -> TestClient:
        db.close_pool()
        CACHE.invalidate()  # the catalog is cached per process: start each app afresh
        return create_app(make_settings(dsn, api=api)).test_client()

    yield make
    db.close_pool()


def names(client: TestClient) -> list[str]:
    r = client.get("/tables")
    assert r.status_code == 200
    return [f"{t['schema']}.{t['name']}" for t in r.json()["tables"]]


def test_default_exposes_public_only(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    assert names(client) == ["public.audit_log", "public.secrets", "public.things"]
    things = next(t for t in client.get("/tables").json()["tables"] if t["name"] == "things")
    assert things == {"schema": "public", "name": "things", "kind": "table",
                      "primary_key": ["id"], "estimated_rows": 50}


def test_schemas_in_order_and_kinds(client_for: Callable[..., TestClient]) -> None:
    client = client_for(schemas=("app", "public"))
    assert names(client) == ["app.counts", "app.only_here", "app.thing_names", "app.things",
                             "public.audit_log", "public.secrets", "public.things"]
    kinds = {t["name"]: t["kind"] for t in client.get("/tables").json()["tables"]}
    assert kinds["thing_names"] == "view" and kinds["counts"] == "view"
    # a bare name is looked up in SCHEMAS order; schema.name picks one
    assert client.get("/tables/things").json()["schema"] == "app"
    assert client.get("/tables/public.things").json()["schema"] == "public"
    assert client.get("/tables/things/rows/1,abc").status_code == 404  # app.things: no row
    assert client.get("/tables/public.things/rows/7").json()["name"] == "thing 7"


def test_describe_columns_and_keys(client_for: Callable[..., TestClient]) -> None:
    client = client_for(schemas=("app", "public"))
    assert client.get("/tables/public.things").json() == {
        "schema": "public", "name": "things", "kind": "table", "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "bigint", "nullable": False},
            {"name": "name", "type": "character varying(20)", "nullable": False},
            {"name": "price", "type": "numeric(10,2)", "nullable": True},
        ], "foreign_keys": [], "referenced_by": []}
    app_things = client.get("/tables/app.things").json()
    assert app_things["primary_key"] == ["n", "code"]  # key order, not column order
    assert app_things["columns"][0] == {"name": "code", "type": "character(3)",
                                        "nullable": False}
    assert client.get("/tables/thing_names").json()["primary_key"] == []


def test_tables_and_exclude_patterns(client_for: Callable[..., TestClient]) -> None:
    client = client_for(schemas=("app", "public"), tables=("thing*", "public.audit_log"),
                        exclude=("app.thing_names",))
    assert names(client) == ["app.things", "public.audit_log", "public.things"]
    client = client_for(exclude=("secrets", "audit_*"))
    assert names(client) == ["public.things"]


@pytest.mark.parametrize("path", ["/tables/{t}", "/tables/{t}/rows", "/tables/{t}/rows/1"])
def test_unexposed_relations_look_exactly_like_missing_ones(
    client_for: Callable[..., TestClient], path: str
) -> None:
    client = client_for(exclude=("secrets",))
    for hidden in ("secrets", "public.secrets", "hidden.vault", "vault", "app.only_here",
                   "pg_catalog.pg_class", "pg_class", "information_schema.tables"):
        r = client.get(path.format(t=hidden))
        missing = client.get(path.format(t="no_such_" + hidden.replace(".", "_")))
        assert r.status_code == missing.status_code == 404
        body, other = r.json(), missing.json()
        assert body["type"] == other["type"] == "/problems/not-found"
        assert body["detail"].replace(hidden, "X") == other["detail"].replace(
            "no_such_" + hidden.replace(".", "_"), "X")


def test_a_new_column_shows_up_after_the_ttl(
    client_for: Callable[..., TestClient], dsn: str
) -> None:
    client = client_for(catalog_ttl=0.5)
    before = [c["name"] for c in client.get("/tables/things").json()["columns"]]
    with contextlib.closing(TestDatabase(dsn=dsn, kind="x").connect()) as conn, \
            conn.cursor() as cur:
        cur.execute("ALTER TABLE public.things ADD COLUMN colour text DEFAULT 'red'")
        cur.execute("CREATE TABLE public.newcomer (id integer PRIMARY KEY)")
    try:
        assert [c["name"] for c in client.get("/tables/things").json()["columns"]] == before
        time.sleep(0.6)
        after = [c["name"] for c in client.get("/tables/things").json()["columns"]]
        assert after == [*before, "colour"]
        assert client.get("/tables/things/rows", params={"select": "colour", "limit": 1}
                          ).json()["data"] == [{"colour": "red"}]
        assert "public.newcomer" in names(client)
    finally:
        with contextlib.closing(TestDatabase(dsn=dsn, kind="x").connect()) as conn, \
                conn.cursor() as cur:
            cur.execute("ALTER TABLE public.things DROP COLUMN colour")
            cur.execute("DROP TABLE public.newcomer")


def test_a_dropped_column_before_the_ttl_is_a_clean_503_then_gone(
    client_for: Callable[..., TestClient], dsn: str
) -> None:
    client = client_for(catalog_ttl=300)
    with contextlib.closing(TestDatabase(dsn=dsn, kind="x").connect()) as conn, \
            conn.cursor() as cur:
        cur.execute("ALTER TABLE public.audit_log ADD COLUMN extra integer")
    assert "extra" in [c["name"] for c in client.get("/tables/audit_log").json()["columns"]]
    with contextlib.closing(TestDatabase(dsn=dsn, kind="x").connect()) as conn, \
            conn.cursor() as cur:
        cur.execute("ALTER TABLE public.audit_log DROP COLUMN extra")
    r = client.get("/tables/audit_log/rows")
    assert r.status_code == 503
    assert r.json()["type"] == "/problems/catalog-changed"
    assert client.get("/tables/audit_log/rows").status_code == 200  # reloaded at once


def test_a_value_of_a_type_dropped_under_the_catalog_is_a_503_not_the_clients_fault(
    client_for: Callable[..., TestClient], dsn: str
) -> None:
    """The cast check that names a culprit value must not blame one whose type is gone."""
    def run(statement: str) -> None:
        with contextlib.closing(TestDatabase(dsn=dsn, kind="x").connect()) as conn, \
                conn.cursor() as cur:
            cur.execute(statement)

    run("CREATE TYPE public.hue AS ENUM ('red', 'blue'); "
        "CREATE TABLE public.paints (id integer PRIMARY KEY, hue public.hue, ref regclass); "
        "INSERT INTO public.paints VALUES (1, 'red', 'paints')")
    try:
        client = client_for(catalog_ttl=300)
        r = client.get("/tables/paints/rows", params={"filter": "hue.eq.red"})
        assert r.json()["data"] == [{"id": 1, "hue": "red", "ref": "paints"}]
        r = client.get("/tables/paints/rows", params={"filter": "ref.eq.nosuchtable"})
        assert r.status_code == 400 and r.json()["column"] == "ref"
        run("ALTER TABLE public.paints DROP COLUMN hue; DROP TYPE public.hue")
        r = client.get("/tables/paints/rows", params={"filter": "hue.eq.red"})
        assert r.status_code == 503, r.text
        assert r.json()["type"] == "/problems/catalog-changed"
        r = client.get("/tables/paints/rows", params={"filter": "hue.eq.red"})
        assert r.status_code == 400 and "no column 'hue'" in r.json()["detail"]
    finally:
        run("DROP TABLE IF EXISTS public.paints; DROP TYPE IF EXISTS public.hue")
