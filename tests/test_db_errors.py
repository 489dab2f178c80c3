"""Database errors by SQLSTATE, from one table: what the request's values cause is a 400, what
the database's state causes is a 503 (+ Retry-After) or a 504, anything else a 500; and a table
whose SELECT is revoked within CATALOG_TTL is a 404, not a 500. Real PostgreSQL, real errors:
views RAISE each SQLSTATE, a login role loses its grant."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest
from starlette.testclient import TestClient

from swagger_server.data.catalog import CACHE
from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

# (SQLSTATE a view raises, status, problem type, Retry-After?)
RAISED = [
    ("40001", 503, "/problems/transaction-conflict", True),   # serialization_failure
    ("40P01", 503, "/problems/transaction-conflict", True),   # deadlock_detected
    ("53200", 503, "/problems/database-unavailable", True),   # out_of_memory
    ("53300", 503, "/problems/database-unavailable", True),   # too_many_connections
    ("08006", 503, "/problems/database-unavailable", True),   # connection_failure
    ("57P03", 503, "/problems/database-unavailable", True),   # cannot_connect_now
    ("57014", 504, "/problems/statement-timeout", False),     # query_canceled
    # The request holds no value to blame: the view's own data or limits, a 500.
    ("22012", 500, "/problems/internal-error", False),        # division_by_zero
    ("54000", 500, "/problems/internal-error", False),        # program_limit_exceeded
    ("54001", 500, "/problems/internal-error", False),        # statement_too_complex
    ("42501", 500, "/problems/internal-error", False),        # a privilege the view lacks
    ("XX000", 500, "/problems/internal-error", False),        # internal_error
    ("P0001", 500, "/problems/internal-error", False),        # raise_exception
]

SCHEMA = """
CREATE FUNCTION raise_state(code text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'raised %', code USING ERRCODE = code; END $$;
CREATE TABLE docs (id integer PRIMARY KEY, doc jsonb, grid integer[], word text);
INSERT INTO docs VALUES (1, '{"a": 1}', '{1,2}', 'one');
CREATE TABLE open_table (id integer PRIMARY KEY);
INSERT INTO open_table VALUES (1);
CREATE TABLE revoked (id integer PRIMARY KEY, secret text);
INSERT INTO revoked VALUES (1, 's');
-- A smaller stack, so a jsonb value nested 3,000 deep (what fits in a URL) hits the limit that
-- 20,000 levels hit with the default 2 MB.
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET max_stack_depth = %L', current_database(), '100kB');
END $$;
""" + "".join(
    f"CREATE VIEW fails_{code.lower()} AS SELECT raise_state('{code}') AS id;\n"
    for code, *_ in RAISED
)


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "sqlstate", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    with app_client(dsn) as client:
        yield client


@pytest.mark.parametrize(("code", "status", "type", "retry"), RAISED)
def test_each_sqlstate_gets_the_status_of_the_one_table(
    client: TestClient, code: str, status: int, type: str, retry: bool
) -> None:
    for accept in ("application/json", "text/csv"):
        r = client.get(f"/tables/fails_{code.lower()}/rows", headers={"Accept": accept})
        assert r.status_code == status, (code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == type
        assert ("retry-after" in r.headers) == retry, r.headers
    assert client.get("/pool").json()["in_use"] == 0


@pytest.mark.parametrize(("flt", "column"), [
    ("grid.eq." + "{" * 7 + "1" + "}" * 7, "grid"),  # 54000: more than 6 array dimensions
    ("doc.eq." + "[" * 3_000 + "]" * 3_000, "doc"),  # 54001: stack depth limit exceeded
    ("grid.in.(" + "{" * 7 + "1" + "}" * 7 + ")", "grid"),
])
def test_a_value_past_a_database_limit_is_a_400_naming_the_column(
    client: TestClient, flt: str, column: str
) -> None:
    """Was a 503 "database unavailable" with Retry-After: a retry can never succeed."""
    for accept in ("application/json", "application/x-ndjson"):
        r = client.get("/tables/docs/rows", params={"filter": flt}, headers={"Accept": accept})
        assert r.status_code == 400, r.text
        body = r.json()
        assert "retry-after" not in r.headers
        assert (body["type"], body["parameter"], body["column"]) == (
            "/problems/invalid-value", "filter", column)


def test_a_key_past_a_database_limit_is_a_400(client: TestClient) -> None:
    r = client.get("/tables/docs/rows/" + "9" * 200)
    assert r.status_code == 400 and r.json()["column"] == "id"


# ------------------------------------------------------------------ SELECT revoked


@pytest.fixture
def reader(database: TestDatabase, dsn: str) -> Iterator[str]:
    """A login role that may read open_table and revoked; the DSN to connect as it."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'")
        cur.execute(f"GRANT SELECT ON open_table, revoked TO {role}")
    params = psycopg2.extensions.parse_dsn(dsn)
    params.update(user=role, password="reader-pw")
    try:
        yield psycopg2.extensions.make_dsn(**params)
    finally:
        with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def _revoke(dsn: str, statement: str) -> None:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(statement)


def test_select_revoked_within_the_ttl_is_a_404_like_a_missing_table(
    dsn: str, reader: str
) -> None:
    CACHE.invalidate()
    with app_client(reader, api={"catalog_ttl": 300}) as client:
        listed = [t["name"] for t in client.get("/tables").json()["tables"]]
        assert listed == ["open_table", "revoked"]  # only what the role may read
        assert client.get("/tables/revoked/rows").status_code == 200
        assert client.get("/tables/revoked/rows/1").status_code == 200
        role = psycopg2.extensions.parse_dsn(reader)["user"]
        _revoke(dsn, f"REVOKE SELECT ON revoked FROM {role}")
        for path, accept in [("/tables/revoked/rows", "application/json"),
                             ("/tables/revoked/rows", "text/csv"),
                             ("/tables/revoked/rows/1", "application/json")]:
            r = client.get(path, headers={"Accept": accept})
            assert r.status_code == 404, (path, accept, r.text)
            assert r.json()["type"] == "/problems/not-found"
            assert r.json()["detail"] == "No table or view named 'revoked'"
        # The catalog was reloaded: the table is gone from the list and its description.
        assert [t["name"] for t in client.get("/tables").json()["tables"]] == ["open_table"]
        assert client.get("/tables/revoked").status_code == 404
        assert client.get("/tables/open_table/rows").status_code == 200
        assert client.get("/pool").json()["in_use"] == 0
    CACHE.invalidate()


def test_a_dropped_table_within_the_ttl_is_a_404(dsn: str) -> None:
    _revoke(dsn, "CREATE TABLE doomed (id integer PRIMARY KEY)")
    CACHE.invalidate()
    with app_client(dsn, api={"catalog_ttl": 300}) as client:
        assert client.get("/tables/doomed/rows").status_code == 200
        _revoke(dsn, "DROP TABLE doomed")
        r = client.get("/tables/doomed/rows")
        assert r.status_code == 404, r.text
        assert r.json()["type"] == "/problems/not-found"
    CACHE.invalidate()
