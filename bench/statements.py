"""The SQL of a rows page: the statement the service generates, and the plain ``json_agg`` that
is its ceiling (pgbench runs both)."""

from __future__ import annotations

import contextlib

import psycopg2

from swagger_server.config import ApiSettings
from swagger_server.data import catalog, query


def page_query(conn: psycopg2.extensions.connection, table: str, limit: int,
               api: ApiSettings | None = None) -> query.RowsQuery:
    """The query behind ``GET /tables/<table>/rows?limit=<limit>`` (no other parameter), as
    tables_controller builds it."""
    relation = catalog.load(conn, api or ApiSettings()).resolve(table)
    if relation is None:
        raise RuntimeError(f"no table {table!r} in the catalog")
    order, unique = query.parse_order(relation, None)
    return query.RowsQuery(relation=relation, columns=query.parse_select(relation, None),
                           order=order, unique=unique, limit=limit)


def generated(dsn: str, table: str, limit: int) -> str:
    """The service's statement for that page, its parameters bound (as psycopg2 sends it)."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        statement, params = query.page_sql(page_query(conn, table, limit))
        return conn.cursor().mogrify(statement, params).decode()


def plain_json_agg(table: str, limit: int, key: str = "id") -> str:
    """The ceiling: PostgreSQL's own JSON of the same rows, nothing else."""
    return (f"select json_agg(t) from (select * from {table} "  # noqa: S608 (our constants)
            f"order by {key} limit {int(limit)}) t")
