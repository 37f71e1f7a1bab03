"""RabbitMQ handlers of the gateway: notifications out to sockets, control events in.

Two consumers per process, each in its own (green, under eventlet) thread:

- the shared ``socket_gateway.notifications`` queue: one process takes each message and
  emits it through the Redis client manager, which reaches the sockets of every process.
  Acked after the emit was handed to Redis; a Redis failure raises, so the message is
  requeued rather than lost.
- a private exclusive queue bound to ``CONTROL_BINDINGS``: every process sees every token
  revocation and membership change, and acts on the sockets it holds itself.

pika's BlockingConnection works on eventlet's monkey-patched sockets: with ``select``
patched, pika falls back to its select()-based poller, which is green, and
``process_data_events(time_limit=0.5)`` yields to the hub while it waits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import socketio

from services.common import messaging
from services.common.audit import AuditTrail
from services.common.contracts import (
    FileStatusChanged,
    MembershipChanged,
    Message,
    ResultPublished,
    TokenRevoked,
)

from . import core

if TYPE_CHECKING:
    from .config import Settings
    from .store import SeenStore

log = logging.getLogger("services.socket_gateway.worker")

NAMESPACE = "/"


class Notifier:
    def __init__(self, sio: socketio.Server, settings: Settings, seen: SeenStore,
                 metrics: Any = None, audit: AuditTrail | None = None) -> None:
        self.sio = sio
        self.audit = audit
        self.settings = settings
        self.seen = seen
        self.metrics = metrics
        self.consumers: list[messaging.Consumer] = []

    def _emitted(self, event: str) -> None:
        if self.metrics is not None:
            self.metrics.emits.labels(event).inc()

    # --- the shared notification queue --------------------------------------------------

    def handle_notification(self, message: Message) -> None:
        if isinstance(message, FileStatusChanged):
            self.sio.emit("file-status", core.file_status_event(message),
                          to=core.file_status_rooms(message.owner_id))
            self._emitted("file-status")
        elif isinstance(message, ResultPublished):
            self.sio.emit("pool-result", core.pool_result_event(message), to=core.pool_room(message.pool_id))
            self._emitted("pool-result")
            if self.audit is not None:
                # One record per broadcast (members reconnecting later get their own on_connect one).
                self.audit.record("result_delivered", actor="socket_gateway", file_id=message.result_id,
                                  group_id=message.group_id, pool_id=message.pool_id, size=message.size,
                                  sha256=message.sha256, delivery="live")
        else:
            log.info("ignored notification", extra={"message_type": type(message).__name__})

    # --- this process's control queue ----------------------------------------------------

    def local_sids(self, room: str) -> list[str]:
        """The sockets of ``room`` held by this process (the manager only knows its own)."""
        return [sid for sid, _eio in self.sio.manager.get_participants(NAMESPACE, room)]

    def handle_control(self, message: Message) -> None:
        if isinstance(message, TokenRevoked):
            for sid in self.local_sids(core.token_room(message.token_id)):
                log.info("disconnecting a socket of a revoked token", extra={"sid": sid})
                self.sio.disconnect(sid)
        elif isinstance(message, MembershipChanged):
            room = core.pool_room(message.pool_id)
            sids = self.local_sids(core.user_room(message.user_id))
            for sid in sids:
                session = dict(self.sio.get_session(sid) or {})
                pools = dict(session.get("pools") or {})
                if message.role is None:
                    self.sio.leave_room(sid, room)
                    pools.pop(message.pool_id, None)
                else:
                    self.sio.enter_room(sid, room)
                    pools[message.pool_id] = message.role
                session["pools"] = pools
                self.sio.save_session(sid, session)
            if message.role is not None:
                # A new member is owed the pool's results from now on, even if it connects
                # only later (first writer wins; every process sees this event).
                try:
                    self.seen.start_if_absent(message.user_id, message.pool_id)
                except Exception as exc:  # noqa: BLE001 - rooms are updated; offline delivery degrades
                    log.warning("membership start not recorded", extra={"error": repr(exc)})
        else:
            log.info("ignored control event", extra={"message_type": type(message).__name__})

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        url = self.settings.common.amqp_url
        self.consumers = [
            messaging.Consumer(url, messaging.GATEWAY_QUEUE, self.handle_notification, prefetch=32,
                               name="gateway-notifications"),
            messaging.Consumer(url, None, self.handle_control, bindings=messaging.CONTROL_BINDINGS,
                               prefetch=32, name="gateway-control"),
        ]
        for consumer in self.consumers:
            consumer.start()

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()

    def connected(self) -> bool:
        return bool(self.consumers) and all(c.connected for c in self.consumers)
