"""The catalog: which tables and views the API exposes, their columns, types and primary keys.

Read from ``pg_catalog`` once per worker and refreshed after ``[API] CATALOG_TTL`` seconds, so a
new column shows up without a restart. Exposure follows ``[API] SCHEMAS`` (in order: a bare name
is looked up in that order), ``TABLES`` (names or glob patterns, ``name`` or ``schema.name``) and
``EXCLUDE`` (the same forms). Only relations the current role may ``SELECT`` (some column of)
are listed, with the columns it may read; a primary key it cannot read whole is not listed.
Read as the request's role (after its ``SET LOCAL ROLE``), cached per role. Anything not
exposed does not exist as far as the API is concerned.

Identifiers used in SQL come only from here, never from the request's text.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from swagger_server.config import ApiSettings
from swagger_server.db.pool import Connection
from swagger_server.ops import metrics

log = logging.getLogger(__name__)

# Types rendered without quotes in CSV (their text never holds a comma, quote or newline).
_PLAIN_CSV_TYPES = frozenset({
    "int2", "int4", "int8", "float4", "float8", "numeric", "bool", "oid",
    "date", "timestamp", "timestamptz", "time", "uuid",
})
# Types whose JSON rendering by PostgreSQL is ISO 8601 (to_json) but whose text is not.
_DATETIME_TYPES = frozenset({"date", "timestamp", "timestamptz", "time", "timetz"})


@dataclass(frozen=True)
class Column:
    name: str
    # format_type(oid, -1): no modifiers ("bpchar", not "character" which means char(1)), so
    # a cast never truncates or rounds a request value: what request values are cast to.
    type: str
    display_type: str  # format_type() with modifiers, e.g. "numeric(10,2)"
    nullable: bool
    base_type: str  # pg_type.typname of the type, domains resolved, e.g. "int4", "_text"
    is_array: bool

    @property
    def is_bytea(self) -> bool:
        return self.base_type == "bytea"

    @property
    def is_bool(self) -> bool:
        return self.base_type == "bool"

    @property
    def plain_csv(self) -> bool:
        return self.base_type in _PLAIN_CSV_TYPES

    @property
    def is_datetime(self) -> bool:
        return self.base_type in _DATETIME_TYPES


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    kind: str  # "table" or "view"
    oid: int
    primary_key: tuple[str, ...]
    columns: tuple[Column, ...]
    estimated_rows: int | None
    by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)
    # Distinct lengths of the column names, ascending: where in a ``column.op.value`` text a
    # column name can end, so parsing tries those few cuts instead of one per dot.
    name_lengths: tuple[int, ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({c.name: c for c in self.columns})
        object.__setattr__(self, "name_lengths",
                           tuple(sorted({len(c.name) for c in self.columns})))

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        return self.by_name.get(name)

    def _identity(self) -> dict[str, object]:
        return {
            "schema": self.schema,
            "name": self.name,
            "kind": self.kind,
            "primary_key": list(self.primary_key),
        }

    def summary(self) -> dict[str, object]:
        return {**self._identity(), "estimated_rows": self.estimated_rows}

    def describe(self) -> dict[str, object]:
        return {
            **self._identity(),
            "columns": [
                {"name": c.name, "type": c.display_type, "nullable": c.nullable}
                for c in self.columns
            ],
        }


@dataclass(frozen=True)
class Catalog:
    relations: tuple[Relation, ...]
    schemas: tuple[str, ...]
    loaded_at: float
    # (schema, name) -> relation, built once per load (not per request).
    index: dict[tuple[str, str], Relation] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.index.update({(r.schema, r.name): r for r in self.relations})

    def resolve(self, ref: str) -> Relation | None:
        """``name`` (searched in SCHEMAS order) or ``schema.name``; None when not exposed.

        Linear in ``len(ref)``: only the exposed schemas' names are tried as prefixes (a schema
        name may itself hold dots), never every split at a dot.
        """
        for schema in self.schemas:
            found = self.index.get((schema, ref))
            if found is not None:
                return found
        for schema in self.schemas:
            if ref.startswith(schema) and ref[len(schema):len(schema) + 1] == ".":
                found = self.index.get((schema, ref[len(schema) + 1:]))
                if found is not None:
                    return found
        return None


_CATALOG_SQL = """
SELECT n.nspname, c.relname, c.relkind, c.oid::int8,
       CASE WHEN c.relkind IN ('r', 'p', 'm', 'f') AND c.reltuples >= 0
            THEN c.reltuples::int8 END,
       coalesce((
           SELECT array_agg(a.attname ORDER BY k.i)
           FROM pg_constraint p
           CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS k(attnum, i)
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
           WHERE p.conrelid = c.oid AND p.contype = 'p'
             -- a key the role cannot read whole is no key to it (no row address, no cursor)
             AND NOT EXISTS (
                 SELECT 1 FROM unnest(p.conkey) AS u(attnum)
                 WHERE NOT has_column_privilege(c.oid, u.attnum, 'SELECT'))
       ), '{}') AS pk,
       (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND has_column_privilege(c.oid, a.attnum, 'SELECT')) AS names,
       (SELECT array_agg(format_type(a.atttypid, -1) ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND has_column_privilege(c.oid, a.attnum, 'SELECT')) AS types,
       (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
        FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND has_column_privilege(c.oid, a.attnum, 'SELECT')) AS display_types,
       (SELECT array_agg(NOT a.attnotnull ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND has_column_privilege(c.oid, a.attnum, 'SELECT')) AS nullables,
       (SELECT array_agg(b.typname::text ORDER BY a.attnum)
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND has_column_privilege(c.oid, a.attnum, 'SELECT')) AS base_types
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%s)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT c.relispartition
  AND has_any_column_privilege(c.oid, 'SELECT')
ORDER BY array_position(%s::text[], n.nspname::text), c.relname
"""

_KINDS = {"r": "table", "p": "table", "f": "table", "v": "view", "m": "view"}


def _matches(patterns: Iterable[str], schema: str, name: str) -> bool:
    qualified = f"{schema}.{name}"
    return any(
        fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(qualified, p) for p in patterns
    )


# (key, pattern) already warned about in this process: a catalog reload every CATALOG_TTL
# must not repeat the same line.
_warned: set[tuple[str, str]] = set()


def _warn_unmatched(api: ApiSettings, found: list[tuple[str, str]]) -> None:
    """Log once per process each TABLES / EXCLUDE pattern that matches no relation.

    Patterns are case-sensitive (as PostgreSQL's names are): ``Secrets`` does not exclude
    ``secrets``, and silently exposing what an operator meant to hide is the risk.
    """
    for key, patterns in (("TABLES", api.tables), ("EXCLUDE", api.exclude)):
        for pattern in patterns:
            if (key, pattern) in _warned or any(_matches((pattern,), s, n) for s, n in found):
                continue
            _warned.add((key, pattern))
            log.warning("[API] %s pattern %r matches no readable table or view in schemas %s "
                        "(patterns are case-sensitive)", key, pattern, ", ".join(api.schemas))


def load(conn: Connection, api: ApiSettings) -> Catalog:
    """Read the exposed relations with one query on ``conn`` (its transaction stays open)."""
    schemas = list(api.schemas)
    with conn.cursor() as cur:
        cur.execute(_CATALOG_SQL, (schemas, schemas))
        rows = cur.fetchall()
    _warn_unmatched(api, [(row[0], row[1]) for row in rows])
    relations = []
    for schema, name, relkind, oid, estimate, pk, names, types, displays, nullables, bases in rows:
        if not _matches(api.tables, schema, name) or _matches(api.exclude, schema, name):
            continue
        columns = tuple(
            Column(
                name=n, type=t, display_type=d, nullable=bool(nl), base_type=b,
                is_array=b.startswith("_"),
            )
            for n, t, d, nl, b in zip(
                names or [], types or [], displays or [], nullables or [], bases or [],
                strict=True,
            )
        )
        relations.append(Relation(
            schema=schema, name=name, kind=_KINDS[relkind], oid=oid,
            primary_key=tuple(pk), columns=columns, estimated_rows=estimate,
        ))
    return Catalog(relations=tuple(relations), schemas=api.schemas, loaded_at=time.monotonic())


class CatalogCache:
    """One catalog per worker process, configuration and role, reloaded after ``ttl`` seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[object, ...], Catalog] = {}

    def get(self, conn: Connection, api: ApiSettings, dsn: str | None,
            role: str | None = None) -> Catalog:
        """``role``: the request's role (None without auth). ``conn`` must run as it: what a
        role sees is what PostgreSQL grants it, so each role has its own catalog."""
        key = (dsn, api.schemas, api.tables, api.exclude, role)
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry.loaded_at < api.catalog_ttl:
            return entry
        # Several threads may load at once after expiry; each gets a consistent catalog and the
        # last one stored wins. Cheaper than making every request wait on a lock.
        fresh = load(conn, api)
        metrics.catalog_reloaded()
        with self._lock:
            self._entries[key] = fresh
        return fresh

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = CatalogCache()
