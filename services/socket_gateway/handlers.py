"""The messages the gateway consumes, one function each, in a table per queue.

- ``socket_gateway.notifications`` (shared by every gateway process: one process
  takes each message and emits it through python-socketio's Redis manager, which
  reaches the sockets of every process). A Redis failure raises, so the message
  is retried rather than lost.
- a private exclusive queue per process bound to ``CONTROL_BINDINGS``: every process
  sees every token revocation and membership change and acts on the sockets it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services.common import topology
from services.common.contracts import (
    FileStatusChanged,
    GroupChanged,
    MembershipChanged,
    Message,
    ResultPublished,
    TokenRevoked,
)
from services.common.handlers import ConsumerSpec, bind

from . import core
from .deps import Deps

log = logging.getLogger("services.socket_gateway.handlers")


def on_file_status_changed(deps: Deps, message: FileStatusChanged) -> None:
    deps.sockets.emit("file-status", core.file_status_event(message), to=core.file_status_rooms(message.owner_id))
    deps.metrics.emits.labels("file-status").inc()


def on_result_published(deps: Deps, message: ResultPublished) -> None:
    deps.sockets.emit("pool-result", core.pool_result_event(message), to=core.pool_room(message.pool_id))
    deps.metrics.emits.labels("pool-result").inc()
    # One record per broadcast (members catching up later get their own on_connect ones).
    deps.audit.record("result_delivered", actor="socket_gateway", file_id=message.result_id,
                      group_id=message.group_id, pool_id=message.pool_id, size=message.size,
                      sha256=message.sha256, delivery="live")


def on_group_changed(deps: Deps, message: GroupChanged) -> None:
    deps.sockets.emit("group-status", core.group_status_event(message), to=core.group_status_rooms(message.pool_id))
    deps.metrics.emits.labels("group-status").inc()


def on_token_revoked(deps: Deps, message: TokenRevoked) -> None:
    for sid in deps.sockets.local_sids(core.token_room(message.token_id)):
        log.info("disconnecting a socket of a revoked token", extra={"sid": sid})
        deps.sockets.disconnect(sid)


def on_membership_changed(deps: Deps, message: MembershipChanged) -> None:
    room = core.pool_room(message.pool_id)
    for sid in deps.sockets.local_sids(core.user_room(message.user_id)):
        session = deps.sockets.get_session(sid)
        pools = dict(session.get("pools") or {})
        if message.role is None:
            deps.sockets.leave_room(sid, room)
            pools.pop(message.pool_id, None)
        else:
            deps.sockets.enter_room(sid, room)
            pools[message.pool_id] = message.role
        session["pools"] = pools
        deps.sockets.save_session(sid, session)
    # A new member is owed the pool's results from its membership's start (auth's ``joined``):
    # a later connect's catch-up starts there when it has acknowledged none.


NOTIFICATION_HANDLERS: dict[type[Message], Callable[[Deps, Any], None]] = {
    FileStatusChanged: on_file_status_changed, ResultPublished: on_result_published,
    GroupChanged: on_group_changed}
CONTROL_HANDLERS: dict[type[Message], Callable[[Deps, Any], None]] = {
    TokenRevoked: on_token_revoked, MembershipChanged: on_membership_changed}
HANDLERS = {**NOTIFICATION_HANDLERS, **CONTROL_HANDLERS}


def consumers(deps: Deps) -> list[ConsumerSpec]:
    """CONSUMERS: the shared notification queue, and this process's private control queue."""
    return [
        ConsumerSpec("gateway-notifications", topology.GATEWAY_QUEUE, bind(NOTIFICATION_HANDLERS, deps),
                     prefetch=32),
        ConsumerSpec("gateway-control", None, bind(CONTROL_HANDLERS, deps), prefetch=32,
                     bindings=topology.CONTROL_BINDINGS),
    ]
