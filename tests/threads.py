"""Running one function in many threads at once, for the concurrency tests."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_concurrently(target: Callable[[], None], count: int, timeout: float = 30.0) -> None:
    """Start ``count`` threads on ``target`` and wait for them all; fails if one hangs."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    hung = [thread for thread in threads if thread.is_alive()]
    assert not hung, f"{len(hung)} of {count} threads still running after {timeout}s"
