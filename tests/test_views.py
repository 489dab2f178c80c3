"""Connexion's decorators around each handler are put together once (swagger_server.web.views):
pins that Connexion 3.3's ``FlaskOperation`` views are all replaced, and that no request
inspects a handler's signature again."""

from __future__ import annotations

from typing import Any

import pytest
from connexion.apps.flask import FlaskOperation
from connexion.decorators import parameter
from starlette.testclient import TestClient

from swagger_server.app import SPEC_DIR, SPEC_FILE, create_app
from swagger_server.ops.metrics import spec_routes
from swagger_server.web import views
from tests.conftest import make_settings
from tests.pg import TestDatabase


def test_every_operation_view_is_replaced(database: TestDatabase) -> None:
    app = create_app(make_settings(database.dsn))
    views = app.app.view_functions
    assert not [e for e, v in views.items() if isinstance(v, FlaskOperation)]
    routes, _ = spec_routes(SPEC_DIR / SPEC_FILE)
    handlers = {getattr(v, "__module__", "") + "." + getattr(v, "__name__", "")
                for v in views.values()}
    assert set(routes) <= handlers  # each operationId's handler is a view, wrapped by us


def test_requests_do_not_decorate_their_handler_again(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    inspected: list[Any] = []
    real = parameter.inspect_function_arguments
    monkeypatch.setattr(parameter, "inspect_function_arguments",
                        lambda f: inspected.append(f) or real(f))
    assert client.get("/").status_code == 200
    r = client.get("/tables/nosuchtable/rows", params={"limit": 2, "select": "a"})
    assert r.status_code == 404, r.text
    assert inspected == []


# A small API of its own: an operation with a request body, one whose handler takes only its
# path parameter, one without a body that takes **kwargs.
SPEC = {
    "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
    "paths": {
        "/echo/{n}": {"post": {
            "operationId": "tests.test_views.echo",
            "parameters": [{"name": "n", "in": "path", "required": True,
                            "schema": {"type": "integer"}},
                           {"name": "q", "in": "query", "schema": {"type": "string",
                                                                  "default": "d"}}],
            "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "ok"}}}},
        "/path-only/{n}": {"get": {
            "operationId": "tests.test_views.path_only",
            "parameters": [{"name": "n", "in": "path", "required": True,
                            "schema": {"type": "integer"}},
                           {"name": "q", "in": "query", "schema": {"type": "integer",
                                                                  "default": 5}}],
            "responses": {"200": {"description": "ok"}}}},
        "/kw": {"get": {
            "operationId": "tests.test_views.keywords",
            "parameters": [{"name": "a-b", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "ok"}}}},
    },
}


def echo(n: int, body: dict[str, Any], q: str) -> dict[str, Any]:
    return {"n": n, "body": body, "q": q}


def path_only(n: int) -> dict[str, Any]:
    import flask

    return {"n": n, "args": flask.request.args.to_dict()}


def keywords(**kwargs: Any) -> dict[str, Any]:
    return {k: v if isinstance(v, int | str) else repr(v) for k, v in kwargs.items()}


@pytest.fixture(scope="module")
def small_api() -> TestClient:
    import connexion

    app = connexion.FlaskApp(__name__)
    app.add_api(SPEC)
    app.middleware.app, app.middleware.middleware_stack = app.middleware._build_middleware_stack()
    assert views.decorate_once(app.app) == 3
    return app.test_client()


def test_a_defined_body_path_and_query_arguments_still_reach_the_handler(
        small_api: TestClient) -> None:
    r = small_api.post("/echo/7?q=x", json={"a": [1]})
    assert r.json() == {"n": 7, "body": {"a": [1]}, "q": "x"}
    assert small_api.post("/echo/8", json={}).json() == {"n": 8, "body": {}, "q": "d"}


def test_a_handler_taking_kwargs_gets_the_sanitized_parameters_and_no_body(
        small_api: TestClient) -> None:
    assert small_api.get("/kw", params={"a-b": 3}).json() == {"ab": 3}
    r = small_api.request("GET", "/kw", content=b'{"x": 1}',
                          headers={"Content-Type": "application/json"})
    assert r.json() == {}  # no requestBody in the spec: no body argument, as with Connexion


def test_a_handler_taking_no_query_parameter_gets_its_path_and_no_parsed_query(
        small_api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from connexion import uri_parsing

    parsed: list[Any] = []
    real = uri_parsing.OpenAPIURIParser.resolve_query
    monkeypatch.setattr(uri_parsing.OpenAPIURIParser, "resolve_query",
                        lambda self, *a: parsed.append(a) or real(self, *a))
    r = small_api.get("/path-only/4", params={"q": 9})
    assert r.json() == {"n": 4, "args": {"q": "9"}}  # the query is still the request's
    # Validation parses it once (before the view); prep_kwargs no more (it did: twice).
    assert len(parsed) == 1
    assert small_api.get("/path-only/4", params={"q": "x"}).status_code == 400  # validated
    parsed.clear()
    assert small_api.post("/echo/7?q=x", json={}).json()["q"] == "x"
    assert len(parsed) == 2  # a handler taking a query parameter: parsed for it, as before
