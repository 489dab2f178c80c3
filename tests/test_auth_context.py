"""The role check and the per-request preamble, on real PostgreSQL: an authenticator (LOGIN
NOINHERIT) granted web_user and web_anon; an RLS policy on request.jwt.claims; role settings;
forbidden roles. Role names carry a random suffix (roles are cluster-wide)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest
from psycopg2 import sql

from swagger_server.auth import ForbiddenRole, Identity, RoleCatalog, build_preamble
from swagger_server.auth.context import RoleFacts, read_role_facts
from tests.pg import TestDatabase, create_database

PASSWORD = "auth-test-pw"


@dataclass
class Cluster:
    server_dsn: str  # the server's maintenance database, to drop ours from
    admin_dsn: str
    auth_dsn: str
    auth: str
    web_user: str
    web_anon: str
    boss: str  # a superuser, even granted to the authenticator
    stranger: str  # exists, not granted
    bypass: str  # BYPASSRLS, granted
    long: str  # a granted role whose name has the maximum 63 bytes

    def connect(self) -> psycopg2.extensions.connection:
        """The authenticator's connection, as the pool holds it (not autocommit)."""
        return psycopg2.connect(self.auth_dsn)

    def admin(self, statement: str, dsn: str | None = None) -> None:
        with contextlib.closing(psycopg2.connect(dsn or self.admin_dsn)) as conn, \
                conn.cursor() as cur:
            conn.autocommit = True
            cur.execute(statement)


@pytest.fixture(scope="module")
def cluster(database: TestDatabase) -> Iterator[Cluster]:
    suffix = uuid.uuid4().hex[:8]
    names = {n: f"{n}_{suffix}" for n in ("auth", "web_user", "web_anon", "boss", "stranger",
                                          "bypass")}
    names["long"] = f"long_{suffix}".ljust(63, "x")
    admin_dsn = create_database(database, "auth")
    dbname = psycopg2.extensions.parse_dsn(admin_dsn)["dbname"]
    params = psycopg2.extensions.parse_dsn(admin_dsn)
    params.update(user=names["auth"], password=PASSWORD)
    auth_dsn = psycopg2.extensions.make_dsn(**params)
    c = Cluster(server_dsn=database.dsn, admin_dsn=admin_dsn, auth_dsn=auth_dsn, **names)
    c.admin(f"""
        CREATE ROLE {c.auth} LOGIN NOINHERIT NOCREATEDB NOCREATEROLE PASSWORD '{PASSWORD}';
        CREATE ROLE {c.web_user} NOLOGIN;
        CREATE ROLE {c.web_anon} NOLOGIN;
        CREATE ROLE {c.boss} NOLOGIN SUPERUSER;
        CREATE ROLE {c.stranger} NOLOGIN;
        CREATE ROLE {c.bypass} NOLOGIN BYPASSRLS;
        CREATE ROLE {c.long} NOLOGIN;
        GRANT {c.web_user}, {c.web_anon}, {c.boss}, {c.bypass}, {c.long}, pg_read_all_data
            TO {c.auth};
        ALTER ROLE {c.web_user} SET statement_timeout = '300ms';
        ALTER ROLE {c.web_user} SET work_mem = '3MB';
        ALTER ROLE {c.web_user} IN DATABASE "{dbname}" SET work_mem = '5MB';
        ALTER ROLE {c.web_user} SET app.greeting = 'hello';
        ALTER ROLE {c.web_user} SET log_min_duration_statement = '0';  -- superuser-only

        CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric);
        INSERT INTO orders SELECT n, 1 + n % 3, n * 1.5 FROM generate_series(1, 30) AS n;
        CREATE TABLE products (id int PRIMARY KEY, name text);
        INSERT INTO products VALUES (1, 'tent'), (2, 'stove');
        ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
        -- nullif: once set in a session, the setting reads '' (not NULL) after the transaction,
        -- and ''::json fails (even at plan time, when the planner pre-evaluates it).
        CREATE POLICY own_orders ON orders FOR SELECT USING (customer_id =
            (nullif(current_setting('request.jwt.claims', true), '')::json->>'sub')::int);
        GRANT SELECT ON orders TO {c.web_user}, {c.bypass};
        GRANT SELECT ON products TO {c.web_user}, {c.web_anon};
    """)
    yield c
    c.admin(f'DROP DATABASE "{dbname}" WITH (FORCE)', dsn=c.server_dsn)
    c.admin("DROP ROLE " + ", ".join(names.values()), dsn=c.server_dsn)


@pytest.fixture
def conn(cluster: Cluster) -> Iterator[psycopg2.extensions.connection]:
    with contextlib.closing(cluster.connect()) as connection:
        yield connection


def user(cluster: Cluster, sub: str) -> Identity:
    return Identity(role=cluster.web_user, claims={"sub": sub, "role": cluster.web_user})


def run_as(
    cur, catalog: RoleCatalog, identity: Identity, statement: str | sql.Composable,
    params: dict | None = None, method: str = "GET", path: str = "/tables/orders/rows",
) -> list[tuple]:
    """What a request does: check the role, then preamble + query in ONE execute."""
    facts = catalog.check(cur, identity.role)
    combined, all_params = build_preamble(facts, identity, method, path).prepend(
        statement, params or {})
    cur.execute(combined, all_params)
    return cur.fetchall()


def session_state(cur) -> tuple:
    cur.execute("""SELECT current_user, current_setting('request.jwt.claims', true),
                          current_setting('request.method', true),
                          current_setting('statement_timeout'), current_setting('work_mem')""")
    return cur.fetchone()


def test_rls_sees_only_the_callers_rows(cluster: Cluster, conn) -> None:
    catalog = RoleCatalog()
    with conn.cursor() as cur:
        for sub in ("1", "2", "3", "2"):
            rows = run_as(cur, catalog, user(cluster, sub),
                          "SELECT customer_id, count(*), current_user, "
                          "current_setting('request.method'), current_setting('request.path') "
                          "FROM orders GROUP BY customer_id")
            assert rows == [(int(sub), 10, cluster.web_user, "GET", "/tables/orders/rows")]
            conn.commit()
        # The same grants, another role: web_anon may read products, not orders.
        anon = Identity(role=cluster.web_anon, claims={}, source="anonymous")
        assert run_as(cur, catalog, anon, "SELECT count(*) FROM products") == [(2,)]
        conn.commit()
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            run_as(cur, catalog, anon, "SELECT count(*) FROM orders")
        conn.rollback()


@pytest.mark.parametrize("ending", ["commit", "rollback", "error"])
def test_nothing_survives_the_transaction(cluster: Cluster, conn, ending: str) -> None:
    with conn.cursor() as cur:
        before = session_state(cur)
        conn.commit()
        assert before[0] == cluster.auth
        statement = "SELECT 1/0" if ending == "error" else "SELECT count(*) FROM orders"
        try:
            run_as(cur, RoleCatalog(), user(cluster, "2"), statement)
            claims = json.dumps({"sub": "2", "role": cluster.web_user}, separators=(",", ":"))
            assert session_state(cur)[:3] == (cluster.web_user, claims, "GET")
        except psycopg2.errors.DivisionByZero:
            assert ending == "error"
        conn.commit() if ending == "commit" else conn.rollback()

        after = session_state(cur)
        assert after[0] == cluster.auth  # back to the authenticator
        assert after[1] in (None, "")  # no claims ("" once the GUC has existed in the session)
        assert after[2] in (None, "")
        assert after[3:] == before[3:]  # role settings gone too
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT count(*) FROM orders")  # the authenticator alone reads nothing
        conn.rollback()


def test_many_requests_on_one_connection_never_see_each_others_rows(cluster, conn) -> None:
    """A pooled connection serving customers in turn (and failing requests in between)."""
    catalog = RoleCatalog()
    with conn.cursor() as cur:
        for turn in range(30):
            sub = str(1 + turn % 3)
            if turn % 5 == 4:
                with pytest.raises(psycopg2.errors.DivisionByZero):
                    run_as(cur, catalog, user(cluster, sub), "SELECT 1/0")
                conn.rollback()
                continue
            rows = run_as(cur, catalog, user(cluster, sub),
                          "SELECT DISTINCT customer_id FROM orders")
            assert rows == [(int(sub),)]
            conn.commit() if turn % 2 else conn.rollback()
            assert session_state(cur)[0] == cluster.auth
            conn.rollback()


def test_role_settings_apply_inside_the_transaction(cluster: Cluster, conn) -> None:
    with conn.cursor() as cur:
        facts = read_role_facts(cur, cluster.web_user)
        assert dict(facts.settings) == {
            "statement_timeout": "300ms", "work_mem": "5MB", "app.greeting": "hello"}
        assert facts.skipped == ("log_min_duration_statement",)
        conn.rollback()
        rows = run_as(cur, RoleCatalog(), user(cluster, "1"), """
            SELECT current_setting('statement_timeout'), current_setting('work_mem'),
                   current_setting('app.greeting'), current_setting('log_min_duration_statement')
        """)
        assert rows == [("300ms", "5MB", "hello", "-1")]
        conn.rollback()


def test_the_roles_statement_timeout_cancels_a_slow_query(cluster: Cluster, conn) -> None:
    """Set in the same round trip as the query, the role's 300ms applies to that query: without
    it the sleep would simply finish (and the test would fail for want of the error)."""
    with conn.cursor() as cur:
        started = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled):
            run_as(cur, RoleCatalog(), user(cluster, "1"), "SELECT pg_sleep(10)")
        assert time.monotonic() - started < 8
        conn.rollback()
        # web_anon has no such setting: the same kind of query runs to its end.
        anon = Identity(role=cluster.web_anon, claims={}, source="anonymous")
        assert run_as(cur, RoleCatalog(), anon, "SELECT pg_sleep(0.5)::text") == [("",)]
        conn.rollback()


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("boss", "it is a superuser"),
        ("auth", "it is the authenticator itself"),
        ("stranger", "it is not granted to the authenticator"),
        ("nobody", "it is not granted to the authenticator"),
        ("pg_read_all_data", "it is a predefined pg_* role"),
    ],
)
def test_forbidden_roles_are_refused_and_nothing_runs_as_them(
    cluster: Cluster, conn, which: str, reason: str
) -> None:
    role = getattr(cluster, which, None) or (
        which if which.startswith("pg_") else f"nobody_{uuid.uuid4().hex[:6]}")
    catalog = RoleCatalog()
    with conn.cursor() as cur:
        with pytest.raises(ForbiddenRole) as info:
            run_as(cur, catalog, Identity(role=role, claims={"sub": "1"}), "SELECT 1")
        assert info.value.reason == reason
        assert info.value.role == role
        facts = catalog.facts(cur, role)
        with pytest.raises(ForbiddenRole):
            build_preamble(facts, Identity(role=role), "GET", "/")
        assert session_state(cur)[0] == cluster.auth
        conn.rollback()


def test_a_longer_name_is_not_truncated_into_a_granted_role(cluster: Cluster, conn) -> None:
    """PostgreSQL truncates a name to 63 bytes; the check compares as text, so 'granted63'
    plus anything is not 'granted63'."""
    with conn.cursor() as cur:
        assert RoleCatalog().check(cur, cluster.long).allowed
        with pytest.raises(ForbiddenRole, match="not granted"):
            RoleCatalog().check(cur, cluster.long + "-and-more")
        conn.rollback()


def test_a_bypassrls_role_is_allowed_and_reported(cluster: Cluster, conn) -> None:
    with conn.cursor() as cur:
        facts = RoleCatalog().check(cur, cluster.bypass)
        assert facts.bypass_rls
        rows = run_as(cur, RoleCatalog(), Identity(role=cluster.bypass, claims={"sub": "1"}),
                      "SELECT count(*) FROM orders")
        assert rows == [(30,)]  # all customers' rows: what BYPASSRLS means
        conn.rollback()


def test_the_database_itself_refuses_an_ungranted_role(cluster: Cluster, conn) -> None:
    """Defence in depth: even facts wrongly saying "allowed" cannot make PostgreSQL switch."""
    forged = RoleFacts(role=cluster.stranger, refusal=None)
    identity = Identity(role=cluster.stranger, claims={})
    combined, params = build_preamble(forged, identity, "GET", "/").prepend("SELECT 1")
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(combined, params)
        conn.rollback()
        assert session_state(cur)[0] == cluster.auth
        conn.rollback()


def test_role_facts_are_cached_for_the_ttl(cluster: Cluster, conn) -> None:
    clock = [0.0]
    catalog = RoleCatalog(ttl=60, clock=lambda: clock[0])
    with conn.cursor() as cur:
        with pytest.raises(ForbiddenRole):
            catalog.check(cur, cluster.stranger)
        cluster.admin(f"GRANT {cluster.stranger} TO {cluster.auth}")
        try:
            clock[0] = 59.0
            with pytest.raises(ForbiddenRole):  # still the cached answer
                catalog.check(cur, cluster.stranger)
            assert catalog.lookups == 1
            clock[0] = 61.0
            conn.rollback()  # a new transaction sees the new grant
            assert catalog.check(cur, cluster.stranger).allowed
            assert catalog.lookups == 2
        finally:
            conn.rollback()
            cluster.admin(f"REVOKE {cluster.stranger} FROM {cluster.auth}")


def test_claims_method_and_path_arrive_intact(cluster: Cluster, conn) -> None:
    claims = {"sub": "1", "role": cluster.web_user, "name": "O'Brien \"Bob\" \\ ü 🐘",
              "evil": "'); DROP TABLE orders; --", "nested": {"a": [1, 2.5, None, True]}}
    identity = Identity(role=cluster.web_user, claims=claims)
    with conn.cursor() as cur:
        rows = run_as(cur, RoleCatalog(), identity,
                      "SELECT current_setting('request.jwt.claims'), "
                      "current_setting('request.method'), current_setting('request.path')",
                      method="HEAD", path="/tables/o'rders/rows?\x00x=%(1)s")
        got_claims, method, path = rows[0]
        assert json.loads(got_claims) == claims
        assert (method, path) == ("HEAD", "/tables/o'rders/rows?\ufffdx=%(1)s")
        conn.rollback()
        cur.execute("SELECT count(*) FROM pg_class WHERE relname = 'orders'")
        assert cur.fetchone() == (1,)
        conn.rollback()


def test_prepend_wants_named_parameters_and_keeps_its_own_names(cluster, conn) -> None:
    facts = RoleFacts(role=cluster.web_user, refusal=None)
    preamble = build_preamble(facts, user(cluster, "1"), "GET", "/")
    with pytest.raises(TypeError, match="named parameters"):
        preamble.prepend("SELECT %s", (1,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        preamble.prepend("SELECT %(_auth_role)s", {"_auth_role": "x"})
    combined, params = preamble.prepend(
        sql.SQL("SELECT customer_id FROM orders WHERE id = %(p0)s"), {"p0": 3})
    with conn.cursor() as cur:
        cur.execute(combined, params)
        assert cur.fetchall() == [(1,)]
        conn.rollback()


@pytest.mark.parametrize(
    ("grants", "reason"),
    [
        ("GRANT {boss} TO {r}", "it is a member of a superuser"),
        # through an intermediate role, and with NOINHERIT: still one SET ROLE away
        ("CREATE ROLE {r}_mid NOLOGIN; GRANT {boss} TO {r}_mid; GRANT {r}_mid TO {r}",
         "it is a member of a superuser"),
        ("GRANT pg_read_all_data TO {r}",
         "it is a member of a predefined role that bypasses grants"),
        ("GRANT pg_monitor TO {r}", "it is a member of a predefined role that bypasses grants"),
        ("CREATE TABLE {r}_t (x int); ALTER TABLE {r}_t OWNER TO {r}",
         "it owns tables, or is a member of a role that does"),
        ("CREATE ROLE {r}_mid NOLOGIN; CREATE TABLE {r}_t (x int); "
         "ALTER TABLE {r}_t OWNER TO {r}_mid; GRANT {r}_mid TO {r}",
         "it owns tables, or is a member of a role that does"),
    ],
)
def test_a_role_inheriting_privileges_past_grants_and_policies_is_refused(
    cluster: Cluster, conn, grants: str, reason: str
) -> None:
    """Attributes are not inherited, privileges are: a member of the tables' owner (a superuser
    here, as postgres in the demo) skips RLS and read every order before the fix."""
    role = f"heir_{uuid.uuid4().hex[:8]}"
    cluster.admin(f"CREATE ROLE {role} NOLOGIN; GRANT {role} TO {cluster.auth}; "
                  f"GRANT SELECT ON orders TO {role}; "
                  + grants.format(r=role, boss=cluster.boss))
    try:
        with conn.cursor() as cur:
            with pytest.raises(ForbiddenRole) as info:
                run_as(cur, RoleCatalog(), Identity(role=role, claims={"sub": "1"}),
                       "SELECT count(*) FROM orders")
            assert info.value.reason == reason
            assert session_state(cur)[0] == cluster.auth
            conn.rollback()
    finally:
        roles = f"{role}, {role}_mid" if "_mid" in grants else role
        cluster.admin(f"DROP OWNED BY {roles}; DROP ROLE {roles}")


def test_a_member_of_a_bypassrls_role_is_allowed_and_still_under_rls(cluster, conn) -> None:
    """BYPASSRLS is an attribute: not inherited, so a member reads only its own rows."""
    role = f"heir_{uuid.uuid4().hex[:8]}"
    cluster.admin(f"CREATE ROLE {role} NOLOGIN; GRANT {role} TO {cluster.auth}; "
                  f"GRANT {cluster.bypass} TO {role}; GRANT SELECT ON orders TO {role}; "
                  f"CREATE POLICY heir ON orders FOR SELECT TO {role} USING (customer_id = 1)")
    try:
        with conn.cursor() as cur:
            rows = run_as(cur, RoleCatalog(), Identity(role=role, claims={"sub": "1"}),
                          "SELECT count(*) FROM orders")
            assert rows == [(10,)]
            conn.rollback()
    finally:
        cluster.admin(f"DROP POLICY heir ON orders; DROP OWNED BY {role}; DROP ROLE {role}")
