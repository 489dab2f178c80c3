"""``GET /pool``: the answering worker's pool statistics."""

from __future__ import annotations

from flask import Response, jsonify

from swagger_server.db import get_pool


def stats() -> Response:
    return jsonify(get_pool().stats())
