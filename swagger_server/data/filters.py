"""The filter grammar of the data API: ``filter=``, ``or=``/``and=`` groups, JSON paths, and the
SQL of a condition.

A condition is ``<target>.[not.]<op>[(<language>)].<value>``. The target is a column of the
relation (from the catalog) or a JSON path into a json/jsonb column
(``preferences->settings->>theme``). Parsing gives :class:`Filter` and :class:`Group` objects;
:func:`filter_sql` renders either with column names qualified by the statement's alias for the
relation (``r``, at the top level and inside an embed's subquery) and every value, path key and
text search configuration as a bound parameter. Nothing of the request's text becomes SQL text.

Limits against abuse (a 400 ``/problems/invalid-parameter`` beyond them) are constants: they
bound the parser's and the planner's work per request, which the service's own size limits
(``MAX_VALUE_CHARS`` per value, ``MAX_FILTERS`` filters) already make finite; no deployment
needs more, so they are not configuration.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from psycopg2 import sql

from swagger_server.data.catalog import Column, Relation
from swagger_server.data.sqltext import no_placeholder, quote_ident
from swagger_server.data.syntax import QueryError, check_text, column_of, split_list

_COMPARISONS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_CONTAINMENT = {"cs": "@>", "cd": "<@", "ov": "&&"}
# Full-text search: the tsquery function of each operator.
_TEXT_SEARCH = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery",
                "wfts": "websearch_to_tsquery"}
OPS = (*_COMPARISONS, "isdistinct", "like", "ilike", "in", "is", *_CONTAINMENT, *_TEXT_SEARCH)
_IS_VALUES = {"null": "IS NULL", "notnull": "IS NOT NULL", "true": "IS TRUE", "false": "IS FALSE"}
GROUP_OPS = ("and", "or")

MAX_FILTERS = 50  # filter= parameters
MAX_IN_VALUES = 1000  # values in one in.(...) list
MAX_GROUP_DEPTH = 8  # or/and nesting: or=(a.eq.1,and(b.eq.2,or(...))) is depth 3
MAX_GROUP_CONDITIONS = 100  # conditions (column.op.value) in all or/and groups of a request
MAX_JSON_PATH = 16  # keys in one JSON path (preferences->a->b->>c has 3)
MAX_LANGUAGE_CHARS = 63  # a text search configuration's name (PostgreSQL's NAMEDATALEN - 1)
# to_tsquery (!) and websearch_to_tsquery (-) stack each negation in a row; from 32 on,
# PostgreSQL fails with an internal error ("tsquery stack too small") instead of a 400.
MAX_NEGATIONS_IN_A_ROW = 16
_NEGATIONS = re.compile(rf"(?:[!-]\s*){{{MAX_NEGATIONS_IN_A_ROW + 1},}}")

# [not.]<op>[(<language>)]. : the language may hold anything but parentheses (a quoted
# schema-qualified name, say); it is a bound value cast to regconfig, never SQL text.
_OPERATOR = re.compile(rf"(not\.)?([a-z]+)(?:\(([^()]{{1,{MAX_LANGUAGE_CHARS}}})\))?\.")
_OPERATOR_SPAN = 4 + max(len(op) for op in OPS) + MAX_LANGUAGE_CHARS + 3
_NUMBER = re.compile(r"\s*[-+]?[0-9]+\s*")
_INDEX = re.compile(r"-?[0-9]{1,9}")  # a JSON array index (jsonb takes int4)


class Params(Protocol):
    """Where bound values go: :class:`swagger_server.data.query._Params` or the like."""

    def add(self, value: Any) -> sql.Composable: ...


@dataclass(frozen=True)
class PathStep:
    arrow: str  # "->" keeps JSON, "->>" gives text (only as the last step)
    key: str | int  # an int indexes an array


@dataclass(frozen=True)
class Filter:
    column: Column
    op: str
    values: tuple[str, ...]  # one value; several for "in"; the keyword for "is"
    negated: bool = False  # not.<op>: NOT (condition)
    path: tuple[PathStep, ...] = ()  # a JSON path into the column
    language: str | None = None  # fts ops: the text search configuration, None for the default

    @property
    def conditions(self) -> int:
        return 1


@dataclass(frozen=True)
class Group:
    op: str  # "and" or "or"
    items: tuple[Filter | Group, ...]
    negated: bool = False
    param: str = "or"  # the request parameter it came from: named in a 400 about its values

    @property
    def conditions(self) -> int:
        return sum(item.conditions for item in self.items)


Condition = Filter | Group


# ------------------------------------------------------------------ targets and JSON paths


def path_type(path: tuple[PathStep, ...], column: Column) -> str:
    """The SQL type a target has: the column's, text after ``->>``, jsonb after ``->``."""
    if not path:
        return column.type
    return "text" if path[-1].arrow == "->>" else "jsonb"


def path_collate(path: tuple[PathStep, ...], column: Column) -> str:
    """The COLLATE clause a value compared with the target takes: the column's
    (catalog.Column.collate), none after a JSON path."""
    return "" if path else column.collate


def path_column(column: Column, path: tuple[PathStep, ...]) -> Column:
    """The column as a JSON path makes it look (its type) for value checks and messages."""
    if not path:
        return column
    kind = path_type(path, column)
    return replace(column, type=kind, display_type=kind, nullable=True, base_type=kind,
                   is_array=False)


def parse_path(param: str, column: Column, text: str, start: int) -> tuple[tuple[PathStep, ...],
                                                                            int]:
    """The JSON path at ``text[start:]`` (which begins with ``->``) and where it ends.

    A key runs to the next ``.`` or ``->``; a key in double quotes is taken exactly (``""`` is a
    quote), so it may hold dots, arrows, commas. An unquoted key of digits (``tags->0``, or
    negative: from the end) indexes an array; quoted, ``"0"`` is an object key.
    """
    if column.base_type not in ("json", "jsonb"):
        raise QueryError(param, f"{param}: a JSON path (->, ->>) needs a json or jsonb column; "
                                f"{column.name!r} is {column.display_type}")
    steps: list[PathStep] = []
    i = start
    while text.startswith("->", i):
        if steps and steps[-1].arrow == "->>":
            raise QueryError(param, f"{param}: ->> gives text and must be the path's last step")
        if len(steps) == MAX_JSON_PATH:
            raise QueryError(param, f"{param}: at most {MAX_JSON_PATH} keys in a JSON path")
        arrow = "->>" if text.startswith("->>", i) else "->"
        i += len(arrow)
        key, i = _path_key(param, text, i)
        steps.append(PathStep(arrow, key))
    return tuple(steps), i


def _path_key(param: str, text: str, i: int) -> tuple[str | int, int]:
    if text.startswith('"', i):
        chars: list[str] = []
        i += 1
        while i < len(text):
            if text[i] == '"':
                if text.startswith('""', i):
                    chars.append('"')
                    i += 2
                    continue
                return "".join(chars), i + 1
            chars.append(text[i])
            i += 1
        raise QueryError(param, f"{param}: unterminated double quote in a JSON path key")
    end = i
    while end < len(text) and text[end] != "." and not text.startswith("->", end):
        end += 1
    key = text[i:end]
    if not key:
        raise QueryError(param, f"{param}: empty key in a JSON path")
    if _INDEX.fullmatch(key):
        return int(key), end
    return key, end


def target_sql(column: Column, path: tuple[PathStep, ...], params: Params,
               alias: str | None = None) -> sql.Composable:
    """The column (qualified by ``alias`` if given), or the JSON value its path leads to; path
    keys are bound parameters cast to text or integer (the operator they select)."""
    # The column's quoted name made once per catalog object (no Identifier to render per use).
    expr: sql.Composable = sql.SQL(
        column.quoted if alias is None else quote_ident(alias) + "." + column.quoted)
    if not path:
        return expr
    if column.base_type == "json" and path[-1].arrow == "->":
        # json has no equality or ordering; compared and sorted as jsonb.
        return sql.SQL("({})::jsonb").format(_path_expr(expr, path, params))
    return _path_expr(expr, path, params)


def _path_expr(expr: sql.Composable, path: tuple[PathStep, ...],
               params: Params) -> sql.Composable:
    for step in path:
        kind = "integer" if isinstance(step.key, int) else "text"
        expr = sql.SQL("({} {} CAST({} AS {}))").format(
            expr, sql.SQL(step.arrow), params.add(step.key), sql.SQL(kind))
    return expr


# ------------------------------------------------------------------ parsing


def parse_filter(relation: Relation, text: str, param: str = "filter",
                 quoted_values: bool = False) -> Filter:
    """``<target>.[not.]<op>[(<language>)].<value>``; the column may hold dots (the catalog
    decides where it ends).

    Linear in the text's length: only the cuts where a column name of this relation can end
    are tried (one per distinct name length), shortest first, never one per dot.
    ``quoted_values`` (inside groups): a value in double quotes is unquoted (``""`` is a quote).
    """
    check_text(param, text)
    for length in relation.name_lengths:
        after = text[length:length + 2]
        if after[:1] != "." and after != "->":
            continue
        column = relation.column(text[:length])
        if column is None:
            continue
        path: tuple[PathStep, ...] = ()
        end = length
        if after == "->":
            path, end = parse_path(param, column, text, length)
            if text[end:end + 1] != ".":
                raise QueryError(param, f"{param}: expected .<op>.<value> after the JSON path, "
                                        f"got {text[end:end + 40]!r}")
        found = _OPERATOR.match(text[end + 1:end + 1 + _OPERATOR_SPAN])
        if found is None or found.group(2) not in OPS:
            if path:
                break
            continue
        negated, op, language = bool(found.group(1)), found.group(2), found.group(3)
        value = text[end + 1 + found.end():]
        return _filter_value(param, column, path, op, negated, language,
                             _unquoted(param, value) if quoted_values else value)
    parts = text.split(".")
    for i in range(1, len(parts) - 1):
        if parts[i] in OPS or parts[i] == "not":  # before the first op: the column asked for
            column_of(relation, param, ".".join(parts[:i]).partition("->")[0])  # raises
    raise QueryError(
        param,
        f"{param}: expected <column>.<op>.<value> (or <column>.not.<op>.<value>) with op one "
        f"of {', '.join(OPS)}, got {text[:80]!r}",
    )


def _unquoted(param: str, value: str) -> str:
    if not value.startswith('"'):
        return value
    if len(value) < 2 or not value.endswith('"') or '"' in value[1:-1].replace('""', ""):
        raise QueryError(param, f"{param}: a quoted value must be one \"...\" with \"\" for a "
                                f"quote, got {value[:80]!r}")
    return value[1:-1].replace('""', '"')


def _filter_value(param: str, column: Column, path: tuple[PathStep, ...], op: str,
                  negated: bool, language: str | None, value: str) -> Filter:
    if language is not None and op not in _TEXT_SEARCH:
        raise QueryError(param, f"{param}: only {', '.join(_TEXT_SEARCH)} take a language, "
                                f"not {op}")
    if language is not None and _NUMBER.fullmatch(language):
        # regconfig reads digits as an oid: one naming no configuration is an internal error
        raise QueryError(param, f"{param}: the language is a text search configuration's "
                                f"name (e.g. english), not {language[:20]!r}")
    if op == "is":
        if value not in _IS_VALUES:
            raise QueryError(param, f"{param}: is takes null, notnull, true or false, "
                                    f"not {value[:40]!r}")
        if value in ("true", "false") and (path or not column.is_bool):
            shown = "a JSON path" if path else column.display_type
            raise QueryError(param, f"{param}: is.{value} needs a boolean column; "
                                    f"{column.name!r} is {shown}")
        return Filter(column, op, (value,), negated, path)
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise QueryError(param, f"{param}: in takes a list in parentheses, e.g. in.(1,2,3)")
        inner = value[1:-1]
        values = split_list(param, inner) if inner else []
        if len(values) > MAX_IN_VALUES:
            raise QueryError(param, f"{param}: at most {MAX_IN_VALUES} values in a list")
        return Filter(column, op, tuple(values), negated, path)
    if op in ("like", "ilike"):
        return Filter(column, op, (value.replace("*", "%"),), negated, path)
    if op in ("fts", "wfts") and _NEGATIONS.search(value):
        raise QueryError(param, f"{param}: at most {MAX_NEGATIONS_IN_A_ROW} negations (! or -) "
                                "in a row in a text search query")
    return Filter(column, op, (value,), negated, path, language)


def parse_group(relation: Relation, name: str, text: str, param: str | None = None) -> Group:
    """A boolean group: ``name`` is ``or``, ``and``, ``not.or`` or ``not.and``; ``text`` is
    ``(<item>,<item>,...)``, each item a condition or a nested ``[not.]and(...)``/``[not.]or(...)``.

    Inside, a value holding ``,`` ``(`` ``)`` or ``"`` is double-quoted (``""`` for a quote); an
    ``in`` list keeps its own quoting. ``param`` names the request parameter in errors (default
    ``name``: for an embed, say ``or.order_items``). Limits: :data:`MAX_GROUP_DEPTH` levels and
    :data:`MAX_GROUP_CONDITIONS` conditions (per group here; the controller bounds the total).
    """
    param = param or name
    check_text(param, text)
    negated, op = _group_name(name)
    if op is None:
        raise QueryError(param, f"{param}: a group is and, or, not.and or not.or")
    if not (text.startswith("(") and text.endswith(")")):
        raise QueryError(param, f"{param}: expected a list in parentheses, e.g. "
                                f"{name}=(status.eq.new,total.gt.1000)")
    group = _group(relation, op, negated, text[1:-1], param, depth=1)
    if group.conditions > MAX_GROUP_CONDITIONS:
        raise QueryError(param, f"{param}: at most {MAX_GROUP_CONDITIONS} conditions in or/and "
                                "groups")
    return group


def _group_name(name: str) -> tuple[bool, str | None]:
    negated = name.startswith("not.")
    op = name[4:] if negated else name
    return negated, op if op in GROUP_OPS else None


def _group(relation: Relation, op: str, negated: bool, inner: str, param: str,
           depth: int) -> Group:
    if depth > MAX_GROUP_DEPTH:
        raise QueryError(param, f"{param}: or/and groups nest at most {MAX_GROUP_DEPTH} deep")
    items: list[Condition] = []
    for item in split_group(param, inner):
        if not item:
            raise QueryError(param, f"{param}: empty condition in a group")
        head, paren, rest = item.partition("(")
        nested_negated, nested_op = _group_name(head) if paren else (False, None)
        if nested_op is not None and rest.endswith(")"):
            items.append(_group(relation, nested_op, nested_negated, rest[:-1], param,
                                depth + 1))
        else:
            items.append(parse_filter(relation, item, param, quoted_values=True))
        if len(items) > MAX_GROUP_CONDITIONS:
            raise QueryError(param, f"{param}: at most {MAX_GROUP_CONDITIONS} conditions in "
                                    "or/and groups")
    return Group(op, tuple(items), negated, param)


_BRACKETS = {"(": "parentheses", ")": "parentheses", "{": "braces", "}": "braces"}


def split_group(param: str, text: str) -> list[str]:
    """The items of a group: split on commas outside parentheses, braces (array literals, JSON
    objects) and double quotes, all kept in the items for their own parsing. Unbalanced
    parentheses, braces or quotes are a 400."""
    items: list[str] = []
    depth = {"(": 0, "{": 0}
    closing = {")": "(", "}": "{"}
    quoted = False
    start = 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted  # "" inside quotes closes and reopens: the same as a quote
        elif quoted:
            continue
        elif ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                raise QueryError(param, f"{param}: unbalanced {_BRACKETS[ch]}")
        elif ch == "," and not depth["("] and not depth["{"]:
            items.append(text[start:i].strip())
            start = i + 1
    if quoted:
        raise QueryError(param, f"{param}: unterminated double quote")
    for opening, count in depth.items():
        if count:
            raise QueryError(param, f"{param}: unbalanced {_BRACKETS[opening]}")
    items.append(text[start:].strip())
    return items


def leaves(conditions: tuple[Condition, ...] | list[Condition],
           param: str | None = None) -> Iterator[tuple[str, Filter]]:
    """(request parameter, filter) for every condition, groups walked depth first."""
    for c in conditions:
        if isinstance(c, Group):
            yield from leaves(c.items, param or c.param)
        else:
            yield param or "filter", c


# ------------------------------------------------------------------ SQL


def _cast(params: Params, value: Any, type_name: str, collate: str = "") -> sql.Composable:
    """A bound value cast to a type named by the catalog (or one of our constants), ``%``
    doubled (sqltext.no_placeholder); ``collate``: the column's COLLATE clause
    (catalog.Column.collate)."""
    return sql.Composed([sql.SQL("CAST("), params.add(value),
                         sql.SQL(" AS " + no_placeholder(type_name) + ")" + collate)])


def filter_sql(f: Condition, params: Params, alias: str | None = "r") -> sql.Composable:
    """The condition as SQL, values bound in ``params``; columns qualified by ``alias`` (every
    statement names the filtered relation ``r``: an embed's lateral row ``o`` may hold a field
    of the same name, so an unqualified name could be ambiguous)."""
    if isinstance(f, Group):
        joined = sql.SQL(f" {f.op.upper()} ").join(filter_sql(i, params, alias) for i in f.items)
        return sql.SQL("(NOT ({}))" if f.negated else "({})").format(joined)
    condition = _condition_sql(f, params, alias)
    return sql.SQL("(NOT ({}))").format(condition) if f.negated else condition


def _condition_sql(f: Filter, params: Params, alias: str | None) -> sql.Composable:
    target = target_sql(f.column, f.path, params, alias)
    kind = path_type(f.path, f.column)
    collate = path_collate(f.path, f.column)
    if f.op in _COMPARISONS:  # the common filter: composed without a template to parse
        return sql.Composed([target, sql.SQL(f" {_COMPARISONS[f.op]} "),
                             _cast(params, f.values[0], kind, collate)])
    if f.op == "isdistinct":
        return sql.SQL("{} IS DISTINCT FROM {}").format(
            target, _cast(params, f.values[0], kind, collate))
    if f.op in _CONTAINMENT:
        return sql.SQL("{} {} {}").format(target, sql.SQL(_CONTAINMENT[f.op]),
                                          _cast(params, f.values[0], kind, collate))
    if f.op in ("like", "ilike"):
        return sql.SQL("({})::text {} {}").format(
            target, sql.SQL(f.op.upper()), params.add(f.values[0]))
    if f.op == "in":
        if not f.values:
            return sql.SQL("false")
        return sql.SQL("{} IN ({})").format(
            target, sql.SQL(", ").join(_cast(params, v, kind, collate) for v in f.values))
    if f.op in _TEXT_SEARCH:
        return _text_search_sql(f, target, params)
    return sql.SQL("{} {}").format(target, sql.SQL(_IS_VALUES[f.values[0]]))


def _text_search_sql(f: Filter, target: sql.Composable, params: Params) -> sql.Composable:
    """``document @@ query``: a tsvector column as it is, anything else through to_tsvector.

    With a language both sides take it as a regconfig (a bound value, so an index on
    ``to_tsvector('english', col)`` matches: the literal is folded to a constant at parse
    time); without, PostgreSQL's ``default_text_search_config`` applies.
    """
    config = [] if f.language is None else [_cast(params, f.language, "regconfig")]
    query = sql.SQL("{}({})").format(sql.SQL(_TEXT_SEARCH[f.op]), sql.SQL(", ").join(
        [*config, _cast(params, f.values[0], "text")]))
    if f.column.base_type == "tsvector" and not f.path:
        document = target
    else:
        document = sql.SQL("to_tsvector({})").format(sql.SQL(", ").join([*config, target]))
    return sql.SQL("{} @@ {}").format(document, query)


# ------------------------------------------------------------------ values PostgreSQL checks


def pattern_values(conditions: tuple[Condition, ...]) -> list[tuple[str, Column, str]]:
    """Every (param, column, pattern) of the like/ilike conditions."""
    return [(param, f.column, f.values[0]) for param, f in leaves(conditions)
            if f.op in ("like", "ilike")]


_REGCONFIG = Column(name="", type="regconfig", display_type="regconfig", nullable=True,
                    base_type="regconfig", is_array=False)


def typed_values(conditions: tuple[Condition, ...]) -> list[tuple[str, Column, str]]:
    """Every (param, column, value) that PostgreSQL casts, in request order: after a failed
    statement each is cast alone to find the one to blame. A JSON path's values are checked as
    its type (jsonb, text); a text search's language as a regconfig and its query by its
    tsquery function (:func:`check_sql`)."""
    found: list[tuple[str, Column, str]] = []
    for param, f in leaves(conditions):
        column = path_column(f.column, f.path)
        if f.op in _COMPARISONS or f.op in _CONTAINMENT or f.op in ("in", "isdistinct"):
            found += [(param, column, v) for v in f.values]
        elif f.op in _TEXT_SEARCH:
            if f.language is not None:
                found.append((param, replace(_REGCONFIG, name=f.column.name), f.language))
            found.append((param, _query_column(f), f.values[0]))
    return found


def _query_column(f: Filter) -> Column:
    """A text search's query as a value to check: its "type" is the tsquery function."""
    return Column(name=f.column.name, type="tsquery", display_type="tsquery", nullable=True,
                  base_type=_TEXT_SEARCH[f.op], is_array=False)


def check_sql(column: Column) -> sql.Composable | None:
    """The statement that checks a value ``%(v)s`` which is not a cast: a text search query
    through its function (to_tsquery's syntax errors, a query too deep for PostgreSQL's
    stack); None for a plain cast."""
    if column.type == "tsquery" and column.base_type in _TEXT_SEARCH.values():
        return sql.SQL("SELECT {}(CAST(%(v)s AS text))").format(sql.SQL(column.base_type))
    return None
