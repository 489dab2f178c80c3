"""SQL text for the data API's hot paths: identifiers quoted once, statements joined as text.

:mod:`psycopg2.sql` builds a statement out of many small objects (each ``SQL.format`` parses its
template) and renders them again on every ``execute``: for a page of an 11-column table that was
some hundred of them per request. Here a statement is a list of pieces: ``str`` for the parts
this service writes (keywords, identifiers quoted from the catalog, ``%(pN)s`` placeholders of
bound values) and :class:`psycopg2.sql.Composable` for what other modules build (filters,
embeds); :func:`compose` joins each run of text into one ``sql.SQL``, so rendering it costs a
string join.

Identifiers are quoted as libpq's ``PQescapeIdentifier`` (what ``sql.Identifier`` calls) does:
in double quotes, each ``"`` doubled; and each ``%`` doubled, because every data API statement
runs with bound parameters (a dict, empty or not) and psycopg2 then reads ``%`` as the start of
a placeholder: ``%%`` is its one ``%`` (``sql.Identifier`` leaves ``%`` alone, so a column
named ``a%b`` made every statement naming it fail). Statements built here must be run with
parameters; :func:`ident` stands in for ``sql.Identifier`` in them.
They come only from the catalog (:class:`~swagger_server.data.catalog.Column` and
:class:`~swagger_server.data.catalog.Relation` keep their quoted form); values only as bound
parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from psycopg2 import sql

Piece = str | sql.Composable


def no_placeholder(text: str) -> str:
    """Catalog text (a name, a type, a collation) for a statement run with bound parameters:
    each ``%`` doubled, which psycopg2 reads back as one instead of a placeholder's start."""
    return text.replace("%", "%%")


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier for a statement run with bound parameters: ``"``
    around it, any ``"`` inside doubled, any ``%`` doubled (:func:`no_placeholder`)."""
    return no_placeholder('"' + name.replace('"', '""') + '"')


def ident(name: str) -> sql.SQL:
    """:func:`quote_ident` as a Composable, for ``sql.SQL(...).format(...)``."""
    return sql.SQL(quote_ident(name))


def compose(pieces: Iterable[Piece]) -> sql.Composable:
    """One Composable of ``pieces``: each run of text becomes one ``sql.SQL``."""
    pieces = list(pieces)
    with contextlib.suppress(TypeError):  # all text (no filter, no embed): one join
        return sql.SQL("".join(pieces))  # type: ignore[arg-type]
    out: list[sql.Composable] = []
    run: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            run.append(piece)
            continue
        if run:
            out.append(sql.SQL("".join(run)))
            run = []
        out.append(piece)
    if run:
        out.append(sql.SQL("".join(run)))
    return out[0] if len(out) == 1 else sql.Composed(out)


def join(separator: str, items: Iterable[list[Piece]]) -> list[Piece]:
    """The pieces of ``items`` with ``separator`` between them."""
    joined: list[Piece] = []
    for i, item in enumerate(items):
        if i:
            joined.append(separator)
        joined += item
    return joined
