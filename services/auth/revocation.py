"""The shared revocation list (``services.common.revocations``): written before a revocation is answered.

Why a failed write is a 503 and never a 200: the gateways (and any service that does not ask
auth on every request) check tokens against this list alone. Answering 200 without it would
leave a logged-out token working there, silently, until it expires. A 503 says the revocation
did not fully happen; retrying is safe: PostgreSQL already holds it, and a retried logout (or a
refused refresh of an ended login) writes the list again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from services.common import revocations
from services.common.errors import unavailable
from services.common.revocations import RevocationsUnavailable

from . import core, events
from .deps import Deps

log = logging.getLogger(__name__)


def write(deps: Deps, *, tokens: Iterable[tuple[str, int]] = (), logins: Iterable[tuple[str, int]] = (),
          users: Iterable[tuple[str, int]] = ()) -> None:
    """List access tokens ``(token_id, exp)``, logins ``(session_id, newest access token's exp)`` and
    users ``(user_id, not_before_ms)``, each until every token it refuses has expired; 503 on failure."""
    prefix, now = deps.settings.common.redis_prefix, deps.clock.time()
    entries = [(revocations.token_key(prefix, jti), "1", revocations.ttl_until(exp, now)) for jti, exp in tokens]
    entries += [(revocations.session_key(prefix, sid), "1", revocations.ttl_until(exp, now)) for sid, exp in logins]
    # The same "not valid before" as PostgreSQL's; older than the access TTL, no token is alive anyway.
    entries += [(revocations.user_key(prefix, uid), str(not_before),
                 revocations.ttl_until(now + deps.settings.token_ttl_seconds, now)) for uid, not_before in users]
    if not entries:
        return
    try:
        deps.revocations.write(entries)
    except Exception as exc:  # noqa: BLE001 - any failure: the module docstring says why 503
        deps.metrics.revocation_write_failures.inc()
        log.error("revocation list not written", extra={"error": repr(exc), "entries": len(entries)})
        raise unavailable("the revocation could not be recorded everywhere; try again") from exc


def listed(deps: Deps, claims: core.TokenClaims | Mapping[str, Any]) -> bool:
    """Does the shared list refuse this token? Unreadable: False (logged, counted).

    /auth/validate reads the list too, but its truth is PostgreSQL: every entry is written
    there first, so with Redis away validate still refuses every revoked token it knows of.
    """
    try:
        return deps.revocation_list.is_revoked(claims)
    except RevocationsUnavailable as exc:
        deps.metrics.revocation_read_failures.inc()
        events.warn_now_and_then("revocations-unreadable", "revocation list unreadable; PostgreSQL decides",
                                 error=str(exc))
        return False
