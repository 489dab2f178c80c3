"""Request parameters of the data API parsed against the catalog, and every SQL statement built.

Parsing turns ``select``, ``filter``, ``order`` and a cursor into :class:`RowsQuery`, naming
columns only as catalog :class:`~swagger_server.data.catalog.Column` objects; anything else is a
:class:`QueryError` (a 400). Building names columns and relations by their quoted names from the
catalog (quoted once per catalog object, as :class:`psycopg2.sql.Identifier` quotes, ``%``
doubled: :mod:`swagger_server.data.sqltext`), writes types as the catalog spells them, and
passes every value as a bound parameter cast with ``CAST(%(pN)s AS <type>)`` so that
PostgreSQL converts (and rejects) values by the column's type. Statements are text joined once
(filters and embeds stay :mod:`psycopg2.sql` Composables), so rendering one on ``execute``
costs a string join.
The filter grammar (``filter``, ``or``/``and`` groups, JSON paths) and its SQL live in
:mod:`swagger_server.data.filters`; its entry points are re-exported here.

Rendering (the same in JSON, NDJSON, CSV): PostgreSQL's ``row_to_json``, so numbers are JSON
numbers (``numeric`` with every stored digit), timestamps ISO 8601, json/jsonb nested, arrays
arrays, NULL null; ``bytea`` is base64 (no line breaks). CSV cells hold the same values as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from swagger_server.data import filters, sqltext
from swagger_server.data.catalog import Column, Relation
from swagger_server.data.filters import (  # noqa: F401 (the filter grammar's entry points)
    MAX_FILTERS,
    MAX_IN_VALUES,
    OPS,
    Condition,
    Filter,
    Group,
    PathStep,
    filter_sql,
    parse_filter,
    parse_group,
)
from swagger_server.data.sqltext import Piece, compose, no_placeholder, quote_ident
from swagger_server.data.syntax import (  # noqa: F401 (shared by the data API's modules)
    MAX_VALUE_CHARS,
    QueryError,
    check_text,
    column_of,
    parse_whole,
    split_items,
    split_list,
    split_names,
    split_raw,
)

_column = column_of

_DIRECTIONS = ("asc", "desc")
_NULLS = ("nullsfirst", "nullslast")

MAX_ORDER_TERMS = 32


@dataclass(frozen=True)
class OrderTerm:
    column: Column
    desc: bool = False
    nulls_first: bool = False  # PostgreSQL's default: NULLS LAST for ASC, NULLS FIRST for DESC
    path: tuple[PathStep, ...] = ()  # a JSON path into the column: its value is sorted

    def spec(self) -> list[object]:
        """What a cursor is bound to (its fingerprint): the column, its type, the direction,
        and the JSON path when there is one (so a cursor of another path is refused)."""
        spec: list[object] = [self.column.name, self.column.type, self.desc, self.nulls_first]
        if self.path:
            spec.append([[s.arrow, s.key] for s in self.path])
        return spec

    @property
    def type(self) -> str:
        """The SQL type of the sorted value: the column's, or jsonb / text for a JSON path."""
        return filters.path_type(self.path, self.column)

    @property
    def collate(self) -> str:
        """The COLLATE clause for a value compared with the sorted value."""
        return filters.path_collate(self.path, self.column)

    @property
    def nullable(self) -> bool:
        return self.column.nullable or bool(self.path)  # a path may lead nowhere: NULL

    def expr(self, params: _Params, alias: str = "r") -> sql.Composable:
        """The sorted value in SQL: the column, or its JSON path (keys bound in ``params``)."""
        return filters.target_sql(self.column, self.path, params, alias)


@dataclass
class RowsQuery:
    relation: Relation
    columns: tuple[Column, ...]
    filters: tuple[Condition, ...] = ()  # filter= conditions and or/and groups: all must hold
    order: tuple[OrderTerm, ...] = ()
    unique: bool = False  # the order ends with the primary key: keyset paging is sound
    after: Sequence[str | None] | None = None  # keyset position (the cursor's values)
    offset: int = 0
    limit: int = 100
    fingerprint_parts: list[object] = field(default_factory=list)
    # A select with embeds, aliases or JSON paths (swagger_server.data.embed.Shape); None for a
    # plain list of columns. It builds the row's object and the !inner conditions.
    shape: Any = None


# ------------------------------------------------------------------ parsing


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


def parse_order(relation: Relation, text: str | None) -> tuple[tuple[OrderTerm, ...], bool]:
    """The order asked for plus the primary key as tiebreaker; and whether it is unique."""
    terms: list[OrderTerm] = []
    if text is not None and text.strip():
        check_text("order", text)
        items = split_raw("order", text, blanks_around_quotes=True, tails=True)
        if len(items) > MAX_ORDER_TERMS:
            raise QueryError("order", f"order: at most {MAX_ORDER_TERMS} columns")
        for item, quoted, tail in items:
            if quoted:  # the name exactly as quoted; suffixes after the quote
                terms.append(_quoted_order_term(relation, item, tail))
            else:
                terms.append(_order_term(relation, item.strip()))
    keys = [(t.column.name, t.path) for t in terms]
    if len(set(keys)) != len(keys):
        raise QueryError("order", "order: a column appears twice")
    names = [t.column.name for t in terms if not t.path]
    for key in relation.primary_key:
        if key not in names:
            terms.append(OrderTerm(_column(relation, "order", key)))
    return tuple(terms), bool(relation.primary_key)


def _quoted_order_term(relation: Relation, name: str, tail: str) -> OrderTerm:
    """``"<column>"[->path][.asc|.desc][.nullsfirst|.nullslast]``: the quoted name is exact."""
    column = _column(relation, "order", name)
    path: tuple[PathStep, ...] = ()
    if tail.startswith("->"):
        path, end = filters.parse_path("order", column, tail, 0)
        tail = tail[end:]
    suffix = tail[1:].split(".") if tail.startswith(".") else [tail] if tail else []
    term = _with_suffixes(column, suffix, path)
    if term is None:
        raise QueryError(
            "order", f"order: expected \"<column>\"[.asc|.desc][.nullsfirst|.nullslast], "
                     f"got {tail[:80]!r} after the quoted name",
        )
    return term


def _with_suffixes(column: Column, suffix: list[str],
                   path: tuple[PathStep, ...] = ()) -> OrderTerm | None:
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
    return OrderTerm(column, desc, nulls_first, path)


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
    term = _path_order_term(relation, item)
    if term is not None:
        return term
    if relation.column(item.partition(".")[0]) is not None:
        raise QueryError(
            "order", f"order: expected <column>[.asc|.desc][.nullsfirst|.nullslast], "
                     f"got {item[:80]!r}",
        )
    return OrderTerm(_column(relation, "order", _without_suffixes(item)))  # raises: unknown


def _path_order_term(relation: Relation, item: str) -> OrderTerm | None:
    """``<column>-><key>[->...][->><key>][.asc|.desc][.nullsfirst|.nullslast]``, None when the
    item holds no JSON path after a column name."""
    for length in relation.name_lengths:
        column = relation.column(item[:length]) if item.startswith("->", length) else None
        if column is None:
            continue
        path, end = filters.parse_path("order", column, item, length)
        rest = item[end:]
        suffix = rest[1:].split(".") if rest.startswith(".") else [rest] if rest else []
        term = _with_suffixes(column, suffix, path)
        if term is None:
            raise QueryError("order", "order: expected <column>-><key>[->><key>][.asc|.desc]"
                                      f"[.nullsfirst|.nullslast], got {item[:80]!r}")
        return term
    return None


def _without_suffixes(item: str) -> str:
    """The column an order item names: ``nosuch.desc.nullslast`` names ``nosuch``."""
    for _ in range(2):
        name, dot, last = item.rpartition(".")
        if not dot or not name or last not in _DIRECTIONS + _NULLS:
            break
        item = name
    return item


# ------------------------------------------------------------------ building
#
# Statements are lists of pieces (swagger_server.data.sqltext): text for what is written here,
# Composables for filters and embeds; each value is a bound parameter, added to ``params`` in
# the order the pieces are built.


class _Params:
    """Named bound parameters: each value gets its own ``%(pN)s``."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> sql.Placeholder:
        return sql.Placeholder(self._name(value))

    def slot(self, value: Any) -> str:
        """As :meth:`add`, the placeholder as text."""
        return f"%({self._name(value)})s"

    def _name(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return name

    def cast_text(self, value: str | None, type_: str, collate: str = "") -> str:
        """The value bound, cast to ``type_`` (as the catalog spells it, ``%`` doubled:
        sqltext.no_placeholder), with the column's ``collate`` clause."""
        return f"CAST({self.slot(value)} AS {no_placeholder(type_)}){collate}"


def _relation(relation: Relation) -> sql.Composable:
    return sql.SQL(relation.quoted)


def _qualified(column: Column, alias: str) -> str:
    """``"alias"."column"``; the aliases are this module's own (r, x)."""
    return quote_ident(alias) + "." + column.quoted


def _expr(term: OrderTerm, params: _Params, alias: str = "r") -> Piece:
    """The sorted value: the column as text, or its JSON path (keys bound in ``params``)."""
    if not term.path:
        return _qualified(term.column, alias)
    return term.expr(params, alias)


def _cast(term: OrderTerm, value: str | None, params: _Params) -> str:
    """A cursor value as this term's type."""
    return params.cast_text(value, term.type, term.collate)


def _after_term(term: OrderTerm, value: str | None, params: _Params) -> list[Piece] | None:
    """Rows strictly after ``value`` in this column's order; None when there are none."""
    if value is None:
        # NULLs first: every non-NULL comes after; NULLs last: nothing comes after a NULL.
        return [_expr(term, params), " IS NOT NULL"] if term.nulls_first else None
    op = " < " if term.desc else " > "
    base = [_expr(term, params), op, _cast(term, value, params)]
    if term.nulls_first or not term.nullable:
        return base
    return ["(", *base, " OR ", _expr(term, params), " IS NULL)"]


def _equal_term(term: OrderTerm, value: str | None, params: _Params) -> list[Piece]:
    if value is None:
        return [_expr(term, params), " IS NULL"]
    return [_expr(term, params), " = ", _cast(term, value, params)]


def keyset_sql(order: Sequence[OrderTerm], values: Sequence[str | None],
               params: _Params) -> list[Piece]:
    """The rows after ``values`` in ``order`` (each term ASC/DESC, NULLS FIRST/LAST).

    All terms in one direction over NOT NULL columns: a row-value comparison, which an index on
    those columns serves. Otherwise the expanded form ``k1 after v1 OR (k1 = v1 AND k2 after v2)
    OR ...`` with NULL-aware terms, plus a redundant bound on the first column when it is NOT
    NULL so an index on it still narrows the scan.
    """
    directions = {t.desc for t in order}
    if len(directions) == 1 and not any(t.nullable for t in order) \
            and None not in values:
        left = sqltext.join(", ", ([_expr(t, params)] for t in order))
        right = sqltext.join(", ", ([_cast(t, v, params)] for t, v in zip(order, values,
                                                                           strict=True)))
        op = " < " if order[0].desc else " > "
        if len(order) == 1:
            return [*left, op, *right]
        return ["(", *left, ")", op, "(", *right, ")"]
    branches: list[list[Piece]] = []
    for i, term in enumerate(order):
        after = _after_term(term, values[i], params)
        if after is None:
            continue
        equals = [_equal_term(order[j], values[j], params) for j in range(i)]
        branches.append(sqltext.join(" AND ", [*equals, after]))
    if not branches:
        return ["false"]
    chain = ["(", *sqltext.join(" OR ", (["(", *b, ")"] for b in branches)), ")"]
    first, first_value = order[0], values[0]
    if not first.nullable and first_value is not None:
        bound = [_expr(first, params), " <= " if first.desc else " >= ",
                 _cast(first, first_value, params)]
        return [*bound, " AND ", *chain]
    return chain


def _where_pieces(q: RowsQuery, params: _Params, with_keyset: bool = True) -> list[Piece]:
    conditions: list[list[Piece]] = [[filter_sql(f, params)] for f in q.filters]
    if q.shape is not None:
        conditions += [[c] for c in q.shape.where_sql("r", params)]  # embeds' !inner
    if with_keyset and q.after is not None:
        conditions.append(keyset_sql(q.order, q.after, params))
    if not conditions:
        return []
    return [" WHERE ", *sqltext.join(" AND ", conditions)]


def _where(q: RowsQuery, params: _Params, with_keyset: bool = True) -> sql.Composable:
    return compose(_where_pieces(q, params, with_keyset))


def _order_pieces(order: Sequence[OrderTerm], params: _Params) -> list[Piece]:
    if not order:
        return []
    return [" ORDER BY ", *sqltext.join(", ", (
        [_expr(t, params), (" DESC" if t.desc else "") + _nulls(t)] for t in order))]


def _nulls(term: OrderTerm) -> str:
    """Where NULLs go; nothing for a column that holds none (NOT NULL, no JSON path): a btree
    index then serves ``DESC`` by a backward scan, where ``DESC NULLS LAST`` needs a sort."""
    if not term.path and not term.column.nullable:
        return ""
    return " NULLS FIRST" if term.nulls_first else " NULLS LAST"


def _order_by(order: Sequence[OrderTerm], params: _Params) -> sql.Composable:
    return compose(_order_pieces(order, params))


def _needed(q: RowsQuery) -> list[Column]:
    needed = list(q.columns) if q.shape is None else list(q.shape.columns())
    for t in q.order:  # a column sorted by several JSON paths is fetched once
        if t.column not in needed:
            needed.append(t.column)
    return needed


def _columns_text(columns: Sequence[Column]) -> str:
    return ", ".join('"r".' + c.quoted for c in columns)


def _inner(q: RowsQuery, params: _Params, limit: int) -> list[Piece]:
    """The page's rows (needed columns only), filtered, after the cursor, ordered, limited."""
    tail = " LIMIT " + params.slot(limit)
    if q.offset:
        tail += " OFFSET " + params.slot(q.offset)
    return ["SELECT ", _columns_text(_needed(q)), " FROM ", q.relation.quoted, " r",
            *_where_pieces(q, params), *_order_pieces(q.order, params), tail]


def _json_value_text(column: Column, alias: str = "x") -> str:
    col = _qualified(column, alias)
    if column.is_bytea:
        return f"translate(encode({col}, 'base64'), E'\\n', '')"
    return col


def json_value(column: Column, alias: str = "x") -> sql.Composable:
    return sql.SQL(_json_value_text(column, alias))


def _plain_object(columns: Sequence[Column]) -> str:
    """The row object of exactly these columns."""
    return "CROSS JOIN LATERAL (SELECT " + ", ".join(
        _json_value_text(c) + " AS " + c.quoted for c in columns) + ") o"


def _json_object(columns: Sequence[Column], shape: Any = None,
                 params: _Params | None = None) -> list[Piece]:
    """``row_to_json`` of exactly the selected columns, in their order and with their names;
    with a ``shape`` (embeds, aliases, JSON paths), of its items."""
    if shape is not None and params is not None:
        return ["CROSS JOIN LATERAL (SELECT ", shape.object_sql("x", params), ") o"]
    return [_plain_object(columns)]


def page_sql(q: RowsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """One statement: ``(rows, rows fetched, last row's key as text[])``.

    ``rows`` is the page's row objects as JSON text, ``", "`` between them, without the array's
    brackets (NULL for no row): the caller writes ``[`` and ``]`` around it. Why: PostgreSQL's
    ``json_agg(...)::text`` (or ``'[' || ... || ']'``) copies the whole page once more, and a
    copy of some hundreds of KB cost the server about 15 % of the statement under concurrent
    load (pgbench, c=4); ``string_agg`` of each row's text does not.

    "Rows fetched" is ``limit + 1`` when a next page exists, else the page's rows; the key is
    that of row ``limit`` (read only when there is a next page and the order is unique; may be
    empty or NULL otherwise). A plain page of a table in its primary key's order reads its rows
    and probes the key (:func:`_probed_page_sql`, see :func:`_probe_pays`); any other page
    numbers its rows once (:func:`_windowed_page_sql`).
    """
    if _probe_pays(q):
        return _probed_page_sql(q)
    return _windowed_page_sql(q)


def _probe_pays(q: RowsQuery) -> bool:
    """Walking the page's rows twice costs only a second walk of the primary key's index: a
    plain column list, no filters (no view, policy or foreign server either: ``plain_storage``),
    the page from the start or from a cursor, in the primary key's order, one direction. Any
    other order would sort the relation twice, an offset would skip its rows twice."""
    if q.shape is not None or q.filters or q.offset or not q.relation.plain_storage:
        return False
    if [t.column.name for t in q.order] != list(q.relation.primary_key) or not q.order:
        return False
    return all(not t.path for t in q.order) and len({t.desc for t in q.order}) == 1


# Key types whose max()/min() is the last row of a page in their btree order (same operators,
# same collation), with the text a cursor holds: the single-key probe's last key.
_MAX_KEY_TYPES = frozenset({"int2", "int4", "int8", "numeric", "text", "varchar", "date",
                            "timestamp", "timestamptz"})


def _single_key(q: RowsQuery) -> Column | None:
    """The key column when the page is in the order of a one-column key that is among its
    columns, from the start or a cursor: the page's last key is then its max() (min() going
    down), and one look in the key's index tells whether a row follows."""
    if not q.unique or q.offset or len(q.order) != 1 or q.order[0].path:
        return None
    column = q.order[0].column
    if (column.base_type not in _MAX_KEY_TYPES or not column.builtin or column.is_array
            or column not in q.columns):
        return None
    return column


def _probed_page_sql(q: RowsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """The page's JSON straight from its rows (``to_json(x.*)`` per row, the columns named as in
    the answer), and a probe that walks the same rows again, the key columns only, to the
    page's last row and the one after it: their key, and whether a next page exists. With a
    one-column key among the page's columns, no second walk: the last key is the page's
    max() (or min()), and the probe one index look for a row after it (:func:`_single_key`).

    Why: numbering the rows (a window) and re-projecting each into the row object cost
    PostgreSQL some 15 % more than the plain ``json_agg`` of the same rows; the probe, a
    second walk of an index or table without filters, policies or a view's query, costs
    little (README "Performance"). Both read the statement's one snapshot.
    """
    params = _Params()
    where = _where_pieces(q, params)  # the cursor's position, if any (no filters here)
    order = _order_pieces(q.order, params)
    page = " LIMIT " + params.slot(q.limit)
    if q.offset:
        page += " OFFSET " + params.slot(q.offset)
    output = ", ".join(
        (_json_value_text(c, "r") + " AS " + c.quoted) if c.is_bytea else '"r".' + c.quoted
        for c in q.columns)
    single = _single_key(q)
    if single is not None:
        key = '"x".' + single.quoted
        desc = q.order[0].desc
        last = ("min(" if desc else "max(") + key + ")"
        # A scalar subquery with ORDER BY and LIMIT 1: PostgreSQL plans it as one index look
        # (an EXISTS loses both and may scan the table from its start).
        statement = [
            "SELECT p.j, p.n + CASE WHEN p.n = ", params.slot(q.limit), " THEN coalesce((SELECT 1 "
            "FROM ", q.relation.quoted, " r WHERE ", _qualified(single, "r"),
            " < p.k" if desc else " > p.k", *order, " LIMIT 1), 0) ELSE 0 END, "
            "ARRAY[p.k::text] FROM (SELECT string_agg(to_json(x.*)::text, ', ') AS j, "
            "count(*) AS n, ", last, " AS k FROM (SELECT ", output, " FROM ", q.relation.quoted,
            " r", *where, *order, page, ") x) p"]
        return compose(statement), params.values
    keys: list[Column] = []
    for t in q.order:
        if t.column not in keys:
            keys.append(t.column)
    last_key: list[Piece]
    if q.unique:
        key_text = ["array_agg(ARRAY[", *sqltext.join(", ", (["(", _expr(t, params, "k"), ")::text"]
                                                           for t in q.order)), "])"]
        last_key = ["ARRAY(SELECT unnest(k.keys[1:1]))"]
    else:
        key_text = ["NULL::text[]"]
        last_key = ["NULL::text[]"]
    statement = [
        "SELECT p.j, p.n + (k.n > 1)::int, ", *last_key, " FROM ("
        "SELECT string_agg(to_json(x.*)::text, ', ') AS j, count(*) AS n FROM (SELECT ",
        output, " FROM ", q.relation.quoted, " r", *where, *order, page, ") x) p, ("
        "SELECT count(*) AS n, ", *key_text, " AS keys FROM (SELECT ", _columns_text(keys),
        " FROM ", q.relation.quoted, " r", *where, *order,
        " LIMIT 2 OFFSET ", params.slot(q.offset + q.limit - 1), ") k) k"]
    return compose(statement), params.values


def _windowed_page_sql(q: RowsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """Fetches ``limit + 1`` rows to learn whether a next page exists; the JSON holds ``limit``.
    The rows are numbered once (a window over the page's rows, in their order); the JSON is
    built for the first ``limit`` only and the key of row ``limit`` alone (an aggregate's
    argument is evaluated only where its FILTER holds).
    """
    params = _Params()
    inner = _inner(q, params, q.limit + 1)
    limit = params.slot(q.limit)
    taken = {c.name for c in _needed(q)}
    number = "n"
    while number in taken:  # beside the page's columns, under a name none of them has
        number += "_"
    n = '"x".' + quote_ident(number)
    key: list[Piece]
    if q.unique:
        key = ["min(ARRAY[", *sqltext.join(", ", (["(", _expr(t, params, "x"), ")::text"]
                                                  for t in q.order)),
               f"]) FILTER (WHERE {n} = {limit})"]
    else:
        key = ["NULL::text[]"]
    statement = [
        f"SELECT string_agg(row_to_json(o.*)::text, ', ') FILTER (WHERE {n} <= {limit}), "
        "count(*), ", *key,
        " FROM (SELECT s.*, row_number() OVER () AS ", quote_ident(number), " FROM (", *inner,
        ") s) x ", *_json_object(q.columns, q.shape, params)]
    return compose(statement), params.values


def count_sql(q: RowsQuery, timeout_ms: int) -> tuple[sql.Composable, dict[str, Any]]:
    """``count=exact``: the rows matching the filters, under a statement timeout of its own.

    One round trip: ``set_config(..., true)`` lowers the timeout for the rest of the
    transaction (so the count goes last), then the count, whose result is the one fetched.
    Only lowers: the timeout in force (a role's own ``statement_timeout``, set by the auth
    preamble; pg_settings gives it in ms, 0 = none) wins when smaller.
    """
    params = _Params()
    limit = sql.Literal(int(timeout_ms))
    statement = compose([
        "SELECT set_config('statement_timeout', (SELECT CASE WHEN s.setting::bigint = 0 "
        "THEN ", limit, " ELSE least(", limit, ", s.setting::bigint) END FROM "
        "pg_catalog.pg_settings s WHERE s.name = 'statement_timeout')::text, true); "
        "SELECT count(*) FROM ", q.relation.quoted, " r",
        *_where_pieces(q, params, with_keyset=False)])
    return statement, params.values


def estimate_sql(q: RowsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """``EXPLAIN`` of the filtered relation: the planner's row estimate (``count=estimated``)."""
    params = _Params()
    statement = compose(["EXPLAIN (FORMAT JSON) SELECT 1 FROM ", q.relation.quoted, " r",
                         *_where_pieces(q, params, with_keyset=False)])
    return statement, params.values


def ndjson_sql(q: RowsQuery, limit: int) -> tuple[sql.Composable, dict[str, Any]]:
    """One JSON object per line.

    ``row_to_json`` embeds a ``json`` value's stored text verbatim, raw line breaks included; in
    valid JSON a raw CR or LF can only be whitespace between tokens (inside strings they are
    escaped), so turning them into spaces keeps the value and one row on one line.
    """
    params = _Params()
    inner = _inner(q, params, limit)
    statement = compose(["SELECT translate(row_to_json(o.*)::text, E'\\n\\r', '  ') FROM (",
                         *inner, ") x ", *_json_object(q.columns, q.shape, params)])
    return statement, params.values


def _csv_cell_text(column: Column, alias: str = "x") -> str:
    col = _qualified(column, alias)
    if column.is_bytea:
        text = _json_value_text(column)
    elif column.is_datetime:
        text = f"(to_json({col}) #>> '{{}}')"  # ISO 8601, as in JSON
    elif column.is_array or column.base_type in ("json", "jsonb"):
        text = f"to_json({col})::text"
    else:
        text = f"{col}::text"
    if column.plain_csv:  # numbers, booleans, ISO dates, uuids: never a comma, quote or newline
        return f"coalesce({text}, '')"
    # NULL is an empty cell; any other value is quoted (so '' and NULL differ, as in COPY).
    return f"""coalesce('"' || replace({text}, '"', '""') || '"', '')"""


def _csv_cell(column: Column, alias: str = "x") -> sql.Composable:
    return sql.SQL(_csv_cell_text(column, alias))


def csv_sql(q: RowsQuery, limit: int) -> tuple[sql.Composable, dict[str, Any]]:
    """One CSV line per row, built by PostgreSQL (RFC 4180 quoting).

    A relation without columns gives an empty line per row (as ``COPY ... CSV`` does).
    """
    params = _Params()
    line: Piece
    if q.shape is not None:
        line = q.shape.csv_sql("x", params)
    else:
        line = " || ',' || ".join(_csv_cell_text(c) for c in q.columns) if q.columns else "''"
    statement = compose(["SELECT ", line, " FROM (", *_inner(q, params, limit), ") x"])
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
            key: Sequence[str], shape: Any = None) -> tuple[sql.Composable, dict[str, Any]]:
    """The row whose primary key is ``key`` (text values, in key order), as JSON text; with a
    ``shape``, its items (embeds too)."""
    params = _Params()
    if shape is not None:
        columns = shape.columns()
    keys = [relation.by_name[name] for name in relation.primary_key]
    conditions: list[list[Piece]] = [
        ['"r".' + c.quoted + " = " + params.cast_text(value, c.type, c.collate)]
        for c, value in zip(keys, key, strict=True)]
    if shape is not None:  # !inner embeds: the row only when they have a row
        conditions += [[c] for c in shape.where_sql("r", params)]
    statement = compose([
        "SELECT row_to_json(o.*)::text FROM (SELECT ", _columns_text(columns), " FROM ",
        relation.quoted, " r WHERE ", *sqltext.join(" AND ", conditions), ") x ",
        *_json_object(columns, shape, params)])
    return statement, params.values


def position_sql(q: RowsQuery, cap: int) -> tuple[sql.Composable, dict[str, Any]]:
    """How many rows (filters applied) are not after the cursor: the offset of the next row.

    Counts ``cap`` rows at most, so that the cost stays bounded deep in a big table.
    """
    if q.after is None:
        raise ValueError("position_sql needs a keyset position")
    params = _Params()
    conditions: list[list[Piece]] = [[filter_sql(f, params)] for f in q.filters]
    if q.shape is not None:
        conditions += [[c] for c in q.shape.where_sql("r", params)]  # embeds' !inner
    conditions.append(["(", *keyset_sql(q.order, q.after, params), ") IS NOT TRUE"])
    statement = compose(["SELECT count(*) FROM (SELECT FROM ", q.relation.quoted, " r WHERE ",
                         *sqltext.join(" AND ", conditions), " LIMIT ", params.slot(cap),
                         ") c"])
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
    """Every (param, column, pattern) of a query's like/ilike filters (groups included)."""
    return filters.pattern_values(q.filters)


def typed_values(q: RowsQuery) -> list[tuple[str, Column, str]]:
    """Every (param, column, value) of a query that PostgreSQL casts, in request order.

    A cursor's values for JSON-path terms are not listed: text and jsonb text that this
    service wrote itself (and signed) always cast back.
    """
    found = filters.typed_values(q.filters)
    if q.after is not None:
        found += [("cursor", t.column, v) for t, v in zip(q.order, q.after, strict=True)
                  if v is not None and not t.path]
    return found
