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
