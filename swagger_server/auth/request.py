"""Who is asking, per request: credentials -> :class:`Identity` (a Flask ``before_request``,
in the request's worker thread), and that identity's role and claims on the request's
connection (:func:`attach`), sent in the same round trip as each transaction's first statement.

When no auth is configured (no JWT key material, no API keys, no anonymous role) nothing here
runs: no identity, no role switch; the connection's cursors carry the pool's own transaction
settings only (swagger_server/db/transaction.py).

The role switch travels with the statements: :func:`attach` points the connection's
``cursor_factory`` at a :class:`RoleBinding`, whose cursors put the preamble
(``SELECT set_config('role', ...), set_config('request.jwt.claims', ...), ...``) in front of the
first statement of every transaction the request opens (``preamble; statement`` in one
``execute``: psycopg2 returns the last statement's result). Everything it sets is
transaction-local, so COMMIT or ROLLBACK (the pool's reset) undoes it; :func:`detach` then
puts the connection's own binding back before it goes back to the pool, so a role's preamble
never reaches the next request, not even one that failed before its first statement. The role's
preamble starts with the connection's own settings (``statement_timeout``...): one preamble,
one place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg2.errors
from flask import Flask, current_app, g, request
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from swagger_server.auth.context import RoleCatalog, build_preamble
from swagger_server.auth.errors import CredentialsRequired, ForbiddenRole, InvalidToken
from swagger_server.auth.identity import Identity
from swagger_server.auth.keys import ApiKeyVerifier
from swagger_server.auth.settings import AuthSettings
from swagger_server.auth.tokens import TokenVerifier
from swagger_server.db.transaction import BindingSpent, PreambleBinding, PreambleCursor

log = logging.getLogger(__name__)

EXTENSION = "pgrest_auth"
PUBLIC_PREFIXES = ("/health/",)  # never authenticated
ADMIN_PATHS = ("/pool", "/metrics")  # need a role in ADMIN_ROLES when auth is configured


class AdminRequired(Exception):
    """403: an admin endpoint asked for by a role not in ``[AUTH] ADMIN_ROLES``."""

    def __init__(self, role: str | None) -> None:
        who = f"role {role!r}" if role else "an anonymous request"
        super().__init__(f"{who} may not use the admin endpoints (ADMIN_ROLES)")
        self.description = str(self)


class PermissionDenied(Exception):
    """403: PostgreSQL refused the request's role something a hand-written endpoint needs
    (SQLSTATE 42501). Without auth the same error is the deployment's fault (a 500)."""

    def __init__(self, role: str) -> None:
        super().__init__(f"role {role!r} may not read what this request needs")
        self.description = str(self)


class Authenticator:
    """The worker's verifiers and role catalog, built once per app."""

    def __init__(self, settings: AuthSettings, role_ttl: float = 60.0) -> None:
        self.settings = settings
        self.tokens = TokenVerifier(settings) if settings.jwt_enabled else None
        self.keys = ApiKeyVerifier(settings.api_keys)
        self.roles = RoleCatalog(ttl=role_ttl)

    def identify(self, headers: Mapping[str, str]) -> Identity:
        """The caller, from ``Authorization: Bearer`` or ``X-API-Key``; the anonymous role
        without either; raises a 401 :class:`AuthenticationError` otherwise."""
        authorization = headers.get("Authorization")
        api_key = headers.get("X-API-Key")
        if authorization is not None:
            if api_key is not None:
                raise InvalidToken("send either Authorization or X-API-Key, not both")
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise InvalidToken("malformed Authorization header: expected 'Bearer <token>'")
            if self.tokens is None:
                raise InvalidToken("bearer tokens are not accepted here (no JWT key configured)")
            return self.tokens.verify(token.strip())
        if api_key is not None:
            return self.keys.verify(api_key.strip())
        if self.settings.anonymous_role:
            return Identity(role=self.settings.anonymous_role, claims={}, source="anonymous")
        raise CredentialsRequired()


def active(settings: AuthSettings) -> bool:
    """Auth is configured at all: credentials accepted, or an anonymous role to run as."""
    return settings.enabled or bool(settings.anonymous_role)


def install(app: Flask, settings: AuthSettings) -> None:
    """Identify every request (but ``/health/*``) once, in its worker thread."""
    if not active(settings):
        return
    app.extensions[EXTENSION] = Authenticator(settings)
    app.before_request(_identify)
    app.register_error_handler(psycopg2.errors.InsufficientPrivilege, _permission_denied)


def _permission_denied(exc: Exception) -> Any:
    identity: Identity | None = g.get("identity")
    if identity is None:
        raise exc
    raise PermissionDenied(identity.role) from None


def _identify() -> None:
    if request.path.startswith(PUBLIC_PREFIXES):
        return
    authenticator: Authenticator = current_app.extensions[EXTENSION]
    identity = authenticator.identify(request.headers)
    g.identity = identity
    if request.path in ADMIN_PATHS and authenticator.settings.enabled:
        admin = authenticator.settings.admin_roles
        if identity.source == "anonymous" or identity.role not in admin:
            raise AdminRequired(None if identity.source == "anonymous" else identity.role)


def current_role() -> str | None:
    """The role the request runs as; None when auth is not configured (or a public path)."""
    identity: Identity | None = g.get("identity")
    return identity.role if identity is not None else None


# ------------------------------------------------------------------ the role on the connection


class RoleBinding(PreambleBinding):
    """A connection's ``cursor_factory`` while a request owns it: its preamble starts with the
    connection's own settings (``base``, put back by :func:`detach`), then sets the role; a
    statement in autocommit mode, or after :func:`detach`, is refused (:class:`BindingSpent`)
    rather than run as the authenticator with no claims."""

    autocommit_ok = False


RoleBindingSpent = BindingSpent
RoleCursor = PreambleCursor


def attach(conn: Any) -> None:
    """Make ``conn`` run this request's transactions as its identity's role (no-op without
    auth). Checks the role first (:class:`ForbiddenRole`: nothing runs as it); a role not in the
    cache costs one catalog query, rolled back, as the authenticator."""
    base = _base(conn)
    conn.cursor_factory = base
    identity: Identity | None = g.get("identity")
    if identity is None:
        return
    authenticator: Authenticator = current_app.extensions[EXTENSION]
    facts = _role_facts(authenticator.roles, conn, identity.role)
    if facts.bypass_rls:
        log.debug("role %s has BYPASSRLS", identity.role)
    settings = base.settings if base is not None else ()
    preamble = build_preamble(facts, identity, request.method, request.path, settings)
    conn.cursor_factory = RoleBinding((preamble.statement, preamble.params), settings, base)


def _base(conn: Any) -> PreambleBinding | None:
    """The connection's own binding (the pool's transaction settings), under any role's."""
    binding = conn.cursor_factory
    while isinstance(binding, RoleBinding):
        binding = binding.base
    return binding if isinstance(binding, PreambleBinding) else None


def _role_facts(roles: RoleCatalog, conn: Any, role: str) -> Any:
    idle = conn.info.transaction_status == TRANSACTION_STATUS_IDLE
    lookups = roles.lookups
    try:
        with conn.cursor() as cur:
            facts = roles.check(cur, role)
    except ForbiddenRole:
        if idle:
            conn.rollback()
        raise
    if idle and roles.lookups != lookups:
        conn.rollback()  # the lookup's transaction: the request's must start with the preamble
    return facts


def detach(conn: Any) -> None:
    """Before ``conn`` goes back to the pool: no preamble may reach its next user."""
    binding = conn.cursor_factory
    if isinstance(binding, RoleBinding):
        binding.clear()
    conn.cursor_factory = _base(conn)
