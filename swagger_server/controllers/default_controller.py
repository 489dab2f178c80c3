"""``GET /``: the seed's endpoint, a ``select 1`` through the pool."""

from __future__ import annotations

from flask import Response, jsonify

from swagger_server.db import get_db


def root() -> Response:
    with get_db().cursor() as cur:
        cur.execute_alone("SELECT 1")  # one round trip: no BEGIN, no ROLLBACK
        return jsonify([list(row) for row in cur.fetchall()])
