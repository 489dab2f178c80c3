"""The Connexion app end to end through its test client, on a real PostgreSQL.

What a client sees: the routes, problem+json errors, request ids, CORS, the Swagger UI, health
probes with the database away, and a clear StartupError for a broken spec.
"""

from __future__ import annotations

import logging
import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from swagger_server import db, errors
from swagger_server.app import StartupError, create_app
from swagger_server.config import PROJECT_ROOT
from swagger_server.db import get_db
from tests.conftest import make_settings
from tests.pg import TestDatabase

POOL_KEYS = {
    "pid", "min_size", "max_size", "size", "idle", "in_use", "waiting", "requests_total",
    "timeouts_total", "errors_total", "discarded_total", "wait_ms_total",
}
PROBLEM_KEYS = {"type", "title", "status", "detail"}
PROBLEM_JSON = "application/problem+json"
ORIGIN = "https://app.example"
SECRET_MESSAGE = "kaboom: internal detail 7f3a"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    return body


# --- handlers for the test specs below (operationId: tests.test_app.<name>) -------------------

def boom() -> None:
    raise RuntimeError(SECRET_MESSAGE)


def boom_after_query() -> None:
    with get_db().cursor() as cur:
        cur.execute("SELECT 1")
    raise RuntimeError(SECRET_MESSAGE)


def _spec(paths: str) -> str:
    return textwrap.dedent(
        """\
        openapi: 3.0.3
        info: {title: test, version: "1"}
        paths:
        """
    ) + textwrap.indent(textwrap.dedent(paths), "  ")


def _operation(path: str, operation_id: str) -> str:
    return f"""\
{path}:
  get:
    operationId: {operation_id}
    responses:
      "200": {{description: ok}}
"""


TEST_SPEC = _spec(
    _operation("/boom", "tests.test_app.boom")
    + _operation("/boom-after-query", "tests.test_app.boom_after_query")
    + _operation("/pool", "swagger_server.controllers.pool_controller.stats")
)


def write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "swagger.yaml").write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def boom_client(database: TestDatabase, tmp_path: Path) -> Iterator[TestClient]:
    """An app built from a test spec whose handlers raise."""
    db.close_pool()
    app = create_app(make_settings(database.dsn), spec_dir=write_spec(tmp_path, TEST_SPEC))
    # raise_server_exceptions=False: see the response a real client gets, not the exception.
    yield TestClient(app, raise_server_exceptions=False)
    db.close_pool()


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- routes ------------------------------------------------------------------------------------

def test_root_returns_select_one(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == [[1]]


def test_live_and_ready_with_the_database_up(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    r = client.get("/health/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_pool_reports_every_stat_and_counts_requests(client: TestClient) -> None:
    before = client.get("/pool")
    assert before.status_code == 200
    stats = before.json()
    assert stats.keys() >= POOL_KEYS, POOL_KEYS - stats.keys()
    assert stats["in_use"] == 0
    assert stats["max_size"] == 10 and stats["min_size"] == 2

    assert client.get("/").status_code == 200
    after = client.get("/pool").json()
    assert after["requests_total"] == stats["requests_total"] + 1
    assert after["wait_ms_total"] >= stats["wait_ms_total"]
    assert after["in_use"] == 0
    assert after["size"] >= 1


def test_pool_reflects_the_configured_sizes(make_client: Callable[..., TestClient]) -> None:
    stats = make_client(pool={"min_size": 1, "max_size": 3}).get("/pool").json()
    assert (stats["min_size"], stats["max_size"]) == (1, 3)


# --- the database away -------------------------------------------------------------------------

def test_live_is_ok_and_ready_is_503_when_the_database_is_unreachable(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(dsn=f"host=127.0.0.1 port={closed_port()} user=nobody dbname=nothing")

    live = client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}

    started = time.monotonic()
    ready = client.get("/health/ready")
    elapsed = time.monotonic() - started
    body = assert_problem(ready, 503)
    assert int(ready.headers["retry-after"]) >= 1
    assert body["type"] == "/problems/database-unavailable"
    assert elapsed < 3.0, f"readiness took {elapsed:.1f}s with the database refusing connections"

    # The seed's endpoint says the same instead of a 500.
    root = client.get("/")
    assert_problem(root, 503)
    assert "retry-after" in root.headers


# --- problem+json for client errors -----------------------------------------------------------

def test_unknown_path_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/no/such/path"), 404)


def test_wrong_method_is_a_405_problem(client: TestClient) -> None:
    r = client.post("/pool")
    assert_problem(r, 405)
    assert "GET" in r.headers.get("allow", "")


def test_unknown_query_parameter_is_a_400_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/pool", params={"x": "1"}), 400)
    assert "x" in body["detail"]


def test_every_problem_type_is_in_the_readme_errors_table() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme[readme.index("## Errors"):readme.index("## Configuration")]
    types = {v for k, v in vars(errors).items() if k.isupper() and str(v).startswith("/problems/")}
    assert len(types) >= 12
    assert not [t for t in types if f"`{t}`" not in table]


# --- request ids -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/pool"), ("GET", "/nope"), ("POST", "/pool"), ("GET", "/pool?x=1"),
     ("GET", "/ui/"), ("GET", "/openapi.json"), ("GET", "/health/live")],
)
def test_every_response_carries_a_request_id(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.headers.get("x-request-id"), (r.status_code, dict(r.headers))


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("POST", "/pool", 405), ("GET", "/pool?x=1", 400),
     ("GET", "/tables/a%0Ab", 404)],
)
def test_every_problem_body_repeats_the_request_id(
    client: TestClient, method: str, path: str, status: int
) -> None:
    r = client.request(method, path, headers={"X-Request-ID": "trace-7"})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["request_id"] == "trace-7"
    assert r.headers["x-request-id"] == "trace-7"


def test_request_ids_are_new_per_request(client: TestClient) -> None:
    ids = {client.get("/health/live").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_a_sane_incoming_request_id_is_echoed(client: TestClient) -> None:
    rid = "req-2024.11.25:abc_DEF-123"
    r = client.get("/health/live", headers={"X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid
    r = client.get("/nope", headers={"X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid


@pytest.mark.parametrize(
    "incoming", ["x" * 300, "has spaces in it", "new\\nline", "semi;colon", "<script>"]
)
def test_an_insane_incoming_request_id_is_replaced(client: TestClient, incoming: str) -> None:
    r = client.get("/health/live", headers={"X-Request-ID": incoming})
    rid = r.headers["x-request-id"]
    assert rid != incoming
    assert 1 <= len(rid) <= 128 and " " not in rid


# --- unexpected exceptions ---------------------------------------------------------------------

def test_an_unexpected_exception_is_a_500_problem_tied_to_its_log_line(
    boom_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    r = boom_client.get("/boom")
    body = assert_problem(r, 500)
    rid = r.headers["x-request-id"]
    assert body["request_id"] == rid
    assert "Traceback" not in r.text
    assert SECRET_MESSAGE not in r.text
    assert "RuntimeError" not in r.text

    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert logged, [rec.getMessage() for rec in caplog.records]
    assert logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError


def test_a_500_echoes_the_callers_request_id(boom_client: TestClient) -> None:
    r = boom_client.get("/boom", headers={"X-Request-ID": "trace-42"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "trace-42"
    assert r.json()["request_id"] == "trace-42"


def test_the_connection_goes_back_to_the_pool_when_a_view_raises(
    boom_client: TestClient,
) -> None:
    for _ in range(3):
        assert boom_client.get("/boom-after-query").status_code == 500
    stats = boom_client.get("/pool").json()
    assert stats["in_use"] == 0, stats
    assert stats["requests_total"] == 3  # one checkout per view; /pool takes none
    assert stats["timeouts_total"] == 0


# --- CORS --------------------------------------------------------------------------------------

def _preflight(client: TestClient, origin: str):
    return client.options(
        "/pool", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
    )


@pytest.fixture
def cors_client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(cors={"origins": (ORIGIN,)})


def test_cors_preflight_from_the_allowed_origin_is_granted(cors_client: TestClient) -> None:
    r = _preflight(cors_client, ORIGIN)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in r.headers["access-control-allow-methods"]
    assert r.headers.get("x-request-id")


def test_cors_preflight_from_another_origin_gets_no_grant(cors_client: TestClient) -> None:
    r = _preflight(cors_client, "https://evil.example")
    assert "access-control-allow-origin" not in r.headers
    assert r.status_code >= 400


def test_a_refused_cors_preflight_is_a_problem_with_the_request_id(
    cors_client: TestClient,
) -> None:
    """Was ``400 text/plain "Disallowed CORS origin"`` (Starlette's own answer)."""
    r = cors_client.options("/pool", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE",
        "X-Request-ID": "cors-1"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["content-length"]) == len(r.content)
    body = r.json()
    assert body["type"] == "/problems/cors-rejected" and body["status"] == 400
    assert body["request_id"] == "cors-1" == r.headers["x-request-id"]
    assert body["invalid-params"] == [
        {"name": "Origin", "reason": "origin not allowed"},
        {"name": "Access-Control-Request-Method", "reason": "method not allowed"},
    ]
    assert "access-control-allow-origin" not in r.headers


def test_cors_origins_star_allows_every_origin_without_credentials(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(cors={"origins": ("*",)})
    for origin in (ORIGIN, "https://anyone.example"):
        r = _preflight(client, origin)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers
        r = client.get("/pool", headers={"Origin": origin})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


def test_cors_simple_get_from_the_allowed_origin_exposes_the_request_id(
    cors_client: TestClient,
) -> None:
    r = cors_client.get("/pool", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert "x-request-id" in exposed
    # Error responses carry the grant too, or a browser script could not read them.
    r = cors_client.get("/nope", headers={"Origin": ORIGIN})
    assert r.status_code == 404
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_cors_simple_get_from_another_origin_gets_no_grant(cors_client: TestClient) -> None:
    r = cors_client.get("/pool", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_no_cors_headers_when_cors_is_off(client: TestClient) -> None:
    r = client.get("/pool", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    r = _preflight(client, ORIGIN)
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    assert r.status_code == 405


# --- documentation -----------------------------------------------------------------------------

def test_swagger_ui_is_served(client: TestClient) -> None:
    r = client.get("/ui/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in r.text.lower()


def test_the_spec_is_served_as_json(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert {"/", "/health/live", "/health/ready", "/pool"} <= spec["paths"].keys()


# --- startup failures --------------------------------------------------------------------------

BROKEN_SPECS = {
    "broken_yaml": "openapi: 3.0.3\ninfo: {title: t, version: '1'\npaths: [unclosed\n",
    "invalid_openapi": _spec(
        """\
        /x:
          get:
            operationId: tests.test_app.boom
            responses: not-a-mapping
        """
    ),
    "missing_info": "openapi: 3.0.3\npaths: {}\n",
    "missing_handler": _spec(_operation("/x", "tests.test_app.no_such_handler")),
    "missing_module": _spec(_operation("/x", "tests.no_such_module.handler")),
}


@pytest.mark.parametrize("name", sorted(BROKEN_SPECS))
def test_a_broken_spec_fails_create_app_with_one_clear_line(
    database: TestDatabase, tmp_path: Path, name: str
) -> None:
    spec_dir = write_spec(tmp_path / name, BROKEN_SPECS[name])
    with pytest.raises(StartupError) as info:
        create_app(make_settings(database.dsn), spec_dir=spec_dir)
    message = str(info.value)
    assert message.strip()
    assert "\n" not in message, message
    assert len(message) < 500, message


def test_a_missing_spec_file_fails_create_app(database: TestDatabase, tmp_path: Path) -> None:
    with pytest.raises(StartupError) as info:
        create_app(make_settings(database.dsn), spec_dir=tmp_path)
    assert "swagger.yaml" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_handler_is_named_in_the_startup_error(
    database: TestDatabase, tmp_path: Path
) -> None:
    spec_dir = write_spec(tmp_path, BROKEN_SPECS["missing_handler"])
    with pytest.raises(StartupError, match="no_such_handler"):
        create_app(make_settings(database.dsn), spec_dir=spec_dir)
