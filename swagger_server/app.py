"""The application factory: Connexion (Flask underneath) from ``swagger/swagger.yaml``."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import connexion
from connexion.middleware import MiddlewarePosition

from swagger_server import db, errors
from swagger_server.auth import request as request_auth
from swagger_server.auth.keyset import KeyFileError
from swagger_server.auth.spec import SPEC_SECURITY_MAP
from swagger_server.config import PROJECT_ROOT, Settings, load_settings
from swagger_server.ops import access_log, metrics
from swagger_server.web import served_spec, validation, views
from swagger_server.web.admission import AdmissionControl, ArrivalStamp
from swagger_server.web.cors import ProblemCORSMiddleware
from swagger_server.web.json_provider import ExactJSONProvider, jsonifier
from swagger_server.web.middleware import (
    ControlCharacterGuard,
    LiveProbe,
    RequestIdMiddleware,
    StalledClientGuard,
)
from swagger_server.web.validation import ParameterValidator, RepeatedParameterParser
from swagger_server.web.wsgi_bridge import BufferedWSGIMiddleware

log = logging.getLogger(__name__)

SPEC_DIR = PROJECT_ROOT / "swagger"
SPEC_FILE = "swagger.yaml"
# Headers a browser script may read on a cross-origin response.
EXPOSED_HEADERS = ["Link", "X-Total-Count", "X-Total-Count-Timed-Out", "X-Offset-Limit-Reached",
                   "X-Request-ID", "Retry-After"]


class StartupError(RuntimeError):
    """The app cannot start: broken spec, missing handler, bad setting. One clear line."""


def create_app(settings: Settings | None = None, spec_dir: Path = SPEC_DIR) -> connexion.FlaskApp:
    settings = settings or load_settings()
    # The stalled-client guard goes outermost, where it sees the server's own send; only the
    # arrival stamp comes before it, so that a request's deadline counts from its arrival.
    guard = partial(StalledClientGuard, stall_timeout=settings.api.export_stall_timeout)
    app = connexion.FlaskApp(__name__, specification_dir=spec_dir, jsonifier=jsonifier(),
                             middlewares=[ArrivalStamp, guard,
                                          *validation.middlewares(served_spec.middlewares())])
    # a2wsgi, with whole responses handed to the event loop at once, in 10 + 2 threads.
    app._middleware_app.asgi_app = BufferedWSGIMiddleware(app.app.wsgi_app)
    app.app.config["SETTINGS"] = settings
    app.app.json = ExactJSONProvider(app.app)  # jsonify as exact as a returned dict
    db.init_app(app.app)
    try:
        request_auth.install(app.app, settings.auth)  # who is asking (nothing when auth is off)
    except (KeyFileError, ValueError) as exc:  # an unreadable or invalid JWT_PUBLIC_KEYS file
        raise StartupError(f"[AUTH] JWT_PUBLIC_KEYS: {_first_line(exc)}") from exc
    try:
        app.add_api(SPEC_FILE, strict_validation=True, validate_responses=False,
                    security_map=SPEC_SECURITY_MAP,
                    uri_parser_class=RepeatedParameterParser,
                    validator_map={"parameter": ParameterValidator})
    except Exception as exc:
        raise StartupError(f"cannot load {spec_dir / SPEC_FILE}: {_first_line(exc)}") from exc
    errors.register(app)
    access_log.install(app, settings)  # outermost of ours: logs every answer, theirs too
    routes, fixed_paths = metrics.spec_routes(spec_dir / SPEC_FILE)
    app.add_middleware(metrics.MetricsMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       routes=routes, fixed_paths=fixed_paths)
    # Added first, so it wraps CORS: CORS answers preflights itself, which get an id too.
    app.add_middleware(RequestIdMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(ControlCharacterGuard, position=MiddlewarePosition.BEFORE_EXCEPTION)
    if settings.cors.enabled:
        app.add_middleware(
            ProblemCORSMiddleware,
            position=MiddlewarePosition.BEFORE_EXCEPTION,
            allow_origins=list(settings.cors.origins),
            allow_methods=["GET", "HEAD", "OPTIONS"],
            allow_headers=["Accept", "Content-Type", "X-Request-ID", "Authorization",
                           "X-API-Key"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    # Innermost of ours (after CORS, so a cross-origin probe gets its headers), still before
    # routing and the thread pool.
    app.add_middleware(LiveProbe, position=MiddlewarePosition.BEFORE_EXCEPTION)
    # Last before the Flask app's threads: routing, validation and the Swagger UI, answered on
    # the event loop, do not wait for one.
    app.add_middleware(AdmissionControl, position=MiddlewarePosition.BEFORE_CONTEXT,
                       acquire_timeout=settings.pool.acquire_timeout)
    _build_now(app)
    views.decorate_once(app.app)  # Connexion's decorators built once, not per request
    return app


def _build_now(app: connexion.FlaskApp) -> None:
    """Resolve every route now instead of on the first request.

    Connexion 3 builds its middleware stack lazily; left alone, a handler that does not import
    shows up as a 500 on every request while the workers look healthy.
    """
    middleware = app.middleware
    try:
        middleware.app, middleware.middleware_stack = middleware._build_middleware_stack()
    except Exception as exc:
        raise StartupError(f"cannot build the API from {SPEC_FILE}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
