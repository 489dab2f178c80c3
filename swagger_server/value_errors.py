"""What PostgreSQL rejects in a data API request, turned into the right problem.

A value the column's type refuses is the client's fault: a 400 naming the parameter and column.
A relation, column or type gone under the cached catalog is a 503 that reloads the catalog. What
is neither (a view dividing by zero, say) is re-raised: a 500 with the request id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors

from swagger_server import errors, query
from swagger_server.catalog import CACHE
from swagger_server.errors import ApiProblem
from swagger_server.pool import Connection

# Errors that a request value can cause as well as a schema change: a ``regclass``, ``regtype``
# (...) value naming no relation or type fails its cast with the same error as a query whose
# relation, column or type was dropped under it.
_CATALOG_ERRORS = (psycopg2.errors.UndefinedColumn, psycopg2.errors.UndefinedTable,
                   psycopg2.errors.UndefinedObject, psycopg2.errors.InvalidSchemaName)


@contextlib.contextmanager
def database_errors(conn: Connection,
                     values: list[tuple[str, Any, str]]) -> Iterator[None]:
    """Turn what PostgreSQL rejects in a request's values into a 400 naming the column.

    ``values`` are those cast to their column's type (like/ilike patterns are checked before
    the query). Whatever else fails (a view dividing by zero, say) is not the client's doing:
    it is re-raised, a 500 with the request id.
    """
    try:
        yield
    except (psycopg2.DataError, psycopg2.errors.CheckViolation):
        conn.rollback()
        problem = _value_problem(conn, values)
        if problem is None:
            raise  # no value of the request is at fault
        raise problem from None
    except (psycopg2.errors.UndefinedFunction, psycopg2.errors.AmbiguousFunction,
            psycopg2.errors.DatatypeMismatch, psycopg2.errors.IndeterminateDatatype) as exc:
        conn.rollback()
        problem = _value_problem(conn, values)  # e.g. a regproc value naming no function
        if problem is not None:
            raise problem from None
        raise ApiProblem(400, "Bad Request",
                         f"not supported for this column type: {_pg_message(exc)}",
                         type=errors.UNSUPPORTED_OPERATION) from None
    except _CATALOG_ERRORS as exc:
        conn.rollback()
        problem = _value_problem(conn, values)  # e.g. a regclass value naming no table
        if problem is not None:
            raise problem from None
        CACHE.invalidate()  # the catalog is stale: the next request reads it again
        raise ApiProblem(503, "Service Unavailable",
                         f"the database schema changed under this request; retry "
                         f"({_pg_message(exc)})", type=errors.CATALOG_CHANGED) from None


def _value_problem(conn: Connection, values: list[tuple[str, Any, str]]) -> ApiProblem | None:
    """The 400 for the first request value PostgreSQL rejects on its own; None if none is.

    Runs after a failed statement, in a fresh transaction: each value is cast alone to its
    column's type. A value whose cast fails only because the type itself is gone (a stale
    catalog) is not the client's fault and is not blamed.
    """
    for param, column, value in values:
        statement, _ = query.cast_check_sql(column)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, {"v": value})
        except psycopg2.Error as check:
            conn.rollback()
            if not _type_exists(conn, statement):
                return None
            if param == "cursor":
                return ApiProblem(400, "Bad Request",
                                  "cursor: no longer valid for this table (its column types "
                                  "changed); start again without a cursor",
                                  type=errors.INVALID_CURSOR)
            return _invalid_value(param, column, value,
                                  f"is not a valid {column.type} for column {column.name!r}: "
                                  f"{_pg_message(check)}")
    return None


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


def _type_exists(conn: Connection, cast_statement: Any) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute(cast_statement, {"v": None})
        return True
    except psycopg2.Error:
        conn.rollback()
        return False


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
