"""``/tables``: the exposed tables and views, their rows as JSON pages or streamed CSV/NDJSON.

Parsing and SQL live in :mod:`swagger_server.data.query`, the catalog in
:mod:`swagger_server.data.catalog`, cursors in :mod:`swagger_server.data.cursors`, streaming in
:mod:`swagger_server.data.export`. Here: parameters in, one statement per page, response out.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import psycopg2.errors
import psycopg2.extensions
from flask import Response, current_app, jsonify, request

from swagger_server import errors
from swagger_server.auth import request as request_auth
from swagger_server.config import Settings
from swagger_server.data import cursors, export, query, value_errors
from swagger_server.data.catalog import CACHE, Catalog, Relation
from swagger_server.data.query import QueryError, RowsQuery
from swagger_server.db import deadline, get_db, get_pool
from swagger_server.db.pool import Connection
from swagger_server.errors import ApiProblem
from swagger_server.ops import metrics

JSON = "application/json"
CSV = "text/csv"
NDJSON = "application/x-ndjson"
_FORMATS = [JSON, CSV, NDJSON]
_QUERY_PARAMS = ("select", "filter", "order", "limit", "offset", "cursor", "count")
_SINGLE_PARAMS = ("select", "order", "limit", "offset", "cursor", "count")  # filter repeats
# An export lasts a while: a client turned away should not come back at once.
EXPORT_RETRY_AFTER_SECONDS = 5
# The export's idle_in_transaction_session_timeout: the stall timeout plus this. A backstop
# only: StalledClientGuard cuts a stalled client first (README "Data API").
IDLE_MARGIN_SECONDS = 5
# Response headers: the count ran out of COUNT_TIMEOUT; the next page lies past MAX_OFFSET.
COUNT_TIMED_OUT = "X-Total-Count-Timed-Out"
OFFSET_LIMIT_REACHED = "X-Offset-Limit-Reached"


# ------------------------------------------------------------------ handlers


def list_tables() -> Response:
    catalog = _catalog(get_db())
    return jsonify(tables=[r.summary() for r in catalog.relations])


def get_table(table: str) -> Response:
    return jsonify(_relation(_catalog(get_db()), table).describe())


def get_rows(table: str, **_: Any) -> Response:
    _single_valued()
    settings = _settings()
    fmt = request.accept_mimetypes.best_match(_FORMATS, default=JSON) or JSON
    if fmt == JSON:
        return _page(settings, table)
    # A slot first: over the bound, no thread time or connection is spent.
    release_slot = _export_slots(settings).take()
    if release_slot is None:
        raise ApiProblem(
            503, "Service Unavailable",
            f"this worker already runs {settings.api.max_exports} exports (MAX_EXPORTS); "
            "retry shortly", type=errors.TOO_MANY_EXPORTS,
            headers={"Retry-After": str(EXPORT_RETRY_AFTER_SECONDS)})
    try:
        pool = get_pool()
        # An export: no leak warning; waits only for what is left of ACQUIRE_TIMEOUT.
        conn = pool.getconn(timeout=deadline.time_left(), long_lived=True)
    except BaseException:
        release_slot()
        raise
    try:
        # Every transaction of the export runs as the request's role (also the statements
        # value_errors runs after a failed one); the stream detaches and gives the connection
        # back itself, past the request's teardown.
        request_auth.attach(conn)
        return _export(settings, pool, conn, table, fmt, release_slot)
    except BaseException:
        request_auth.detach(conn)
        pool.putconn(conn)  # the stream did not take them over
        release_slot()
        raise


def get_row(table: str, key: str, **_: Any) -> Response:
    _single_valued()
    conn = get_db()
    relation = _relation(_catalog(conn), table)
    if not relation.primary_key:
        raise _bad("key", f"{relation.name} has no primary key: its rows have no address")
    with _parameter_errors():
        query.check_text("key", key)
        values = query.split_list("key", key)
        columns = query.parse_select(relation, request.args.get("select"))
    if len(values) != len(relation.primary_key):
        raise _bad("key", f"{relation.name} has a {len(relation.primary_key)}-column primary key "
                          f"({', '.join(relation.primary_key)}); got {len(values)} value(s)")
    statement, params = query.row_sql(relation, columns, values)
    checks = [("key", relation.by_name[n], v) for n, v in zip(relation.primary_key, values,
                                                                 strict=True)]
    with value_errors.database_errors(conn, checks, relation), conn.cursor() as cur:
        cur.execute(statement, params)
        row = cur.fetchone()
    if row is None:
        raise ApiProblem(404, "Not Found", f"{relation.name} has no row with key {key[:200]!r}",
                         type=errors.NOT_FOUND)
    metrics.rows_served("json", 1)
    return Response(row[0], mimetype=JSON)


# ------------------------------------------------------------------ JSON pages


def _page(settings: Settings, table: str) -> Response:
    conn = get_db()
    relation = _relation(_catalog(conn), table)
    limit = _limit(settings.api.default_limit, settings.api.max_rows)
    q = _rows_query(settings, relation, limit)
    count = request.args.get("count")
    statement, params = query.page_sql(q)
    headers: dict[str, str] = {}
    total: int | None = None
    with value_errors.database_errors(conn, query.typed_values(q), relation), conn.cursor() as cur:
        _text_as_bytes(conn, cur)
        cur.execute(statement, params)
        data, fetched, last_key = cur.fetchone()
        if count == "estimated":
            total = _estimate(cur, q)
        next_cursor = None
        next_query: dict[str, str] | None = None
        if fetched > q.limit:
            if q.unique:
                token = cursors.encode(_secret(settings), _fingerprint(q), last_key)
                if len(token) <= cursors.MAX_ISSUED_CHARS:
                    next_cursor = token
                    next_query = {"cursor": token}
            if next_query is None:
                # No unique order, or a key too long for a cursor: the next page by offset
                # (see the spec), counted from the first row even when this page followed a
                # cursor. Never past MAX_OFFSET: that link would be a 400.
                max_offset = settings.api.max_offset
                next_offset = _rows_before(cur, q, max_offset) + q.limit
                if next_offset <= max_offset:
                    next_query = {"offset": str(next_offset)}
                else:
                    headers[OFFSET_LIMIT_REACHED] = "true"
        if count == "exact":  # last: on expiry its transaction is aborted
            total = _exact_count(conn, cur, q, settings)
            if total is None:
                headers[COUNT_TIMED_OUT] = "true"
    metrics.rows_served("json", min(fetched, q.limit))
    tail = f',"next_cursor":{json.dumps(next_cursor)}'
    if total is not None:
        tail += f',"total":{int(total)}'
        headers["X-Total-Count"] = str(int(total))
    elif count is not None:
        tail += ',"total":null'
    if next_query is not None:
        headers["Link"] = f'<{_next_url(next_query)}>; rel="next"'
    raw = data if isinstance(data, bytes) else data.encode()
    return Response(b"".join((b'{"data":', raw, tail.encode(), b"}")), mimetype=JSON,
                    headers=headers)


def _text_as_bytes(conn: Connection, cur: Any) -> None:
    """Text columns of this cursor come as the server's UTF-8 bytes, not decoded to ``str``.

    The page's JSON, built by PostgreSQL, goes into the body as it came: no decode and
    re-encode of some hundreds of KB per page. Only when the connection speaks UTF-8 (the
    body's encoding); other text columns of the page statement are not read as text.
    """
    if conn.encoding == "UTF8":
        psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cur)


def _rows_before(cur: Any, q: RowsQuery, cap: int) -> int:
    """Rows before this page: its offset, or those up to and including the cursor's row.

    Counted up to ``cap + 1`` at most: beyond ``cap`` only "more than cap" matters.
    """
    if q.after is None:
        return q.offset
    statement, params = query.position_sql(q, cap + 1)
    cur.execute(statement, params)
    return int(cur.fetchone()[0])


def _exact_count(conn: Connection, cur: Any, q: RowsQuery, settings: Settings) -> int | None:
    """``count=exact`` under ``COUNT_TIMEOUT`` (or the statement timeout if lower); None when it
    ran out. Must be the transaction's last statement: it lowers the statement timeout for the
    rest of the transaction, and on expiry aborts it (rolled back here).
    """
    timeout = settings.api.count_timeout
    if settings.pool.statement_timeout:
        timeout = min(timeout, settings.pool.statement_timeout)
    statement, params = query.count_sql(q, timeout)
    try:
        cur.execute(statement, params)
        return int(cur.fetchone()[0])
    except psycopg2.errors.QueryCanceled:
        conn.rollback()
        return None


def _estimate(cur: Any, q: RowsQuery) -> int:
    statement, params = query.estimate_sql(q)
    cur.execute(statement, params)
    plan = cur.fetchone()[0]
    if isinstance(plan, str | bytes):  # text (bytes on the page's cursor), or json parsed
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def _next_url(replace: dict[str, str]) -> str:
    pairs = [(k, v) for k, v in request.args.items(multi=True) if k not in ("cursor", "offset")]
    pairs += list(replace.items())
    return f"{quote(request.path)}?{urlencode(pairs)}"


# ------------------------------------------------------------------ exports


def _export(settings: Settings, pool: Any, conn: Connection, table: str, fmt: str,
            release_slot: Callable[[], None]) -> Response:
    relation = _relation(_catalog(conn), table)
    limit = _limit(settings.api.max_export_rows, settings.api.max_export_rows)
    q = _rows_query(settings, relation, limit)
    if request.args.get("count"):
        raise _bad("count", "count is not available for CSV and NDJSON exports")
    if fmt == CSV:
        statement, params = query.csv_sql(q, limit)
        header = _csv_header([c.name for c in q.columns])
        filename = f"{relation.name}.csv"
    else:
        statement, params = query.ndjson_sql(q, limit)
        header = b""
        filename = f"{relation.name}.ndjson"
    with value_errors.database_errors(conn, query.typed_values(q), relation):
        stream = export.open_stream(
            pool, conn, statement, params, header=header, environ=request.environ,
            idle_timeout_ms=_idle_timeout_ms(settings), on_release=release_slot,
            rows_format="csv" if fmt == CSV else "ndjson")
    mimetype = "text/csv; charset=utf-8" if fmt == CSV else NDJSON
    return Response(stream, content_type=mimetype, direct_passthrough=True, headers={
        "Content-Disposition": f'inline; filename="{quote(filename)}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    })


def _idle_timeout_ms(settings: Settings) -> int:
    """The export's idle_in_transaction_session_timeout (PostgreSQL takes up to 2^31 - 1 ms)."""
    seconds = settings.api.export_stall_timeout + IDLE_MARGIN_SECONDS
    return min(int(seconds * 1000), 2**31 - 1)


def _export_slots(settings: Settings) -> export.ExportSlots:
    """This app's export slots (one app per worker), made on first use."""
    slots = current_app.extensions.get("pgrest_export_slots")
    if slots is None:
        # setdefault: two first exports at once still share one object.
        slots = current_app.extensions.setdefault(
            "pgrest_export_slots", export.ExportSlots(settings.api.max_exports))
    return slots


def _csv_header(names: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(names)
    return out.getvalue().encode("utf-8")


# ------------------------------------------------------------------ shared


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _catalog(conn: Connection) -> Catalog:
    settings = _settings()
    return CACHE.get(conn, settings.api, settings.database.dsn, request_auth.current_role())


def _relation(catalog: Catalog, table: str) -> Relation:
    relation = catalog.resolve(table) if "\x00" not in table else None
    if relation is None:
        # The same answer for a relation that exists but is not exposed.
        raise ApiProblem(404, "Not Found", f"No table or view named {table[:200]!r}",
                         type=errors.NOT_FOUND)
    return relation


def _single_valued() -> None:
    """A parameter that takes one value given twice is a 400, not "the first one wins"."""
    for name in _SINGLE_PARAMS:
        if len(request.args.getlist(name)) > 1:
            raise _bad(name, f"{name}: given more than once; it takes one value")


def _limit(default: int, maximum: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise _bad("limit", "limit: expected an integer") from None
    if not 1 <= limit <= maximum:
        raise _bad("limit", f"limit: must be between 1 and {maximum}, got {raw[:40]}")
    return limit


def _rows_query(settings: Settings, relation: Relation, limit: int) -> RowsQuery:
    args = request.args
    for name in args:
        if name not in _QUERY_PARAMS:  # Connexion's strict validation says so first
            raise _bad(name, f"unknown query parameter {name[:40]!r}")
    with _parameter_errors():
        columns = query.parse_select(relation, args.get("select"))
        raw_filters = args.getlist("filter")
        if len(raw_filters) > query.MAX_FILTERS:
            raise QueryError("filter", f"filter: at most {query.MAX_FILTERS} filters")
        filters = tuple(query.parse_filter(relation, f) for f in raw_filters)
        order, unique = query.parse_order(relation, args.get("order"))
    offset = _offset(settings.api.max_offset, relation, unique)
    q = RowsQuery(relation=relation, columns=columns, filters=filters, order=order,
                  unique=unique, offset=offset, limit=limit)
    problem = value_errors.pattern_problem(query.pattern_values(q))
    if problem is not None:
        raise problem
    token = args.get("cursor")
    if token is not None:
        if "offset" in args:
            raise _bad("cursor", "cursor and offset cannot be used together")
        if not unique:
            raise _bad("cursor", f"{relation.name} has no primary key, so no order is known to "
                                 "be unique: page with offset instead of cursor")
        try:
            q.after = cursors.decode(_secret(settings), _fingerprint(q), token, len(order))
        except cursors.CursorError as exc:
            raise ApiProblem(400, "Bad Request", f"cursor: {exc}",
                             type=errors.INVALID_CURSOR, parameter="cursor") from None
    return q


def _offset(maximum: int, relation: Relation, unique: bool) -> int:
    """The offset, at most ``MAX_OFFSET``: PostgreSQL reads every row it skips."""
    raw = request.args.get("offset")
    if raw is None:
        return 0
    try:
        offset = int(raw)
    except ValueError:
        raise _bad("offset", "offset: expected an integer") from None
    if offset < 0:
        raise _bad("offset", "offset: must not be negative")
    if offset > maximum:
        if unique:
            instead = ("page with cursor instead (the next_cursor of the previous page): it "
                       "costs the same at any depth")
        else:
            instead = (f"{relation.name} has no primary key, so no cursor: narrow the rows with "
                       "filter, or stream them all as CSV or NDJSON")
        raise _bad("offset", f"offset: at most {maximum} (skipped rows are read, so deep "
                             f"offsets are slow); {instead}")
    return offset


def _secret(settings: Settings) -> bytes:
    return cursors.secret_for(settings.api.cursor_secret)


def _fingerprint(q: RowsQuery) -> str:
    parts: list[object] = [q.relation.schema, q.relation.name, [t.spec() for t in q.order]]
    role = request_auth.current_role()
    if role is not None:
        # What one role may page through is not another's: its cursor is refused for them.
        parts.append({"role": role})
    return cursors.fingerprint(parts)


def _bad(param: str, detail: str, type: str = errors.INVALID_PARAMETER) -> ApiProblem:
    return ApiProblem(400, "Bad Request", detail, type=type, parameter=param)


@contextlib.contextmanager
def _parameter_errors() -> Iterator[None]:
    try:
        yield
    except QueryError as exc:
        raise _bad(exc.param, str(exc)) from None
