"""Behind a real PgBouncer in ``pool_mode = transaction`` (README "Scaling out"): settings that
apply per transaction, no role or claims leaking between requests that share a server
connection, the whole service end to end (gunicorn, several workers, the data API with roles
and row-level security, schema reload through LISTEN_URL), and faults: PgBouncer restarted,
PostgreSQL restarted behind it."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import jwt
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest
from starlette.testclient import TestClient

from swagger_server import config, db
from swagger_server.app import create_app
from swagger_server.db import demo
from swagger_server.ops import schema_reload
from tests.conftest import make_settings
from tests.pg import TestDatabase, create_database, seeded_database
from tests.pgbouncer import PgBouncer
from tests.server import GunicornServer, run_sql, wait_for

SECRET = "test-secret-for-the-pgbouncer-tests-0123456789"
POOLER = {"pooler": "transaction"}

SCHEMA = """
CREATE SCHEMA app;
CREATE TABLE app.notes (id serial PRIMARY KEY, body text NOT NULL);
CREATE TABLE items (id integer PRIMARY KEY, label text NOT NULL);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 30) g;
CREATE VIEW sleepy AS SELECT 1 AS x FROM pg_sleep(2);
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "bouncer", SCHEMA)


def token(role: str, sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + 600}, SECRET,
                      algorithm="HS256")


def bearer(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, sub)}"}


# --- settings per transaction --------------------------------------------------------------


@pytest.fixture(scope="module")
def lenient(database: TestDatabase) -> Iterator[PgBouncer]:
    """A PgBouncer that silently drops startup ``options`` (``ignore_startup_parameters``): what
    hid the problem, since a service relying on them still connects, with none applied."""
    with PgBouncer(database.dsn, pool_size=2,
                   extra={"ignore_startup_parameters": "options"}) as started:
        yield started


def test_statement_timeout_and_read_only_apply_through_pgbouncer(
    dsn: str, lenient: PgBouncer
) -> None:
    """Sent as startup options (as directly) they would be dropped: the slow view would answer
    200 and the write would succeed. Per transaction (POOLER = transaction) they hold."""
    url = lenient.dsn_for(dsn)
    with _app_client(url, database=POOLER,
                     pool={"statement_timeout": 300, "min_size": 0}) as client:
        slow = client.get("/tables/sleepy/rows")
        assert slow.status_code == 504, slow.text
        assert slow.json()["type"] == "/problems/statement-timeout"
        assert client.get("/tables/items/rows?limit=3").status_code == 200  # pool healed
        app = client.app
    flask_app = _flask(app)
    with flask_app.app_context(), db.get_db().cursor() as cur, pytest.raises(
            psycopg2.errors.ReadOnlySqlTransaction):
        cur.execute("INSERT INTO app.notes (body) VALUES ('through the pooler')")
    db.close_pool()
    assert run_sql(dsn, "SELECT count(*) FROM app.notes") == [(0,)]


def test_a_writable_request_commits_through_pgbouncer_and_the_next_is_read_only(
    dsn: str, bouncer: PgBouncer
) -> None:
    app = create_app(make_settings(bouncer.dsn_for(dsn), database=POOLER, pool={"min_size": 0}))
    flask_app = _flask(app)
    try:
        with flask_app.app_context():
            conn = db.get_db(readonly=False)
            with conn, conn.cursor() as cur:
                cur.execute("INSERT INTO app.notes (body) VALUES ('written') RETURNING id")
        with flask_app.app_context(), db.get_db().cursor() as cur:
            cur.execute("SHOW transaction_read_only")
            assert cur.fetchone()[0] == "on"
    finally:
        db.close_pool()
    assert run_sql(dsn, "SELECT body FROM app.notes WHERE body = 'written'") == [("written",)]
    run_sql(dsn, "DELETE FROM app.notes")


def test_the_dsns_settings_apply_per_transaction_behind_a_pooler(
    dsn: str, bouncer: PgBouncer
) -> None:
    """PgBouncer refuses startup ``options``: behind it the DSN's ``-c`` settings are set per
    transaction instead (its statement_timeout wins over STATEMENT_TIMEOUT, as directly)."""
    url = psycopg2.extensions.make_dsn(
        bouncer.dsn_for(dsn), options="-c search_path=app,public -c statement_timeout=4321")
    with pytest.raises(psycopg2.OperationalError, match="unsupported startup parameter"):
        psycopg2.connect(url).close()  # what the pool used to send
    app = create_app(make_settings(url, database=POOLER, pool={"min_size": 0}))
    try:
        with _flask(app).app_context(), db.get_db().cursor() as cur:
            cur.execute("SELECT current_setting('search_path'), "
                        "current_setting('statement_timeout'), "
                        "current_setting('transaction_read_only')")
            assert cur.fetchone() == ("app,public", "4321ms", "on")
    finally:
        db.close_pool()


def test_options_that_cannot_apply_per_transaction_are_refused_at_start() -> None:
    url = "host=db dbname=x options='-c search_path=app -B 100'"
    with pytest.raises(config.ConfigError, match="options with POSTGRES_POOLER=transaction"):
        config.load_settings(environ={"DATABASE_URL": url, "POSTGRES_POOLER": "transaction",
                                      "APP_CONFIG": "/dev/null"})
    # Directly they are PostgreSQL's business, as before.
    assert config.load_settings(environ={"DATABASE_URL": url, "APP_CONFIG": "/dev/null"})
    assert config.option_settings(r"-csearch_path=a\ b --work-mem=7MB -c x.y=1") == (
        ("search_path", "a b"), ("work_mem", "7MB"), ("x.y", "1"))


def _settings(**environ: str) -> config.Settings:
    return config.load_settings(environ={"APP_CONFIG": "/dev/null", **environ})


def test_where_the_listener_connects() -> None:
    direct, elsewhere = "host=db dbname=x", "host=primary dbname=x password=Sup3r-s3cret!pw"
    plain = _settings(DATABASE_URL=direct)
    assert plain.database.listen_dsn == direct and schema_reload.listening(plain)
    assert schema_reload.startup_note(plain) is None
    pooled = _settings(DATABASE_URL=direct, POSTGRES_POOLER="transaction")
    assert pooled.database.listen_dsn is None and not schema_reload.listening(pooled)
    assert "no NOTIFY listener (POSTGRES_POOLER=transaction and no POSTGRES_LISTEN_URL)" in (
        schema_reload.startup_note(pooled) or "")
    chosen = _settings(DATABASE_URL=direct, POSTGRES_POOLER="transaction",
                       POSTGRES_LISTEN_URL=elsewhere)
    assert chosen.database.listen_dsn == elsewhere and schema_reload.listening(chosen)
    assert "Sup3r-s3cret!pw" not in repr(chosen)
    off = _settings(DATABASE_URL=direct, POSTGRES_LISTEN_URL="off")
    assert not schema_reload.listening(off)
    assert "LISTEN_URL is off" in (schema_reload.startup_note(off) or "")
    quiet = _settings(DATABASE_URL=direct, POSTGRES_POOLER="transaction", API_RELOAD_CHANNEL="")
    assert schema_reload.startup_note(quiet) is None  # no channel: nothing to miss
    with pytest.raises(config.ConfigError, match="POSTGRES_LISTEN_URL") as refused:
        _settings(DATABASE_URL=direct, POSTGRES_LISTEN_URL="postgresql://u:p/w@db:54x2/x")
    assert "p/w" not in str(refused.value)


def test_the_services_settings_behind_a_pooler() -> None:
    url = ("host=db dbname=x options='-c search_path=app "
           "-c default_transaction_read_only=off -c statement_timeout=99'")
    pooled = _settings(DATABASE_URL=url, POSTGRES_POOLER="transaction",
                       POOL_STATEMENT_TIMEOUT="5000")
    assert db.transaction_settings(pooled) == (("statement_timeout", "99"),
                                               ("search_path", "app"))
    assert db.connection_params(pooled)["options"] == ""  # never sent to PgBouncer
    # Directly the startup options carry them: no preamble for a request without auth.
    direct = _settings(DATABASE_URL="host=db dbname=x", POOL_STATEMENT_TIMEOUT="5000")
    assert db.transaction_settings(direct) == ()
    assert "-c statement_timeout=5000" in db.connection_params(direct)["options"]


def _flask(app: Any) -> flask.Flask:
    return app.app.app if hasattr(app.app, "app") else app.app  # Connexion -> Flask


@contextlib.contextmanager
def _app_client(dsn: str, **sections: dict[str, Any]) -> Iterator[TestClient]:
    db.close_pool()
    try:
        yield create_app(make_settings(dsn, **sections)).test_client()
    finally:
        db.close_pool()


# --- no role or claims leak between requests sharing one server connection -----------------


@pytest.fixture(scope="module")
def roles_dsn(database: TestDatabase) -> Iterator[tuple[str, str, str, str]]:
    """A database with two API roles, a view telling who runs where, and an authenticator;
    yields (authenticator's DSN, role_a, role_b, admin DSN)."""
    suffix = uuid.uuid4().hex[:8]
    role_a, role_b, auth = f"role_a_{suffix}", f"role_b_{suffix}", f"authn_{suffix}"
    admin = create_database(database, "leak")
    password = uuid.uuid4().hex
    run_sql(admin, f"""
        CREATE ROLE {role_a} NOLOGIN; CREATE ROLE {role_b} NOLOGIN;
        ALTER ROLE {role_a} SET statement_timeout = '1234ms';
        CREATE ROLE {auth} LOGIN NOINHERIT PASSWORD '{password}';
        GRANT {role_a}, {role_b} TO {auth};
        CREATE VIEW whoami AS SELECT 1 AS id, current_user::text AS role,
            coalesce(nullif(current_setting('request.jwt.claims', true), ''), '-') AS claims,
            current_setting('statement_timeout') AS statement_timeout,
            pg_backend_pid() AS backend;
        GRANT SELECT ON whoami TO {role_a}, {role_b};
    """)
    params = psycopg2.extensions.parse_dsn(admin)
    params.update(user=auth, password=password)
    yield psycopg2.extensions.make_dsn(**params), role_a, role_b, admin


def test_role_and_claims_never_leak_into_the_next_request_on_the_same_server_connection(
    database: TestDatabase, roles_dsn: tuple[str, str, str, str]
) -> None:
    """PgBouncer with ONE server connection: role A's request, then role B's, then an anonymous
    one all run on the same backend; each sees only its own role, claims and settings."""
    auth_dsn, role_a, role_b, _admin = roles_dsn
    with PgBouncer(database.dsn, pool_size=1) as single, _app_client(
        single.dsn_for(auth_dsn), database=POOLER,
        pool={"min_size": 2, "statement_timeout": 7000},
        auth={"jwt_secret": SECRET, "anonymous_role": role_b},
    ) as client:
        def whoami(headers: dict[str, str]) -> dict[str, Any]:
            r = client.get("/tables/whoami/rows", headers=headers)
            assert r.status_code == 200, r.text
            return r.json()["data"][0]

        seen = [whoami(bearer(role_a, "alice")), whoami(bearer(role_b, "bob")), whoami({}),
                whoami(bearer(role_a, "carol")), whoami({})]
    assert len({row["backend"] for row in seen}) == 1, "all on one server connection"
    assert [row["role"] for row in seen] == [role_a, role_b, role_b, role_a, role_b]
    claims = [json.loads(row["claims"]).get("sub") if row["claims"] != "-" else None
              for row in seen]
    assert claims == ["alice", "bob", None, "carol", None]
    # role_a's own setting is role_a's; the others get STATEMENT_TIMEOUT, never role_a's.
    assert [row["statement_timeout"] for row in seen] == ["1234ms", "7s", "7s", "1234ms", "7s"]


# --- end to end: gunicorn, several workers, the data API, through PgBouncer ----------------

WORKERS = 2


@pytest.fixture(scope="module")
def shop(database: TestDatabase) -> tuple[str, str]:
    """The demo shop (roles web_anon, web_user, RLS on orders) and an authenticator's DSN."""
    dsn = create_database(database, "bouncer_shop")
    assert demo.seed(dsn) is True
    name, password = f"authn_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    run_sql(dsn, f"CREATE ROLE {name} LOGIN NOINHERIT PASSWORD '{password}'; "
                 f"GRANT web_anon, web_user TO {name}")
    params = psycopg2.extensions.parse_dsn(dsn)
    params.update(user=name, password=password)
    return dsn, psycopg2.extensions.make_dsn(**params)


@pytest.fixture(scope="module")
def served(shop: tuple[str, str], bouncer: PgBouncer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    _admin, auth_dsn = shop
    env = {
        "DATABASE_URL": bouncer.dsn_for(auth_dsn),
        "POSTGRES_POOLER": "transaction",
        "POSTGRES_LISTEN_URL": auth_dsn,  # LISTEN directly on PostgreSQL
        "SERVER_WORKERS": str(WORKERS),
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_ANONYMOUS_ROLE": "web_anon",
        "API_CATALOG_TTL": "3600",
        "API_CURSOR_SECRET": "bouncer-tests-cursor-secret-0123456789",
    }
    with GunicornServer(tmp_path_factory.mktemp("gunicorn-bouncer"), env) as server:
        yield server


def _customer(admin: str) -> int:
    [(customer,)] = run_sql(admin, "SELECT customer_id FROM orders GROUP BY 1 "
                                   "HAVING count(*) >= 5 ORDER BY 1 LIMIT 1")
    return customer


def test_e2e_every_worker_serves_through_pgbouncer(served: GunicornServer) -> None:
    # Ready = every worker opened its pool (MIN_SIZE connections through PgBouncer).
    assert len(served.worker_pids()) == WORKERS
    for _ in range(10):
        assert served.get("/").json() == [[1]]
        assert served.get("/health/ready").status == 200
    log = served.stderr()
    assert wait_for(lambda: served.stderr().count("schema reload listener on channel")
                    == WORKERS, 5), log[-2000:]
    assert "no NOTIFY listener" not in log


def test_e2e_roles_and_row_level_security(served: GunicornServer,
                                          shop: tuple[str, str]) -> None:
    admin = shop[0]
    anonymous = served.get("/tables").json()["tables"]
    assert [t["name"] for t in anonymous] == ["product_tags", "products", "tags"]
    customer = _customer(admin)
    mine = [row[0] for row in run_sql(
        admin, "SELECT id FROM orders WHERE customer_id = %s ORDER BY id", (customer,))]
    headers = bearer("web_user", str(customer))
    for _ in range(6):  # both workers, interleaved with anonymous requests on shared backends
        page = served.get("/tables/orders/rows?select=id,customer_id&count=exact&limit=1000",
                          headers=headers)
        assert page.status == 200, page.body[:300]
        body = page.json()
        assert [row["id"] for row in body["data"]] == mine
        assert body["total"] == len(mine) and page.headers["x-total-count"] == str(len(mine))
        assert served.get("/tables/orders/rows").status == 404  # anonymous: no such table


def test_e2e_keyset_pages_to_the_end(served: GunicornServer, shop: tuple[str, str]) -> None:
    admin = shop[0]
    expected = [row[0] for row in run_sql(
        admin, "SELECT id FROM products WHERE category = 'Software' ORDER BY price DESC, id")]
    seen: list[int] = []
    path = "/tables/products/rows?select=id&filter=category.eq.Software&order=price.desc&limit=7"
    cursor = None
    while True:
        page = served.get(path + (f"&cursor={cursor}" if cursor else ""))
        assert page.status == 200, page.body[:300]
        body = page.json()
        seen += [row["id"] for row in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected


def test_e2e_exports(served: GunicornServer, shop: tuple[str, str]) -> None:
    admin = shop[0]
    customer = _customer(admin)
    csv_export = served.get("/tables/orders/rows?select=id,customer_id&limit=100000",
                            headers={**bearer("web_user", str(customer)), "Accept": "text/csv"})
    assert csv_export.status == 200 and csv_export.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(csv_export.body.decode())))
    assert rows and {row["customer_id"] for row in rows} == {str(customer)}
    ndjson = served.get("/tables/products/rows?select=id&limit=100000",
                        headers={"Accept": "application/x-ndjson"})
    assert ndjson.status == 200
    ids = [json.loads(line)["id"] for line in ndjson.body.decode().splitlines()]
    assert ids == [row[0] for row in run_sql(admin, "SELECT id FROM products ORDER BY id")]


def test_e2e_notify_reloads_every_worker_through_listen_url(
    served: GunicornServer, shop: tuple[str, str]
) -> None:
    admin = shop[0]

    def columns() -> set[tuple[str, ...]]:
        return {tuple(c["name"] for c in served.get("/tables/products").json()["columns"])
                for _ in range(20)}

    before = columns()
    assert len(before) == 1 and "pgb_added" not in next(iter(before))
    run_sql(admin, "ALTER TABLE products ADD COLUMN pgb_added int")
    try:
        run_sql(admin, "NOTIFY pgrest, 'reload schema'")
        assert wait_for(lambda: all("pgb_added" in c for c in columns()), 5)
    finally:
        run_sql(admin, "ALTER TABLE products DROP COLUMN pgb_added")
        run_sql(admin, "NOTIFY pgrest, 'reload schema'")


# --- faults: PgBouncer restarted, PostgreSQL restarted behind it ----------------------------


def _problem_503(server: GunicornServer) -> bool:
    r = server.get("/", timeout=15)
    return r.status == 503 and r.content_type == "application/problem+json"


def _heals(server: GunicornServer, within: float = 10.0) -> None:
    assert wait_for(lambda: server.get("/", timeout=15).status == 200, within, 0.1), (
        server.stderr()[-2000:])
    # Every connection of every worker works again (several requests, both workers).
    assert all(server.get("/tables/items/rows?limit=2").status == 200 for _ in range(10))


def test_pgbouncer_restart_and_postgresql_restart_behind_it(
    private_server: TestDatabase, tmp_path: Path
) -> None:
    dsn = seeded_database(private_server, "faults", SCHEMA)
    # query_wait_timeout: a client waiting for a server that is down is told so in seconds.
    with PgBouncer(private_server.dsn, pool_size=4,
                   extra={"query_wait_timeout": "3"}) as bouncer:
        env = {"DATABASE_URL": bouncer.dsn_for(dsn), "POSTGRES_POOLER": "transaction",
               "SERVER_WORKERS": str(WORKERS), "POOL_MIN_SIZE": "2",
               "POOL_ACQUIRE_TIMEOUT": "3", "POOL_CONNECT_TIMEOUT": "2"}
        with GunicornServer(tmp_path / "gunicorn", env) as server:
            log = server.stderr()
            assert log.count("no NOTIFY listener (POSTGRES_POOLER=transaction and no "
                             "POSTGRES_LISTEN_URL)") == 1, log[-2000:]
            assert "schema reload listener on channel" not in log
            _heals(server, 5)

            bouncer.kill()  # every client connection of every worker is cut
            assert _problem_503(server)
            assert _problem_503(server)
            bouncer.start()
            _heals(server)

            assert private_server.server is not None
            private_server.server.stop(mode="fast")  # PostgreSQL goes, PgBouncer stays
            assert _problem_503(server)
            assert _problem_503(server)
            private_server.server.start()
            _heals(server, 15)
