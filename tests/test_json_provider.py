"""jsonify renders what psycopg2 fetches exactly as the data API renders the same row.

The data API's JSON is PostgreSQL's (``to_json``); a hand-written endpoint's is Flask's
``app.json`` (swagger_server/web/json_provider.py). Both paths read the same rows from a real server
and every value must come out the same, numbers compared digit for digit.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import flask
import pytest

from swagger_server import db
from swagger_server.app import create_app
from swagger_server.web.json_provider import ExactJSONProvider
from tests.conftest import make_settings
from tests.pg import TestDatabase, seeded_database

# Every kind of value a hand-written endpoint is likely to fetch. The database's time zone has
# an offset in seconds in 1900 (Monrovia, -00:43:08), to show offsets are written as PostgreSQL
# writes them.
SCHEMA = r"""
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'Africa/Monrovia');
END $$;
CREATE TABLE kinds (
    id integer PRIMARY KEY,
    big numeric, money numeric(12, 2), tiny numeric, nan numeric, pinf numeric, ninf numeric,
    f8 double precision, f8_big double precision, f8_small double precision,
    f8_nan double precision, f8_ninf double precision, f4 real,
    ts timestamptz, ts_old timestamptz, ts_local timestamp, d date, t time,
    ttz timetz, ttz_half timetz,
    u uuid, b bytea, txt text, n bigint, flag boolean, nothing text, nums numeric[]
);
INSERT INTO kinds VALUES
 (1, 12345678901234567890.123456789012345678, 729.40, 0.0000001, 'NaN', 'Infinity',
  '-Infinity', 100, 1e15, 1.5e-7, 'NaN', '-Infinity', 1.8,
  '2023-01-01 00:17:50.12+00', '1900-01-01 12:00:00+00', '2023-01-01 00:17:50.5',
  '2023-01-01', '12:34:56.1', '12:34:56+02', '12:34:56.5-05:30',
  'b8f84cb1-aa31-4b06-81e4-2a0e0c00f818', decode(repeat('00ff7e', 40), 'hex'),
  E'Gr\u00fc\u00dfe "quoted"\n\ttab', 9007199254740993, true, NULL, '{1.10,2.00,-0.5}'),
 (2, -0.000000000000000000001, 0.00, 1e-7, 0, -1, 1, 0.1, 123456.789, -0.0, 1e300, 1e-5,
  -3.5, '2023-06-30 23:59:59.999999+02', '1900-06-01 00:00:00+03', '2000-02-29 00:00:00',
  '1999-12-31', '00:00:00', '23:59:59.999999+14', '00:00:00-00:30',
  '00000000-0000-0000-0000-000000000000', '', '', -9223372036854775808, false, NULL, '{}');
"""


@pytest.fixture(scope="module")
def kinds_dsn(database: TestDatabase) -> str:
    return seeded_database(database, "jsonprov", SCHEMA)


@pytest.fixture(scope="module")
def app(kinds_dsn: str) -> Iterator[Any]:
    db.close_pool()
    yield create_app(make_settings(kinds_dsn))
    db.close_pool()


def exact(text: str) -> Any:
    """Parsed JSON whose numbers stay as their text, so 729.40 and 729.4 differ."""
    return json.loads(text, parse_float=lambda s: ("number", s),
                      parse_int=lambda s: ("number", s))


def through_data_api(app: Any, key: int) -> Any:
    response = app.test_client().get(f"/tables/kinds/rows/{key}")
    assert response.status_code == 200, response.text
    return exact(response.text)


def through_jsonify(app: Any, key: int) -> Any:
    """What a hand-written endpoint does: get_db(), a cursor, jsonify."""
    with app.app.test_request_context():
        with db.get_db().cursor() as cur:
            cur.execute("SELECT * FROM kinds WHERE id = %s", (key,))
            row = dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))
        return exact(flask.jsonify(row).get_data(as_text=True))


# A spec whose one operation returns a dict, serialized by Connexion's jsonifier, not Flask.
DICT_SPEC = """
openapi: 3.0.3
info: {title: dict, version: "1"}
paths:
  /kinds/{key}:
    get:
      operationId: tests.test_json_provider.row_as_dict
      parameters:
        - {name: key, in: path, required: true, schema: {type: integer}}
      responses:
        "200":
          description: The row.
          content:
            application/json:
              schema: {type: object}
"""


def row_as_dict(key: int) -> dict[str, Any]:
    """A handler that returns a dict (no jsonify)."""
    with db.get_db().cursor() as cur:
        cur.execute("SELECT * FROM kinds WHERE id = %s", (key,))
        return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))


@pytest.fixture(scope="module")
def dict_app(app: Any, kinds_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec_dir = tmp_path_factory.mktemp("dict-spec")
    (spec_dir / "swagger.yaml").write_text(DICT_SPEC, encoding="utf-8")
    return create_app(make_settings(kinds_dsn), spec_dir=spec_dir)


def through_returned_dict(dict_app: Any, key: int) -> Any:
    response = dict_app.test_client().get(f"/kinds/{key}")
    assert response.status_code == 200, response.text
    return exact(response.text)


def test_the_app_installs_the_exact_provider(app: Any) -> None:
    assert isinstance(app.app.json, ExactJSONProvider)


@pytest.mark.parametrize("key", [1, 2])
def test_jsonify_renders_a_row_as_the_data_api_does(app: Any, key: int) -> None:
    assert through_jsonify(app, key) == through_data_api(app, key)


@pytest.mark.parametrize("key", [1, 2])
def test_a_returned_dict_renders_a_row_as_the_data_api_does(app: Any, dict_app: Any,
                                                            key: int) -> None:
    assert through_returned_dict(dict_app, key) == through_data_api(app, key)


def test_the_values_are_those_the_readme_promises(app: Any) -> None:
    row = through_jsonify(app, 1)
    assert row["big"] == ("number", "12345678901234567890.123456789012345678")
    assert row["money"] == ("number", "729.40")  # the scale is kept, as PostgreSQL prints it
    assert row["tiny"] == ("number", "0.0000001")  # not Python's 1E-7
    assert (row["nan"], row["pinf"], row["ninf"]) == ("NaN", "Infinity", "-Infinity")
    assert (row["f8_nan"], row["f8_ninf"]) == ("NaN", "-Infinity")  # never a bare NaN token
    assert row["ts"] == "2023-01-01T00:17:50.12+00:00"
    assert row["ts_old"] == "1900-01-01T11:16:52-00:43:08"
    assert row["ts_local"] == "2023-01-01T00:17:50.5"  # no made-up Z on a local timestamp
    assert (row["ttz"], row["ttz_half"]) == ("12:34:56+02", "12:34:56.5-05:30")
    assert "\n" not in row["b"] and len(row["b"]) > 76  # base64, one line past MIME's 76
    assert row["nums"] == [("number", "1.10"), ("number", "2.00"), ("number", "-0.5")]


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("1E-7"), "0.0000001"),
    (Decimal("1E+3"), "1000"),
    (Decimal("-0.50"), "-0.50"),
    (Decimal("sNaN"), '"NaN"'),
    (Decimal("-Infinity"), '"-Infinity"'),
    (100.0, "100"),
    (1e15, "1e+15"),
    (123456789012345.6, "123456789012345.6"),
    (1e-5, "1e-05"),
    (-2.5e-300, "-2.5e-300"),
    (-0.0, "-0"),
    (float("inf"), '"Infinity"'),
    (float("nan"), '"NaN"'),
    (datetime.datetime(2023, 1, 1, 0, 0, 0, 10), '"2023-01-01T00:00:00.00001"'),
    (datetime.time(1, 2, 3, tzinfo=datetime.timezone(-datetime.timedelta(hours=3))),
     '"01:02:03-03"'),
    (datetime.date(2023, 1, 1), '"2023-01-01"'),
    (uuid.UUID(int=1), '"00000000-0000-0000-0000-000000000001"'),
    (memoryview(b"\xff" * 60), '"' + "/" * 80 + '"'),
    (bytearray(b"a"), '"YQ=="'),
])
def test_single_values(value: Any, text: str) -> None:
    provider = ExactJSONProvider(flask.Flask(__name__))
    assert provider.dumps(value) == text


def test_flask_options_still_apply() -> None:
    """Sorted keys, indent in debug output, ensure_ascii: the provider only changes values."""
    app = flask.Flask(__name__)
    app.json = ExactJSONProvider(app)
    value = {"b": Decimal("1.10"), "a": ["\u00fc", None, True]}
    assert app.json.dumps(value) == '{"a": ["\\u00fc", null, true], "b": 1.10}'
    assert app.json.dumps(value, indent=2).splitlines()[-2] == '  "b": 1.10'
    app.json.ensure_ascii = False
    assert app.json.dumps(value, separators=(",", ":")) == '{"a":["\u00fc",null,true],"b":1.10}'
    with pytest.raises(TypeError):
        app.json.dumps(object())
