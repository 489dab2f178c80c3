"""Request parameters as the spec declares them: a repeated ``filter`` is one filter per
repetition, commas included, with its limits enforced once (by the service); every 400 is one
clean sentence with RFC 9457 ``invalid-params``, Connexion's spec checks as well as ours."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from swagger_server.app import SPEC_DIR, SPEC_FILE
from swagger_server.data import query
from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

SCHEMA = """
CREATE TABLE notes (id integer PRIMARY KEY, body text, meta json);
INSERT INTO notes SELECT i, 'note ' || i, '{}' FROM generate_series(1, 100) AS i;
UPDATE notes SET body = 'one, two, three' WHERE id = 7;
"""


@pytest.fixture(scope="module")
def dsn(database: TestDatabase) -> str:
    return seeded_database(database, "params", SCHEMA)


@pytest.fixture(scope="module")
def client(dsn: str) -> Iterator[TestClient]:
    with app_client(dsn, api={"max_rows": 100}) as client:
        yield client


def ids(r: Any) -> list[int]:
    assert r.status_code == 200, r.text
    return [row["id"] for row in r.json()["data"]]


# ------------------------------------------------------------------ filter: one per repetition


def test_commas_inside_filters_do_not_count_as_filters(client: TestClient) -> None:
    """Connexion split each filter on commas before checking ``maxItems: 50``: an ``in`` list
    of 51 values, or two filters with 30 commas each, was a 400."""
    in_list = "id.in.(" + ",".join(str(i) for i in range(1, 61)) + ")"
    r = client.get("/tables/notes/rows", params={"filter": in_list, "limit": 100})
    assert ids(r) == list(range(1, 61))
    r = client.get("/tables/notes/rows", params={
        "filter": [in_list, "id.in.(" + ",".join(str(i) for i in range(5, 40)) + ")"],
        "limit": 100})
    assert ids(r) == list(range(5, 40))
    r = client.get("/tables/notes/rows", params={"filter": "body.eq.one, two, three"})
    assert ids(r) == [7]


def test_the_filter_limit_is_enforced_once_by_the_service(client: TestClient) -> None:
    at_most = [f"id.gte.{i}" for i in range(query.MAX_FILTERS)]
    r = client.get("/tables/notes/rows", params={"filter": at_most, "limit": 2})
    assert ids(r) == [query.MAX_FILTERS - 1, query.MAX_FILTERS]
    r = client.get("/tables/notes/rows", params={"filter": [*at_most, "id.gte.0"]})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "/problems/invalid-parameter"
    assert body["detail"] == f"filter: at most {query.MAX_FILTERS} filters"
    assert body["invalid-params"] == [
        {"name": "filter", "reason": f"at most {query.MAX_FILTERS} filters"}]


def test_the_spec_documents_the_limits_the_code_enforces_and_declares_none_itself() -> None:
    spec = yaml.safe_load((SPEC_DIR / SPEC_FILE).read_text())
    rows = spec["paths"]["/tables/{table}/rows"]["get"]["parameters"]
    (flt,) = [p for p in rows if p.get("name") == "filter"]
    assert (flt["style"], flt["explode"], flt["schema"]["type"]) == ("form", True, "array")
    assert "maxItems" not in flt["schema"] and "maxLength" not in flt["schema"]["items"]
    text = " ".join(flt["description"].split())
    for limit in (f"at most {query.MAX_FILTERS} filters",
                  f"at most {query.MAX_IN_VALUES} values in an `in` list",
                  f"at most {query.MAX_VALUE_CHARS} characters per filter"):
        assert limit in text


# ------------------------------------------------------------------ clean 400s, invalid-params


@pytest.mark.parametrize(("params", "detail", "name"), [
    ({"limit": "0"}, "limit: must be at least 1, got 0", "limit"),
    ({"limit": "x"}, "limit: must be of type integer, got 'x'", "limit"),
    ({"offset": "-1"}, "offset: must be at least 0, got -1", "offset"),
    ({"count": "all"}, "count: must be one of exact, estimated, got 'all'", "count"),
    ({"nosuch": "1"}, "nosuch: unknown query parameter", "nosuch"),
    ({"cursor": "x" * 20_000},
     "cursor: must be at most 16384 characters long, got '" + "x" * 39 + "...",
     "cursor"),
])
def test_spec_violations_are_one_sentence_with_invalid_params(
    client: TestClient, params: dict[str, str], detail: str, name: str
) -> None:
    """Was jsonschema's report: ``0 is less than the minimum of 1\\n\\nFailed validating
    'minimum' in schema: ...``, and no ``invalid-params``."""
    r = client.get("/tables/notes/rows", params=params)
    assert r.status_code == 400
    body = r.json()
    assert body["detail"] == detail
    assert "\n" not in r.text and "Failed validating" not in r.text
    assert body["type"] == "/problems/invalid-parameter" and body["parameter"] == name
    assert body["invalid-params"] == [{"name": name, "reason": detail[len(name) + 2:]}]


def test_several_unknown_parameters_are_all_listed(client: TestClient) -> None:
    r = client.get("/pool", params={"a": "1", "b": "2"})
    assert r.status_code == 400
    assert [p["name"] for p in r.json()["invalid-params"]] == ["a", "b"]


@pytest.mark.parametrize(("path", "params", "name"), [
    ("/tables/notes/rows", {"filter": "id.eq.abc"}, "filter"),  # invalid-value
    ("/tables/notes/rows", {"filter": "nosuch.eq.1"}, "filter"),  # invalid-parameter
    ("/tables/notes/rows", {"filter": "meta.lt.{}"}, "filter"),  # unsupported-operation
    ("/tables/notes/rows", {"order": "meta"}, "order"),  # unsupported-operation
    ("/tables/notes/rows", {"order": "nosuch"}, "order"),
    ("/tables/notes/rows", {"select": "nosuch"}, "select"),
    ("/tables/notes/rows", {"cursor": "garbled"}, "cursor"),  # invalid-cursor
    ("/tables/notes/rows", {"limit": "1000"}, "limit"),
    ("/tables/notes/rows", {"limit": "1", "offset": "1", "cursor": "x"}, "cursor"),
    ("/tables/notes/rows/abc", {}, "key"),
    ("/tables/notes/rows/1,2", {}, "key"),
    ("/pool", {"x": "1"}, "x"),
])
def test_every_400_names_its_parameter_in_invalid_params(
    client: TestClient, path: str, params: dict[str, str], name: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["invalid-params"][0]["name"] == name, body
    assert body["invalid-params"][0]["reason"]
    assert body["request_id"]

