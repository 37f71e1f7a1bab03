"""The messages the gateway consumes, one function each, in a table per queue.

- ``socket_gateway.notifications`` (shared by every gateway process: one process
  takes each message and emits it through python-socketio's Redis manager, which
  reaches the sockets of every process). A Redis failure raises, so the message
  is retried rather than lost.
  Upload outcomes and results are emitted once across the replicas, though their
  message may come twice (``once``, ``store.DeliveryStore``).
- a private exclusive queue per process bound to ``CONTROL_BINDINGS``: every process
  sees every token revocation and membership change and acts on the sockets it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services.common import contracts, topology
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
from .ports import StoreError

log = logging.getLogger("services.socket_gateway.handlers")


# Statuses emitted once per upload attempt however often their message comes (see ``once``).
ONCE_STATUSES = (contracts.UPLOADED, contracts.FAILED)


def once(deps: Deps, key: str | None) -> bool:
    """Whether a once-only notification is still to be emitted (never emitted by any replica).
    A Redis error raises: the message is retried, not lost."""
    if key is None or deps.deliveries is None:
        return True
    if deps.deliveries.delivered(key):
        deps.metrics.events.labels("duplicate_notification", "skipped").inc()
        log.info("duplicate notification skipped", extra={"key": key})
        return False
    return True


def emitted(deps: Deps, key: str | None) -> None:
    """Recorded after the emit: a replica killed in between repeats it (never loses it)."""
    if key is None or deps.deliveries is None:
        return
    try:
        deps.deliveries.mark_delivered(key)
    except StoreError as exc:  # emitted already: raising would emit it again
        log.warning("delivery not recorded", extra={"key": key, "error": repr(exc)})


def on_file_status_changed(deps: Deps, message: FileStatusChanged) -> None:
    key = f"file:{message.file_id}:{message.status}:{message.attempt}" if message.status in ONCE_STATUSES else None
    if not once(deps, key):
        return
    deps.sockets.emit("file-status", core.file_status_event(message), to=core.file_status_rooms(message.owner_id))
    deps.metrics.emits.labels("file-status").inc()
    emitted(deps, key)


def on_result_published(deps: Deps, message: ResultPublished) -> None:
    key = f"result:{message.result_id}"
    if not once(deps, key):
        return
    deps.sockets.emit("pool-result", core.pool_result_event(message), to=core.pool_room(message.pool_id))
    deps.metrics.emits.labels("pool-result").inc()
    emitted(deps, key)
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
