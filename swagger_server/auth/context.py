"""Who the request's transaction runs as: the role check and the per-request preamble.

The preamble is ONE ``SELECT`` of ``set_config(name, value, true)`` calls, all values bound
parameters, sent in the same round trip as the request's query (``Preamble.prepend``). Like
PostgREST it sets, transaction-locally (``is_local = true``, so COMMIT or ROLLBACK undoes it),
after the service's own transaction settings (``statement_timeout``: swagger_server/db/
transaction.py, passed in as ``settings``):

1. the role's own settings (``ALTER ROLE web_user SET statement_timeout = '2s'``), which
   ``SET ROLE`` does not apply by itself: read from ``pg_db_role_setting`` (the database-specific
   value wins), and set first, while still the authenticator (PostgREST issue #3045);
2. ``role`` -- ``set_config('role', r, true)`` is exactly ``SET LOCAL ROLE r``, with the name as
   a bound value instead of an identifier in the SQL text;
3. ``request.jwt.claims`` (JSON), ``request.method``, ``request.path``, for RLS policies such as
   ``using (customer_id = (current_setting('request.jwt.claims', true)::json->>'sub')::int)``.

Whether a role may be used at all is decided by the catalog (:class:`RoleCatalog`), cached per
role with a TTL: the authenticator (``session_user``) must be able to ``SET ROLE`` to it (PG 16+:
``pg_has_role(..., 'SET')``, before: ``'MEMBER'``); it must not be the authenticator itself, a
superuser, or a predefined ``pg_*`` role (``pg_read_all_data`` and friends bypass grants).
Nor may it be a MEMBER (by any path, INHERIT or not) of a superuser, of a predefined role in
:data:`PRIVILEGED_PREDEFINED`, or of a role owning a table, view or
materialized view in the database (itself included): owners skip grants and, unless the table
has FORCE ROW LEVEL SECURITY, its policies, and membership carries that (``GRANT postgres TO
x`` made ``x`` read every row). Membership in a BYPASSRLS role is allowed like BYPASSRLS
itself: the attribute is not inherited, and a role with it is allowed anyway (below).
A role with BYPASSRLS is allowed: granting one to the authenticator is the DBA's deliberate
choice for trusted machine clients (Supabase's ``service_role`` works that way); the fact is
reported in :attr:`RoleFacts.bypass_rls` so the caller may log it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from swagger_server.auth.errors import ForbiddenRole
from swagger_server.auth.identity import Identity

PARAM_PREFIX = "_auth_"  # the preamble's named parameters; the query's must not start with it

# Predefined roles whose members read or write past grants (and so past what the API exposes),
# touch the server's files and programs, signal other backends, or read other sessions' query
# texts (which hold their claims: psycopg2 interpolates parameters client-side). pg_monitor
# is a member of pg_read_all_settings/stats, so its members are caught too. Names missing
# from an older server simply match nothing.
PRIVILEGED_PREDEFINED = (
    "pg_read_all_data", "pg_write_all_data", "pg_read_server_files", "pg_write_server_files",
    "pg_execute_server_program", "pg_signal_backend", "pg_read_all_stats",
    "pg_read_all_settings", "pg_maintain",
)

# One row for the role named by %(role)s (a row even when it does not exist).
ROLE_FACTS_SQL = """
WITH target AS (
    SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls
    FROM pg_catalog.pg_roles r
    WHERE r.rolname::text = %(role)s::text  -- as name, a long value would be truncated
),
role_setting AS (
    SELECT DISTINCT ON (split_part(c.setting, '=', 1))
           split_part(c.setting, '=', 1) AS name,
           substr(c.setting, strpos(c.setting, '=') + 1) AS value
    FROM target t
    JOIN pg_catalog.pg_db_role_setting s ON s.setrole = t.oid
    CROSS JOIN LATERAL unnest(s.setconfig) AS c(setting)
    WHERE s.setdatabase IN (
        0, (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database()))
    -- the database-specific value (setdatabase <> 0) wins over the role-wide one
    ORDER BY split_part(c.setting, '=', 1), s.setdatabase DESC
)
SELECT t.oid IS NOT NULL AS role_exists,
       coalesce(t.rolsuper, false) AS is_superuser,
       coalesce(t.rolbypassrls, false) AS bypass_rls,
       coalesce(t.rolname = session_user, false) AS is_authenticator,
       CASE WHEN t.oid IS NULL THEN false
            WHEN current_setting('server_version_num')::int >= 160000
                THEN pg_catalog.pg_has_role(session_user, t.oid, 'SET')
            ELSE pg_catalog.pg_has_role(session_user, t.oid, 'MEMBER')
       END AS may_set_role,
       (SELECT coalesce(json_agg(json_build_array(
                   rs.name, rs.value,
                   -- settable by a plain role in a transaction: context 'user', or a custom
                   -- (dotted) placeholder; never role/session_authorization themselves
                   rs.name NOT IN ('role', 'session_authorization')
                   AND (ps.context = 'user' OR (ps.name IS NULL AND rs.name LIKE '%%.%%')))
               ORDER BY rs.name), '[]')
        FROM role_setting rs
        LEFT JOIN pg_catalog.pg_settings ps ON ps.name = rs.name) AS settings,
       -- Memberships (MEMBER: any path, INHERIT or not, one SET ROLE away) that would carry
       -- privileges past the grants and policies: see PRIVILEGED_PREDEFINED and the docstring.
       t.oid IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_catalog.pg_roles s
           WHERE s.rolsuper AND s.oid <> t.oid
             AND pg_catalog.pg_has_role(t.oid, s.oid, 'MEMBER')) AS member_of_superuser,
       t.oid IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_catalog.pg_roles s
           WHERE s.rolname::text = ANY(%(privileged_predefined)s::text[])
             AND pg_catalog.pg_has_role(t.oid, s.oid, 'MEMBER')) AS member_of_predefined,
       t.oid IS NOT NULL AND EXISTS (
           SELECT 1
           FROM (SELECT DISTINCT c.relowner
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
                   AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema') o
           WHERE pg_catalog.pg_has_role(t.oid, o.relowner, 'MEMBER')) AS owns_tables
FROM (SELECT 1) AS one
LEFT JOIN target t ON true
"""


@dataclass(frozen=True)
class RoleFacts:
    role: str
    refusal: str | None  # why the role may not be used; None: allowed
    settings: tuple[tuple[str, str], ...] = ()  # applied transaction-locally
    skipped: tuple[str, ...] = ()  # role settings a plain role cannot set (superuser-only...)
    bypass_rls: bool = False

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def _refusal(role: str, row: Sequence[Any]) -> str | None:
    exists, superuser, _bypass, authenticator, may_set = row[:5]
    member_of_superuser, member_of_predefined, owns_tables = row[6:9]
    if not exists or not may_set:
        # One message for "no such role" and "not granted": the caller learns nothing more.
        return "it is not granted to the authenticator"
    if authenticator:
        return "it is the authenticator itself"
    if superuser:
        return "it is a superuser"
    if role.startswith("pg_"):
        return "it is a predefined pg_* role"
    # Fixed texts that name no other role: the caller learns the rule, not the catalog.
    if member_of_superuser:
        return "it is a member of a superuser"
    if member_of_predefined:
        return "it is a member of a predefined role that bypasses grants"
    if owns_tables:
        return "it owns tables, or is a member of a role that does"
    return None


def read_role_facts(cursor: Any, role: str) -> RoleFacts:
    """One catalog query; run it outside any role switch (it asks about ``session_user``)."""
    cursor.execute(
        ROLE_FACTS_SQL, {"role": role, "privileged_predefined": list(PRIVILEGED_PREDEFINED)})
    row = cursor.fetchone()
    settings = row[5] if isinstance(row[5], list) else json.loads(row[5])
    return RoleFacts(
        role=role,
        refusal=_refusal(role, row),
        settings=tuple((name, value) for name, value, ok in settings if ok),
        skipped=tuple(name for name, _value, ok in settings if not ok),
        bypass_rls=bool(row[2]),
    )


class RoleCatalog:
    """Role facts per role, cached for ``ttl`` seconds (a new grant or ALTER ROLE shows up
    within that time). Bounded: role names come from signed tokens, still not ours to trust
    with memory."""

    def __init__(
        self, ttl: float = 60.0, max_roles: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_roles = max_roles
        self._clock = clock
        self._facts: OrderedDict[str, tuple[RoleFacts, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.lookups = 0  # catalog queries run (cache misses)

    def facts(self, cursor: Any, role: str) -> RoleFacts:
        now = self._clock()
        with self._lock:
            entry = self._facts.get(role)
            if entry is not None and now < entry[1]:
                self._facts.move_to_end(role)
                return entry[0]
        facts = read_role_facts(cursor, role)
        with self._lock:
            self.lookups += 1
            self._facts[role] = (facts, now + self.ttl)
            self._facts.move_to_end(role)
            while len(self._facts) > self.max_roles:
                self._facts.popitem(last=False)
        return facts

    def check(self, cursor: Any, role: str) -> RoleFacts:
        """The facts of a role that may be used; :class:`ForbiddenRole` otherwise."""
        facts = self.facts(cursor, role)
        if facts.refusal is not None:
            raise ForbiddenRole(role, facts.refusal)
        return facts

    def clear(self) -> None:
        with self._lock:
            self._facts.clear()


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; a decoded URL path can.
    return value.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class Preamble:
    statement: sql.Composed
    params: dict[str, Any]

    def prepend(
        self, statement: sql.Composable | str, params: Mapping[str, Any] | None = None
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """The preamble and ``statement`` as one string (one round trip; the cursor's result is
        the statement's). ``statement`` must use named parameters (``%(name)s``)."""
        if params is not None and not isinstance(params, Mapping):
            raise TypeError("the statement must use named parameters to follow the preamble")
        clash = [name for name in params or {} if name.startswith(PARAM_PREFIX)]
        if clash:
            raise ValueError(f"parameter names starting with {PARAM_PREFIX!r} are reserved")
        body = sql.SQL(statement) if isinstance(statement, str) else statement
        combined = sql.Composed([self.statement, sql.SQL(";\n"), body])
        return combined, {**self.params, **(params or {})}


def build_preamble(facts: RoleFacts, identity: Identity, method: str, path: str,
                   settings: Sequence[tuple[str, str]] = ()) -> Preamble:
    """The preamble for a role that passed :meth:`RoleCatalog.check`. Refuses (ForbiddenRole)
    facts of a refused role, so that nothing can run as it by mistake.

    ``settings`` are the service's own transaction settings (``statement_timeout``...,
    swagger_server/db/transaction.py), set first: the role's own settings then win over them,
    as they would over the server's defaults."""
    if facts.refusal is not None:
        raise ForbiddenRole(facts.role, facts.refusal)
    if identity.role != facts.role:
        raise ValueError("the role facts are not the identity's role")
    items: list[sql.Composable] = []
    params: dict[str, Any] = {}

    def set_local(name: sql.Composable, value: str, key: str) -> None:
        params[PARAM_PREFIX + key] = value
        value_param = sql.Placeholder(PARAM_PREFIX + key)
        items.append(sql.SQL("set_config({}, {}, true)").format(name, value_param))

    for index, (name, value) in enumerate(settings):  # the service's, then the role's
        params[f"{PARAM_PREFIX}sn{index}"] = name
        set_local(sql.Placeholder(f"{PARAM_PREFIX}sn{index}"), value, f"sv{index}")
    for index, (name, value) in enumerate(facts.settings):
        params[f"{PARAM_PREFIX}n{index}"] = name
        set_local(sql.Placeholder(f"{PARAM_PREFIX}n{index}"), value, f"v{index}")
    set_local(sql.Literal("role"), facts.role, "role")
    # ASCII-only JSON: a lone surrogate in a claim cannot break the UTF-8 sent to the server.
    # allow_nan=False: NaN/Infinity is no JSON for PostgreSQL (tokens.plain_json refuses them
    # earlier; this keeps any other source of claims from sending them).
    claims = json.dumps(dict(identity.claims), separators=(",", ":"), allow_nan=False)
    set_local(sql.Literal("request.jwt.claims"), claims, "claims")
    set_local(sql.Literal("request.method"), _text(method), "method")
    set_local(sql.Literal("request.path"), _text(path), "path")
    return Preamble(sql.SQL("SELECT ") + sql.SQL(", ").join(items), params)
