"""The catalog: which tables and views the API exposes, their columns, types and primary keys.

Read from ``pg_catalog`` once per worker and refreshed after ``[API] CATALOG_TTL`` seconds, so a
new column shows up without a restart. Exposure follows ``[API] SCHEMAS`` (in order: a bare name
is looked up in that order), ``TABLES`` (names or glob patterns, ``name`` or ``schema.name``) and
``EXCLUDE`` (the same forms). Only relations the current role may ``SELECT`` (some column of)
are listed, with the columns it may read; a primary key it cannot read whole is not listed.
Read as the request's role (after its ``SET LOCAL ROLE``), cached per role. Anything not
exposed does not exist as far as the API is concerned.

Identifiers used in SQL come only from here, never from the request's text.

Relationships (for embedding, :mod:`swagger_server.data.embed`) come from foreign keys
(``pg_constraint``, composite ones too) between exposed relations whose key columns the role
can read: many-to-one from the referencing side, one-to-many from the referenced side, and
many-to-many through a junction table (an exposed table whose primary key holds the columns of
two foreign keys). A view inherits the relationships of a base table when its columns are that
table's columns unchanged (PostgreSQL records each view column's origin in the view's query
tree, ``resorigtbl``/``resorigcol``; renamed columns count, computed ones do not).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from swagger_server.config import ApiSettings
from swagger_server.data.sqltext import no_placeholder, quote_ident
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
    # The base type is PostgreSQL's own (pg_catalog): a type of another schema may share its
    # name ("public.int4") without its functions or operators.
    builtin: bool = True
    # ' COLLATE "schema"."name"' when the column's collation is not its type's (a domain with a
    # collation of its own under a column with another): a value cast to the type would bring
    # the type's collation, and comparing it with the column's is an error. "" otherwise.
    collate: str = ""

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

    @cached_property
    def quoted(self) -> str:
        """The name as a quoted SQL identifier, made once per catalog object (the data API's
        statements name it on every request)."""
        return quote_ident(self.name)


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    kind: str  # "table" or "view"
    oid: int
    primary_key: tuple[str, ...]
    columns: tuple[Column, ...]
    estimated_rows: int | None
    # Rows read straight from storage: a table or materialized view whose row-level security
    # does not apply to the catalog's role (no view's query, no policy; not a partitioned table,
    # whose partitions may be foreign). Walking some of its rows a second time costs only the
    # walk (query.page_sql's probe).
    plain_storage: bool = field(default=False, compare=False)
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

    @cached_property
    def quoted(self) -> str:
        """``"schema"."name"`` as SQL, made once per catalog object."""
        return quote_ident(self.schema) + "." + quote_ident(self.name)

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


MANY_TO_ONE = "many-to-one"
ONE_TO_MANY = "one-to-many"
MANY_TO_MANY = "many-to-many"
REVERSE = ".reverse"  # a hint's suffix naming a foreign key's one-to-many direction


@dataclass(frozen=True)
class Relationship:
    """How rows of ``source`` lead to rows of ``target`` (both exposed relations).

    ``source_columns`` of a source row equal ``target_columns`` of its target rows; for
    many-to-many, through ``junction``: a junction row whose ``junction_source`` columns equal
    ``source_columns`` and ``junction_target`` columns equal ``target_columns``.
    """

    kind: str
    source: tuple[str, str]
    target: tuple[str, str]
    source_columns: tuple[str, ...]
    target_columns: tuple[str, ...]
    constraint: str  # the foreign key's name (many-to-many: the junction's key to the source)
    junction: tuple[str, str] | None = None
    junction_source: tuple[str, ...] = ()
    junction_target: tuple[str, ...] = ()
    target_constraint: str = ""  # many-to-many: the junction's key to the target

    @property
    def to_one(self) -> bool:
        return self.kind == MANY_TO_ONE

    def hints(self) -> set[str]:
        """Names that pick this relationship out of several (``relation!hint``)."""
        if self.kind == MANY_TO_MANY:
            assert self.junction is not None
            return {self.constraint, self.target_constraint, self.junction[1],
                    *self.junction_source, *self.junction_target}
        # The foreign key's name, or its columns on the referencing side.
        fk_side = self.source_columns if self.kind == MANY_TO_ONE else self.target_columns
        return {self.constraint, *fk_side} | self.direct_hints()

    def direct_hints(self) -> set[str]:
        """The hints that name this direction: they win when a hint fits several relationships
        (a self-reference, or a junction with two keys to one table, is one key seen both
        ways). Many-to-one: the key (``employees!manager_id``: my manager); one-to-many: the
        key with ``.reverse`` (``employees!manager_id.reverse``: those I manage); many-to-many:
        the junction's key to the far side (``users!followee_id``: whom I follow)."""
        if self.kind == MANY_TO_ONE:
            return {self.constraint, *self.source_columns}
        if self.kind == ONE_TO_MANY:
            return {n + REVERSE for n in (self.constraint, *self.target_columns)}
        return {self.target_constraint, *self.junction_target}

    @property
    def hint(self) -> str:
        """The hint a problem's candidates give: one that picks this relationship."""
        if self.source == self.target and self.kind == ONE_TO_MANY:
            return self.constraint + REVERSE
        if self.source == self.target and self.kind == MANY_TO_MANY:
            return self.target_constraint
        return self.constraint

    def candidate(self) -> dict[str, object]:
        """This relationship as a problem lists it among ambiguous ones."""
        found: dict[str, object] = {
            "kind": self.kind, "hint": self.hint,
            "columns": list(self.source_columns),
            "references": {"schema": self.target[0], "name": self.target[1],
                           "columns": list(self.target_columns)}}
        if self.junction is not None:
            found["junction"] = {"schema": self.junction[0], "name": self.junction[1]}
        return found


@dataclass(frozen=True)
class Catalog:
    relations: tuple[Relation, ...]
    schemas: tuple[str, ...]
    loaded_at: float
    relationships: tuple[Relationship, ...] = ()
    # (schema, name) -> relation, built once per load (not per request).
    index: dict[tuple[str, str], Relation] = field(
        default_factory=dict, init=False, compare=False, repr=False)
    # source (schema, name) -> its relationships
    outgoing: dict[tuple[str, str], list[Relationship]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.index.update({(r.schema, r.name): r for r in self.relations})
        for rel in self.relationships:
            self.outgoing.setdefault(rel.source, []).append(rel)

    def relationships_between(self, source: Relation, target: Relation) -> list[Relationship]:
        return [r for r in self.outgoing.get((source.schema, source.name), [])
                if r.target == (target.schema, target.name)]

    def describe(self, relation: Relation) -> dict[str, object]:
        """``GET /tables/{t}``: columns and keys, plus ``foreign_keys`` and ``referenced_by``."""
        mine = self.outgoing.get((relation.schema, relation.name), [])
        return {
            **relation.describe(),
            "foreign_keys": [
                {"name": r.constraint, "columns": list(r.source_columns),
                 "references": {"schema": r.target[0], "name": r.target[1],
                                "columns": list(r.target_columns)}}
                for r in mine if r.kind == MANY_TO_ONE],
            "referenced_by": [
                {"name": r.constraint, "schema": r.target[0], "table": r.target[1],
                 "columns": list(r.target_columns), "referenced_columns": list(r.source_columns)}
                for r in mine if r.kind == ONE_TO_MANY],
        }

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
       -- for the role reading the catalog (the request's): RLS may be on and not apply
       c.relkind IN ('r', 'm') AND NOT row_security_active(c.oid) AS plain_storage,
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
       cols.names, cols.types, cols.display_types, cols.nullables, cols.base_types,
       cols.base_builtins, cols.collations
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
-- The readable columns, in order, read once: one array each (NULL when there is none).
CROSS JOIN LATERAL (
    SELECT array_agg(a.attname ORDER BY a.attnum) AS names,
           array_agg(format_type(a.atttypid, -1) ORDER BY a.attnum) AS types,
           array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS display_types,
           array_agg(NOT a.attnotnull ORDER BY a.attnum) AS nullables,
           -- the type's, domains resolved
           array_agg(b.typname::text ORDER BY a.attnum) AS base_types,
           array_agg(b.typnamespace = 'pg_catalog'::regnamespace ORDER BY a.attnum)
               AS base_builtins,
           -- the column's collation where it is not its type's
           array_agg(CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
                          THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                     END ORDER BY a.attnum) AS collations
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      AND has_column_privilege(c.oid, a.attnum, 'SELECT')
) cols
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
    for (schema, name, relkind, oid, plain_storage, estimate, pk, names, types, displays,
         nullables, bases, builtins, collations) in rows:
        if not _matches(api.tables, schema, name) or _matches(api.exclude, schema, name):
            continue
        columns = tuple(
            Column(
                name=n, type=t, display_type=d, nullable=bool(nl), base_type=b,
                is_array=b.startswith("_"), builtin=bool(bi),
                collate=" COLLATE " + no_placeholder(co) if co else "",
            )
            for n, t, d, nl, b, bi, co in zip(
                names or [], types or [], displays or [], nullables or [], bases or [],
                builtins or [], collations or [], strict=True,
            )
        )
        relations.append(Relation(
            schema=schema, name=name, kind=_KINDS[relkind], oid=oid,
            primary_key=tuple(pk), columns=columns, estimated_rows=estimate,
            plain_storage=plain_storage,
        ))
    return Catalog(relations=tuple(relations), schemas=api.schemas, loaded_at=time.monotonic(),
                   relationships=tuple(_relationships(conn, relations)))


# ------------------------------------------------------------------ relationships

_VIEW_RULES_SQL = """
SELECT r.ev_class::int8, r.ev_action::text
FROM pg_rewrite r
WHERE r.ev_class = ANY(%s::int8[]::oid[]) AND r.rulename = '_RETURN'
"""

# Foreign keys touching the given relations, their columns by name in key order.
_FOREIGN_KEYS_SQL = """
SELECT c.conname::text, c.conrelid::int8, c.confrelid::int8,
       (SELECT array_agg(a.attname::text ORDER BY k.i)
        FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, i)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
       (SELECT array_agg(a.attname::text ORDER BY k.i)
        FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, i)
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)
FROM pg_constraint c
WHERE c.contype = 'f'
  AND (c.conrelid = ANY(%s::int8[]::oid[]) OR c.confrelid = ANY(%s::int8[]::oid[]))
ORDER BY c.conname, c.oid
"""

_ATTRIBUTES_SQL = """
SELECT a.attrelid::int8, a.attnum::int, a.attname::text FROM pg_attribute a
WHERE a.attrelid = ANY(%s::int8[]::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
"""

# A view's columns are listed, in order, in its query's top-level target list.
_FIELD = re.compile(r":(resno|resorigtbl|resorigcol|resjunk) (\S+)")


def view_column_origins(action: str) -> dict[int, tuple[int, int]]:
    """``{view attnum: (base relation oid, attnum)}`` from a view's stored query tree (text).

    Reads only the top-level query's ``:targetList``: brace depth 1 is the query node, depth 2
    its target entries (whose own fields, outside the nested expression, sit at depth 2 too).
    Backslash-escaped characters (a name holding a brace) are skipped.
    """
    depth = 0
    i = 0
    n = len(action)
    in_list = False
    entry: list[str] = []
    origins: dict[int, tuple[int, int]] = {}
    while i < n:
        ch = action[i]
        if ch == "\\":
            if in_list and depth == 2:
                entry.append(action[i:i + 2])
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if in_list and depth == 2:
                _add_origin(origins, "".join(entry))
                entry = []
            depth -= 1
            if depth == 0 and in_list:
                break
        elif depth == 1 and not in_list and action.startswith(":targetList ", i):
            in_list = True
        elif depth == 1 and in_list and ch == ":":
            break  # the next field of the query node: the target list is over
        elif in_list and depth == 2:
            entry.append(ch)
        i += 1
    return origins


def _add_origin(origins: dict[int, tuple[int, int]], entry: str) -> None:
    fields = dict(_FIELD.findall(entry))
    try:
        resno, table, column = int(fields["resno"]), int(fields["resorigtbl"]), \
            int(fields["resorigcol"])
    except (KeyError, ValueError):
        return
    if table and column and fields.get("resjunk") != "true":
        origins[resno] = (table, column)


def _relationships(conn: Connection, relations: list[Relation]) -> list[Relationship]:
    """Every relationship between ``relations`` (see the module's docstring)."""
    by_oid = {r.oid: r for r in relations}
    views = [r.oid for r in relations if r.kind == "view"]
    with conn.cursor() as cur:
        rules: list[tuple[int, str]] = []
        if views:
            cur.execute(_VIEW_RULES_SQL, (views,))
            rules = cur.fetchall()
        raw = {oid: view_column_origins(action) for oid, action in rules}
        needed = sorted(by_oid.keys() | {t for o in raw.values() for t, _ in o.values()})
        cur.execute(_ATTRIBUTES_SQL, (needed,))
        names = {(oid, num): name for oid, num, name in cur.fetchall()}
        cur.execute(_FOREIGN_KEYS_SQL, (needed, needed))
        keys = cur.fetchall()
    # (base oid, base column) -> [(exposed relation, its column)]: a table's own columns, and
    # the view columns that are that column unchanged.
    same: dict[tuple[int, str], list[tuple[Relation, str]]] = {}
    for rel in relations:
        for col in rel.columns:
            same.setdefault((rel.oid, col.name), []).append((rel, col.name))
    for view_oid, origins in raw.items():
        view = by_oid[view_oid]
        for attnum, (base, basenum) in origins.items():
            view_col, base_col = names.get((view_oid, attnum)), names.get((base, basenum))
            if view_col and base_col and view.column(view_col) is not None:
                same.setdefault((base, base_col), []).append((view, view_col))
    found: list[Relationship] = []
    for name, src_oid, dst_oid, src_cols, dst_cols in keys:
        for src, src_names in _holders(same, src_oid, src_cols or []):
            for dst, dst_names in _holders(same, dst_oid, dst_cols or []):
                found.append(Relationship(MANY_TO_ONE, (src.schema, src.name),
                                          (dst.schema, dst.name), src_names, dst_names, name))
                found.append(Relationship(ONE_TO_MANY, (dst.schema, dst.name),
                                          (src.schema, src.name), dst_names, src_names, name))
    return found + _many_to_many(found, {(r.schema, r.name): r for r in relations})


def _holders(same: dict[tuple[int, str], list[tuple[Relation, str]]], oid: int,
             columns: list[str]) -> list[tuple[Relation, tuple[str, ...]]]:
    """Exposed relations holding all of ``columns`` of relation ``oid`` (and their names)."""
    if not columns:
        return []
    per_relation: dict[tuple[str, str], tuple[Relation, list[str]]] = {}
    for i, column in enumerate(columns):
        for rel, name in same.get((oid, column), []):
            held = per_relation.setdefault((rel.schema, rel.name), (rel, []))
            if len(held[1]) == i:  # first holder of each column, in key order
                held[1].append(name)
    return [(rel, tuple(cols)) for rel, cols in per_relation.values()
            if len(cols) == len(columns)]


def _many_to_many(found: list[Relationship],
                  relations: dict[tuple[str, str], Relation]) -> list[Relationship]:
    """Through junction tables: two foreign keys whose columns all lie in its primary key."""
    out: dict[tuple[str, str], list[Relationship]] = {}
    for rel in found:
        junction = relations[rel.source]
        if rel.kind == MANY_TO_ONE and junction.kind == "table" \
                and set(rel.source_columns) <= set(junction.primary_key):
            out.setdefault(rel.source, []).append(rel)
    made: list[Relationship] = []
    for junction, keys in out.items():
        for a in keys:
            for b in keys:
                if a.constraint == b.constraint:
                    continue
                made.append(Relationship(
                    MANY_TO_MANY, a.target, b.target, a.target_columns, b.target_columns,
                    a.constraint, junction=junction, junction_source=a.source_columns,
                    junction_target=b.source_columns, target_constraint=b.constraint))
    return made


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

    def invalidate_role(self, role: str | None) -> None:
        """Reload only ``role``'s catalogs (None: those of requests without auth): a grant
        revoked from one role says nothing about what the others may read."""
        with self._lock:
            for key in [k for k in self._entries if k[-1] == role]:
                del self._entries[key]


CACHE = CatalogCache()
