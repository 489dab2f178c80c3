"""RFC 9457 problem+json for every error, and the request id that ties a 500 to its log line."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import psycopg2
import psycopg2.errors
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.problem import problem
from starlette.exceptions import HTTPException

from swagger_server.pool import DatabaseUnavailable, PoolTimeout

log = logging.getLogger(__name__)

# Problem types this service defines; documented in the README ("Errors").
POOL_TIMEOUT = "/problems/pool-timeout"
DATABASE_UNAVAILABLE = "/problems/database-unavailable"
STATEMENT_TIMEOUT = "/problems/statement-timeout"
INTERNAL_ERROR = "/problems/internal-error"
# Data API (tables_controller): 4xx the client can fix, and a catalog gone stale under a query.
INVALID_PARAMETER = "/problems/invalid-parameter"
INVALID_VALUE = "/problems/invalid-value"
INVALID_CURSOR = "/problems/invalid-cursor"
UNSUPPORTED_OPERATION = "/problems/unsupported-operation"
NOT_FOUND = "/problems/not-found"
CATALOG_CHANGED = "/problems/catalog-changed"
TOO_MANY_EXPORTS = "/problems/too-many-exports"

RETRY_AFTER_SECONDS = 1


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
    if rid:
        ext["request_id"] = rid
    return problem(status, title, detail, type=type, headers=headers, ext=ext or None)


def connexion_problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    """Connexion's own problems (spec validation: 400, ...), with the request id added."""
    log.debug("%s problem: %s", exc.status, exc.detail)
    return _response(request, exc.status, exc.title, exc.detail, exc.type or "about:blank",
                     headers=exc.headers, ext=exc.ext)


def http_error(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
    """Routing errors (404 no such path, 405 no such method), with the request id added."""
    log.debug("%s %s", exc.status_code, exc.detail)
    return _response(request, exc.status_code, HTTPStatus(exc.status_code).phrase,
                     str(exc.detail), headers=exc.headers)


def api_problem(request: ConnexionRequest, exc: ApiProblem) -> ConnexionResponse:
    return _response(request, exc.status, exc.title, exc.detail, exc.type, headers=exc.headers,
                     ext=exc.ext or None)


def pool_timeout(request: ConnexionRequest, exc: PoolTimeout) -> ConnexionResponse:
    log.warning("503 pool timeout: %s", exc)
    return _response(
        request, 503, "Service Unavailable",
        "All database connections are busy; retry shortly.",
        POOL_TIMEOUT, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def database_unavailable(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("503 database unavailable: %s", reason)
    return _response(
        request, 503, "Service Unavailable",
        "The database is unavailable; retry shortly.",
        DATABASE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def statement_timeout(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.warning("504 statement timeout: %s", str(exc).strip().splitlines()[0])
    return _response(
        request, 504, "Gateway Timeout",
        "The query ran longer than the configured statement timeout and was cancelled.",
        STATEMENT_TIMEOUT,
    )


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
    app.add_error_handler(PoolTimeout, pool_timeout)
    app.add_error_handler(DatabaseUnavailable, database_unavailable)
    # Connection lost mid-query (backend killed, network cut, server shutting down).
    app.add_error_handler(psycopg2.OperationalError, database_unavailable)
    app.add_error_handler(psycopg2.InterfaceError, database_unavailable)
    app.add_error_handler(psycopg2.errors.QueryCanceled, statement_timeout)
    app.add_error_handler(Exception, internal_error)
