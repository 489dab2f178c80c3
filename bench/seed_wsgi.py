"""The app as the seed pooled it: psycopg2's ThreadedConnectionPool(1, 20), for reference only.

Same Connexion app and views; only the pool behind ``get_db()`` differs. Used by
bench/bench_pool.py, never in production.
"""

from __future__ import annotations

import os
import threading

from psycopg2.pool import ThreadedConnectionPool

from swagger_server import db
from swagger_server.app import create_app
from swagger_server.config import load_settings

_seed: ThreadedConnectionPool | None = None
_lock = threading.Lock()


def _seed_pool(settings=None) -> ThreadedConnectionPool:
    global _seed
    with _lock:
        if _seed is None:
            _seed = ThreadedConnectionPool(1, 20, load_settings().database.dsn,
                                           application_name=f"seed worker {os.getpid()}")
        return _seed


db.get_pool = _seed_pool  # get_db() and close_db() look it up at call time
application = create_app()
