"""Request parameters of the data API parsed against the catalog, and every SQL statement built.

Parsing turns ``select``, ``filter``, ``order`` and a cursor into :class:`RowsQuery`, naming
columns only as catalog :class:`~swagger_server.data.catalog.Column` objects; anything else is a
:class:`QueryError` (a 400). Building quotes identifiers with :class:`psycopg2.sql.Identifier`,
writes types as the catalog spells them, and passes every value as a bound parameter cast with
``CAST(%(pN)s AS <type>)`` so that PostgreSQL converts (and rejects) values by the column's type.

Rendering (the same in JSON, NDJSON, CSV): PostgreSQL's ``row_to_json``, so numbers are JSON
numbers (``numeric`` with every stored digit), timestamps ISO 8601, json/jsonb nested, arrays
arrays, NULL null; ``bytea`` is base64 (no line breaks). CSV cells hold the same values as text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from swagger_server.data.catalog import Column, Relation

OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "like", "ilike", "in", "is")
_COMPARISONS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_IS_VALUES = {"null": "IS NULL", "notnull": "IS NOT NULL", "true": "IS TRUE", "false": "IS FALSE"}
_DIRECTIONS = ("asc", "desc")
_NULLS = ("nullsfirst", "nullslast")

MAX_FILTERS = 50
MAX_IN_VALUES = 1000
MAX_ORDER_TERMS = 32
MAX_VALUE_CHARS = 65536

_CONTROL = re.compile(r"[\x00]")


class QueryError(ValueError):
    """A request parameter that cannot be honoured; ``param`` names it, the message says why."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class OrderTerm:
    column: Column
    desc: bool = False
    nulls_first: bool = False  # PostgreSQL's default: NULLS LAST for ASC, NULLS FIRST for DESC

    def spec(self) -> list[object]:
        return [self.column.name, self.column.type, self.desc, self.nulls_first]


@dataclass(frozen=True)
class Filter:
    column: Column
    op: str
    values: tuple[str, ...]  # one value; several for "in"; the keyword for "is"


@dataclass
class RowsQuery:
    relation: Relation
    columns: tuple[Column, ...]
    filters: tuple[Filter, ...] = ()
    order: tuple[OrderTerm, ...] = ()
    unique: bool = False  # the order ends with the primary key: keyset paging is sound
    after: Sequence[str | None] | None = None  # keyset position (the cursor's values)
    offset: int = 0
    limit: int = 100
    fingerprint_parts: list[object] = field(default_factory=list)


# ------------------------------------------------------------------ parsing


def check_text(param: str, value: str) -> str:
    if _CONTROL.search(value):
        raise QueryError(param, f"{param}: NUL characters are not allowed")
    if len(value) > MAX_VALUE_CHARS:
        raise QueryError(param, f"{param}: longer than {MAX_VALUE_CHARS} characters")
    return value


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
    return [(item, quoted) for item, quoted, _ in _split(param, text, blanks_around_quotes)]


def _split(param: str, text: str, blanks_around_quotes: bool = False,
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


def _column(relation: Relation, param: str, name: str) -> Column:
    column = relation.column(name)
    if column is None:
        shown = name if len(name) <= 64 else name[:64] + "..."
        raise QueryError(param, f"{param}: {relation.name} has no column {shown!r}")
    return column


def parse_select(relation: Relation, text: str | None) -> tuple[Column, ...]:
    if text is None or text.strip() == "*":
        return relation.columns
    check_text("select", text)
    names = split_names("select", text)
    if any(not n for n in names):
        raise QueryError("select", "select: empty column name")
    chosen: list[Column] = []
    for name in names:
        column = _column(relation, "select", name)
        if column not in chosen:
            chosen.append(column)
    return tuple(chosen)


def parse_filter(relation: Relation, text: str) -> Filter:
    """``<column>.<op>.<value>``; the column may hold dots (the catalog decides where it ends).

    Linear in the text's length: only the cuts where a column name of this relation can end
    are tried (one per distinct name length), shortest first, never one per dot.
    """
    check_text("filter", text)
    for length in relation.name_lengths:
        if text[length:length + 1] != ".":
            continue
        column = relation.column(text[:length])
        if column is None:
            continue
        op, dot, _ = text[length + 1:length + 7].partition(".")
        if dot and op in OPS:
            return _filter_value(column, op, text[length + 2 + len(op):])
    parts = text.split(".")
    for i in range(1, len(parts) - 1):
        if parts[i] in OPS:  # the text before the first op is the column asked for
            _column(relation, "filter", ".".join(parts[:i]))  # raises: an unknown column
    raise QueryError(
        "filter",
        f"filter: expected <column>.<op>.<value> with op one of {', '.join(OPS)}, "
        f"got {text[:80]!r}",
    )


def _filter_value(column: Column, op: str, value: str) -> Filter:
    if op == "is":
        if value not in _IS_VALUES:
            raise QueryError("filter", "filter: is takes null, notnull, true or false, "
                                       f"not {value[:40]!r}")
        if value in ("true", "false") and not column.is_bool:
            raise QueryError("filter", f"filter: is.{value} needs a boolean column; "
                                       f"{column.name!r} is {column.display_type}")
        return Filter(column, op, (value,))
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise QueryError("filter", "filter: in takes a list in parentheses, e.g. in.(1,2,3)")
        inner = value[1:-1]
        values = split_list("filter", inner) if inner else []
        if len(values) > MAX_IN_VALUES:
            raise QueryError("filter", f"filter: at most {MAX_IN_VALUES} values in a list")
        return Filter(column, op, tuple(values))
    if op in ("like", "ilike"):
        return Filter(column, op, (value.replace("*", "%"),))
    return Filter(column, op, (value,))


def parse_order(relation: Relation, text: str | None) -> tuple[tuple[OrderTerm, ...], bool]:
    """The order asked for plus the primary key as tiebreaker; and whether it is unique."""
    terms: list[OrderTerm] = []
    if text is not None and text.strip():
        check_text("order", text)
        items = _split("order", text, blanks_around_quotes=True, tails=True)
        if len(items) > MAX_ORDER_TERMS:
            raise QueryError("order", f"order: at most {MAX_ORDER_TERMS} columns")
        for item, quoted, tail in items:
            if quoted:  # the name exactly as quoted; suffixes after the quote
                terms.append(_quoted_order_term(relation, item, tail))
            else:
                terms.append(_order_term(relation, item.strip()))
    names = [t.column.name for t in terms]
    if len(set(names)) != len(names):
        raise QueryError("order", "order: a column appears twice")
    for key in relation.primary_key:
        if key not in names:
            terms.append(OrderTerm(_column(relation, "order", key)))
    return tuple(terms), bool(relation.primary_key)


def _quoted_order_term(relation: Relation, name: str, tail: str) -> OrderTerm:
    """``"<column>"[.asc|.desc][.nullsfirst|.nullslast]``: the quoted name is exact."""
    column = _column(relation, "order", name)
    suffix = tail[1:].split(".") if tail.startswith(".") else [tail] if tail else []
    term = _with_suffixes(column, suffix)
    if term is None:
        raise QueryError(
            "order", f"order: expected \"<column>\"[.asc|.desc][.nullsfirst|.nullslast], "
                     f"got {tail[:80]!r} after the quoted name",
        )
    return term


def _with_suffixes(column: Column, suffix: list[str]) -> OrderTerm | None:
    """The term for ``column`` with its direction/nulls suffixes; None when they are invalid."""
    if len(suffix) > 2 or any(s not in _DIRECTIONS + _NULLS for s in suffix):
        return None
    directions = [s for s in suffix if s in _DIRECTIONS]
    nulls = [s for s in suffix if s in _NULLS]
    if len(directions) > 1 or len(nulls) > 1 or (suffix and suffix[0] in _NULLS
                                                  and len(suffix) == 2):
        return None
    desc = directions == ["desc"]
    nulls_first = nulls[0] == "nullsfirst" if nulls else desc
    return OrderTerm(column, desc, nulls_first)


def _order_term(relation: Relation, item: str) -> OrderTerm:
    """``<column>[.asc|.desc][.nullsfirst|.nullslast]``; the column may hold dots.

    At most two suffixes: only three cuts are tried, longest column name first (linear in the
    item's length, whatever its dots).
    """
    if not item:
        raise QueryError("order", "order: empty item")
    parts = item.rsplit(".", 2)
    for cut in range(len(parts), 0, -1):
        suffix = parts[cut:]
        column = relation.column(item if cut == len(parts) else ".".join(parts[:cut]))
        term = _with_suffixes(column, suffix) if column is not None else None
        if term is not None:
            return term
    if relation.column(item.partition(".")[0]) is not None:
        raise QueryError(
            "order", f"order: expected <column>[.asc|.desc][.nullsfirst|.nullslast], "
                     f"got {item[:80]!r}",
        )
    return OrderTerm(_column(relation, "order", _without_suffixes(item)))  # raises: unknown


def _without_suffixes(item: str) -> str:
    """The column an order item names: ``nosuch.desc.nullslast`` names ``nosuch``."""
    for _ in range(2):
        name, dot, last = item.rpartition(".")
        if not dot or not name or last not in _DIRECTIONS + _NULLS:
            break
        item = name
    return item


# ------------------------------------------------------------------ building


class _Params:
    """Named bound parameters: each value gets its own ``%(pN)s``."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> sql.Placeholder:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return sql.Placeholder(name)

    def cast(self, value: str | None, column: Column) -> sql.Composable:
        return sql.SQL("CAST({} AS {})").format(self.add(value), sql.SQL(column.type))


def _ident(name: str, alias: str | None = None) -> sql.Composable:
    if alias is None:
        return sql.Identifier(name)
    return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))


def _relation(relation: Relation) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(relation.schema), sql.Identifier(relation.name))


def _filter_sql(f: Filter, params: _Params) -> sql.Composable:
    col = _ident(f.column.name, "r")
    if f.op in _COMPARISONS:
        return sql.SQL("{} {} {}").format(
            col, sql.SQL(_COMPARISONS[f.op]), params.cast(f.values[0], f.column))
    if f.op in ("like", "ilike"):
        return sql.SQL("{}::text {} {}").format(
            col, sql.SQL(f.op.upper()), params.add(f.values[0]))
    if f.op == "in":
        if not f.values:
            return sql.SQL("false")
        return sql.SQL("{} IN ({})").format(
            col, sql.SQL(", ").join(params.cast(v, f.column) for v in f.values))
    return sql.SQL("{} {}").format(col, sql.SQL(_IS_VALUES[f.values[0]]))


def _after_term(term: OrderTerm, value: str | None, params: _Params) -> sql.Composable | None:
    """Rows strictly after ``value`` in this column's order; None when there are none."""
    col = _ident(term.column.name, "r")
    if value is None:
        # NULLs first: every non-NULL comes after; NULLs last: nothing comes after a NULL.
        return sql.SQL("{} IS NOT NULL").format(col) if term.nulls_first else None
    op = sql.SQL("<" if term.desc else ">")
    base = sql.SQL("{} {} {}").format(col, op, params.cast(value, term.column))
    if term.nulls_first or not term.column.nullable:
        return base
    return sql.SQL("({} OR {} IS NULL)").format(base, col)


def _equal_term(term: OrderTerm, value: str | None, params: _Params) -> sql.Composable:
    col = _ident(term.column.name, "r")
    if value is None:
        return sql.SQL("{} IS NULL").format(col)
    return sql.SQL("{} = {}").format(col, params.cast(value, term.column))


def keyset_sql(order: Sequence[OrderTerm], values: Sequence[str | None],
               params: _Params) -> sql.Composable:
    """The rows after ``values`` in ``order`` (each term ASC/DESC, NULLS FIRST/LAST).

    All terms in one direction over NOT NULL columns: a row-value comparison, which an index on
    those columns serves. Otherwise the expanded form ``k1 after v1 OR (k1 = v1 AND k2 after v2)
    OR ...`` with NULL-aware terms, plus a redundant bound on the first column when it is NOT
    NULL so an index on it still narrows the scan.
    """
    directions = {t.desc for t in order}
    if len(directions) == 1 and not any(t.column.nullable for t in order) \
            and None not in values:
        left = sql.SQL(", ").join(_ident(t.column.name, "r") for t in order)
        right = sql.SQL(", ").join(params.cast(v, t.column) for t, v in zip(order, values,
                                                                                strict=True))
        op = sql.SQL("<" if order[0].desc else ">")
        if len(order) == 1:
            return sql.SQL("{} {} {}").format(left, op, right)
        return sql.SQL("({}) {} ({})").format(left, op, right)
    branches: list[sql.Composable] = []
    for i, term in enumerate(order):
        after = _after_term(term, values[i], params)
        if after is None:
            continue
        equals = [_equal_term(order[j], values[j], params) for j in range(i)]
        branches.append(sql.SQL(" AND ").join([*equals, after]) if equals else after)
    if not branches:
        return sql.SQL("false")
    chain = sql.SQL("({})").format(sql.SQL(" OR ").join(
        sql.SQL("({})").format(b) for b in branches))
    first, first_value = order[0], values[0]
    if not first.column.nullable and first_value is not None:
        bound = sql.SQL("{} {} {}").format(
            _ident(first.column.name, "r"), sql.SQL("<=" if first.desc else ">="),
            params.cast(first_value, first.column))
        return sql.SQL("{} AND {}").format(bound, chain)
    return chain


def _where(q: RowsQuery, params: _Params, with_keyset: bool = True) -> sql.Composable:
    conditions = [_filter_sql(f, params) for f in q.filters]
    if with_keyset and q.after is not None:
        conditions.append(keyset_sql(q.order, q.after, params))
    if not conditions:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)


def _order_by(order: Sequence[OrderTerm]) -> sql.Composable:
    if not order:
        return sql.SQL("")
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(
        sql.SQL("{}{}{}").format(
            _ident(t.column.name, "r"),
            sql.SQL(" DESC" if t.desc else ""),
            sql.SQL(" NULLS FIRST" if t.nulls_first else " NULLS LAST"),
        )
        for t in order
    )


def _needed(q: RowsQuery) -> list[Column]:
    needed = list(q.columns)
    needed += [t.column for t in q.order if t.column not in needed]
    return needed


def _inner(q: RowsQuery, params: _Params, limit: int) -> sql.Composable:
    """The page's rows (needed columns only), filtered, after the cursor, ordered, limited."""
    cols = sql.SQL(", ").join(_ident(c.name, "r") for c in _needed(q))
    tail = sql.SQL(" LIMIT {}").format(params.add(limit))
    if q.offset:
        tail += sql.SQL(" OFFSET {}").format(params.add(q.offset))
    return sql.SQL("SELECT {} FROM {} r{}{}{}").format(
        cols, _relation(q.relation), _where(q, params), _order_by(q.order), tail)


def json_value(column: Column, alias: str = "x") -> sql.Composable:
    col = _ident(column.name, alias)
    if column.is_bytea:
        return sql.SQL("translate(encode({}, 'base64'), E'\\n', '')").format(col)
    return col


def _json_object(columns: Sequence[Column]) -> sql.Composable:
    """``row_to_json`` of exactly the selected columns, in their order and with their names."""
    return sql.SQL("CROSS JOIN LATERAL (SELECT {}) o").format(sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(json_value(c), sql.Identifier(c.name)) for c in columns))


def page_sql(q: RowsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """One statement: ``(data json text, rows fetched, last row's key as text[])``.

    Fetches ``limit + 1`` rows to learn whether a next page exists; the JSON holds ``limit``.
    The rows are numbered once (a window over the page's rows, in their order); the JSON is
    built for the first ``limit`` only and the key of row ``limit`` alone (an aggregate's
    argument is evaluated only where its FILTER holds).
    """
    params = _Params()
    inner = _inner(q, params, q.limit + 1)
    limit = params.add(q.limit)
    taken = {c.name for c in _needed(q)}
    number = "n"
    while number in taken:  # beside the page's columns, under a name none of them has
        number += "_"
    n = sql.Identifier("x", number)
    if q.unique:
        key = sql.SQL("min(ARRAY[{}]) FILTER (WHERE {n} = {limit})").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(_ident(t.column.name, "x"))
                               for t in q.order), n=n, limit=limit)
    else:
        key = sql.SQL("NULL::text[]")
    statement = sql.SQL(
        "SELECT coalesce(json_agg(row_to_json(o)) FILTER (WHERE {n} <= {limit}), '[]')::text, "
        "count(*), {key} "
        "FROM (SELECT s.*, row_number() OVER () AS {number} FROM ({inner}) s) x {obj}"
    ).format(n=n, limit=limit, key=key, number=sql.Identifier(number), inner=inner,
             obj=_json_object(q.columns))
    return statement, params.values


def count_sql(q: RowsQuery, timeout_ms: int) -> tuple[sql.Composable, dict[str, Any]]:
    """``count=exact``: the rows matching the filters, under a statement timeout of its own.

    One round trip: ``set_config(..., true)`` lowers the timeout for the rest of the
    transaction (so the count goes last), then the count, whose result is the one fetched.
    Only lowers: the timeout in force (a role's own ``statement_timeout``, set by the auth
    preamble; pg_settings gives it in ms, 0 = none) wins when smaller.
    """
    params = _Params()
    statement = sql.SQL(
        "SELECT set_config('statement_timeout', (SELECT CASE WHEN s.setting::bigint = 0 "
        "THEN {limit} ELSE least({limit}, s.setting::bigint) END FROM pg_catalog.pg_settings s "
        "WHERE s.name = 'statement_timeout')::text, true); SELECT count(*) FROM {rel} r{where}"
    ).format(limit=sql.Literal(int(timeout_ms)), rel=_relation(q.relation),
             where=_where(q, params, with_keyset=False))
    return statement, params.values


def estimate_sql(q: RowsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """``EXPLAIN`` of the filtered relation: the planner's row estimate (``count=estimated``)."""
    params = _Params()
    statement = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} r{}").format(
        _relation(q.relation), _where(q, params, with_keyset=False))
    return statement, params.values


def ndjson_sql(q: RowsQuery, limit: int) -> tuple[sql.Composable, dict[str, Any]]:
    """One JSON object per line.

    ``row_to_json`` embeds a ``json`` value's stored text verbatim, raw line breaks included; in
    valid JSON a raw CR or LF can only be whitespace between tokens (inside strings they are
    escaped), so turning them into spaces keeps the value and one row on one line.
    """
    params = _Params()
    statement = sql.SQL(
        "SELECT translate(row_to_json(o)::text, E'\\n\\r', '  ') FROM ({}) x {}"
    ).format(_inner(q, params, limit), _json_object(q.columns))
    return statement, params.values


def _csv_cell(column: Column) -> sql.Composable:
    col = _ident(column.name, "x")
    if column.is_bytea:
        text = json_value(column)
    elif column.is_datetime:
        text = sql.SQL("(to_json({}) #>> '{{}}')").format(col)  # ISO 8601, as in JSON
    elif column.is_array or column.base_type in ("json", "jsonb"):
        text = sql.SQL("to_json({})::text").format(col)
    else:
        text = sql.SQL("{}::text").format(col)
    if column.plain_csv:  # numbers, booleans, ISO dates, uuids: never a comma, quote or newline
        return sql.SQL("coalesce({}, '')").format(text)
    # NULL is an empty cell; any other value is quoted (so '' and NULL differ, as in COPY).
    return sql.SQL("""coalesce('"' || replace({}, '"', '""') || '"', '')""").format(text)


def csv_sql(q: RowsQuery, limit: int) -> tuple[sql.Composable, dict[str, Any]]:
    """One CSV line per row, built by PostgreSQL (RFC 4180 quoting).

    A relation without columns gives an empty line per row (as ``COPY ... CSV`` does).
    """
    params = _Params()
    line = sql.SQL(" || ',' || ").join(_csv_cell(c) for c in q.columns) if q.columns \
        else sql.SQL("''")
    statement = sql.SQL("SELECT {} FROM ({}) x").format(line, _inner(q, params, limit))
    return statement, params.values


def declare_sql(name: str, statement: sql.Composable, batch: int,
                idle_timeout_ms: int) -> tuple[sql.Composable, sql.Composable]:
    """An export's opening (one round trip) and the ``FETCH`` of each next batch.

    The opening sets ``idle_in_transaction_session_timeout`` (when > 0), declares the cursor
    and fetches the first batch; ``set_config(..., true)`` is transaction-local, so it ends
    with the export and works through a transaction-mode PgBouncer, unlike a session ``SET``.
    """
    cursor = sql.Identifier(name)
    fetch = sql.SQL("FETCH FORWARD {} FROM {}").format(sql.Literal(batch), cursor)
    opening = sql.SQL("DECLARE {} NO SCROLL CURSOR FOR {}; {}").format(cursor, statement, fetch)
    if idle_timeout_ms > 0:
        opening = sql.SQL(
            "SELECT set_config('idle_in_transaction_session_timeout', {}, true); {}"
        ).format(sql.Literal(str(idle_timeout_ms)), opening)
    return opening, fetch


def row_sql(relation: Relation, columns: Sequence[Column],
            key: Sequence[str]) -> tuple[sql.Composable, dict[str, Any]]:
    """The row whose primary key is ``key`` (text values, in key order), as JSON text."""
    params = _Params()
    conditions = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(_ident(name, "r"), params.cast(value, relation.by_name[name]))
        for name, value in zip(relation.primary_key, key, strict=True))
    inner = sql.SQL("SELECT {} FROM {} r WHERE {}").format(
        sql.SQL(", ").join(_ident(c.name, "r") for c in columns), _relation(relation), conditions)
    statement = sql.SQL("SELECT row_to_json(o)::text FROM ({}) x {}").format(
        inner, _json_object(columns))
    return statement, params.values


def cast_check_sql(column: Column) -> tuple[sql.Composable, dict[str, Any]]:
    """Does PostgreSQL accept a value for this column's type? (to name the culprit of a 400)"""
    return sql.SQL("SELECT CAST(%(v)s AS {})").format(sql.SQL(column.type)), {}


def position_sql(q: RowsQuery, cap: int) -> tuple[sql.Composable, dict[str, Any]]:
    """How many rows (filters applied) are not after the cursor: the offset of the next row.

    Counts ``cap`` rows at most, so that the cost stays bounded deep in a big table.
    """
    if q.after is None:
        raise ValueError("position_sql needs a keyset position")
    params = _Params()
    conditions = [_filter_sql(f, params) for f in q.filters]
    conditions.append(sql.SQL("({}) IS NOT TRUE").format(keyset_sql(q.order, q.after, params)))
    statement = sql.SQL("SELECT count(*) FROM (SELECT FROM {} r WHERE {} LIMIT {}) c").format(
        _relation(q.relation), sql.SQL(" AND ").join(conditions), params.add(cap))
    return statement, params.values


def pattern_error(pattern: str) -> str | None:
    """Why PostgreSQL rejects a LIKE/ILIKE pattern (escape character ``\\``); None if it does not.

    Its one rule: the escape character must not end the pattern (it escapes the next one).
    """
    escaped = False
    for ch in pattern:
        escaped = not escaped and ch == "\\"
    if escaped:
        return "it ends with the escape character \\ (write \\\\ for a backslash)"
    return None


def pattern_values(q: RowsQuery) -> list[tuple[str, Column, str]]:
    """Every (param, column, pattern) of a query's like/ilike filters."""
    return [("filter", f.column, f.values[0]) for f in q.filters if f.op in ("like", "ilike")]


def typed_values(q: RowsQuery) -> list[tuple[str, Column, str]]:
    """Every (param, column, value) of a query that PostgreSQL casts, in request order."""
    found: list[tuple[str, Column, str]] = []
    for f in q.filters:
        if f.op in _COMPARISONS or f.op == "in":
            found += [("filter", f.column, v) for v in f.values]
    if q.after is not None:
        found += [("cursor", t.column, v) for t, v in zip(q.order, q.after, strict=True)
                  if v is not None]
    return found
