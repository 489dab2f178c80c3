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
