"""``/tables``: the exposed tables and views, their rows as JSON pages or streamed CSV/NDJSON.

Parsing and SQL live in :mod:`swagger_server.data.query`, the catalog in
:mod:`swagger_server.data.catalog`, cursors in :mod:`swagger_server.data.cursors`, streaming in
:mod:`swagger_server.data.export`. Here: parameters in, one statement per page, response out.
"""

from __future__ import annotations

import contextlib
import csv
import functools
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
from swagger_server.data import aggregate, cursors, embed, export, filters, query, value_errors
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
# Boolean groups of filters: or=(a.eq.1,b.eq.2), and=(...), and their negations; repeatable.
_GROUP_PARAMS = ("or", "and", "not.or", "not.and")
_QUERY_PARAMS = ("select", "filter", "order", "limit", "offset", "cursor", "count",
                 *_GROUP_PARAMS)
_SINGLE_PARAMS = ("select", "order", "limit", "offset", "cursor", "count")  # filter repeats
_EMBED_LIMIT = "limit."  # limit.<embed>=n: rows at most in an embedded array
# Parameters that name an embed after their own name: limit.<embed>, or.<embed>, and.<embed>,
# not.or.<embed>, not.and.<embed> (the spec marks limit and the groups x-per-embed).
_PER_EMBED = (_EMBED_LIMIT, *embed.GROUP_PREFIXES)
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
    catalog = _catalog(get_db())
    return jsonify(catalog.describe(_relation(catalog, table)))


def get_rows(table: str) -> Response:
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


def get_row(table: str, key: str) -> Response:
    _single_valued()
    conn = get_db()
    relation = _relation(_catalog(conn), table)
    if not relation.primary_key:
        raise _bad("key", f"{relation.name} has no primary key: its rows have no address")
    with _parameter_errors():
        query.check_text("key", key)
        values = query.split_list("key", key)
        shape, columns = _select(_catalog(conn), relation)
        if shape is not None and shape.aggregated:
            raise QueryError("select", "select: a row by key has nothing to aggregate")
    if len(values) != len(relation.primary_key):
        raise _bad("key", f"{relation.name} has a {len(relation.primary_key)}-column primary key "
                          f"({', '.join(relation.primary_key)}); got {len(values)} value(s)")
    statement, params = query.row_sql(relation, columns, values, shape)
    checks = [("key", relation.by_name[n], v) for n, v in zip(relation.primary_key, values,
                                                                 strict=True)]
    with value_errors.database_errors(conn, checks, relation), conn.cursor() as cur:
        cur.execute_alone(statement, params)  # the request's one statement: one round trip
        row = cur.fetchone()
    if row is None:
        raise ApiProblem(404, "Not Found", f"{relation.name} has no row with key {key[:200]!r}",
                         type=errors.NOT_FOUND)
    metrics.rows_served("json", 1)
    return Response(row[0], mimetype=JSON)


# ------------------------------------------------------------------ JSON pages


def _page(settings: Settings, table: str) -> Response:
    conn = get_db()
    catalog = _catalog(conn)
    relation = _relation(catalog, table)
    limit = _limit(settings.api.default_limit, settings.api.max_rows)
    q = _rows_query(settings, catalog, relation, limit)
    count = request.args.get("count")
    statement, params = _builder(q).page_sql(q)
    headers: dict[str, str] = {}
    total: int | None = None
    with value_errors.database_errors(conn, _typed_values(q), relation), conn.cursor() as cur:
        _text_as_bytes(conn, cur)
        # Its own transaction in one round trip; what may follow (a count, the rows before a
        # cursor) reads in a new one: READ COMMITTED gives each statement its own snapshot
        # anyway.
        cur.execute_alone(statement, params)
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
    # The rows come without the array's brackets (query.page_sql says why); None for none.
    raw = b"" if data is None else data if isinstance(data, bytes) else data.encode()
    return Response(b"".join((b'{"data":[', raw, b"]", tail.encode(), b"}")), mimetype=JSON,
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
    statement, params = _builder(q).count_sql(q, timeout)
    try:
        cur.execute(statement, params)
        return int(cur.fetchone()[0])
    except psycopg2.errors.QueryCanceled:
        conn.rollback()
        return None


def _estimate(cur: Any, q: RowsQuery) -> int:
    statement, params = _builder(q).estimate_sql(q)
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
    catalog = _catalog(conn)
    relation = _relation(catalog, table)
    limit = _limit(settings.api.max_export_rows, settings.api.max_export_rows)
    q = _rows_query(settings, catalog, relation, limit)
    if request.args.get("count"):
        raise _bad("count", "count is not available for CSV and NDJSON exports")
    if fmt == CSV:
        statement, params = _builder(q).csv_sql(q, limit)
        header = _csv_header(q.shape.names if q.shape is not None else
                             [c.name for c in q.columns])
        filename = f"{relation.name}.csv"
    else:
        statement, params = _builder(q).ndjson_sql(q, limit)
        header = b""
        filename = f"{relation.name}.ndjson"
    with value_errors.database_errors(conn, _typed_values(q), relation):
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
    with _parameter_errors():
        limit = query.parse_whole("limit", raw)
    if not 1 <= limit <= maximum:
        raise _bad("limit", f"limit: must be between 1 and {maximum}, got {raw[:40]}")
    return limit


def _rows_query(settings: Settings, catalog: Catalog, relation: Relation,
               limit: int) -> RowsQuery:
    args = request.args
    for name in args:
        if name not in _QUERY_PARAMS and not name.startswith(_PER_EMBED):
            raise _bad(name, f"unknown query parameter {name[:40]!r}")  # Connexion says first
    with _parameter_errors():
        shape, columns = _select(catalog, relation)
        raw_filters = args.getlist("filter")
        if len(raw_filters) > query.MAX_FILTERS:
            raise QueryError("filter", f"filter: at most {query.MAX_FILTERS} filters")
        if shape is None:
            filters = tuple(query.parse_filter(relation, f) for f in raw_filters)
            order_text = args.get("order")
        else:
            routed = (embed.route_filter(shape, f) for f in raw_filters)
            filters = tuple(f for f in routed if f is not None)
            order_text = embed.route_order(shape, args.get("order"))
        filters += _groups(relation, shape)  # or/and at the top level; or.<embed> on embeds
        _embed_limits(settings, shape)
        if shape is not None and shape.aggregated:  # groups: no key, offset paging
            shape.order_sql = aggregate.order_sql(shape, order_text)
            order, unique = (), False
        else:
            order, unique = query.parse_order(relation, order_text)
    offset = _offset(settings.api.max_offset, relation, unique)
    q = RowsQuery(relation=relation, columns=columns, filters=filters, order=order,
                  unique=unique, offset=offset, limit=limit, shape=shape)
    problem = value_errors.pattern_problem(query.pattern_values(q) +
                                           embed.pattern_values(shape))
    if problem is not None:
        raise problem
    token = args.get("cursor")
    if token is not None:
        if "offset" in args:
            raise _bad("cursor", "cursor and offset cannot be used together")
        if shape is not None and shape.aggregated:
            raise _bad("cursor", "aggregated rows (groups) have no key: page with offset")
        if not unique:
            raise _bad("cursor", f"{relation.name} has no primary key, so no order is known to "
                                 "be unique: page with offset instead of cursor")
        try:
            q.after = cursors.decode(_secret(settings), _fingerprint(q), token, len(order))
        except cursors.CursorError as exc:
            raise ApiProblem(400, "Bad Request", f"cursor: {exc}",
                             type=errors.INVALID_CURSOR, parameter="cursor") from None
    return q


def _groups(relation: Relation, shape: embed.Shape | None) -> tuple[query.Group, ...]:
    """The top level's or/and group parameters, in request order; every one must hold (with the
    filters). Groups on an embed (``or.<embed>=``...) go to that embed.

    All their conditions count together against ``MAX_GROUP_CONDITIONS``.
    """
    groups: list[query.Group] = []
    total = 0
    for name, text in request.args.items(multi=True):
        if name in _GROUP_PARAMS:
            group = query.parse_group(relation, name, text)
            groups.append(group)
        elif name.startswith(embed.GROUP_PREFIXES):
            if shape is None:
                raise QueryError(name, f"{name[:60]}: select embeds nothing to filter")
            group = embed.route_group(shape, name, text)
        else:
            continue
        total += group.conditions
        if total > filters.MAX_GROUP_CONDITIONS:
            raise QueryError(name, f"{name[:60]}: at most {filters.MAX_GROUP_CONDITIONS} "
                                   "conditions in or/and groups")
    return tuple(groups)


def _select(catalog: Catalog, relation: Relation) -> tuple[embed.Shape | None, tuple[Any, ...]]:
    """``select``: a plain list of columns (shape None, parsed as always), or a shape with
    embeds, aliases or JSON paths."""
    text = request.args.get("select")
    if text is None:  # all columns: the plain select, no shape to build
        return None, relation.columns
    api = _settings().api
    shape = embed.parse(catalog, relation, text, api.max_embed_depth, api.max_embeds,
                        aggregates=api.aggregates == "on", max_embed_rows=api.max_embed_rows)
    columns = tuple(i.column for i in shape.items
                    if isinstance(i, embed.Field) and i.column is not None)
    return (None if shape.plain else shape), columns


def _builder(q: RowsQuery) -> Any:
    """The statements' builder: aggregated selects group (swagger_server.data.aggregate)."""
    return aggregate if q.shape is not None and q.shape.aggregated else query


def _embed_limits(settings: Settings, shape: embed.Shape | None) -> None:
    for name in request.args:
        if name.startswith(_EMBED_LIMIT):
            if len(request.args.getlist(name)) > 1:
                raise QueryError(name, f"{name[:60]}: given more than once; it takes one value")
            if shape is None:
                raise QueryError(name, f"{name[:60]}: select embeds nothing to limit")
            embed.route_limit(shape, name, request.args[name], settings.api.max_embed_rows)


def _typed_values(q: RowsQuery) -> list[tuple[str, Any, str]]:
    return query.typed_values(q) + embed.typed_values(q.shape)


def _offset(maximum: int, relation: Relation, unique: bool) -> int:
    """The offset, at most ``MAX_OFFSET``: PostgreSQL reads every row it skips."""
    raw = request.args.get("offset")
    if raw is None:
        return 0
    with _parameter_errors():
        offset = query.parse_whole("offset", raw)
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
    return _order_fingerprint(q.relation.schema, q.relation.name, q.order,
                              request_auth.current_role())


@functools.lru_cache(maxsize=1024)
def _order_fingerprint(schema: str, name: str, order: tuple[query.OrderTerm, ...],
                       role: str | None) -> str:
    """Computed once per relation, order and role: the key holds everything the fingerprint
    hashes (an order term compares its column's name and type, direction, NULLS, path).
    Bounded: orders on JSON paths are many."""
    parts: list[object] = [schema, name, [t.spec() for t in order]]
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
    except embed.AmbiguousEmbed as exc:
        raise ApiProblem(400, "Bad Request", str(exc), type=errors.AMBIGUOUS_EMBED,
                         parameter=exc.param, candidates=exc.candidates) from None
    except QueryError as exc:
        raise _bad(exc.param, str(exc)) from None
