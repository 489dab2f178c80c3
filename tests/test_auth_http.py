"""Authentication through HTTP, on real PostgreSQL with the demo's roles and row-level security:
every refusal (401 + challenge, 403), what each role sees (RLS in pages, cursors, counts,
exports, row by key; grants; column privileges), per-role settings, API keys, the admin
endpoint, anonymous on and off, and that nothing of a role survives its request."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg2
import psycopg2.extensions
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from swagger_server import db
from swagger_server.auth.keys import hash_api_key
from swagger_server.auth.request import RoleBinding
from swagger_server.db import demo
from tests.pg import TestDatabase, create_database
from tests.proxy import FaultProxy, dsn_via, upstream_from_dsn
from tests.test_auth_tokens import hand_made, jwk, pem, write
from tests.threads import run_concurrently

SECRET = "test-secret-for-the-http-tests-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789"
USER_KEY = "user-key-0123456789"


@pytest.fixture(scope="module")
def suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def shop(database: TestDatabase, suffix: str) -> str:
    """The demo shop with its roles, plus: a view telling who runs, a role with column
    privileges only, a role with its own statement timeout, a superuser and a role not granted
    to the service's user, all granted (but the last) to it."""
    dsn = create_database(database, "auth")
    assert demo.seed(dsn) is True
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"""
            CREATE VIEW whoami AS
                SELECT current_user::text AS role,
                       coalesce(nullif(current_setting('request.jwt.claims', true), ''), '-')
                           AS claims,
                       current_setting('statement_timeout') AS statement_timeout;
            GRANT SELECT ON whoami TO web_anon, web_user;
            CREATE VIEW sleepy AS SELECT 1 AS x FROM pg_sleep(0.5);
            CREATE ROLE cols_{suffix} NOLOGIN;
            GRANT cols_{suffix} TO CURRENT_USER;
            GRANT SELECT (id, name, country) ON customers TO cols_{suffix};
            CREATE ROLE slow_{suffix} NOLOGIN;
            GRANT slow_{suffix} TO CURRENT_USER;
            GRANT SELECT ON sleepy, whoami TO slow_{suffix}, web_user;
            ALTER ROLE slow_{suffix} SET statement_timeout = '150ms';
            CREATE ROLE super_{suffix} NOLOGIN SUPERUSER;
            GRANT super_{suffix} TO CURRENT_USER;
            CREATE ROLE stranger_{suffix} NOLOGIN;
            GRANT SELECT ON products TO stranger_{suffix};
            CREATE ROLE ops_{suffix} NOLOGIN;
            GRANT ops_{suffix} TO CURRENT_USER;
        """)
    return dsn


@pytest.fixture(scope="module")
def authenticator(shop: str, suffix: str) -> str:
    """The DSN of the README's authenticator: LOGIN NOINHERIT, not a superuser, granted the
    API roles (not stranger_*); it can read nothing by itself."""
    name = f"authenticator_{suffix}"
    password = uuid.uuid4().hex
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"CREATE ROLE {name} LOGIN NOINHERIT PASSWORD %s", (password,))
        cur.execute(f"GRANT web_anon, web_user, cols_{suffix}, slow_{suffix}, super_{suffix}, "
                    f"ops_{suffix} TO {name}")
    params = psycopg2.extensions.parse_dsn(shop)
    params.update(user=name, password=password)
    return psycopg2.extensions.make_dsn(**params)


@pytest.fixture(scope="module")
def customers(shop: str) -> tuple[int, int]:
    """Two customers with several orders each."""
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id FROM orders GROUP BY customer_id "
                    "HAVING count(*) >= 5 ORDER BY customer_id LIMIT 2")
        first, second = (row[0] for row in cur.fetchall())
    return first, second


def orders_of(dsn: str, customer: int) -> list[int]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM orders WHERE customer_id = %s ORDER BY id", (customer,))
        return [row[0] for row in cur.fetchall()]


def token(sub: object = "42", role: str | None = "web_user", key: Any = SECRET,
          alg: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": str(sub), "iat": now, "exp": now + 600, **claims}
    if role is not None:
        payload["role"] = role
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def auth_client(authenticator: str, suffix: str, route: Callable[[str], Any],
                make_client: Callable[..., TestClient]) -> Callable[..., TestClient]:
    """Clients of the authenticator, directly and then through PgBouncer (transaction mode):
    roles, claims and RLS must hold on server connections shared by every request."""
    dsn, database = route(authenticator)

    def make(**auth: Any) -> TestClient:
        values: dict[str, Any] = {
            "jwt_secret": SECRET, "anonymous_role": "web_anon",
            "admin_roles": (f"ops_{suffix}",),
            "api_keys": (
                _api_key("admin", ADMIN_KEY, f"ops_{suffix}"),
                _api_key("user", USER_KEY, "web_user"),
            ),
        }
        values.update(auth)
        pool = values.pop("pool", {})
        return make_client(dsn, database=database, auth=values, pool=pool)

    return make


def _api_key(name: str, key: str, role: str) -> Any:
    from swagger_server.auth.settings import ApiKey

    return ApiKey(name=name, digest=hash_api_key(key), role=role)


def assert_401(response: Any, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="'), challenge
    body = response.json()
    assert body["type"] == "/problems/unauthorized"
    assert reason in body["detail"], body["detail"]
    assert reason in challenge


def rows(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return response.json()["data"]


# ------------------------------------------------------------------ 401: every refusal


def test_credentials_missing_when_required(auth_client) -> None:
    client = auth_client(anonymous_role="")
    assert_401(client.get("/tables/products/rows?limit=1"), "credentials required")


@pytest.mark.parametrize(("make_token", "reason"), [
    (lambda: "not-a-token", "malformed"),
    (lambda: "a.b.c", "malformed"),
    (lambda: token(key="another-secret-of-at-least-32-bytes-long!!"), "bad signature"),
    (lambda: hand_made({"alg": "none", "typ": "JWT"}, {"role": "web_user", "sub": "1",
                                                        "exp": int(time.time()) + 60}, None),
     "alg none"),
    (lambda: token(alg="HS512", key=SECRET * 2), "algorithm not allowed"),
    (lambda: token(exp=int(time.time()) - 3600), "token expired"),
    (lambda: token(nbf=int(time.time()) + 3600), "not yet valid"),
    (lambda: token(exp=None), "the exp claim is required"),
])
def test_refused_tokens_are_401_with_the_challenge(auth_client, make_token, reason) -> None:
    client = auth_client()
    value = make_token()
    response = client.get("/tables/products/rows?limit=1", headers=bearer(value))
    assert_401(response, reason)
    assert value not in response.text and value not in response.headers["www-authenticate"]


def test_audience_and_issuer(auth_client) -> None:
    client = auth_client(jwt_audience="api", jwt_issuer="issuer")
    url = "/tables/products/rows?limit=1"
    assert_401(client.get(url, headers=bearer(token(aud="other", iss="issuer"))),
               "wrong audience")
    assert_401(client.get(url, headers=bearer(token(aud="api", iss="other"))), "wrong issuer")
    assert client.get(url, headers=bearer(token(aud="api", iss="issuer"))).status_code == 200


def test_public_keys_hs_rs_confusion_and_unknown_kid(auth_client, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = write(tmp_path, {"keys": [jwk(key, kid="k1")]})
    client = auth_client(jwt_secret="", jwt_public_keys=keys, jwt_algorithms=("RS256",))
    url = "/tables/products/rows?limit=1"
    good = jwt.encode({"sub": "1", "role": "web_user", "exp": int(time.time()) + 60}, key,
                      algorithm="RS256", headers={"kid": "k1"})
    assert client.get(url, headers=bearer(good)).status_code == 200
    confused = hand_made({"alg": "HS256", "typ": "JWT"},
                         {"sub": "1", "role": "web_user", "exp": int(time.time()) + 60},
                         pem(key).encode())
    assert_401(client.get(url, headers=bearer(confused)), "algorithm not allowed")
    unknown = jwt.encode({"sub": "1", "role": "web_user", "exp": int(time.time()) + 60}, key,
                         algorithm="RS256", headers={"kid": "k2"})
    assert_401(client.get(url, headers=bearer(unknown)), "unknown key id")


def test_malformed_headers_and_unknown_api_key(auth_client) -> None:
    client = auth_client()
    url = "/tables/products/rows?limit=1"
    assert_401(client.get(url, headers={"Authorization": "Basic abc"}), "malformed Authorization")
    assert_401(client.get(url, headers={"X-API-Key": "nope"}), "unknown API key")
    assert_401(client.get(url, headers={**bearer(token()), "X-API-Key": USER_KEY}),
               "not both")


# ------------------------------------------------------------------ 403: roles never used


def test_forbidden_roles_are_403_and_nothing_runs_as_them(auth_client, suffix: str) -> None:
    client = auth_client()
    for role in (f"stranger_{suffix}", "no_such_role_at_all", f"authenticator_{suffix}",
                 f"super_{suffix}", "pg_read_all_data"):
        # whoami would show the role if anything ran as it (stranger may read products only,
        # the others everything)
        response = client.get("/tables/products/rows?limit=1", headers=bearer(token(role=role)))
        assert response.status_code == 403, (role, response.text)
        body = response.json()
        assert body["type"] == "/problems/forbidden-role"
        assert role in body["detail"]
    # The refused requests left nothing behind: the next one runs as web_user.
    response = client.get("/tables/whoami/rows", headers=bearer(token()))
    assert rows(response)[0]["role"] == "web_user"


# ------------------------------------------------------------------ what a role sees


def test_anonymous_sees_the_catalogue_only(auth_client) -> None:
    client = auth_client()
    names = {t["name"] for t in client.get("/tables").json()["tables"]}
    assert names == {"products", "tags", "product_tags", "whoami"}
    assert client.get("/tables/orders/rows").status_code == 404
    assert client.get("/tables/orders").status_code == 404
    assert rows(client.get("/tables/whoami/rows"))[0]["role"] == "web_anon"
    user = {t["name"] for t in client.get("/tables", headers=bearer(token())).json()["tables"]}
    assert {"customers", "products", "orders", "order_items", "product_sales"} <= user


def test_rls_pages_cursors_counts_and_keys(auth_client, shop: str,
                                           customers: tuple[int, int]) -> None:
    client = auth_client()
    first, second = customers
    seen: dict[int, list[int]] = {}
    for customer in customers:
        headers = bearer(token(sub=customer))
        ids: list[int] = []
        url = "/tables/orders/rows?select=id,customer_id&limit=2&count=exact"
        while url:
            response = client.get(url, headers=headers)
            page = rows(response)
            assert {r["customer_id"] for r in page} == {customer}
            ids += [r["id"] for r in page]
            body = response.json()
            if "total" in body:
                assert body["total"] == len(orders_of(shop, customer))
            cursor = body["next_cursor"]
            url = f"/tables/orders/rows?select=id,customer_id&limit=2&cursor={cursor}" \
                if cursor else ""
        assert ids == orders_of(shop, customer)
        seen[customer] = ids
        items = rows(client.get("/tables/order_items/rows?limit=1000", headers=headers))
        assert items and {i["order_id"] for i in items} <= set(ids)
    assert not set(seen[first]) & set(seen[second])
    # Row by key: the other customer's order is a 404, one's own a 200.
    mine, theirs = seen[first][0], seen[second][0]
    assert client.get(f"/tables/orders/rows/{mine}",
                      headers=bearer(token(sub=first))).status_code == 200
    assert client.get(f"/tables/orders/rows/{theirs}",
                      headers=bearer(token(sub=first))).status_code == 404


def test_rls_exports(auth_client, shop: str, customers: tuple[int, int]) -> None:
    client = auth_client()
    for customer in customers:
        headers = bearer(token(sub=customer))
        response = client.get("/tables/orders/rows?select=id,customer_id",
                              headers={**headers, "Accept": "text/csv"})
        assert response.status_code == 200, response.text
        table = list(csv.DictReader(io.StringIO(response.text)))
        assert [int(r["id"]) for r in table] == orders_of(shop, customer)
        assert {r["customer_id"] for r in table} == {str(customer)}
        response = client.get("/tables/orders/rows?select=id,customer_id",
                              headers={**headers, "Accept": "application/x-ndjson"})
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert [r["id"] for r in lines] == orders_of(shop, customer)


def test_a_cursor_of_one_role_is_refused_for_another(auth_client) -> None:
    client = auth_client()
    page = client.get("/tables/products/rows?limit=2", headers=bearer(token()))
    cursor = page.json()["next_cursor"]
    assert cursor
    url = f"/tables/products/rows?limit=2&cursor={cursor}"
    assert client.get(url, headers=bearer(token())).status_code == 200
    refused = client.get(url)  # anonymous: web_anon
    assert refused.status_code == 400
    assert refused.json()["type"] == "/problems/invalid-cursor"


def test_column_privileges(auth_client, suffix: str) -> None:
    client = auth_client()
    headers = bearer(token(role=f"cols_{suffix}"))
    tables = client.get("/tables", headers=headers).json()["tables"]
    assert [t["name"] for t in tables] == ["customers"]
    assert tables[0]["primary_key"] == ["id"]
    described = client.get("/tables/customers", headers=headers).json()
    assert [c["name"] for c in described["columns"]] == ["id", "name", "country"]
    page = rows(client.get("/tables/customers/rows?limit=2", headers=headers))
    assert set(page[0]) == {"id", "name", "country"}
    for query in ("select=email", "filter=email.eq.x", "order=email"):
        response = client.get(f"/tables/customers/rows?{query}", headers=headers)
        assert response.status_code == 400, (query, response.text)
    assert client.get("/tables/orders/rows", headers=headers).status_code == 404


def test_a_roles_own_statement_timeout_applies(auth_client, suffix: str) -> None:
    client = auth_client()
    slow = client.get("/tables/whoami/rows", headers=bearer(token(role=f"slow_{suffix}")))
    assert rows(slow)[0]["statement_timeout"] == "150ms"
    response = client.get("/tables/sleepy/rows", headers=bearer(token(role=f"slow_{suffix}")))
    assert response.status_code == 504, response.text
    # web_user has no such setting: the same view answers
    assert client.get("/tables/sleepy/rows", headers=bearer(token())).status_code == 200


def test_count_exact_keeps_a_roles_lower_statement_timeout(
        authenticator: str, shop: str, suffix: str, make_client) -> None:
    """COUNT_TIMEOUT (30 s here) only lowers the timeout: slow_* has 150 ms of its own, so its
    count of a 10 s view runs out. Before the fix the count ran to its end (a total of 2000)."""
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(f"""
            CREATE VIEW slow_count AS
                SELECT g AS id, pg_sleep(0.005) IS NULL AS slept
                FROM generate_series(1, 2000) AS g;
            GRANT SELECT ON slow_count TO slow_{suffix}, web_user;
        """)
    try:
        from swagger_server.data.catalog import CACHE
        CACHE.invalidate()  # earlier tests cached the roles' catalogs without slow_count
        client = make_client(authenticator, auth={"jwt_secret": SECRET},
                             api={"count_timeout": 30000})
        response = client.get("/tables/slow_count/rows?limit=2&count=exact",
                              headers=bearer(token(role=f"slow_{suffix}")))
        assert response.status_code == 200, response.text
        assert response.json()["total"] is None
        assert response.headers["x-total-count-timed-out"] == "true"
        # web_user has no timeout of its own: its count is exact (a cheap filter here)
        response = client.get("/tables/slow_count/rows?limit=2&count=exact&filter=id.lt.5",
                              headers=bearer(token()))
        assert response.json()["total"] == 4
    finally:
        with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("DROP VIEW slow_count")


def test_claims_reach_sql(auth_client) -> None:
    client = auth_client()
    found = rows(client.get("/tables/whoami/rows", headers=bearer(token(sub=7))))[0]
    claims = json.loads(found["claims"])
    assert claims["sub"] == "7" and claims["role"] == "web_user"


# ------------------------------------------------------------------ nothing survives a request


def test_role_and_claims_never_leak_on_one_pooled_connection(auth_client) -> None:
    client = auth_client(pool={"min_size": 1, "max_size": 1, "acquire_timeout": 30})
    errors: list[str] = []
    counter = iter(range(10_000))

    def work() -> None:
        for _ in range(15):
            n = next(counter)
            kind = n % 3
            if kind == 0:
                response = client.get("/tables/whoami/rows", headers=bearer(token(sub=n)))
                expected = ("web_user", str(n))
            elif kind == 1:
                response = client.get("/tables/whoami/rows")
                expected = ("web_anon", None)
            else:  # a refused request between them
                response = client.get("/tables/whoami/rows",
                                      headers=bearer(token(role="no_such_role")))
                if response.status_code != 403:
                    errors.append(f"expected 403, got {response.status_code}")
                continue
            found = rows(response)[0]
            sub = json.loads(found["claims"]).get("sub") if found["claims"] != "-" else None
            if (found["role"], sub) != expected:
                errors.append(f"{expected} saw {found}")

    run_concurrently(work, 8, timeout=120)
    assert not errors, errors[:5]
    pool = db.get_pool()
    assert pool.stats()["opened_total"] == 1  # one connection served them all
    assert rows(client.get("/tables/whoami/rows", headers=bearer(token())))[0]["role"] == (
        "web_user")
    # The connection back in the pool: a plain one, whoever uses it next (a health check).
    with pool.connection() as conn, conn.cursor() as cur:
        assert not isinstance(conn.cursor_factory, RoleBinding)
        cur.execute("SELECT current_user = session_user, "
                    "coalesce(current_setting('request.jwt.claims', true), '')")
        assert cur.fetchone() == (True, "")


# ------------------------------------------------------------------ API keys, admin, off


def test_api_keys(auth_client) -> None:
    client = auth_client()
    found = rows(client.get("/tables/whoami/rows", headers={"X-API-Key": USER_KEY}))[0]
    assert found["role"] == "web_user"
    assert json.loads(found["claims"]) == {"role": "web_user", "api_key": "user"}


@pytest.mark.parametrize("path", ["/pool", "/metrics"])
def test_admin_endpoints_need_an_admin_role_when_auth_is_configured(
    auth_client, suffix: str, path: str
) -> None:
    client = auth_client()
    assert client.get(path).status_code == 403
    assert client.get(path).json()["type"] == "/problems/admin-required"
    assert client.get(path, headers=bearer(token())).status_code == 403
    assert client.get(path, headers=bearer(token(role=f"ops_{suffix}"))).status_code == 200
    assert client.get(path, headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    assert client.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/health/ready", headers={"X-API-Key": "wrong"}).status_code == 200
    assert client.get("/health/live", headers={"X-API-Key": "wrong"}).status_code == 200


def test_without_auth_nothing_changes(shop: str, make_client) -> None:
    client = make_client(shop)
    assert client.get("/pool").status_code == 200
    found = rows(client.get("/tables/whoami/rows", headers=bearer(token())))[0]
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert found["role"] == cur.fetchone()[0]  # no role switch, whatever is sent
    assert found["claims"] == "-"
    orders = rows(client.get("/tables/orders/rows?select=customer_id&limit=100"))
    assert len({r["customer_id"] for r in orders}) > 1  # the service's user bypasses RLS


def test_anonymous_role_alone_switches_roles(auth_client) -> None:
    client = auth_client(jwt_secret="", api_keys=(), admin_roles=())
    assert rows(client.get("/tables/whoami/rows"))[0]["role"] == "web_anon"
    assert_401(client.get("/tables/whoami/rows", headers=bearer(token())), "not accepted")
    assert client.get("/pool").status_code == 200  # no credentials configured: admin open


@pytest.fixture(autouse=True)
def _fresh_pool() -> Iterator[None]:
    yield
    db.close_pool()


# ------------------------------------------------------------------ cost: no extra round trip


def test_the_role_costs_no_round_trip_once_cached(shop: str, authenticator: str,
                                                  make_client) -> None:
    """Round trips to the database per page (the client's sends, counted by a proxy): the same
    with a new token each time, anonymous, and without auth at all (the preamble travels with
    the statement). Only a role not yet in the cache costs more (its lookup)."""
    url = "/tables/products/rows?limit=5"

    def round_trips(dsn: str, auth: dict[str, Any], headers: Callable[[int], dict]) -> int:
        with FaultProxy(upstream_from_dsn(dsn)) as proxy:
            client = make_client(dsn_via(dsn, proxy.port), auth=auth,
                                 pool={"min_size": 1, "max_size": 1})
            assert client.get(url, headers=headers(-1)).status_code == 200  # catalog, role
            before = proxy.sends_total
            for n in range(10):
                response = client.get(url, headers=headers(n))
                assert response.status_code == 200, response.text
            found = proxy.sends_total - before
            db.close_pool()
            return found

    auth = {"jwt_secret": SECRET, "anonymous_role": "web_anon"}
    with_token = round_trips(authenticator, auth, lambda n: bearer(token(sub=n)))
    anonymous = round_trips(authenticator, auth, lambda n: {})
    without_auth = round_trips(shop, {}, lambda n: {})
    # The page alone, a transaction of one message (the preamble in front when auth is on): no
    # BEGIN, no ROLLBACK on return (db/transaction.py: execute_alone)
    assert with_token == anonymous == without_auth == 10, (with_token, anonymous, without_auth)


def test_a_hand_written_endpoint_the_role_may_not_read_is_403(auth_client, shop: str) -> None:
    client = auth_client()
    response = client.get("/customers/42/summary")  # web_anon may not read customers
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "/problems/permission-denied"
    mine = client.get("/customers/42/summary", headers=bearer(token(sub=42))).json()
    others = client.get("/customers/43/summary", headers=bearer(token(sub=42))).json()
    assert mine["orders"] == len(orders_of(shop, 42)) > 0
    assert len(orders_of(shop, 43)) == 0 or others["orders"] == 0  # RLS: not 43's orders


# ------------------------------------------------------------------ Swagger UI and CORS


def test_the_spec_declares_both_schemes_and_leaves_the_decision_to_the_service(
        auth_client) -> None:
    client = auth_client()
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert (schemes["apiKeyAuth"]["in"], schemes["apiKeyAuth"]["name"]) == ("header",
                                                                             "X-API-Key")
    assert spec["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}, {}]
    # Connexion lets everything through to the service, which decides: a request without
    # credentials is anonymous, not Connexion's "No authorization token provided".
    assert client.get("/tables/products/rows?limit=1").status_code == 200
    assert "malformed token" in client.get(
        "/tables", headers={"Authorization": "Bearer x"}).json()["detail"]


def test_cors_allows_the_credential_headers(shop: str, make_client) -> None:
    client = make_client(shop, cors={"origins": ("https://app.example",)},
                         auth={"jwt_secret": SECRET, "anonymous_role": "web_anon"})
    response = client.options("/tables", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, x-api-key"})
    assert response.status_code == 200, response.text
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-api-key" in allowed


def test_every_way_of_running_sql_opens_its_transaction_as_the_role(
        authenticator: str) -> None:
    """execute (plain or named cursor), executemany and callproc: each first statement of a
    transaction runs as the role; later ones in it too; after ROLLBACK, the next again."""
    from swagger_server.auth.context import RoleFacts, build_preamble
    from swagger_server.auth.identity import Identity

    identity = Identity(role="web_user", claims={"sub": "5"})
    preamble = build_preamble(RoleFacts(role="web_user", refusal=None), identity, "GET", "/x")
    with contextlib.closing(psycopg2.connect(authenticator)) as conn:
        conn.cursor_factory = RoleBinding((preamble.statement, preamble.params))
        checks = {
            "execute": lambda cur: cur.execute("SELECT current_user, %s", ("50%",)),
            "execute, a literal %": lambda cur: cur.execute("SELECT current_user, '50%'"),
            "callproc": lambda cur: cur.callproc("current_setting", ("role",)),
        }
        for label, run in checks.items():
            with conn.cursor() as cur:
                run(cur)
                assert cur.fetchone()[0] == "web_user", label
                cur.execute("SELECT current_user")  # the same transaction
                assert cur.fetchone()[0] == "web_user", label
            conn.rollback()
        with conn.cursor("named") as cur:
            cur.execute("SELECT current_user FROM generate_series(1, 3)")
            assert cur.fetchone()[0] == "web_user"
        conn.rollback()
        with conn.cursor() as cur:
            cur.executemany("SELECT %s", [(1,), (2,)])
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == "web_user"
        conn.rollback()
        conn.cursor_factory = None
        with conn.cursor() as cur:
            cur.execute("SELECT current_user = session_user")
            assert cur.fetchone()[0] is True


def test_an_export_after_a_failed_statement_still_runs_as_the_role(
        auth_client, shop: str, authenticator: str) -> None:
    """A value the column's domain refuses fails the export's statement; the follow-up casts
    that name the culprit (value_errors) ran as the authenticator with no claims before the
    fix: the domain's CHECK tells who runs it."""
    with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("""
            CREATE FUNCTION tattle(v int) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                IF v = 666 THEN
                    RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = format(
                        'run by %s with sub %s', current_user, coalesce(nullif(
                        current_setting('request.jwt.claims', true), '')::json->>'sub', '-'));
                END IF;
                RETURN true;
            END $$;
            CREATE DOMAIN tattling AS int CHECK (tattle(VALUE));
            CREATE TABLE tattles (id tattling);
            INSERT INTO tattles VALUES (1);
            GRANT SELECT ON tattles TO web_user;
        """)
    try:
        from swagger_server.data.catalog import CACHE
        CACHE.invalidate()  # earlier tests cached web_user's catalog without tattles
        client = auth_client()
        headers = bearer(token(sub="42"))
        assert client.get("/tables/tattles/rows", headers=headers).status_code == 200
        for accept in ("text/csv", "application/x-ndjson", "application/json"):
            response = client.get("/tables/tattles/rows?filter=id.eq.666",
                                  headers={**headers, "Accept": accept})
            assert response.status_code == 400, (accept, response.text)
            assert "run by web_user with sub 42" in response.json()["detail"], accept
        # and the connection went back to the pool unbound
        with db.get_pool().connection() as conn, conn.cursor() as cur:
            assert not isinstance(conn.cursor_factory, RoleBinding)
            cur.execute("SELECT current_user = session_user")
            assert cur.fetchone() == (True,)
    finally:
        with contextlib.closing(psycopg2.connect(shop)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("DROP TABLE tattles; DROP DOMAIN tattling; DROP FUNCTION tattle(int)")


def test_a_bound_connection_refuses_what_would_run_as_the_authenticator(
        authenticator: str) -> None:
    """Autocommit (no transaction to set the role in) or a cleared binding: refused, not run
    as the authenticator."""
    from swagger_server.auth.context import RoleFacts, build_preamble
    from swagger_server.auth.identity import Identity
    from swagger_server.auth.request import RoleBindingSpent, detach

    identity = Identity(role="web_user", claims={"sub": "5"})
    preamble = build_preamble(RoleFacts(role="web_user", refusal=None), identity, "GET", "/x")
    with contextlib.closing(psycopg2.connect(authenticator)) as conn:
        conn.cursor_factory = RoleBinding((preamble.statement, preamble.params))
        conn.autocommit = True
        with conn.cursor() as cur, pytest.raises(RoleBindingSpent):
            cur.execute("SELECT current_user")
        conn.autocommit = False
        cur = conn.cursor()
        cur.execute("SELECT current_user")
        assert cur.fetchone() == ("web_user",)
        conn.rollback()
        detach(conn)  # the cursor still holds the binding, now cleared
        with pytest.raises(RoleBindingSpent):
            cur.execute("SELECT current_user")


def test_the_readme_tutorial_shows_what_the_service_says(auth_client) -> None:
    """The token maker runs in the virtualenv (a system python lacks PyJWT), and the
    `Bearer nonsense` step shows the very header the service sends."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    makers = re.findall(r"(\S*)python -m swagger_server\.keys", readme)
    assert makers and all(m.endswith(".venv/bin/") for m in makers), makers
    lines = readme.splitlines()
    step = next(i for i, line in enumerate(lines) if "Bearer nonsense" in line)
    shown = lines[step + 1].removeprefix("# www-authenticate: ")
    response = auth_client().get("/tables", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == shown


@pytest.mark.parametrize("claims", [
    {"n": float("nan")}, {"n": [1, {"deep": float("inf")}]}, {"x": "a\x00b"},
    {"a\x00": 1}, {"x": "\ud800"}, {"role": "web_\udc00user"},
], ids=["nan", "nested-infinity", "nul", "nul-in-a-name", "surrogate", "surrogate-role"])
def test_a_signed_token_with_claims_postgresql_cannot_read_is_a_401(
        auth_client, claims: dict[str, Any]) -> None:
    """Python's json (and so PyJWT) reads them; PostgreSQL's json does not (the RLS policy's
    ::json failed: a 500), nor is a lone surrogate UTF-8 (the role check raised: a 500)."""
    client = auth_client()
    response = client.get("/tables/orders/rows", headers=bearer(token(**claims)))
    assert response.status_code == 401, response.text
    expected = ("the role claim is not a role name" if "role" in claims else
                "malformed token: a claim holds NaN, Infinity, NUL or a lone surrogate")
    assert response.json()["detail"] == expected
    assert client.get("/tables/orders/rows", headers=bearer(token())).status_code == 200
