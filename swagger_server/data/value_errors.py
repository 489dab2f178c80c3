"""What PostgreSQL rejects in a data API request, turned into the right problem.

The status comes from the one SQLSTATE table (:func:`swagger_server.errors.classify`); here
the request decides who is to blame. A value the column's type refuses (class 22, 54, a domain's
CHECK, a regconfig in a schema the role may not use) is the client's fault: a 400 naming the
parameter and column. A relation, column or type gone under the cached catalog is a 503 that
reloads the catalog; a relation no longer readable (dropped, or SELECT revoked: that role's
catalog reloads) is a 404 like one that never existed. What none of this explains (a
view dividing by zero, say) is re-raised: the app-wide handler answers by SQLSTATE (a 500 with
the request id, or a 503 / 504 for the database's own state).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
from flask import has_request_context, request

from swagger_server import errors
from swagger_server.auth.request import current_role
from swagger_server.data import embed, filters, query, sqltext
from swagger_server.data.catalog import CACHE, Relation
from swagger_server.db.pool import Connection
from swagger_server.errors import ApiProblem

# Errors that a request value can cause as well as a schema change: a ``regclass``, ``regtype``
# (...) value naming no relation or type fails its cast with the same error as a query whose
# relation, column or type was dropped under it.
_CATALOG_ERRORS = (psycopg2.errors.UndefinedColumn, psycopg2.errors.UndefinedTable,
                   psycopg2.errors.UndefinedObject, psycopg2.errors.InvalidSchemaName)
# An operator or function the column's type lacks (or a regproc value naming none).
_OPERATION_ERRORS = (psycopg2.errors.UndefinedFunction, psycopg2.errors.AmbiguousFunction,
                     psycopg2.errors.DatatypeMismatch, psycopg2.errors.IndeterminateDatatype)


@contextlib.contextmanager
def database_errors(conn: Connection, values: list[tuple[str, Any, str]],
                    relation: Relation | None = None) -> Iterator[None]:
    """Turn what PostgreSQL rejects in a request's values into a 400 naming the column.

    ``values`` are those cast to their column's type (like/ilike patterns are checked before
    the query). ``relation`` is the one queried: when the catalog turns out stale and it is no
    longer readable, the answer is a 404.
    """
    try:
        yield
    except _OPERATION_ERRORS as exc:
        conn.rollback()
        problem = _value_problem(conn, values)  # e.g. a regproc value naming no function
        if problem is not None:
            raise problem from None
        raise ApiProblem(400, "Bad Request",
                         f"not supported for this column type: {_pg_message(exc)}",
                         type=errors.UNSUPPORTED_OPERATION,
                         parameter=_operation_parameter(exc)) from None
    except (psycopg2.errors.SyntaxError, psycopg2.errors.InvalidName):
        # A text search query's own syntax (to_tsquery's "a &"), a malformed name in a
        # regconfig or regclass value: only a request value explains it; anything else is a
        # syntax error of ours, a 500.
        conn.rollback()
        problem = _value_problem(conn, values)
        if problem is not None:
            raise problem from None
        raise
    except _CATALOG_ERRORS as exc:
        conn.rollback()
        problem = _value_problem(conn, values)  # e.g. a regclass value naming no table
        if problem is not None:
            raise problem from None
        raise _catalog_changed(conn, relation, exc) from None
    except psycopg2.Error as exc:
        outcome = errors.classify(exc)
        if outcome.request_values or outcome.catalog:
            # A value can cause a privilege error too: a text search language in a schema the
            # role may not use fails its regconfig cast with 42501, as a revoked SELECT does.
            conn.rollback()
            problem = _value_problem(conn, values)
            if problem is not None:
                raise problem from None
        if outcome.catalog:
            # A privilege revoked under the cached catalog (no request value explains it, so a
            # client cannot cause this at will): reload this role's catalog only. The relation
            # itself unreadable: answered as if it never existed. Still readable: something
            # else it needs (an embedded table) was revoked; this answer is a 500, the next
            # request sees the reloaded catalog (the embed then a 400 naming it).
            CACHE.invalidate_role(current_role())
            if relation is not None and not _readable(conn, relation):
                raise _not_found(relation) from None
        raise  # not the request's doing: answered by SQLSTATE (errors.database_error)


def _catalog_changed(conn: Connection, relation: Relation | None,
                     exc: psycopg2.Error) -> ApiProblem:
    """The catalog is stale: reload it on the next request; 404 if the relation is gone.

    A relation dropped within CATALOG_TTL is answered like one that never existed. Otherwise
    (a column or type changed) the client may retry at once.
    """
    CACHE.invalidate()
    if relation is not None and not _readable(conn, relation):
        return _not_found(relation)
    return ApiProblem(503, "Service Unavailable",
                      f"the database schema changed under this request; retry "
                      f"({_pg_message(exc)})", type=errors.CATALOG_CHANGED)


def _not_found(relation: Relation) -> ApiProblem:
    return ApiProblem(404, "Not Found", f"No table or view named {relation.name!r}",
                      type=errors.NOT_FOUND)


def _readable(conn: Connection, relation: Relation) -> bool:
    """Does the relation (the same one: same oid) still exist, with SELECT for this role?"""
    with conn.cursor() as cur:
        cur.execute("SELECT has_any_column_privilege(c.oid, 'SELECT') FROM pg_class c "
                    "WHERE c.oid = %s", (relation.oid,))
        row = cur.fetchone()
    conn.rollback()
    return bool(row and row[0])


def _operation_parameter(exc: psycopg2.Error) -> str:
    """Which parameter asked for an operation the type lacks: select's aggregates and grouping
    (the only function calls and ``GROUP BY`` a request makes), an order, or else a filter."""
    message = _pg_message(exc)
    function = _UNDEFINED_FUNCTION.match(message)
    if function is not None and function.group(1) in embed.AGGREGATES:
        return "select"  # sum(text), max(json): filters call none of these
    if "equality operator" in message:
        return "select"  # GROUP BY a type without one; a filter's = names its operator
    if "ordering operator" in message:
        # Without an order parameter the ORDER BY is aggregated rows' own: their grouped
        # fields as tiebreakers (a primary key's type always has an ordering).
        asked = has_request_context() and request.args.get("order") is not None
        return "order" if asked else "select"
    return "filter"


# "function sum(text) does not exist": the name PostgreSQL found no such function for.
_UNDEFINED_FUNCTION = re.compile(r"function (?:pg_catalog\.)?\"?(\w+)\"?\(")


def _value_problem(conn: Connection, values: list[tuple[str, Any, str]]) -> ApiProblem | None:
    """The 400 for the first request value PostgreSQL rejects on its own; None if none is.

    Runs after a failed statement, in a fresh transaction. A request may hold thousands of
    values (or/and groups of ``in`` lists): one statement checks them all; only when it fails
    does a bisection (a statement per halving, checking the half that may hold it) find the
    first value in request order that fails, whose own check then gives the reason. A value
    whose check fails only because the type itself is gone (a stale catalog) is not the
    client's fault and is not blamed.
    """
    checks = _distinct(values)
    if not checks:
        return None
    with conn.cursor() as cur:  # quoted once each, as psycopg2 quotes bound parameters
        elements = [cur.mogrify("CAST(" + _check(column) + " AS text)", (value,))
                    for _, column, value in checks]
    if _all_valid(conn, elements):
        return None
    passes, fails = 0, len(checks)  # checks[:passes] are all valid, checks[:fails] are not
    while fails - passes > 1:
        middle = (passes + fails) // 2
        if _all_valid(conn, elements[passes:middle]):
            passes = middle
        else:
            fails = middle
    param, column, value = checks[passes]
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT " + _check(column), (value,))
    except psycopg2.Error as check:
        conn.rollback()
        if not _type_exists(conn, column):
            return None
        if param == "cursor":
            return ApiProblem(400, "Bad Request",
                              "cursor: no longer valid for this table (its column types "
                              "changed); start again without a cursor",
                              type=errors.INVALID_CURSOR, parameter="cursor")
        return _invalid_value(param, column, value,
                              f"is not a valid {column.type} for column {column.name!r}: "
                              f"{_pg_message(check)}")
    conn.rollback()
    return None  # valid alone: the failure was not this value's


def _distinct(values: list[tuple[str, Any, str]]) -> list[tuple[str, Any, str]]:
    """The values in request order, each (check, value) once: the same value checked the same
    way fails the same way, and only its first occurrence would be named."""
    seen: set[tuple[str, str, str]] = set()
    found: list[tuple[str, Any, str]] = []
    for param, column, value in values:
        key = (column.type, column.base_type, value)
        if key not in seen:
            seen.add(key)
            found.append((param, column, value))
    return found


def _all_valid(conn: Connection, elements: list[bytes]) -> bool:
    """Does PostgreSQL accept every checked value? One statement.

    Each element is a check's result as text: its type's output function runs too, as when a
    value is returned (a tsquery too deep for PostgreSQL's stack fails only there). An array
    evaluates every element (no short-circuit) and, unlike a select list (1,664 columns at
    most), holds any number of them; only its length comes back. The checks are plain
    expressions: a scalar subquery each plans hundreds of times slower.
    """
    try:
        with conn.cursor() as cur:
            cur.execute(b"SELECT cardinality(ARRAY[" + b", ".join(elements) + b"])")
    except psycopg2.Error:
        conn.rollback()
        return False
    conn.rollback()
    return True


def _check(column: Any) -> str:
    """The expression (one ``%s``: the value) that PostgreSQL rejects when the value is not
    valid for the column: a cast to its type, or for a text search query its tsquery function
    (to_tsquery's syntax errors, a query too deep for PostgreSQL's stack; filters.check_sql).
    The type's name comes from the catalog; a ``%`` in it is not a placeholder."""
    if filters.check_sql(column) is not None:
        return column.base_type + "(CAST(%s AS text))"
    return "CAST(%s AS " + sqltext.no_placeholder(column.type) + ")"


def pattern_problem(patterns: list[tuple[str, Any, str]]) -> ApiProblem | None:
    """The 400 for the first like/ilike pattern PostgreSQL rejects, None if there is none.

    Checked before the query: PostgreSQL only notices a bad pattern when a row's text takes
    the match far enough, so the same pattern would fail or not depending on the data.
    """
    for param, column, value in patterns:
        reason = query.pattern_error(value)
        if reason is not None:
            return _invalid_value(param, column, value,
                                  f"is not a valid pattern for column {column.name!r}: {reason}")
    return None


def _type_exists(conn: Connection, column: Any) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT " + _check(column), (None,))
    except psycopg2.Error:
        conn.rollback()
        return False
    conn.rollback()
    return True


def _invalid_value(param: str, column: Any, value: str, why: str) -> ApiProblem:
    shown = value if len(value) <= 80 else value[:80] + "..."
    return ApiProblem(400, "Bad Request", f"{param}: {shown!r} {why}",
                      type=errors.INVALID_VALUE, parameter=param, column=column.name)


def _pg_message(exc: psycopg2.Error) -> str:
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) if diag is not None else None
    if not text:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
    return text[:300]
