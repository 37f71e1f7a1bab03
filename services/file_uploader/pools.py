"""What file_uploader needs to know of a pool: its ``max_late_seconds``, from auth, cached.

Asked at every pool upload's start (socket, batch, ``POST /file/upload``, tus). The
answer comes from auth's internal pool route (``AuthLookup.pool``) and is kept for
``ttl`` seconds (5 s): a changed ``max_late_seconds`` is seen within that, and a burst
of starts to one pool costs one call to auth. A pool auth does not know is given
SPEC's default (7 days): whether the caller may send to the pool at all is the
membership check's answer (gateway, routes), not this one's. auth not answering
raises ``AuthUnavailable`` (503): the rule is not guessed. Bounded: at most
``capacity`` pools (least recently used dropped first).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.common import validation
from services.common.ports import AuthLookup
from services.common.ttlcache import TtlCache


class PoolPolicies:
    def __init__(self, auth: AuthLookup, ttl: float = 5.0, capacity: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.auth = auth
        self._seen: TtlCache[float] = TtlCache(ttl, capacity, clock)  # pool_id -> max_late_seconds

    def max_late_seconds(self, pool_id: str) -> float:
        found, cached = self._seen.get(pool_id)
        if found and cached is not None:
            return cached
        pool = self.auth.pool(pool_id)  # outside the cache's lock: a slow auth does not queue other pools
        raw = (pool or {}).get("max_late_seconds")
        max_late = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0 \
            else float(validation.DEFAULT_MAX_LATE_SECONDS)
        self._seen.put(pool_id, max_late)
        return max_late


class DefaultPolicies:
    """Every pool with SPEC's default ``max_late_seconds`` (a service wired without auth: tests, tools)."""

    def max_late_seconds(self, pool_id: str) -> float:
        return float(validation.DEFAULT_MAX_LATE_SECONDS)
