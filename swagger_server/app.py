"""The application factory: Connexion (Flask underneath) from ``swagger/swagger.yaml``."""

from __future__ import annotations

import logging
from pathlib import Path

import connexion
from connexion.middleware import MiddlewarePosition
from starlette.middleware.cors import CORSMiddleware

from swagger_server import db, errors, served_spec
from swagger_server.config import PROJECT_ROOT, Settings, load_settings
from swagger_server.middleware import ControlCharacterGuard, RequestIdMiddleware

log = logging.getLogger(__name__)

SPEC_DIR = PROJECT_ROOT / "swagger"
SPEC_FILE = "swagger.yaml"
# Headers a browser script may read on a cross-origin response.
EXPOSED_HEADERS = ["Link", "X-Total-Count", "X-Request-ID", "Retry-After"]


class StartupError(RuntimeError):
    """The app cannot start: broken spec, missing handler, bad setting. One clear line."""


def create_app(settings: Settings | None = None, spec_dir: Path = SPEC_DIR) -> connexion.FlaskApp:
    settings = settings or load_settings()
    app = connexion.FlaskApp(__name__, specification_dir=spec_dir,
                             middlewares=served_spec.middlewares())
    app.app.config["SETTINGS"] = settings
    db.init_app(app.app)
    try:
        app.add_api(SPEC_FILE, strict_validation=True, validate_responses=False)
    except Exception as exc:
        raise StartupError(f"cannot load {spec_dir / SPEC_FILE}: {_first_line(exc)}") from exc
    errors.register(app)
    # Added first, so it wraps CORS: CORS answers preflights itself, which get an id too.
    app.add_middleware(RequestIdMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(ControlCharacterGuard, position=MiddlewarePosition.BEFORE_EXCEPTION)
    if settings.cors.enabled:
        app.add_middleware(
            CORSMiddleware,
            position=MiddlewarePosition.BEFORE_EXCEPTION,
            allow_origins=list(settings.cors.origins),
            allow_methods=["GET", "HEAD", "OPTIONS"],
            allow_headers=["Accept", "Content-Type", "X-Request-ID"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    _build_now(app)
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
