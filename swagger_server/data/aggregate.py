"""Aggregates at the top level (``[API] AGGREGATES = on``): ``select=status,total.sum(),count()``.

One row per group of the non-aggregated fields (``GROUP BY`` them), filters applied first.
Functions: ``avg min max sum count``, on a column (``total.sum()``) or ``count()`` of rows;
named after the function unless aliased (``revenue:total.sum()``). No cast: the result has
PostgreSQL's type (``sum`` of an integer is a bigint, ``avg`` a numeric, ``count`` a bigint).
Groups have no primary key, so pages go by ``offset`` (no cursor); ``order`` names output fields
(``order=sum.desc``), and the grouped fields follow as tiebreakers, so the order is total.
``count`` counts groups. The statements mirror :mod:`swagger_server.data.query`'s (same result
columns), built here so that the plain page statement stays as it is.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from swagger_server.data import embed, query
from swagger_server.data.query import QueryError, RowsQuery
from swagger_server.data.sqltext import ident

_DIRECTIONS = {"asc": " ASC", "desc": " DESC"}


def order_sql(shape: embed.Shape, text: str | None) -> sql.Composable:
    """``ORDER BY`` output names (``name[.asc|.desc]``), then the grouped fields."""
    names = shape.names
    terms: list[tuple[str, str]] = []
    if text is not None and text.strip():
        query.check_text("order", text)
        for raw in text.split(","):
            item = raw.strip()
            name, direction = item, "asc"
            head, dot, tail = item.rpartition(".")
            if dot and tail in _DIRECTIONS and head in names:
                name, direction = head, tail
            if name not in names:
                raise QueryError("order", f"order: with aggregates, order names a field of "
                                          f"select ({', '.join(names)}), got {item[:80]!r}")
            if any(n == name for n, _ in terms):
                raise QueryError("order", "order: a column appears twice")
            terms.append((name, direction))
    for item in shape.items:
        if isinstance(item, embed.Field) and item.aggregate is None \
                and all(n != item.name for n, _ in terms):
            terms.append((item.name, "asc"))
    if not terms:
        return sql.SQL("")
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(
        sql.SQL("{}{}").format(ident(n), sql.SQL(_DIRECTIONS[d])) for n, d in terms)


def _grouped(q: RowsQuery, params: query._Params, limit: int | None,
             offset: int = 0) -> sql.Composable:
    shape = q.shape
    tail = sql.SQL("")
    if limit is not None:
        tail += sql.SQL(" LIMIT {}").format(params.add(limit))
    if offset:
        tail += sql.SQL(" OFFSET {}").format(params.add(offset))
    return sql.SQL("SELECT {} FROM {} r{}{}{}{}").format(
        shape.object_sql("r", params), query._relation(q.relation),
        query._where(q, params, with_keyset=False), embed.group_by(shape.items, "r", params),
        shape.order_sql, tail)


def page_sql(q: RowsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """As :func:`query.page_sql`: ``(rows, rows fetched, NULL key)``, rows without brackets."""
    params = query._Params()
    inner = _grouped(q, params, q.limit + 1, q.offset)
    limit = params.add(q.limit)
    statement = sql.SQL(
        "SELECT string_agg(p.j::text, ', ') FILTER (WHERE p.n <= {limit}), "
        "count(*), NULL::text[] "
        "FROM (SELECT row_to_json(x.*) AS j, row_number() OVER () AS n FROM ({inner}) x) p"
    ).format(limit=limit, inner=inner)
    return statement, params.values


def count_sql(q: RowsQuery, timeout_ms: int) -> tuple[sql.Composable, dict[str, Any]]:
    """As :func:`query.count_sql` (its own lowered timeout, then the count), counting groups."""
    params = query._Params()
    statement = sql.SQL(
        "SELECT set_config('statement_timeout', (SELECT CASE WHEN s.setting::bigint = 0 "
        "THEN {limit} ELSE least({limit}, s.setting::bigint) END FROM pg_catalog.pg_settings s "
        "WHERE s.name = 'statement_timeout')::text, true); SELECT count(*) FROM ({grouped}) g"
    ).format(limit=sql.Literal(int(timeout_ms)), grouped=_grouped(q, params, None))
    return statement, params.values


def estimate_sql(q: RowsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    params = query._Params()
    return sql.SQL("EXPLAIN (FORMAT JSON) {}").format(_grouped(q, params, None)), params.values


def ndjson_sql(q: RowsQuery, limit: int) -> tuple[sql.Composable, dict[str, Any]]:
    params = query._Params()
    statement = sql.SQL(
        "SELECT translate(row_to_json(x.*)::text, E'\\n\\r', '  ') FROM ({}) x"
    ).format(_grouped(q, params, limit, q.offset))
    return statement, params.values


def csv_sql(q: RowsQuery, limit: int) -> tuple[sql.Composable, dict[str, Any]]:
    """One CSV line per group: each output field read back from the grouped row ``x``."""
    params = query._Params()
    cells = [_csv_cell(item) for item in q.shape.items]
    line = sql.SQL(" || ',' || ").join(cells) if cells else sql.SQL("''")
    statement = sql.SQL("SELECT {} FROM ({}) x").format(line, _grouped(q, params, limit,
                                                                       q.offset))
    return statement, params.values


def _csv_cell(item: embed.Field | embed.Embed) -> sql.Composable:
    """The field's JSON rendering as text (ISO dates, numbers as PostgreSQL writes them),
    quoted; NULL is an empty cell."""
    text = sql.SQL("(to_json(x.{}) #>> '{{}}')").format(ident(item.name))
    return sql.SQL("""coalesce('"' || replace({}, '"', '""') || '"', '')""").format(text)
