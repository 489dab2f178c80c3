"""The spec the service serves: its ``servers`` name where the API is (Swagger UI offers it as the
server to call), never Connexion's empty string."""

from __future__ import annotations

from collections.abc import Callable

import yaml
from starlette.testclient import TestClient

from swagger_server.app import SPEC_DIR, SPEC_FILE


def test_openapi_json_names_the_root_as_its_server(make_client: Callable[..., TestClient]) -> None:
    response = make_client().get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["servers"] == [{"url": "/"}]  # was [{"url": ""}]: an empty choice in Swagger UI
    written = yaml.safe_load((SPEC_DIR / SPEC_FILE).read_text(encoding="utf-8"))
    assert spec["paths"].keys() == written["paths"].keys()  # the rest is the spec as written


def test_openapi_yaml_names_the_root_as_its_server(make_client: Callable[..., TestClient]) -> None:
    response = make_client().get("/openapi.yaml")
    assert response.status_code == 200
    assert yaml.safe_load(response.text)["servers"] == [{"url": "/"}]


def test_behind_a_prefix_the_server_is_the_prefix(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    behind_proxy = TestClient(client.app, root_path="/api")
    assert behind_proxy.get("/openapi.json").json()["servers"] == [{"url": "/api"}]
    assert client.get("/openapi.json").json()["servers"] == [{"url": "/"}]  # per request


def test_swagger_ui_reads_the_served_spec(make_client: Callable[..., TestClient]) -> None:
    response = make_client().get("/ui/")
    assert response.status_code == 200
    assert 'url: "/openapi.json"' in response.text
