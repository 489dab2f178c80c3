"""Whom a failed data API statement blames (swagger_server/data/value_errors.py), on real
PostgreSQL: a text search language the role may not use is the client's bad value, not a
revoked grant (no catalog reload a client could force); finding the bad value among thousands
takes a few statements, not one per value; an operation that select asks for (an aggregate, a
GROUP BY) names ``select``."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import psycopg2
import psycopg2.extensions
import pytest
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.data import catalog
from swagger_server.db import demo
from swagger_server.db.transaction import PreambleCursor
from tests.pg import TestDatabase, create_database

SECRET = "test-secret-for-the-value-blame-tests-0123456789"

Route = Callable[[str], tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def shop(database: TestDatabase) -> str:
    """The demo shop, a text search configuration in a schema nobody but its owner may use, and
    a table of values to group and sum."""
    dsn = create_database(database, "blame")
    assert demo.seed(dsn) is True
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("""
            CREATE SCHEMA hidden;
            CREATE TEXT SEARCH CONFIGURATION hidden.cfg (COPY = english);
            REVOKE ALL ON SCHEMA hidden FROM PUBLIC;
            CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL, j json NOT NULL,
                                n integer NOT NULL);
            INSERT INTO notes SELECT g, 'note ' || g, json_build_object('g', g % 3), g % 4
                FROM generate_series(1, 20) g;
            GRANT SELECT ON notes TO web_anon, web_user;
            ANALYZE;
        """)
    return dsn


@pytest.fixture(scope="module")
def reader(shop: str) -> Iterator[str]:
    """The DSN of a login role (no auth configured) that may read products, not use hidden."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'")
        cur.execute(f"GRANT SELECT ON products, notes TO {role}")
    params = psycopg2.extensions.parse_dsn(shop)
    params.update(user=role, password="reader-pw")
    yield psycopg2.extensions.make_dsn(**params)
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def bearer(role: str = "web_user", sub: str = "42") -> dict[str, str]:
    now = int(time.time())
    value = jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + 600}, SECRET,
                       algorithm="HS256")
    return {"Authorization": f"Bearer {value}"}


def client_for(make_client: Callable[..., TestClient], route: Route, dsn: str,
               **sections: dict[str, Any]) -> TestClient:
    routed, database = route(dsn)
    if database:
        sections["database"] = database
    return make_client(routed, **sections)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every catalog load (CatalogCache.get calls catalog.load on a miss)."""
    seen: list[str] = []
    real = catalog.load

    def counting(conn: Any, api: Any) -> Any:
        seen.append("load")
        return real(conn, api)

    monkeypatch.setattr(catalog, "load", counting)
    return seen


# ------------------------------------------------------------------ a language out of reach

LANGUAGES = ["name.fts(hidden.cfg).x", "name.fts(pg_toast.x).x", "name.plfts(hidden.cfg).x"]


def _assert_blames_filter(r: Any) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert (body["type"], body["parameter"], body["column"]) == (
        "/problems/invalid-value", "filter", "name"), body
    assert "regconfig" in body["detail"], body


@pytest.mark.parametrize("flt", LANGUAGES)
def test_a_language_the_role_may_not_use_is_a_400_and_reloads_no_catalog(
        shop: str, make_client: Callable[..., TestClient], route: Route, loads: list[str],
        flt: str) -> None:
    """Was a 403 "role may not read what this request needs" after dropping every role's
    catalog: any client could force a catalog reload per request."""
    client = client_for(make_client, route, shop,
                        auth={"jwt_secret": SECRET, "anonymous_role": "web_anon"},
                        api={"catalog_ttl": 300})
    catalog.CACHE.invalidate()
    for headers in (bearer(), {}):  # web_user, then web_anon
        assert client.get("/tables/products/rows", params={"limit": 1},
                          headers=headers).status_code == 200
    loads.clear()
    for headers in (bearer(), {}, bearer()):
        _assert_blames_filter(client.get("/tables/products/rows", params={"filter": flt},
                                         headers=headers))
        assert client.get("/tables/products/rows", params={"limit": 1},
                          headers=headers).status_code == 200
    assert loads == []  # every role's catalog kept


@pytest.mark.parametrize("flt", LANGUAGES)
def test_without_auth_a_language_out_of_reach_is_a_400_not_a_404(
        reader: str, make_client: Callable[..., TestClient], route: Route, loads: list[str],
        flt: str) -> None:
    """Was a 404 "No such table or view" (42501's status) after a catalog reload."""
    client = client_for(make_client, route, reader, api={"catalog_ttl": 300})
    catalog.CACHE.invalidate()
    assert client.get("/tables/products/rows", params={"limit": 1}).status_code == 200
    loads.clear()
    for _ in range(2):
        _assert_blames_filter(client.get("/tables/products/rows", params={"filter": flt}))
    assert loads == []


def test_select_revoked_reloads_only_that_roles_catalog(
        shop: str, make_client: Callable[..., TestClient], loads: list[str]) -> None:
    """A grant revoked under the cached catalog is still a 404 with a reload, for the role that
    lost it: the other roles keep theirs."""
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("CREATE TABLE fleeting (id integer PRIMARY KEY); "
                    "GRANT SELECT ON fleeting TO web_anon, web_user")
    try:
        client = make_client(shop, auth={"jwt_secret": SECRET, "anonymous_role": "web_anon"},
                             api={"catalog_ttl": 300})
        catalog.CACHE.invalidate()
        for headers in (bearer(), {}):
            assert client.get("/tables/fleeting/rows", headers=headers).status_code == 200
        with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("REVOKE SELECT ON fleeting FROM web_user")
        loads.clear()
        r = client.get("/tables/fleeting/rows", headers=bearer())
        assert r.status_code == 404 and r.json()["type"] == "/problems/not-found", r.text
        assert loads == []  # reloaded on the role's next request, not within this one
        assert client.get("/tables/fleeting", headers=bearer()).status_code == 404
        assert loads == ["load"]  # web_user's catalog, reloaded without the table
        assert client.get("/tables/fleeting/rows").status_code == 200  # web_anon: still cached
        assert loads == ["load"]
    finally:
        db.close_pool()
        with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("DROP TABLE fleeting")
        catalog.CACHE.invalidate()


# ------------------------------------------------------------------ thousands of values

STATEMENTS: list[str] = []


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the pool's connections run (their cursors are PreambleCursors)."""
    real = PreambleCursor.execute

    def counted(self: Any, query: Any, vars: Any = None) -> Any:
        STATEMENTS.append(query.as_string(self) if hasattr(query, "as_string") else
                          query.decode() if isinstance(query, bytes) else str(query))
        return real(self, query, vars)

    monkeypatch.setattr(PreambleCursor, "execute", counted)
    STATEMENTS.clear()
    return STATEMENTS


def _in_group(values: list[str]) -> str:
    return "or=(id.in.(" + ",".join(values) + "))"


def test_the_first_bad_value_among_thousands_is_named_in_a_few_statements(
        shop: str, make_client: Callable[..., TestClient], route: Route,
        statements: list[str]) -> None:
    """Was one statement per value after the failed one: ~10,000 round trips for this URL."""
    client = client_for(make_client, route, shop)
    assert client.get("/tables/notes/rows", params={"limit": 1}).status_code == 200
    # ~10,000 distinct values: what fits in a URL that the test client takes (64 kB)
    groups = [_in_group([str(g * 999 + i) for i in range(999)]) for g in range(9)]
    groups.append(_in_group([str(-i) for i in range(1, 500)] + ["x"] +
                            [str(-i) for i in range(500, 998)] + ["y"]))
    groups.append(_in_group(["1", "z"]))
    statements.clear()
    r = client.get("/tables/notes/rows?" + "&".join(groups))
    assert r.status_code == 400, r.text
    body = r.json()
    assert (body["type"], body["parameter"], body["column"]) == (
        "/problems/invalid-value", "or", "id"), body
    assert body["detail"].startswith("or: 'x' is not a valid integer for column 'id'"), body
    # the page, one statement for all values, ~14 halvings, the culprit alone; the preamble
    # travels within them
    assert len(statements) <= 20, len(statements)
    assert any(s.startswith("SELECT cardinality(ARRAY[") for s in statements)


def test_a_value_repeated_thousands_of_times_is_cast_once(
        shop: str, make_client: Callable[..., TestClient], statements: list[str]) -> None:
    client = make_client(shop)
    groups = [_in_group(["7"] * 999) for _ in range(12)] + [_in_group(["7", "x", "7", "x"])]
    statements.clear()
    r = client.get("/tables/notes/rows?" + "&".join(groups))
    assert r.status_code == 400 and r.json()["detail"].startswith("or: 'x' "), r.text
    checks = [s for s in statements if s.startswith("SELECT cardinality(ARRAY[")]
    assert checks and max(s.count(" AS text)") for s in checks) == 2, checks  # '7' and 'x'



# ------------------------------------------------------------------ which parameter asked


@pytest.mark.parametrize(("params", "parameter"), [
    ({"select": "body.sum()"}, "select"),       # function sum(text) does not exist
    ({"select": "n,j.max()"}, "select"),        # function max(json) does not exist
    ({"select": "j,count()"}, "select"),        # json has no equality to GROUP BY
    ({"select": "n,count()", "filter": "j.eq.{}"}, "filter"),  # operator json = json
    ({"select": "id,j", "order": "j"}, "order"),  # json has no ordering
    ({"filter": "j.gt.{}"}, "filter"),
])
def test_an_operation_the_type_lacks_names_the_parameter_that_asked_for_it(
        shop: str, make_client: Callable[..., TestClient], params: dict[str, str],
        parameter: str) -> None:
    """select's aggregates and grouping were blamed on filter or order."""
    client = make_client(shop, api={"aggregates": "on"})
    r = client.get("/tables/notes/rows", params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert (body["type"], body["parameter"]) == ("/problems/unsupported-operation", parameter)
    assert body["invalid-params"][0]["name"] == parameter


def test_an_embedded_table_revoked_reloads_that_roles_catalog(
        shop: str, make_client: Callable[..., TestClient], loads: list[str]) -> None:
    """SELECT revoked on an embedded table (the queried one still readable): the role's catalog
    is reloaded, so its next request is refused as an embed it cannot read (a 400), not a 500
    until CATALOG_TTL runs out."""
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("CREATE TABLE fl_parent (id integer PRIMARY KEY); "
                    "CREATE TABLE fl_child (id integer PRIMARY KEY, "
                    "parent_id integer REFERENCES fl_parent); "
                    "GRANT SELECT ON fl_parent, fl_child TO web_user")
    try:
        client = make_client(shop, auth={"jwt_secret": SECRET, "anonymous_role": "web_anon"},
                             api={"catalog_ttl": 300})
        catalog.CACHE.invalidate()
        url = "/tables/fl_parent/rows?select=id,fl_child(id)"
        assert client.get(url, headers=bearer()).status_code == 200
        with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("REVOKE SELECT ON fl_child FROM web_user")
        loads.clear()
        assert client.get(url, headers=bearer()).status_code != 200
        r = client.get(url, headers=bearer())
        assert r.status_code == 400 and "fl_child" in r.text, r.text
        assert loads == ["load"]
    finally:
        db.close_pool()
        with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("DROP TABLE fl_child, fl_parent")
        catalog.CACHE.invalidate()
