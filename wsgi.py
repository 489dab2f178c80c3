"""Entry point. Production: ``gunicorn wsgi:application`` (gunicorn.conf.py sets the ASGI worker
and the hooks). Development: ``python wsgi.py`` (one uvicorn process).

``application`` is the Connexion app itself, not its inner Flask app, which has no API routes.
"""

from __future__ import annotations

import logging
import signal
import sys

from swagger_server import db, embedded
from swagger_server.app import create_app
from swagger_server.config import load_settings


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = embedded.start_if_needed(settings)
    except embedded.EmbeddedError as exc:
        sys.exit(f"cannot start: {exc}")
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that an exit that runs the
    # finally block below, so the embedded server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        app = create_app()  # settings again: they now see the embedded server's DSN
        host, _, port = settings.server.bind.rpartition(":")
        app.run(host=host, port=int(port), log_level=settings.server.log_level)
    finally:
        db.close_pool()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
else:
    application = create_app()
