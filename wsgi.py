"""Entry point. Production: ``gunicorn wsgi:application`` (gunicorn.conf.py sets the ASGI worker
and the hooks). Development: ``python wsgi.py`` (one uvicorn process).

``application`` is the Connexion app itself, not its inner Flask app, which has no API routes.
Under gunicorn it is built from the settings the master read and the worker inherited
(``config.process_settings()``), not from a second read of the configuration.
"""

from __future__ import annotations

import logging
import signal
import sys

from swagger_server import config, db
from swagger_server.app import create_app
from swagger_server.auth.settings import DEV_JWT_SECRET
from swagger_server.data import cursors
from swagger_server.db import embedded

log = logging.getLogger("swagger_server.wsgi")


def main() -> None:
    try:
        settings = config.load_settings()
    except config.ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    logging.basicConfig(level=settings.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for warning in config.unknown_variables():
        log.warning(warning)
    try:
        server = embedded.start_if_needed(settings)
    except embedded.EmbeddedError as exc:
        sys.exit(f"cannot start: {exc}")
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that an exit that runs the
    # finally block below, so the embedded server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # The same settings, now with the embedded server's DSN, for the pool and the app.
    settings = config.set_process_settings(config.with_embedded_dsn(settings))
    if settings.database.embedded and settings.auth.jwt_secret == DEV_JWT_SECRET:
        log.warning(config.DEMO_AUTH_NOTE)
    if not settings.api.cursor_secret:
        cursors.generated_secret()
        log.warning(cursors.RANDOM_KEY_WARNING)
    try:
        app = create_app(settings)
        host, _, port = settings.server.bind.rpartition(":")
        app.run(host=host, port=int(port), log_level=settings.server.log_level)
    finally:
        db.close_pool()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
else:
    application = create_app(config.process_settings())
