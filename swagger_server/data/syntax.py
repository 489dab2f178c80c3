"""The small grammar shared by the data API's parameters: the 400 they raise, text checks and
comma lists with double-quoted items, and naming a column from the catalog.

Kept apart from :mod:`swagger_server.data.query` (statements) and
:mod:`swagger_server.data.filters` (the filter grammar) so that both can use it.
"""

from __future__ import annotations

import re

from swagger_server.data.catalog import Column, Relation

MAX_VALUE_CHARS = 65536

_CONTROL = re.compile(r"[\x00]")


class QueryError(ValueError):
    """A request parameter that cannot be honoured; ``param`` names it, the message says why."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def check_text(param: str, value: str) -> str:
    if _CONTROL.search(value):
        raise QueryError(param, f"{param}: NUL characters are not allowed")
    if len(value) > MAX_VALUE_CHARS:
        raise QueryError(param, f"{param}: longer than {MAX_VALUE_CHARS} characters")
    return value


_WHOLE = re.compile(r"-?[0-9]{1,18}")  # ASCII digits only (int() takes "1_0", "٣", " 1 ")


def parse_whole(param: str, raw: str) -> int:
    """A parameter's integer: optional ``-`` and ASCII digits, nothing else (a 400 otherwise).

    Longer than 18 digits: +-10**18, past every caller's bound (which then names it), without
    int() of thousands of digits (slow, or refused)."""
    if _WHOLE.fullmatch(raw) is None:
        if re.fullmatch(r"-?[0-9]+", raw, re.ASCII):
            return -10**18 if raw.startswith("-") else 10**18
        raise QueryError(param, f"{param}: expected an integer (ASCII digits), got {raw[:40]!r}")
    return int(raw)


def split_list(param: str, text: str) -> list[str]:
    """Split on commas outside double quotes; ``"a,b"`` keeps its comma, ``""`` is a quote."""
    return [item for item, _ in split_items(param, text)]


def split_names(param: str, text: str) -> list[str]:
    """Comma-separated names: an unquoted name is stripped, a quoted one is kept exactly.

    Blanks around a quoted name are allowed and dropped (``id, " padded"``); inside the quotes
    every character counts.
    """
    return [item if quoted else item.strip()
            for item, quoted in split_items(param, text, blanks_around_quotes=True)]


def split_items(param: str, text: str,
                blanks_around_quotes: bool = False) -> list[tuple[str, bool]]:
    """(item, was it quoted) for each comma-separated item; see :func:`split_list`."""
    return [(item, quoted) for item, quoted, _ in split_raw(param, text, blanks_around_quotes)]


def split_raw(param: str, text: str, blanks_around_quotes: bool = False,
           tails: bool = False) -> list[tuple[str, bool, str]]:
    """(item, was it quoted, text after its closing quote) for each comma-separated item.

    With ``tails``, text after a closing quote is kept apart (``"a.b".desc``: the order's
    suffixes); without, it is an error.
    """
    items: list[tuple[str, bool, str]] = []
    current: list[str] = []
    tail: list[str] = []
    quoted = False
    was_quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    current.append('"')
                    i += 1
                else:
                    quoted = False
            else:
                current.append(ch)
        elif ch == '"' and not was_quoted and (
                not current or (blanks_around_quotes and not "".join(current).strip())):
            current = []
            quoted = was_quoted = True
        elif ch == ",":
            items.append(("".join(current), was_quoted, "".join(tail).strip()))
            current, tail, was_quoted = [], [], False
        elif was_quoted and tails:
            tail.append(ch)
        elif was_quoted and not (blanks_around_quotes and ch.isspace()):
            raise QueryError(param, f"{param}: unexpected text after a quoted item")
        elif not was_quoted:
            current.append(ch)
        i += 1
    if quoted:
        raise QueryError(param, f"{param}: unterminated double quote")
    items.append(("".join(current), was_quoted, "".join(tail).strip()))
    return items


def column_of(relation: Relation, param: str, name: str) -> Column:
    column = relation.column(name)
    if column is None:
        shown = name if len(name) <= 64 else name[:64] + "..."
        raise QueryError(param, f"{param}: {relation.name} has no column {shown!r}")
    return column
