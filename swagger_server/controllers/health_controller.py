"""Liveness (no database) and readiness (a pooled connection answers in time)."""

from __future__ import annotations

from flask import Response, current_app, jsonify

from swagger_server.db import get_pool

# Readiness must answer fast even when every connection is busy or the database is away.
READY_TIMEOUT_SECONDS = 2.0


def live() -> Response:
    # Normally answered before Flask by middleware.LiveProbe (no request thread needed); this
    # view serves only what the probe passes on (a query string, which Connexion validates).
    return jsonify(status="ok")


def ready() -> Response:
    settings = current_app.config["SETTINGS"]
    timeout = min(READY_TIMEOUT_SECONDS, settings.pool.acquire_timeout)
    # PoolTimeout and DatabaseUnavailable become 503 problem+json (errors.py).
    with get_pool().connection(timeout=timeout) as conn, conn.cursor() as cur:
        cur.execute_alone("SELECT 1")
        cur.fetchone()
    return jsonify(status="ok")
