"""Parameter checks worked out once per operation (compiled validators reused across requests)
still check each operation's parameters against that operation's own schemas."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server.web import validation
from swagger_server.web.validation import (
    InvalidParameter,
    ParameterValidator,
    RepeatedParameterParser,
)


def _query(name: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "integer", **schema}}


def _check(parameters: list[dict[str, Any]], query: str) -> str | None:
    """The reason of the 400, or None when the query passes."""
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(),
             "headers": [], "path_params": {}}
    validator = ParameterValidator(parameters, RepeatedParameterParser(parameters, {}),
                                   strict_validation=True)
    try:
        validator.validate(scope)
    except InvalidParameter as exc:
        return str(exc.detail)
    return None


def test_same_parameter_name_with_other_schemas_on_two_operations_in_turn() -> None:
    at_least_ten = [_query("n", minimum=10)]
    at_most_five = [_query("n", maximum=5)]
    for _ in range(3):  # each plan made once, then reused: each keeps its own schema
        assert _check(at_least_ten, "n=3") == "n: must be at least 10, got 3"
        assert _check(at_most_five, "n=3") is None
        assert _check(at_least_ten, "n=12") is None
        assert _check(at_most_five, "n=12") == "n: must be at most 5, got 12"


def test_a_parameter_list_extended_after_its_plan_was_made_is_checked_in_full() -> None:
    parameters = [_query("n")]
    assert _check(parameters, "") is None
    parameters.append({**_query("m"), "required": True})
    assert _check(parameters, "") == "m: required query parameter is missing"
    assert _check(parameters, "m=1&k=2") == "k: unknown query parameter"


def test_a_plan_left_under_a_reused_id_is_not_taken_for_another_list() -> None:
    """A plan is found by its list's id(); a list that has the id of another (a freed one's,
    in a process that builds many apps) gets its own plan, not the other's."""
    strict, lenient = [_query("n", minimum=10)], [_query("n")]
    validation._PLANS[id(lenient)] = validation._Plan(strict)
    try:
        assert _check(lenient, "n=3") is None
        assert _check(strict, "n=3") == "n: must be at least 10, got 3"
    finally:
        validation._PLANS.pop(id(lenient), None)


def test_the_plan_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "_MAX_PLANS", 4)
    lists = [[_query(f"p{i}")] for i in range(10)]  # kept alive: distinct ids
    for parameters in lists:
        assert _check(parameters, "") is None
        assert len(validation._PLANS) <= 4


def test_interleaved_requests_on_the_spec_each_get_their_own_checks(client: TestClient) -> None:
    """``offset=0`` passes (minimum 0) where ``limit=0`` fails (minimum 1), request after
    request; the summary's path ``id`` keeps its pattern in between."""
    for _ in range(3):
        r = client.get("/tables/nosuchtable/rows", params={"limit": 0})
        assert r.status_code == 400
        assert r.json()["invalid-params"] == [
            {"name": "limit", "reason": "must be at least 1, got 0"}]
        r = client.get("/tables/nosuchtable/rows", params={"offset": 0})
        assert r.status_code == 404, r.text  # past the checks: the table does not exist
        r = client.get("/customers/x1/summary")
        assert r.status_code == 400
        assert r.json()["parameter"] == "id"
        r = client.get("/tables/nosuchtable/rows", params={"offset": -1})
        assert r.json()["invalid-params"] == [
            {"name": "offset", "reason": "must be at least 0, got -1"}]


# --------------------------------------------- the validation middleware: lean without a body

SPEC = {
    "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
    "paths": {
        "/things": {
            "post": {
                "operationId": "tests.test_validation_cache.post_thing",
                "parameters": [_query("n", minimum=1)],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["a"],
                    "properties": {"a": {"type": "integer"}}}}}},
                "responses": {"200": {"description": "ok"}}},
            "get": {
                "operationId": "tests.test_validation_cache.get_things",
                "parameters": [_query("n", maximum=5)],
                "responses": {"200": {"description": "ok"}}},
        },
    },
}


def post_thing(body: dict[str, Any], n: int | None = None) -> dict[str, Any]:
    return {"a": body["a"], "n": n}


def get_things(n: int | None = None) -> dict[str, Any]:
    return {"n": n}


@pytest.fixture(scope="module")
def small_api() -> TestClient:
    import connexion
    from connexion.middleware.main import ConnexionMiddleware

    app = connexion.FlaskApp(__name__, middlewares=validation.middlewares(
        ConnexionMiddleware.default_middlewares))
    app.add_api(SPEC, strict_validation=True, uri_parser_class=RepeatedParameterParser,
                validator_map={"parameter": ParameterValidator})
    return app.test_client()


def test_an_operation_with_a_body_still_has_it_checked(small_api: TestClient) -> None:
    assert small_api.post("/things?n=2", json={"a": 1}).json() == {"a": 1, "n": 2}
    assert small_api.post("/things", json={"a": "x"}).status_code == 400
    assert small_api.post("/things", content=b"a=1", headers={
        "Content-Type": "text/plain"}).status_code == 415
    assert small_api.post("/things?n=0", json={"a": 1}).json()["parameter"] == "n"


def test_an_operation_without_a_body_checks_its_own_parameters(small_api: TestClient) -> None:
    for _ in range(2):
        assert small_api.get("/things?n=5").json() == {"n": 5}
        assert small_api.get("/things?n=6").json()["detail"] == "n: must be at most 5, got 6"
        assert small_api.post("/things?n=6", json={"a": 1}).json() == {"a": 1, "n": 6}
        assert small_api.get("/things?m=1").json()["detail"] == "m: unknown query parameter"


def test_the_app_validates_through_our_middleware(client: TestClient) -> None:
    stack = []
    app: Any = client.app
    for middleware in app.middleware.middlewares:
        stack.append(middleware)
    assert validation.RequestValidation in stack
