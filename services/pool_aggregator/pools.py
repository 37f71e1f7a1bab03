"""Pool settings from auth, cached for a few seconds.

A pool's ``window_seconds`` never changes, so a stale entry cannot put a file
in the wrong window; the short expiry only bounds how long a changed grace,
timeout or ``processor_url`` takes to be seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class PoolCache:
    def __init__(self, auth: Any, ttl_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.auth = auth
        self.ttl = ttl_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, dict | None]] = {}

    def get(self, pool_id: str) -> dict | None:
        """The pool's settings, or None if auth does not know it (AuthUnavailable propagates)."""
        now = self.clock()
        with self._lock:
            hit = self._entries.get(pool_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        pool = self.auth.pool(pool_id)
        with self._lock:
            self._entries[pool_id] = (now, pool)
            if len(self._entries) > 10000:  # bound memory: drop the oldest half
                for key, _ in sorted(self._entries.items(), key=lambda kv: kv[1][0])[:5000]:
                    self._entries.pop(key, None)
        return pool


def processing_timeout(pool: dict | None, default: float = 300.0) -> float:
    value = (pool or {}).get("processing_timeout_seconds")
    return float(value) if value else default
