"""Identity on every event, not only at connect: expiry, revocation, SPEC's token-expired and its grace.

Before any event but ``reauth`` is served (``sockets.answer``), ``check`` refuses it with
``unauthorized`` when the socket's token has expired (``expires_at`` from /auth/validate, saved
in the session), is revoked or belongs to a disabled user (``deps.revocations``, an answer at
most a few seconds old). The first time, the socket is ``expire``d: it leaves every room (no
pool-result or file-status reaches a dead token), gets ``token-expired {}`` once, and is
disconnected ``reauth_grace_seconds`` later unless ``reauth`` succeeds (sockets.reauth).

``sweep`` (every second, Runtime.periodic) does the same for sockets that send nothing: a
token expiring on an idle socket gets its token-expired, and a grace that ran out its
disconnect. The deadlines live in ``LocalSockets`` (per sid, removed on disconnect and on
reauth), so every timer is bounded by the open sockets and cancelled with them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from services.common import errors
from services.common.errors import ApiError

from . import core
from .deps import Deps
from .ports import SocketToken

log = logging.getLogger("services.socket_gateway")

EXPIRED_MESSAGE = "the socket's token has expired or was revoked; send reauth {token}"


def socket_token(data: Mapping[str, Any]) -> SocketToken:
    return SocketToken(token=str(data["token"]), token_id=str(data.get("token_id") or ""),
                       user_id=str(data["user_id"]), issued_at=data.get("issued_at"),
                       session_id=data.get("session_id"))


def check(deps: Deps, sid: str, data: Mapping[str, Any]) -> None:
    """Refuse (``unauthorized``) an event of a socket whose token is no longer good."""
    if "user_id" not in data:
        raise errors.unauthorized("this socket has no identity; reconnect with a token")
    if deps.local.is_expired(sid):
        raise errors.unauthorized(EXPIRED_MESSAGE)
    expires_at = data.get("expires_at")
    if isinstance(expires_at, int | float) and time.time() >= expires_at:
        expire(deps, sid, data, "expired")
        raise errors.unauthorized(EXPIRED_MESSAGE)
    try:
        revoked = deps.revocations.is_revoked(socket_token(data))
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the shared reader's RevocationsUnavailable (Redis down)
        log.warning("revocations unreadable; event refused", extra={"error": repr(exc)[:200]})
        raise core.unavailable("the revocation list") from exc
    if revoked:
        expire(deps, sid, data, "revoked")
        raise errors.unauthorized(EXPIRED_MESSAGE)


def refused(deps: Deps, sid: str, data: Mapping[str, Any]) -> ApiError:
    """auth refused the socket's token just now (fresh_identity): the same path as check's."""
    expire(deps, sid, data, "revoked")
    return errors.unauthorized(EXPIRED_MESSAGE)


def expire(deps: Deps, sid: str, data: Mapping[str, Any], reason: str) -> bool:
    """Cut the socket off its rooms, send token-expired once, start its grace; True the first time."""
    if not deps.local.mark_expired(sid, time.monotonic() + deps.settings.reauth_grace_seconds):
        return False
    if "user_id" in data:
        # Out of every room: what its pools publish from now on comes in the catch-up a
        # successful reauth starts (sockets.reauth), from the member's acks.
        for room in core.rooms_for(core.identity_from_session(data)):
            deps.sockets.leave_room(sid, room)
    deps.sockets.emit("token-expired", {}, to=sid)
    deps.metrics.emits.labels("token-expired").inc()
    log.info("socket token no longer valid; grace started", extra={"sid": sid, "reason": reason})
    return True


def sweep(deps: Deps) -> None:
    """token-expired for idle sockets whose token expired; disconnect those whose grace ran out."""
    expiring, over = deps.local.due(time.time(), time.monotonic())
    for sid in expiring:
        expire(deps, sid, deps.sockets.get_session(sid), "expired")
    for sid in over:
        log.info("reauth grace over; disconnecting", extra={"sid": sid})
        # Once: a socket already gone (no disconnect handler to run) is not disconnected again.
        deps.local.expired.pop(sid, None)
        deps.local.expires.pop(sid, None)
        deps.sockets.disconnect(sid)
