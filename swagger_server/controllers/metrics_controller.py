"""``GET /metrics``: Prometheus text format, every worker of the gunicorn master in one scrape."""

from __future__ import annotations

from flask import Response

from swagger_server.db import get_pool
from swagger_server.ops import metrics


def scrape() -> Response:
    found = metrics.get()
    found.pool_sampler.watch(get_pool())  # the pool of this process, as it is now
    body, content_type = found.exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
