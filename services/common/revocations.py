"""The shared revocation list: which access tokens are refused, readable by every service without asking auth.

auth owns and writes it (Redis, ``{REDIS_PREFIX}:revoked:*``) before it answers a logout, a
refresh-token reuse, a user's disable or role change; any other service (the gateway, on every
socket event) reads it here. So a revocation holds even when its broker message (``TokenRevoked``,
the fast path) is lost. Keys, each expiring once every token it can refuse has expired anyway:

- ``{prefix}:revoked:token:<token_id>``: one access token (logout).
- ``{prefix}:revoked:session:<session_id>``: every token of one login (logout, refresh reuse).
- ``{prefix}:revoked:user:<user_id>``: "not valid before", epoch milliseconds: every token of
  the user issued earlier (disabled user, role change).

``RevocationList.is_revoked(claims)`` answers from one ``MGET`` and keeps each answer at most
``cache_seconds`` (<= 1 s), in a cache of at most ``max_entries`` keys, so a revocation is seen
well within SPEC's 5 seconds. When Redis cannot be read it raises ``RevocationsUnavailable``
(and, for ``backoff_seconds`` after, raises it at once without waiting on Redis again): the
caller refuses the request as retryable (503 / ``overloaded``) rather than serve a token that
may have been revoked.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Claims", "Reader", "RevocationList", "RevocationsUnavailable", "session_key", "token_key", "user_key"]

# A key outlives the tokens it refuses by this much: services compare ``exp`` with their own clock.
CLOCK_SLACK_SECONDS = 60
MAX_CACHE_SECONDS = 1.0  # SPEC: a revocation is refused everywhere within 5 s


def token_key(prefix: str, token_id: str) -> str:
    return f"{prefix}:revoked:token:{token_id}"


def session_key(prefix: str, session_id: str) -> str:
    return f"{prefix}:revoked:session:{session_id}"


def user_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:revoked:user:{user_id}"


def ttl_until(expires_at: float, now: float) -> int:
    """Seconds a key must live to outlast a token expiring at ``expires_at`` (at least the slack)."""
    return max(1, int(expires_at - now) + 1) + CLOCK_SLACK_SECONDS


class RevocationsUnavailable(RuntimeError):
    """The list could not be read: do not serve the token (answer a retryable error)."""


class Claims(Protocol):
    """What the list needs of a token (``authclient.Identity`` and auth's ``TokenClaims`` have it;
    a mapping with these keys, such as /auth/validate's answer, is taken as well)."""

    @property
    def user_id(self) -> str: ...

    @property
    def token_id(self) -> str | None: ...

    @property
    def session_id(self) -> str | None: ...

    @property
    def issued_at(self) -> float | None:
        """Epoch seconds (to the millisecond) the token was issued."""
        ...


@runtime_checkable
class Reader(Protocol):
    """The one Redis call the list makes (``redis.Redis`` has it; tests pass a dict-backed fake)."""

    def mget(self, keys: Sequence[str]) -> Sequence[Any]: ...


def _field(claims: Claims | Mapping[str, Any], name: str) -> Any:
    if isinstance(claims, Mapping):
        return claims.get(name)
    return getattr(claims, name, None)


class RevocationList:
    def __init__(self, client: Reader, prefix: str, *, cache_seconds: float = MAX_CACHE_SECONDS,
                 max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic,
                 backoff_seconds: float = 1.0) -> None:
        if not 0 <= cache_seconds <= MAX_CACHE_SECONDS:
            raise ValueError(f"cache_seconds must be between 0 and {MAX_CACHE_SECONDS}")
        self.client, self.prefix = client, prefix
        self.cache_seconds, self.max_entries, self.clock = cache_seconds, max_entries, clock
        # After a failed read, fail fast for this long: an unreachable Redis (a socket timeout per
        # call) must not stall every event or validation behind it.
        self.backoff_seconds = backoff_seconds
        self._down_until = float("-inf")
        # key -> (value, read at); bounded by max_entries, the oldest read dropped first.
        self._cache: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()  # the gateway calls from many green threads/threads at once

    def is_revoked(self, claims: Claims | Mapping[str, Any]) -> bool:
        """True when the token, its login, or its user's "not valid before" refuses it."""
        user_id, token_id = _field(claims, "user_id"), _field(claims, "token_id")
        session_id, issued_at = _field(claims, "session_id"), _field(claims, "issued_at")
        keys = [user_key(self.prefix, str(user_id))]
        if token_id:
            keys.append(token_key(self.prefix, str(token_id)))
        if session_id:
            keys.append(session_key(self.prefix, str(session_id)))
        values = self._read(keys)
        if any(v is not None for v in values[1:]):
            return True
        not_before = values[0]
        if not_before is None:
            return False
        try:
            limit_ms = int(not_before)
        except (TypeError, ValueError):
            return True  # not ours to misread: refuse rather than serve
        issued_ms = int(float(issued_at) * 1000) if isinstance(issued_at, int | float) else 0
        return issued_ms < limit_ms

    def _read(self, keys: list[str]) -> list[Any]:
        now = self.clock()
        found: dict[str, Any] = {}
        with self._lock:
            for key in keys:
                hit = self._cache.get(key)
                if hit is not None and now - hit[1] < self.cache_seconds:
                    found[key] = hit[0]
        missing = [k for k in keys if k not in found]
        if missing:
            if now < self._down_until:
                raise RevocationsUnavailable("revocation list unreadable (failed less than a moment ago)")
            try:
                values = list(self.client.mget(missing))
            except Exception as exc:  # noqa: BLE001 - any Redis failure: see the class docstring
                self._down_until = now + self.backoff_seconds
                raise RevocationsUnavailable(f"revocation list unreadable: {exc!r}") from exc
            with self._lock:
                for key, value in zip(missing, values, strict=True):
                    found[key] = value
                    self._cache[key] = (value, now)
                    self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return [found[k] for k in keys]
