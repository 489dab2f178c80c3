"""RFC 9457 problem+json for every error, and the request id that ties a 500 to its log line."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import psycopg2
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem
from starlette.exceptions import HTTPException

from swagger_server.auth.errors import AuthenticationError, ForbiddenRole
from swagger_server.auth.request import AdminRequired, PermissionDenied
from swagger_server.db.pool import DatabaseUnavailable, PoolTimeout

log = logging.getLogger(__name__)

# Problem types this service defines; documented in the README ("Errors").
POOL_TIMEOUT = "/problems/pool-timeout"
DATABASE_UNAVAILABLE = "/problems/database-unavailable"
STATEMENT_TIMEOUT = "/problems/statement-timeout"
TRANSACTION_CONFLICT = "/problems/transaction-conflict"
INTERNAL_ERROR = "/problems/internal-error"
# Data API (tables_controller): 4xx the client can fix, and a catalog gone stale under a query.
INVALID_PARAMETER = "/problems/invalid-parameter"
INVALID_VALUE = "/problems/invalid-value"
INVALID_CURSOR = "/problems/invalid-cursor"
UNSUPPORTED_OPERATION = "/problems/unsupported-operation"
NOT_FOUND = "/problems/not-found"
AMBIGUOUS_EMBED = "/problems/ambiguous-embed"
CATALOG_CHANGED = "/problems/catalog-changed"
CORS_REJECTED = "/problems/cors-rejected"
TOO_MANY_EXPORTS = "/problems/too-many-exports"
# Authentication (swagger_server/auth): who is asking, and may they run as that role.
UNAUTHORIZED = "/problems/unauthorized"
FORBIDDEN_ROLE = "/problems/forbidden-role"
ADMIN_REQUIRED = "/problems/admin-required"
PERMISSION_DENIED = "/problems/permission-denied"

RETRY_AFTER_SECONDS = 1


# ------------------------------------------------------------------ database errors by SQLSTATE


@dataclass(frozen=True)
class DbOutcome:
    """What a database error means for the client."""

    status: int
    type: str
    title: str
    detail: str
    retry: bool = False  # answer with Retry-After: the same request may well succeed soon
    # The status holds only when a value of the request is to blame (value_errors finds it by
    # casting the values, alone if need be); a failure that no request value explains is a 500.
    request_values: bool = False
    catalog: bool = False  # only when the cached catalog is stale (value_errors reloads it)


_UNAVAILABLE = DbOutcome(503, DATABASE_UNAVAILABLE, "Service Unavailable",
                         "The database is unavailable; retry shortly.", retry=True)
_BUSY = DbOutcome(503, DATABASE_UNAVAILABLE, "Service Unavailable",
                  "The database is out of resources right now; retry shortly.", retry=True)
_TIMEOUT = DbOutcome(504, STATEMENT_TIMEOUT, "Gateway Timeout",
                     "The query ran longer than the configured statement timeout and was "
                     "cancelled.")
_CONFLICT = DbOutcome(503, TRANSACTION_CONFLICT, "Service Unavailable",
                      "The transaction conflicted with another one; retry.", retry=True)
_BAD_VALUE = DbOutcome(400, INVALID_VALUE, "Bad Request",
                       "A value of the request is not valid for its column.",
                       request_values=True)
# SELECT revoked within CATALOG_TTL: value_errors reloads that role's catalog and answers 404
# when the queried relation is no longer readable; a value can cause it too (a regconfig in a
# schema the role may not use: a 400, checked first); anywhere else (a view's own table) a 500.
_NO_PRIVILEGE = DbOutcome(404, NOT_FOUND, "Not Found", "No such table or view.", catalog=True)
_INTERNAL = DbOutcome(500, INTERNAL_ERROR, "Internal Server Error",
                      "An unexpected error occurred; quote the request id when reporting it.")

# The one table (https://www.postgresql.org/docs/current/errcodes-appendix.html): a code is
# looked up first, then its two-character class; anything else (XX internal errors, a view's
# P0001 RAISE, a 42 syntax error of ours, ...) is a 500. value_errors refines class 42
# (undefined column, table, function) by what the request asked for.
_BY_CODE: dict[str, DbOutcome] = {
    "57014": _TIMEOUT,       # query_canceled: statement_timeout (or a cancel request)
    "57P01": _UNAVAILABLE,   # admin_shutdown: the server is stopping, or the backend killed
    "57P02": _UNAVAILABLE,   # crash_shutdown
    "57P03": _UNAVAILABLE,   # cannot_connect_now: starting up, shutting down, recovering
    "57P04": _UNAVAILABLE,   # database_dropped
    "57P05": _UNAVAILABLE,   # idle_session_timeout: the session is gone
    "25P03": _UNAVAILABLE,   # idle_in_transaction_session_timeout: the session is gone
    "40001": _CONFLICT,      # serialization_failure
    "40P01": _CONFLICT,      # deadlock_detected
    "23514": _BAD_VALUE,     # check_violation: a value outside a domain's CHECK
    "42501": _NO_PRIVILEGE,  # insufficient_privilege
}
_BY_CLASS: dict[str, DbOutcome] = {
    "08": _UNAVAILABLE,  # connection exception
    "53": _BUSY,         # insufficient resources: out of memory, disk full, too many clients
    "22": _BAD_VALUE,    # data exception: a value its type rejects (or a view's own bad data)
    "54": _BAD_VALUE,    # program limit exceeded: an array over 6 dimensions, jsonb nested
                         # 20,000 deep (or a limit that a view's own query hits)
}


def classify(exc: BaseException) -> DbOutcome:
    """The response a database error calls for; a 500 for anything the table does not list."""
    if not isinstance(exc, psycopg2.Error):
        return _INTERNAL
    code = exc.pgcode or ""
    if not code:
        # No SQLSTATE: libpq lost the connection (server gone, network cut, socket closed).
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return _UNAVAILABLE
        return _INTERNAL
    return _BY_CODE.get(code) or _BY_CLASS.get(code[:2]) or _INTERNAL


# ------------------------------------------------------------------ problems


class ApiProblem(Exception):
    """Raised by controllers for a client error with a clear message (400, 404, ...)."""

    def __init__(
        self, status: int, title: str, detail: str, type: str = "about:blank",
        headers: dict[str, str] | None = None, **ext: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.type, self.ext = status, title, detail, type, ext
        self.headers = headers


def request_id(request: ConnexionRequest) -> str:
    return request.scope.get("state", {}).get("request_id", "")


def _response(
    request: ConnexionRequest,
    status: int,
    title: str,
    detail: str,
    type: str = "about:blank",
    headers: dict[str, str] | None = None,
    ext: dict[str, Any] | None = None,
) -> ConnexionResponse:
    rid = request_id(request)
    ext = dict(ext or {})
    if status == 400 and "invalid-params" not in ext:
        ext["invalid-params"] = [_invalid_param(ext.get("parameter"), detail)]
    if rid:
        ext["request_id"] = rid
    return problem(status, title, detail, type=type, headers=headers, ext=ext or None)


def _invalid_param(parameter: str | None, detail: str) -> dict[str, str]:
    """RFC 9457 ``invalid-params`` entry: the parameter at fault (``request`` when not one)."""
    if parameter is None:
        return {"name": "request", "reason": detail}
    prefix = f"{parameter}: "
    return {"name": parameter,
            "reason": detail[len(prefix):] if detail.startswith(prefix) else detail}


def connexion_problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    """Connexion's own problems (spec validation: 400, ...), with the request id added.

    Parameters come as one clean sentence from swagger_server.web.validation; anything else keeps
    only its first paragraph (jsonschema appends the schema and instance after a blank line).
    """
    detail = str(exc.detail or "").split("\n\n")[0].strip()
    log.debug("%s problem: %s", exc.status, detail)
    return _response(request, exc.status, exc.title, detail, exc.type or "about:blank",
                     headers=exc.headers, ext=exc.ext)


def http_error(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
    """Routing errors (404 no such path, 405 no such method), with the request id added."""
    log.debug("%s %s", exc.status_code, exc.detail)
    return _response(request, exc.status_code, HTTPStatus(exc.status_code).phrase,
                     str(exc.detail), headers=exc.headers)


def api_problem(request: ConnexionRequest, exc: ApiProblem) -> ConnexionResponse:
    return _response(request, exc.status, exc.title, exc.detail, exc.type, headers=exc.headers,
                     ext=exc.ext or None)


def unauthorized(request: ConnexionRequest, exc: AuthenticationError) -> ConnexionResponse:
    """401 with the RFC 6750 challenge; the reason is ours (fixed text), never the token."""
    log.info("401 %s", exc.description)
    return _response(request, 401, "Unauthorized", exc.description, UNAUTHORIZED,
                     headers={"WWW-Authenticate": exc.challenge})


def forbidden_role(request: ConnexionRequest, exc: ForbiddenRole) -> ConnexionResponse:
    log.warning("403 %s", exc.description)
    return _response(request, 403, "Forbidden", exc.description, FORBIDDEN_ROLE)


def admin_required(request: ConnexionRequest, exc: AdminRequired) -> ConnexionResponse:
    return _response(request, 403, "Forbidden", exc.description, ADMIN_REQUIRED)


def permission_denied(request: ConnexionRequest, exc: PermissionDenied) -> ConnexionResponse:
    return _response(request, 403, "Forbidden", exc.description, PERMISSION_DENIED)


def pool_timeout(request: ConnexionRequest, exc: PoolTimeout) -> ConnexionResponse:
    log.warning("503 pool timeout: %s", exc)
    return _response(
        request, 503, "Service Unavailable",
        "All database connections are busy; retry shortly.",
        POOL_TIMEOUT, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def database_unavailable(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """The pool could not open a connection (no SQLSTATE to read)."""
    return _database_response(request, exc, _UNAVAILABLE)


def database_error(request: ConnexionRequest, exc: psycopg2.Error) -> ConnexionResponse:
    """Any database error that reached the app: answered by its SQLSTATE (see ``classify``).

    A data error or limit that value_errors did not pin on a request value lands here too:
    the request's values are not at fault, so it is a 500 like any other unexplained failure.
    """
    outcome = classify(exc)
    if outcome is _INTERNAL or outcome.request_values or outcome.catalog:
        return internal_error(request, exc)
    return _database_response(request, exc, outcome)


def _database_response(request: ConnexionRequest, exc: Exception,
                       outcome: DbOutcome) -> ConnexionResponse:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("%s %s: %s", outcome.status, outcome.type, reason)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if outcome.retry else None
    return _response(request, outcome.status, outcome.title, outcome.detail, outcome.type,
                     headers=headers)


def internal_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.error("500 request_id=%s %s %s", request_id(request), request.method, request.url.path,
              exc_info=exc)
    return _response(
        request, 500, "Internal Server Error",
        "An unexpected error occurred; quote the request id when reporting it.",
        INTERNAL_ERROR,
    )


def register(app: Any) -> None:
    """Attach the handlers to a Connexion app; the most specific exception class wins."""
    app.add_error_handler(ProblemException, connexion_problem)
    app.add_error_handler(HTTPException, http_error)
    app.add_error_handler(ApiProblem, api_problem)
    app.add_error_handler(AuthenticationError, unauthorized)
    app.add_error_handler(ForbiddenRole, forbidden_role)
    app.add_error_handler(AdminRequired, admin_required)
    app.add_error_handler(PermissionDenied, permission_denied)
    app.add_error_handler(PoolTimeout, pool_timeout)
    app.add_error_handler(DatabaseUnavailable, database_unavailable)
    # By SQLSTATE: connection lost mid-query, statement timeout, server shutting down, ...
    app.add_error_handler(psycopg2.Error, database_error)
    app.add_error_handler(Exception, internal_error)
