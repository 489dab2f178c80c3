"""``select`` with related rows (embeds), aliases and JSON paths: grammar, routing, SQL.

Grammar (README "Related data")::

    select   = item ("," item)*
    item     = "*" | [alias ":"] column | [alias ":"] column ("->" | "->>") key ... |
               [alias ":"] relation ["!" hint] ["!inner"] "(" [select] ")"

A name that is exactly a column of the relation is that column, whatever it holds (``a->b``,
``x(y)``), so existing column names keep their meaning; ``"quoted"`` names are exact too.
An embed names an exposed relation related to the parent by a foreign key (catalog
relationships); ``hint`` (a foreign key's name or one of its columns, or the junction's name)
picks one of several. Many-to-one gives an object or null; one-to-many and many-to-many an
array (``[]`` when empty), ordered by the child's primary key unless ``order`` says otherwise.

Everything is built into the one statement of the request: each embed is a correlated
subquery (``json_agg`` over the child's rows) in the row's select list. The parent's key
columns are first captured under an alias of their own (``e<depth>``), so that the child can be
aliased ``r`` like a top-level relation and its filters and boolean groups (``or.<embed>=``,
:func:`route_group`) rendered by the same code (:func:`swagger_server.data.query.filter_sql`).
Identifiers come only from the catalog; JSON path keys, filter values and limits are bound
parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from swagger_server.data import filters, query
from swagger_server.data.catalog import Catalog, Column, Relation, Relationship
from swagger_server.data.filters import GROUP_OPS, Group
from swagger_server.data.query import Filter, OrderTerm, QueryError
from swagger_server.data.sqltext import ident

JSON_TYPES = ("json", "jsonb")
MAX_PATH_KEYS = 16
MAX_NAME_BYTES = 63  # PostgreSQL's identifier length (NAMEDATALEN - 1): a row's keys
# Items at most in one select list (each level): PostgreSQL's limit of a target list (1664).
MAX_SELECT_ITEMS = 1664
MAX_EMBED_ROWS = 100  # [API] MAX_EMBED_ROWS's default: rows at most in one embedded array


class AmbiguousEmbed(QueryError):
    """Several relationships fit an embed: the client picks one with ``relation!hint``."""

    def __init__(self, message: str, candidates: list[dict[str, object]]) -> None:
        super().__init__("select", message)
        self.candidates = candidates


AGGREGATES = ("avg", "count", "max", "min", "sum")
_AGGREGATE = re.compile(r"(?:(.*?)\.)?(avg|count|max|min|sum)\(\)")


@dataclass(frozen=True)
class Field:
    """One key of a row's JSON object: a column, a JSON path into one, or an aggregate."""

    name: str
    column: Column | None  # None only for count()
    path: tuple[tuple[str, str | int], ...] = ()  # ("->" or "->>", key or array index)
    aggregate: str | None = None  # avg count max min sum ([API] AGGREGATES = on)

    @property
    def plain(self) -> bool:
        return (not self.path and self.aggregate is None and self.column is not None
                and self.name == self.column.name)


@dataclass
class Embed:
    """Rows of ``relation`` related to each parent row, under the key ``name``."""

    name: str
    relation: Relation
    relationship: Relationship
    items: list[Field | Embed]
    inner: bool = False
    filters: list[Filter] = field(default_factory=list)
    order_text: list[str] = field(default_factory=list)
    order: tuple[OrderTerm, ...] = ()
    limit: int | None = None
    aggregate_order: sql.Composable | None = None  # an aggregated embed's ORDER BY (its fields)
    # Boolean groups on the embed (``or.<embed>=(...)``, :func:`route_group`): each must hold,
    # like the filters, for a row to be embedded.
    groups: list[Group] = field(default_factory=list)

    @property
    def to_one(self) -> bool:
        return self.relationship.to_one

    def embeds(self) -> list[Embed]:
        return [i for i in self.items if isinstance(i, Embed)]

    @property
    def aggregated(self) -> bool:
        return any(isinstance(i, Field) and i.aggregate for i in self.items)


@dataclass
class Shape:
    """What ``select`` asks of a relation: fields and embeds, in order."""

    relation: Relation
    items: list[Field | Embed]
    # Aggregated shapes: their ORDER BY, made from ``order`` (swagger_server.data.aggregate).
    order_sql: sql.Composable = field(default_factory=lambda: sql.SQL(""))

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.items]

    def embeds(self) -> list[Embed]:
        return [i for i in self.items if isinstance(i, Embed)]

    @property
    def plain(self) -> bool:
        """Only columns under their own names: the classic select, built the classic way."""
        return all(isinstance(i, Field) and i.plain for i in self.items)

    def columns(self) -> tuple[Column, ...]:
        """The parent's columns the shape reads: its fields' and the embeds' join keys."""
        return _read_columns(self.relation, self.items)

    @property
    def aggregated(self) -> bool:
        """``select=status,total.sum()``: one row per group (swagger_server.data.aggregate)."""
        return any(isinstance(i, Field) and i.aggregate for i in self.items)

    # Hooks :mod:`swagger_server.data.query` calls (it does not import this module).

    def object_sql(self, alias: str, params: query._Params) -> sql.Composable:
        return select_list(self.items, alias, params)

    def where_sql(self, alias: str, params: query._Params) -> list[sql.Composable]:
        return inner_conditions(self.items, alias, params)

    def csv_sql(self, alias: str, params: query._Params) -> sql.Composable:
        if not self.items:
            return sql.SQL("''")
        return sql.SQL(" || ',' || ").join(csv_cell(i, alias, params) for i in self.items)

    def walk(self) -> Iterator[Embed]:
        stack = self.embeds()
        while stack:
            embed = stack.pop(0)
            yield embed
            stack.extend(embed.embeds())


def _read_columns(relation: Relation, items: Sequence[Field | Embed]) -> tuple[Column, ...]:
    found: dict[Column, None] = {}  # ordered and O(1) per column (a select has up to 1664)
    for item in items:
        if isinstance(item, Field):
            cols = [item.column] if item.column is not None else []
        else:
            cols = [relation.by_name[n] for n in item.relationship.source_columns]
        found.update(dict.fromkeys(cols))
    return tuple(found)


# ------------------------------------------------------------------ parsing select


@dataclass
class _Budget:
    max_depth: int
    max_embeds: int
    aggregates: bool = False
    used: int = 0
    max_rows: int = MAX_EMBED_ROWS  # every to-many embed's LIMIT (limit.<embed> may lower it)


def parse(catalog: Catalog, relation: Relation, text: str | None, max_depth: int,
          max_embeds: int, aggregates: bool = False,
          max_embed_rows: int = MAX_EMBED_ROWS) -> Shape:
    """``select`` as a :class:`Shape` (all columns when absent or ``*``)."""
    if text is None or text.strip() == "*":
        return Shape(relation, [Field(c.name, c) for c in relation.columns])
    query.check_text("select", text)
    budget = _Budget(max_depth, max_embeds, aggregates, max_rows=max_embed_rows)
    shape = Shape(relation, _items(catalog, relation, text, 0, budget))
    if shape.aggregated and shape.embeds():
        raise QueryError("select", "select: aggregates at the top level take no embeds (an "
                                   "embed may aggregate its own rows)")
    return shape


def _items(catalog: Catalog, relation: Relation, text: str, depth: int,
           budget: _Budget) -> list[Field | Embed]:
    raws = _split_top(text)
    if len(raws) > MAX_SELECT_ITEMS:
        raise QueryError("select", f"select: at most {MAX_SELECT_ITEMS} items in one list "
                                   "(PostgreSQL's limit of a row's columns)")
    items: dict[str, Field | Embed] = {}  # by output name: each item is checked in O(1)
    star = False
    for raw in raws:
        item = raw.strip()
        if not item:
            raise QueryError("select", "select: empty column name")
        if item == "*":
            if star:
                continue  # a second * adds nothing (and would cost a pass over the columns)
            star = True
            new: list[Field | Embed] = [Field(c.name, c) for c in relation.columns]
        else:
            new = [_item(catalog, relation, item, depth, budget)]
        for one in new:
            _add(items, one)
    return list(items.values())


def _add(items: dict[str, Field | Embed], item: Field | Embed) -> None:
    if len(item.name.encode("utf-8")) > MAX_NAME_BYTES:
        # PostgreSQL would cut the key to 63 bytes (so two long names could collide)
        raise QueryError("select", f"select: the name {_shown(item.name)} is longer than "
                                   f"{MAX_NAME_BYTES} bytes; give a shorter alias")
    known = items.get(item.name)
    if known is not None:
        if known == item:
            return  # the same column twice: once, as before embeds existed
        raise QueryError("select", f"select: two items named {_shown(item.name)}; give one "
                                   "an alias (alias:item)")
    items[item.name] = item


def _item(catalog: Catalog, relation: Relation, item: str, depth: int,
          budget: _Budget) -> Field | Embed:
    column = relation.column(item)
    if column is not None:
        return Field(column.name, column)
    aggregate = _aggregate(relation, item, budget)
    if aggregate is not None:
        return aggregate
    if item.startswith('"'):
        return _quoted_field(relation, item, None)
    if item.endswith(")") and "(" in item and not _quote_before_paren(item):
        return _embed(catalog, relation, item, depth, budget)
    alias, colon, rest = item.partition(":")
    if colon and ('"' in alias or "->" in alias):  # the ':' of a quoted key ("a:b"), no alias
        alias, colon, rest = "", "", item
    if colon:
        alias = alias.strip()
        if not alias:
            raise QueryError("select", f"select: empty alias in {_shown(item)}")
        rest = rest.strip()
        if rest.startswith('"'):
            return _quoted_field(relation, rest, alias)
        column = relation.column(rest)
        if column is not None:
            return Field(alias, column)
        if "->" in rest:
            return _json_path(relation, rest, alias)
        query._column(relation, "select", rest)  # raises: no such column
    if "->" in item:
        return _json_path(relation, item, None)
    query._column(relation, "select", item)  # raises: no such column
    raise AssertionError("unreachable")


def _aggregate(relation: Relation, item: str, budget: _Budget) -> Field | None:
    """``[alias:]column.fn()`` or ``[alias:]count()``; None when the item is no aggregate."""
    alias, colon, rest = item.partition(":")
    if not colon or "(" in alias:
        alias, rest = "", item
    match = _AGGREGATE.fullmatch(rest.strip())
    if match is None:
        return None
    name, fn = match.group(1), match.group(2)
    if name is None and fn != "count":
        return None
    if not budget.aggregates:
        raise QueryError("select", f"select: aggregates ({_shown(item)}) are off on this "
                                   "service ([API] AGGREGATES)")
    column = query._column(relation, "select", name) if name is not None else None
    return Field(alias.strip() or fn, column, aggregate=fn)


def _quote_before_paren(item: str) -> bool:
    return '"' in item[:item.index("(")]


def _quoted_field(relation: Relation, item: str, alias: str | None) -> Field:
    names = query.split_names("select", item)
    if len(names) != 1:
        raise QueryError("select", f"select: unexpected text after a quoted name in "
                                   f"{_shown(item)}")
    column = query._column(relation, "select", names[0])
    return Field(alias or column.name, column)


def _json_path(relation: Relation, text: str, alias: str | None) -> Field:
    """``column->key->>key``: ``->`` keeps JSON, ``->>`` gives text (last step only). Keys as
    in filters and order (:func:`filters.parse_path`): ``"a.b"`` quoted is exact; an unquoted
    key ends at ``.``, which here can only be a mistake (quote such a key)."""
    start = text.index("->")
    name = text[:start].strip()
    column = query._column(relation, "select", name)
    if column.base_type not in JSON_TYPES:
        raise QueryError("select", f"select: {_shown(name)} is {column.display_type}, not json "
                                   "or jsonb: -> and ->> apply to JSON columns only")
    steps, end = filters.parse_path("select", column, text, start)
    if end != len(text):
        raise QueryError("select", f"select: unexpected {_shown(text[end:])} after the JSON "
                                   f"path in {_shown(text)}; a key holding '.' is quoted: "
                                   '"a.b"')
    path = tuple((s.arrow, s.key) for s in steps)
    return Field(alias or str(path[-1][1]), column, path)


def _embed(catalog: Catalog, parent: Relation, item: str, depth: int,
           budget: _Budget) -> Embed:
    head, body = item[:item.index("(")], item[item.index("(") + 1:-1]
    alias, colon, target = head.partition(":")
    if not colon:
        alias, target = "", head
    alias, target = alias.strip(), target.strip()
    if colon and not alias:
        raise QueryError("select", f"select: empty alias in {_shown(head)}")
    name, *marks = target.split("!")
    inner = "inner" in marks
    hints = [m for m in marks if m != "inner"]
    if len(hints) > 1 or marks.count("inner") > 1 or any(not m for m in marks):
        raise QueryError("select", f"select: expected relation[!hint][!inner](...), got "
                                   f"{_shown(head)}")
    if depth + 1 > budget.max_depth:
        raise QueryError("select", f"select: embeds nest at most {budget.max_depth} deep "
                                   "(MAX_EMBED_DEPTH)")
    budget.used += 1
    if budget.used > budget.max_embeds:
        raise QueryError("select", f"select: at most {budget.max_embeds} embeds in one "
                                   "request (MAX_EMBEDS)")
    child = catalog.resolve(name) if name else None
    if child is None:
        raise QueryError("select", f"select: no table or view named {_shown(name)} to embed")
    relationship = _relationship(catalog, parent, child, hints[0] if hints else None)
    items = _items(catalog, child, body, depth + 1, budget) if body.strip() else []
    embed = Embed(alias or name, child, relationship, items, inner=inner)
    if embed.aggregated and (embed.to_one or embed.embeds()):
        raise QueryError("select", f"select: {embed.name} aggregates: only a one-to-many or "
                                   "many-to-many embed without embeds of its own may")
    if not embed.to_one:
        embed.order, _ = query.parse_order(child, None)
        embed.limit = budget.max_rows  # an array is never unbounded (a parent may have 1M)
    return embed


def _relationship(catalog: Catalog, parent: Relation, child: Relation,
                  hint: str | None) -> Relationship:
    found = catalog.relationships_between(parent, child)
    if hint is not None:
        found = [r for r in found if hint in r.hints()]
        direct = [r for r in found if hint in r.direct_hints()]
        if len(found) > 1 and direct:  # a key seen both ways: the hint names one direction
            found = direct
    if not found:
        why = f" matching {_shown(hint)}" if hint is not None else ""
        raise QueryError("select", f"select: no relationship{why} between {parent.name} and "
                                   f"{child.name} (no foreign key the API can see)")
    if len(found) > 1:
        raise AmbiguousEmbed(
            f"select: {parent.name} and {child.name} are related in {len(found)} ways; pick "
            f"one with {child.name}!<hint>(...), a hint from the candidates",
            [r.candidate() for r in found])
    return found[0]


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses and double quotes (linear, no recursion)."""
    items, start, depth, quoted = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted  # "" inside quotes toggles twice: still quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise QueryError("select", "select: unbalanced parentheses")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if quoted:
        raise QueryError("select", "select: unterminated double quote")
    if depth:
        raise QueryError("select", "select: unbalanced parentheses")
    items.append(text[start:])
    return items


def _shown(name: str) -> str:
    return repr(name if len(name) <= 64 else name[:64] + "...")


# ------------------------------------------------------------------ routing filter/order/limit


def _find(embeds: Sequence[Embed], text: str) -> tuple[Embed, str] | None:
    """The embed whose name prefixes ``text`` (``name.``), longest name first; and the rest."""
    for embed in sorted(embeds, key=lambda e: -len(e.name)):
        if text.startswith(embed.name + ".") and len(text) > len(embed.name) + 1:
            return embed, text[len(embed.name) + 1:]
    return None


def route_filter(shape: Shape, text: str) -> Filter | None:
    """A filter of the top-level relation (returned), or of an embed (attached to it; None).

    Precedence: a column of the relation wins (``a.b.eq.1`` with a column ``a.b`` filters it);
    otherwise ``<embed>.<rest>`` goes to that embed, whose own columns win over its embeds.
    """
    try:
        return query.parse_filter(shape.relation, text)
    except QueryError as top_error:
        embeds, rest, error = shape.embeds(), text, top_error
        while True:
            found = _find(embeds, rest)
            if found is None:
                raise error from None
            embed, rest = found
            try:
                embed.filters.append(query.parse_filter(embed.relation, rest))
                return None
            except QueryError as exc:
                embeds, error = embed.embeds(), exc


def route_order(shape: Shape, text: str | None) -> str | None:
    """The top-level part of ``order``; items naming an embed (``<embed>.<column>...``) go to
    that embed's order (same precedence as filters). Each embed's order gets its primary key
    as tiebreaker."""
    if text is None or not text.strip() or not shape.embeds():
        return text
    query.check_text("order", text)
    top: list[str] = []
    items = query.split_raw("order", text, blanks_around_quotes=True, tails=True)
    if len(items) > query.MAX_ORDER_TERMS:
        raise QueryError("order", f"order: at most {query.MAX_ORDER_TERMS} columns")
    for item, quoted, tail in items:
        if quoted:
            top.append('"' + item.replace('"', '""') + '"' + tail)
            continue
        item = item.strip()
        target = _order_target(shape, item)
        if target is None:
            top.append(item)
        else:
            embed, rest = target
            if embed.to_one:
                raise QueryError("order", f"order: {embed.name} is a single object "
                                          "(many-to-one): there is nothing to order")
            embed.order_text.append(rest)
    for embed in shape.walk():
        if embed.order_text and embed.aggregated:
            embed.aggregate_order = _aggregate_order(embed)
        elif embed.order_text:
            embed.order, _ = query.parse_order(embed.relation, ",".join(embed.order_text))
    return ",".join(top) if top else None


def _aggregate_order(embed: Embed) -> sql.Composable:
    """``order=<embed>.<field>.desc`` of an aggregated embed: its output fields, as at the top
    level (swagger_server.data.aggregate; imported here, as it imports this module)."""
    from swagger_server.data import aggregate
    return aggregate.order_sql(Shape(embed.relation, embed.items), ",".join(embed.order_text))


def _order_target(shape: Shape, item: str) -> tuple[Embed, str] | None:
    relation, embeds, rest = shape.relation, shape.embeds(), item
    owner: Embed | None = None
    while True:
        if owner is not None and owner.aggregated:
            return owner, rest  # its output fields, checked by _aggregate_order
        try:
            query.parse_order(relation, rest)
            return (owner, rest) if owner is not None else None
        except QueryError:
            found = _find(embeds, rest)
            if found is None:
                if owner is None:
                    return None  # the top level's own error is raised when it parses
                query.parse_order(relation, rest)  # raises the embed's error
            owner, rest = found  # type: ignore[misc]
            relation, embeds = owner.relation, owner.embeds()


def _embed_at(shape: Shape, param: str, prefix: str) -> Embed:
    """The embed named after a parameter's ``prefix`` (``limit.``): ``order_items``, nested
    ``orders.order_items`` (each name an embed of the previous one; its alias when given)."""
    path = param[len(prefix):]
    embeds, embed = shape.embeds(), None
    while path:
        found = next((e for e in sorted(embeds, key=lambda e: -len(e.name))
                      if path == e.name or path.startswith(e.name + ".")), None)
        if found is None:
            raise QueryError(param, f"{param[:60]}: no embed named {_shown(path)} in select")
        embed, path = found, path[len(found.name):]
        if path == ".":  # limit.order_items. names no embed after the dot
            raise QueryError(param, f"{param[:60]}: expected an embed's name after the last '.'")
        path = path[1:]
        embeds = found.embeds()
    if embed is None:
        raise QueryError(param, f"{param[:60]}: expected {prefix}<embed>")
    return embed


def route_limit(shape: Shape, param: str, raw: str, maximum: int) -> None:
    """``limit.<embed>[.<embed>...]=n``: at most n rows in that embedded array (1..maximum,
    ``MAX_EMBED_ROWS``: the cap every array has anyway; more is a 400, not a silent clamp)."""
    embed = _embed_at(shape, param, "limit.")
    if embed.to_one:
        raise QueryError(param, f"{param[:60]}: {embed.name} is a single object (many-to-one)")
    limit = query.parse_whole(param[:60], raw)
    if not 1 <= limit <= maximum:
        raise QueryError(param, f"{param[:60]}: must be between 1 and {maximum} "
                                f"(MAX_EMBED_ROWS), got {raw[:40]}")
    embed.limit = limit


# or.<embed>, and.<embed>, not.or.<embed>, not.and.<embed>: longest first (not.or before or)
GROUP_PREFIXES = tuple(f"{neg}{op}." for neg in ("not.", "") for op in GROUP_OPS)


def group_name(param: str) -> str | None:
    """``or`` of ``or.order_items`` (``not.or`` of ``not.or.orders.order_items``); None when
    the parameter is no group on an embed."""
    prefix = next((p for p in GROUP_PREFIXES if param.startswith(p)), None)
    return prefix[:-1] if prefix is not None else None


def route_group(shape: Shape, param: str, text: str) -> Group:
    """``or.<embed>[.<embed>...]=(...)`` (and ``and.``, ``not.or.``, ``not.and.``): a boolean
    group of the embed's own columns that narrows its rows, as a ``filter`` on it does. Returned
    so that the caller counts its conditions with the request's other groups."""
    name = group_name(param)
    if name is None:
        raise QueryError(param, f"{param[:60]}: expected or.<embed>, and.<embed>, "
                                "not.or.<embed> or not.and.<embed>")
    embed = _embed_at(shape, param, name + ".")
    group = query.parse_group(embed.relation, name, text, param=param)
    embed.groups.append(group)
    return group


def typed_values(shape: Shape | None) -> list[tuple[str, Column, str]]:
    """(param, column, value) of the embeds' filters that PostgreSQL casts (to name a culprit)."""
    if shape is None:
        return []
    found: list[tuple[str, Column, str]] = []
    for embed in shape.walk():
        found += query.typed_values(query.RowsQuery(embed.relation, (), _conditions_of(embed)))
    return found


def pattern_values(shape: Shape | None) -> list[tuple[str, Column, str]]:
    if shape is None:
        return []
    found: list[tuple[str, Column, str]] = []
    for embed in shape.walk():
        found += query.pattern_values(query.RowsQuery(embed.relation, (), _conditions_of(embed)))
    return found


def _conditions_of(embed: Embed) -> tuple[Filter | Group, ...]:
    return (*embed.filters, *embed.groups)


# ------------------------------------------------------------------ building SQL


def select_list(items: Sequence[Field | Embed], alias: str, params: query._Params,
                depth: int = 0) -> sql.Composable:
    """``<value> AS "<name>", ...`` for a row of ``alias``: what ``row_to_json`` turns into the
    row's object (keys in select order)."""
    if not items:
        return sql.SQL("")
    return sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(value_sql(i, alias, params, depth), ident(i.name))
        for i in items)


def value_sql(item: Field | Embed, alias: str, params: query._Params,
              depth: int = 0) -> sql.Composable:
    if isinstance(item, Embed):
        return _embed_sql(item, alias, params, depth + 1)
    if item.column is None:
        return sql.SQL("count(*)")
    if item.aggregate is not None:  # of the column itself (bytea has no sum; min of text is)
        return sql.SQL("{}({})").format(sql.SQL(item.aggregate),
                                        sql.SQL("{}.{}").format(ident(alias),
                                                                ident(item.column.name)))
    value = query.json_value(item.column, alias)
    for arrow, key in item.path:
        value = sql.SQL("({} {} {})").format(value, sql.SQL(arrow), params.add(key))
    return value


def csv_cell(item: Field | Embed, alias: str, params: query._Params) -> sql.Composable:
    """One CSV cell: a plain column as before; a JSON path's or an embed's JSON as text."""
    if isinstance(item, Field) and not item.path and item.column is not None \
            and item.aggregate is None:
        return query._csv_cell(item.column, alias)
    value = value_sql(item, alias, params)
    if isinstance(item, Field) and item.path and item.path[-1][0] == "->>":
        text = value
    elif isinstance(item, Field) and item.aggregate is not None:
        text = sql.SQL("{}::text").format(value)
    else:
        text = sql.SQL("to_json({})::text").format(value)
    return sql.SQL("""coalesce('"' || replace({}, '"', '""') || '"', '')""").format(text)


def _capture(embed: Embed, parent: str, depth: int) -> tuple[sql.Composable, str]:
    """``(SELECT parent.a AS k0, ...) e<depth>``: the parent's join columns, out of the way of
    the child's alias ``r``."""
    name = f"e{depth}"
    columns = sql.SQL(", ").join(
        sql.SQL("{}.{} AS {}").format(ident(parent), ident(c),
                                      ident(f"k{i}"))
        for i, c in enumerate(embed.relationship.source_columns))
    return sql.SQL("(SELECT {}) {}").format(columns, ident(name)), name


def _join(embed: Embed, captured: str) -> sql.Composable:
    rel = embed.relationship
    if rel.junction is None:
        return sql.SQL(" AND ").join(
            sql.SQL("r.{} = {}.{}").format(ident(t), ident(captured),
                                           ident(f"k{i}"))
            for i, t in enumerate(rel.target_columns))
    on_target = [sql.SQL("j.{} = r.{}").format(ident(j), ident(t))
                 for j, t in zip(rel.junction_target, rel.target_columns, strict=True)]
    on_source = [sql.SQL("j.{} = {}.{}").format(ident(j), ident(captured),
                                                ident(f"k{i}"))
                 for i, j in enumerate(rel.junction_source)]
    return sql.SQL("EXISTS (SELECT FROM {}.{} j WHERE {})").format(
        ident(rel.junction[0]), ident(rel.junction[1]),
        sql.SQL(" AND ").join(on_target + on_source))


def _conditions(embed: Embed, captured: str, params: query._Params,
                depth: int) -> sql.Composable:
    conditions = [_join(embed, captured)]
    conditions += [query.filter_sql(f, params) for f in embed.filters]
    conditions += [query.filter_sql(g, params) for g in embed.groups]
    conditions += inner_conditions(embed.items, "r", params, depth)
    return sql.SQL(" AND ").join(conditions)


def _embed_sql(embed: Embed, parent: str, params: query._Params,
               depth: int) -> sql.Composable:
    """The embedded value: a JSON object or null (to-one), a JSON array (to-many)."""
    captured_sql, captured = _capture(embed, parent, depth)
    obj = select_list(embed.items, "r", params, depth)
    if embed.aggregated:
        return _aggregated_embed_sql(embed, captured_sql, captured, obj, params, depth)
    rows = sql.SQL(
        "SELECT row_to_json(o.*) AS j FROM {}.{} r CROSS JOIN LATERAL (SELECT {}) o WHERE {}{}{}"
    ).format(
        ident(embed.relation.schema), ident(embed.relation.name), obj,
        _conditions(embed, captured, params, depth), query._order_by(embed.order, params),
        sql.SQL(" LIMIT {}").format(params.add(1 if embed.to_one else embed.limit))
        if embed.to_one or embed.limit is not None else sql.SQL(""))
    # A to-one embed reads one row (a foreign key's target is unique; a view repeating a key
    # gives its first row). A to-many embed aggregates its rows in their order.
    value = sql.SQL("s.j") if embed.to_one else sql.SQL("coalesce(json_agg(s.j), '[]'::json)")
    return sql.SQL("(SELECT {} FROM {} CROSS JOIN LATERAL ({}) s)").format(
        value, captured_sql, rows)


def group_by(items: Sequence[Field | Embed], alias: str,
             params: query._Params) -> sql.Composable:
    """`` GROUP BY`` the non-aggregated fields (nothing when all are aggregates)."""
    grouped = [value_sql(i, alias, params) for i in items
               if isinstance(i, Field) and i.aggregate is None]
    if not grouped:
        return sql.SQL("")
    return sql.SQL(" GROUP BY ") + sql.SQL(", ").join(grouped)


def _aggregated_embed_sql(embed: Embed, captured_sql: sql.Composable, captured: str,
                          obj: sql.Composable, params: query._Params,
                          depth: int) -> sql.Composable:
    """An embed whose items aggregate: one object per group of the parent's related rows."""
    grouped = [i for i in embed.items if isinstance(i, Field) and i.aggregate is None]
    order = embed.aggregate_order or sql.SQL("")
    if grouped and embed.aggregate_order is None:
        order = sql.SQL(" ORDER BY ") + sql.SQL(", ").join(
            ident(i.name) for i in grouped)
    limit = sql.SQL(" LIMIT {}").format(params.add(embed.limit)) if embed.limit is not None \
        else sql.SQL("")  # groups, at most MAX_EMBED_ROWS (or limit.<embed>) of them
    rows = sql.SQL("SELECT {} FROM {}.{} r WHERE {}{}{}{}").format(
        obj, ident(embed.relation.schema), ident(embed.relation.name),
        _conditions(embed, captured, params, depth), group_by(embed.items, "r", params), order,
        limit)
    return sql.SQL("(SELECT coalesce(json_agg(row_to_json(g.*)), '[]'::json) FROM {} "
                   "CROSS JOIN LATERAL ({}) g)").format(captured_sql, rows)


def inner_conditions(items: Sequence[Field | Embed], parent: str, params: query._Params,
                     depth: int = 0) -> list[sql.Composable]:
    """``relation!inner``: the parent row only when the embed (filters applied) has a row."""
    found = []
    for embed in items:
        if isinstance(embed, Embed) and embed.inner:
            captured_sql, captured = _capture(embed, parent, depth + 1)
            found.append(sql.SQL(
                "EXISTS (SELECT FROM {} CROSS JOIN LATERAL (SELECT FROM {}.{} r WHERE {}) s)"
            ).format(captured_sql, ident(embed.relation.schema),
                     ident(embed.relation.name),
                     _conditions(embed, captured, params, depth + 1)))
    return found


def hint_problem_extension(exc: AmbiguousEmbed) -> dict[str, Any]:
    return {"candidates": exc.candidates}
