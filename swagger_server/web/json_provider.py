"""JSON for hand-written endpoints, rendering values the way the data API does.

The data API lets PostgreSQL build its JSON (``to_json``); a hand-written endpoint fetches
Python values through psycopg2 and returns them as a dict (serialized by Connexion's
``jsonifier``) or with ``jsonify`` (Flask's ``app.json``): both use :class:`ExactEncoder`.
Connexion's defaults would turn ``Decimal`` into a float (rounding ``numeric``, dropping
``729.40``'s last zero) and dates into ISO strings with a made-up ``Z``. Here:

- ``Decimal``: a JSON number with every digit, as PostgreSQL prints ``numeric``; NaN and
  infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
- ``float``: the shortest exact digits in PostgreSQL's ``float8`` notation (``100``, ``1e+15``,
  ``1.5e-07``); NaN and infinities as strings. A ``real`` column's value is the same number, but
  PostgreSQL switches to exponent notation sooner for it (``1.234567e+06``);
- ``datetime``, ``date``, ``time``: ISO 8601 as ``to_json`` writes them
  (``2023-01-01T00:17:50+00:00``, ``2023-01-01T00:17:50.12``, ``12:34:56+02``);
- ``UUID``: its string; ``bytes``/``memoryview`` (``bytea``): base64 without line breaks.

Everything else is Flask's default (dataclasses, ``__html__``; other types are a TypeError).
"""

from __future__ import annotations

import base64
import datetime
import json
import json.encoder
import math
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from connexion.jsonifier import Jsonifier
from flask.json.provider import DefaultJSONProvider

# float8's switch to exponent notation: PostgreSQL prints %g-style with DBL_DIG (15) digits.
_FLOAT8_MAX_PLAIN_EXPONENT = 15
_MIN_PLAIN_EXPONENT = -4
_HOUR = datetime.timedelta(hours=1)


def number_text(value: float | Decimal) -> str:
    """The JSON text of a float or Decimal, as PostgreSQL's ``to_json`` renders it."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return '"NaN"' if value.is_nan() else ('"-Infinity"' if value < 0 else '"Infinity"')
        return format(value, "f")  # never "1E-7": PostgreSQL prints numeric positionally
    if math.isnan(value):
        return '"NaN"'
    if math.isinf(value):
        return '"-Infinity"' if value < 0 else '"Infinity"'
    return _float8_text(value)


def _float8_text(value: float) -> str:
    # repr() gives the shortest digits that read back as the same double (so does PostgreSQL);
    # only the notation differs: Python writes 100.0 and 1000000000000000.0.
    shortest = Decimal(repr(value)).normalize()
    sign, digits, _ = shortest.as_tuple()
    exponent = shortest.adjusted()
    if _MIN_PLAIN_EXPONENT <= exponent < _FLOAT8_MAX_PLAIN_EXPONENT:
        text = format(shortest, "f")
        return "-0" if value == 0 and sign else text
    mantissa = "".join(map(str, digits))
    if len(mantissa) > 1:
        mantissa = f"{mantissa[0]}.{mantissa[1:]}"
    return f"{'-' if sign else ''}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def time_text(value: datetime.datetime | datetime.time) -> str:
    """ISO 8601 as PostgreSQL's ``to_json``: fraction without trailing zeros."""
    text = value.isoformat()
    if value.microsecond:
        # isoformat always writes six digits; PostgreSQL drops trailing zeros (.12, not .120000).
        head, _, rest = text.partition(".")
        fraction, offset = rest[:6], rest[6:]
        text = f"{head}.{fraction.rstrip('0')}{offset}"
    offset = value.utcoffset()
    if isinstance(value, datetime.time) and offset is not None and not offset % _HOUR:
        # time with time zone: PostgreSQL writes +02 for a whole hour (+02:00 for a timestamp).
        text = text[:-3]
    return text


def default(value: Any) -> Any:
    """What the json module cannot encode itself (Decimal never gets here: see the encoder)."""
    if isinstance(value, (datetime.datetime, datetime.time)):
        return time_text(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    return DefaultJSONProvider.default(value)


class ExactEncoder(json.JSONEncoder):
    """json.JSONEncoder that writes Decimal as a number and non-finite numbers as strings.

    The json module has no hook for writing a number's text, so this passes Decimal to its
    pure-Python encoder as a kind of float, with our own float formatter. The C encoder (used
    for plain ``json.dumps``) cannot do that; endpoint responses are small enough for either.
    """

    def default(self, o: Any) -> Any:
        return default(o)

    def iterencode(self, o: Any, _one_shot: bool = False) -> Iterator[str]:
        encode_string = (json.encoder.encode_basestring_ascii if self.ensure_ascii
                         else json.encoder.encode_basestring)
        encode = json.encoder._make_iterencode(
            {} if self.check_circular else None, self.default, encode_string, self.indent,
            number_text, self.key_separator, self.item_separator, self.sort_keys,
            self.skipkeys, _one_shot, float=(float, Decimal),
        )
        return encode(o, 0)


class ExactJSONProvider(DefaultJSONProvider):
    """``app.json`` for ``jsonify`` and returned dicts: see the module docstring."""

    default = staticmethod(default)  # type: ignore[assignment]

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("cls", ExactEncoder)
        return super().dumps(obj, **kwargs)


def jsonifier() -> Jsonifier:
    """Connexion's serializer for what a handler returns (a dict, a list): the same rendering."""
    return Jsonifier(json, cls=ExactEncoder)
