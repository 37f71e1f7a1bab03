"""A few seconds' memory of validated tokens, for the tus door (a PATCH per MiB, each with a Bearer).

A tus client sends its token with every request; asking auth each time was the
largest fixed cost of a PATCH (one HTTP round trip to auth, ~40 ms on a loaded
2-core machine). An identity is reused for ``ttl`` seconds (2 s), well inside
SPEC's "a revoked token is refused everywhere within 5 seconds". Refusals are not
remembered (a refused token is asked again), and auth being down still raises.
Bounded: at most ``capacity`` tokens (least recently used dropped first); tokens
are kept as their sha256, never as the bearer string.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from services.common.authclient import Identity
from services.common.ports import AuthLookup
from services.common.ttlcache import TtlCache


class RecentIdentities:
    def __init__(self, auth: AuthLookup, ttl: float = 2.0, capacity: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.auth = auth
        self._seen: TtlCache[Identity] = TtlCache(ttl, capacity, clock)  # sha256(token) -> identity

    def validate(self, token: str | None) -> Identity | None:
        if not token:
            return None
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        found, cached = self._seen.get(key)
        if found:
            return cached
        identity = self.auth.validate(token)  # outside the cache's lock: one slow answer does not queue others
        if identity is None:
            self._seen.forget(key)
        else:
            self._seen.put(key, identity)
        return identity
