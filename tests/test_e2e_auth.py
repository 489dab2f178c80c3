"""End to end through gunicorn: a token decides what a request sees (RLS), on a configured
database and on the embedded demo database with its development auth (README's tutorial)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jwt
import psycopg2.extensions
import pytest

from swagger_server.config import PROJECT_ROOT
from swagger_server.db import demo
from tests.pg import TestDatabase
from tests.server import GunicornServer, http_get, run_sql, scratch_database

pytestmark = pytest.mark.e2e

SECRET = "e2e-secret-for-the-auth-tests-0123456789abcdef"


def token(sub: int, role: str = "web_user", secret: str = SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"sub": str(sub), "role": role, "iat": now, "exp": now + 300}, secret,
                      algorithm="HS256")


def customer_ids(port: int, headers: dict[str, str]) -> set[int]:
    response = http_get(port, "/tables/orders/rows?select=customer_id&limit=1000",
                        headers=headers)
    assert response.status == 200, response.body[:300]
    return {row["customer_id"] for row in response.json()["data"]}


def test_a_token_decides_what_a_request_sees(database: TestDatabase, tmp_path: Path) -> None:
    with scratch_database(database, "e2eauth") as dsn:
        assert demo.seed(dsn)
        # The README's authenticator: logs in, reads nothing itself, may become the API roles.
        params = psycopg2.extensions.parse_dsn(dsn)
        name = f"authenticator_{params['dbname']}"
        password = uuid.uuid4().hex
        run_sql(dsn, f"CREATE ROLE {name} LOGIN NOINHERIT PASSWORD %s", (password,))
        run_sql(dsn, f"GRANT web_anon, web_user TO {name}")
        params.update(user=name, password=password)
        env = {"DATABASE_URL": psycopg2.extensions.make_dsn(**params), "SERVER_WORKERS": "2",
               "AUTH_JWT_SECRET": SECRET, "AUTH_ANONYMOUS_ROLE": "web_anon"}
        with GunicornServer(tmp_path, env) as server:
            for customer in (42, 43, 42):  # each worker, each token, in turn
                assert customer_ids(server.port, {"Authorization": f"Bearer {token(customer)}"}
                                    ) == {customer}
            assert http_get(server.port, "/tables/orders/rows").status == 404  # web_anon
            assert http_get(server.port, "/tables/products/rows?limit=1").status == 200
            refused = http_get(server.port, "/tables/products/rows",
                               headers={"Authorization": f"Bearer {token(42, secret='x' * 40)}"})
            assert refused.status == 401
            assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert "bad signature" in refused.json()["detail"]
            assert SECRET not in server.stderr() + server.stdout()


def test_the_embedded_demo_tutorial(pg_root: Path) -> None:
    """README "Authentication": scripts/serve's embedded database, anonymous vs a demo token."""
    data_dir = Path(tempfile.mkdtemp(dir=pg_root)) / "pgdata"
    workdir = Path(tempfile.mkdtemp(dir=pg_root))
    with GunicornServer(workdir, {"EMBEDDED_DATA_DIR": str(data_dir), "SERVER_WORKERS": "1"}
                        ) as server:
        made = subprocess.run(
            [sys.executable, "-m", "swagger_server.keys", "token", "--sub", "42", "--role",
             "web_user"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
            env={"PATH": "/usr/bin:/bin"})
        demo_token = made.stdout.strip()
        assert customer_ids(server.port, {"Authorization": f"Bearer {demo_token}"}) == {42}
        anonymous = http_get(server.port, "/tables")
        assert [t["name"] for t in anonymous.json()["tables"]] == ["product_tags", "products",
                                                                  "tags"]
        assert http_get(server.port, "/tables/orders/rows").status == 404
        assert "embedded demo database without [AUTH]" in server.stderr()
        claims = json.loads(jwt.api_jws.base64url_decode(demo_token.split(".")[1]))
        assert claims["sub"] == "42" and claims["role"] == "web_user"
