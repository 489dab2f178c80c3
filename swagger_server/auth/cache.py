"""A bounded, thread-safe cache of verified tokens, so a repeated token costs a dict lookup
instead of a full verification (measured on the 2-core dev machine, noisy: HS256 ~70 us,
RS256 ~240 us, ES256 ~340 us per token uncached; 1.5-4 us from the cache).

Keyed by the token's SHA-256, never by the token itself. An entry lives until the token's
``exp``; it is dropped when found expired, or when the cache is full (least recently used
first)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from swagger_server.auth.identity import Identity


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    expired: int = 0  # entries dropped because their token expired
    evicted: int = 0  # entries dropped to make room


class TokenCache:
    def __init__(self, max_entries: int = 1000, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._clock = clock  # wall clock: exp is a Unix time
        self._entries: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()
        # Bumped by clear(): a verification that began before a key reload must not put its
        # result into the cache after the reload emptied it.
        self.generation = 0

    def get(self, key: bytes) -> Identity | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            identity, expires_at = entry
            if self._clock() >= expires_at:
                del self._entries[key]
                self.stats.expired += 1
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return identity

    def put(
        self, key: bytes, identity: Identity, expires_at: float, generation: int | None = None
    ) -> None:
        if self.max_entries == 0 or self._clock() >= expires_at:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._entries[key] = (identity, expires_at)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.stats.evicted += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)
