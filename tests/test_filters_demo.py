"""README "Filters": its examples answer on the demo shop as shown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from swagger_server.config import PROJECT_ROOT
from swagger_server.db import demo
from tests.conftest import app_client
from tests.pg import TestDatabase, create_database


@pytest.fixture(scope="module")
def client(database: TestDatabase) -> Iterator[TestClient]:
    dsn = create_database(database, "filters_demo")
    assert demo.seed(dsn) is True
    with app_client(dsn) as client:
        yield client


def get(client: TestClient, query: str, table: str = "customers") -> dict[str, Any]:
    """The README's query string, sent as typed (``+`` is a space)."""
    r = client.get(f"/tables/{table}/rows?{query}")
    return {"status": r.status_code, **r.json()}


def test_array_containment_and_a_json_path(client: TestClient) -> None:
    body = get(client, "select=id,name,tags,preferences&filter=tags.cs.{newsletter,vip}"
                       "&filter=preferences->>language.eq.de&limit=2")
    assert [(r["id"], r["name"]) for r in body["data"]] == [(5, "Tim Hopper"),
                                                            (35, "Katherine Hamilton")]
    assert all(r["tags"] == ["newsletter", "vip"] and r["preferences"]["language"] == "de"
               for r in body["data"])


def test_json_values_after_an_arrow(client: TestClient) -> None:
    body = get(client, "select=id,name,preferences&filter=preferences->newsletter.eq.true"
                       "&filter=preferences->theme.eq.null&limit=2&count=exact")
    assert [r["id"] for r in body["data"]] == [7, 9] and body["total"] == 1152
    assert body["data"][0]["preferences"] == {"theme": None, "language": "es",
                                              "newsletter": True}


def test_not_and_isdistinct(client: TestClient) -> None:
    body = get(client, "select=id,city,birth_date&filter=city.not.is.null"
                       "&filter=birth_date.isdistinct.1980-01-01&filter=name.not.like.A*&limit=2")
    assert body["data"] == [{"id": 1, "city": "Sevilla", "birth_date": "1954-03-09"},
                            {"id": 3, "city": "Sevilla", "birth_date": "1970-10-07"}]


def test_groups(client: TestClient) -> None:
    body = get(client, "select=id,name,loyalty_points,tags&or=(loyalty_points.gt.4995,"
                       "and(tags.cs.{wholesale},city.is.null))&limit=3&count=exact")
    assert [(r["id"], r["loyalty_points"]) for r in body["data"]] == [(57, 1376), (89, 1188),
                                                                      (250, 4444)]
    assert body["total"] == 138
    body = get(client, "select=id,name&not.or=(tags.ov.{vip,wholesale},"
                       "preferences->>theme.eq.dark)&limit=2&count=exact")
    assert body["data"] == [{"id": 1, "name": "Ken García"}, {"id": 4, "name": "Dennis Johnson"}]
    assert body["total"] == 1620


def test_order_by_a_json_path_with_its_cursor(client: TestClient) -> None:
    query = "select=id,name,preferences&order=preferences->>language.desc,loyalty_points.desc"
    body = get(client, f"{query}&limit=2")
    assert [r["id"] for r in body["data"]] == [339, 1263]
    nxt = get(client, f"{query}&limit=2&cursor={body['next_cursor']}")
    assert nxt["data"][0]["preferences"]["language"] == "ja"
    assert {r["id"] for r in nxt["data"]}.isdisjoint({339, 1263})


def test_open_orders_with_a_group(client: TestClient) -> None:
    r = client.get("/tables/orders/rows?select=id,status,total,coupon_code"
                   "&filter=status.not.in.(delivered,cancelled)"
                   "&or=(total.gt.1500,coupon_code.eq.SAVE20)")
    rows = r.json()["data"]
    assert rows and all(row["status"] not in ("delivered", "cancelled") and (
        row["total"] > 1500 or row["coupon_code"] == "SAVE20") for row in rows)


def test_text_search_and_its_errors(client: TestClient) -> None:
    body = get(client, "select=id,city&filter=city.wfts(simple).sevilla+or+lyon&limit=2"
                       "&count=exact")
    assert body["data"] == [{"id": 1, "city": "Sevilla"}, {"id": 3, "city": "Sevilla"}]
    assert body["total"] == 1846
    body = get(client, "filter=city.wfts(klingon).paris")
    assert (body["status"], body["parameter"], body["column"]) == (400, "filter", "city")
    assert body["detail"] == ("filter: 'klingon' is not a valid regconfig for column 'city': "
                              'text search configuration "klingon" does not exist')
    body = get(client, "or=(id.eq.1,and(id.gt.2,id.lt.1)")
    assert (body["status"], body["detail"]) == (400, "or: unbalanced parentheses")


def test_full_text_search_on_a_text_column_and_a_tsvector(client: TestClient) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    text = "select=id,name,description&filter=description.wfts(english).travel+-shoes&limit=2" \
           "&count=exact"
    assert f"/tables/products/rows?{text}\"" in readme
    body = get(client, text, "products")
    assert [(r["id"], r["name"]) for r in body["data"]] == [(3, "Compact Fountain Pen"),
                                                            (32, "Classic Headphones")]
    assert body["data"][1]["description"] == ("A classic headphones for travel. Light enough to "
                                              "carry anywhere.")
    assert body["total"] == 112
    tsvector = "select=id,name&filter=search.fts.tent&limit=3&count=exact"
    assert f"/tables/products/rows?{tsvector}\"" in readme
    body = get(client, tsvector, "products")
    assert body["data"] == [{"id": 14, "name": "Wireless Tent"}, {"id": 25, "name": "Deluxe Tent"},
                            {"id": 27, "name": "Vintage Tent"}]
    assert body["total"] == 74
    both = "select=id,name&filter=search.fts(english).sturdy%26tent&limit=3&count=exact"
    assert f"/tables/products/rows?{both}\"" in readme
    body = get(client, both, "products")
    assert [r["id"] for r in body["data"]] == [121, 159, 357] and body["total"] == 9
    assert {r["name"] for r in body["data"]} == {"Sturdy Tent"}
