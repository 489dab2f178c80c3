"""The request's acquire deadline: by when it must hold its database connection.

Why: ``ACQUIRE_TIMEOUT`` bounds the whole wait a request sees, counted from its arrival at the
worker, not only the pool's part of it. The admission middleware (swagger_server/web/
admission.py) sets the deadline on the event loop; a2wsgi runs the view in a copy of that
context, so ``get_db`` in the request's thread waits for a connection only for what is left.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

# time.monotonic() by which the request must have its connection; None outside a request.
_DEADLINE: ContextVar[float | None] = ContextVar("pgrest_acquire_deadline", default=None)


def set_deadline(monotonic_deadline: float) -> None:
    _DEADLINE.set(monotonic_deadline)


def time_left() -> float | None:
    """Seconds left to get a connection (0 when past), or None: the pool's own timeout."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
