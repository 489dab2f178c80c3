"""The page statement's skeleton (query.page_sql): limit + 1 rows numbered once, the JSON of the
first ``limit``, the key of the last one. Real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import app_client
from tests.pg import TestDatabase, seeded_database

# The row number sits beside the page's columns under a name none of them has: "n", "n_" ...
SCHEMA = """
CREATE TABLE numbered (n integer PRIMARY KEY, n_ text, "N" integer);
INSERT INTO numbered SELECT i, 'v' || i, -i FROM generate_series(1, 25) AS i;
CREATE TABLE plain (id integer PRIMARY KEY);
"""


@pytest.fixture(scope="module")
def client(database: TestDatabase) -> Iterator[TestClient]:
    with app_client(seeded_database(database, "pagesql", SCHEMA)) as client:
        yield client


def pages(client: TestClient, table: str, **params: Any) -> list[dict[str, Any]]:
    bodies = []
    query = dict(params)
    while True:
        r = client.get(f"/tables/{table}/rows", params=query)
        assert r.status_code == 200, r.text
        bodies.append(r.json())
        if r.json()["next_cursor"] is None:
            assert "link" not in r.headers
            return bodies
        query["cursor"] = r.json()["next_cursor"]


def test_columns_named_like_the_row_number_page_and_keep_their_values(
        client: TestClient) -> None:
    bodies = pages(client, "numbered", limit=10, order="n_.desc")
    assert [len(b["data"]) for b in bodies] == [10, 10, 5]
    rows = [row for b in bodies for row in b["data"]]
    assert rows[0] == {"n": 9, "n_": "v9", "N": -9}
    assert sorted(r["n"] for r in rows) == list(range(1, 26))
    assert [r["n_"] for r in rows] == sorted((r["n_"] for r in rows), reverse=True)


def test_a_page_of_exactly_the_rows_left_has_no_next_page(client: TestClient) -> None:
    bodies = pages(client, "numbered", limit=5, select="n")
    assert [len(b["data"]) for b in bodies] == [5] * 5  # 25 rows: the 5th page is the last
    assert [r["n"] for b in bodies for r in b["data"]] == list(range(1, 26))


def test_an_empty_relation_is_an_empty_page(client: TestClient) -> None:
    r = client.get("/tables/plain/rows")
    assert r.status_code == 200
    assert r.json() == {"data": [], "next_cursor": None}


ACCENTED = """
CREATE TABLE words (id integer PRIMARY KEY, w text);
INSERT INTO words VALUES (1, 'café'), (2, 'Søren'), (3, '日本');
"""


@pytest.mark.parametrize("encoding", ["UTF8", "LATIN1"])
def test_a_page_is_utf8_json_whatever_the_connections_client_encoding(
        database: TestDatabase, encoding: str) -> None:
    """The page's JSON goes into the body as the connection's bytes only when they are UTF-8."""
    dsn = seeded_database(database, f"words{encoding.lower()}", ACCENTED.replace(
        "'日本'", "'日本'" if encoding == "UTF8" else "'Ærø'"))
    with app_client(f"{dsn} options='-c client_encoding={encoding}'") as client:
        r = client.get("/tables/words/rows")
        assert r.status_code == 200, r.text
        words = [row["w"] for row in r.json()["data"]]
    assert words == ["café", "Søren", "日本" if encoding == "UTF8" else "Ærø"]
