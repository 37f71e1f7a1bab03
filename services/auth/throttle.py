"""Signup and login rate limits, per client address and per user name, counted in Redis.

Fixed one-minute windows (``core.rate_window``): a counter per action, scope,
caller and minute, expiring on its own, shared by every auth replica. Over the
limit: 429 ``overloaded`` with ``retry_after`` (seconds until the window ends).

Redis down: the request goes through (fail open, logged and counted). Refusing
every login because a cache is away would turn a Redis outage into a fleet
outage; the argon2 slots (``core.Passwords``) still bound the work a flood
can cause meanwhile.
"""

from __future__ import annotations

from services.common.errors import ApiError

from . import core, events
from .deps import Deps

# Counters live a little past their window, then Redis drops them: at most two windows per key.
COUNTER_TTL = core.RATE_WINDOW_SECONDS + 5


def _refused(action: str, scope: str, retry_after: int) -> ApiError:
    return ApiError(429, "overloaded", f"too many {action} attempts; try again in {retry_after} s",
                    retry_after=retry_after)


def _count(deps: Deps, action: str, scope: str, who: str, *, add: bool) -> tuple[int, int] | None:
    """(count in this window, seconds until it ends), or None when the counters are unreachable."""
    index, retry_after = core.rate_window(deps.clock.time())
    key = core.rate_key(action, scope, who, index)
    try:
        count = deps.counters.incr(key, COUNTER_TTL) if add else deps.counters.get(key)
    except Exception as exc:  # noqa: BLE001 - any counter failure: fail open (module docstring)
        deps.metrics.rate_unchecked.labels(action).inc()
        events.warn_now_and_then("rate-counters-down", "rate counters unreachable; not limiting",
                                 action=action, error=repr(exc))
        return None
    return count, retry_after


def attempt(deps: Deps, action: str, scope: str, who: str, per_minute: int) -> None:
    """Count one attempt; 429 when it is over ``per_minute`` in this window (0: no limit)."""
    if per_minute <= 0:
        return
    counted = _count(deps, action, scope, who, add=True)
    if counted is not None and counted[0] > per_minute:
        deps.metrics.rate_limited.labels(action, scope).inc()
        raise _refused(action, scope, counted[1])


def refuse_if_reached(deps: Deps, action: str, scope: str, who: str, per_minute: int) -> None:
    """429 when ``per_minute`` failures were already counted (``failure``) in this window."""
    if per_minute <= 0:
        return
    counted = _count(deps, action, scope, who, add=False)
    if counted is not None and counted[0] >= per_minute:
        deps.metrics.rate_limited.labels(action, scope).inc()
        raise _refused(action, scope, counted[1])


def failure(deps: Deps, action: str, scope: str, who: str, per_minute: int) -> None:
    if per_minute > 0:
        _count(deps, action, scope, who, add=True)
