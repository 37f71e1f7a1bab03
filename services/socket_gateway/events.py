"""python-socketio's side of the gateway: each SPEC event name mapped to its use case.

The names come from ``services/common/socket_events.json`` (``socketcontract``):
``register`` refuses to start when a client event has no use case here or a use
case no client event. ``SocketServer`` is the ``ports.Sockets`` the use cases
and handlers emit through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import socketio
from socketio import packet

from services.common import redisconn
from services.common.socketcontract import CLIENT_EVENTS

from . import sockets
from .config import Settings
from .deps import Deps
from .fanout import FairRedisManager
from .sockets import Session

log = logging.getLogger("services.socket_gateway")

NAMESPACE = "/"
# A Socket.IO packet may announce up to 10 digits of binary attachments, and python-socketio
# buffers every one (each up to a whole WebSocket message) before any handler runs. write-chunk
# carries one; no client event needs more, so a packet announcing more is refused.
MAX_ATTACHMENTS = 1
# The text part of a binary packet waits, decoded, for its attachment (one per socket): it is
# an event name and a few ids (write-chunk: file_id, index, sha256), never more than this.
MAX_BINARY_HEADER_BYTES = 4096

EVENTS: dict[str, sockets.Event] = {
    "start-transfer": sockets.start_transfer,
    "write-chunk": sockets.write_chunk,
    "complete-upload": sockets.complete_upload,
    "cancel-upload": sockets.cancel_upload,
    "get-history": sockets.get_history,
    "get-results": sockets.get_results,
    "ack-result": sockets.ack_result,
    "alive": sockets.alive,
    "reauth": sockets.reauth,
}


class PacketRefused(ValueError):
    """A Socket.IO packet beyond what any client event needs (see MAX_ATTACHMENTS)."""


class BoundedPacket(packet.Packet):
    """python-socketio's packet, refusing many attachments and a large binary header while decoding."""

    def decode(self, encoded_packet: Any) -> int:
        binary = isinstance(encoded_packet, str) and encoded_packet[:1] in (str(packet.BINARY_EVENT),
                                                                          str(packet.BINARY_ACK))
        if binary and len(encoded_packet) > MAX_BINARY_HEADER_BYTES:
            raise PacketRefused(f"a binary packet's header is at most {MAX_BINARY_HEADER_BYTES} bytes")
        count = int(super().decode(encoded_packet) or 0)
        if count > MAX_ATTACHMENTS:
            raise PacketRefused(f"a packet may carry at most {MAX_ATTACHMENTS} binary attachment(s), not {count}")
        return count


class GatewayServer(socketio.Server):
    """python-socketio's Server that disconnects a client sending a malformed or refused packet.

    python-socketio logs such a packet's error and keeps the connection (a client could make
    the gateway log one traceback per frame); here the client is disconnected at once, and
    the reading task yields after every message so the handler it started is admitted (or
    refused, freeing its bytes: sockets.answer) before this socket's next message is read.
    """

    def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            super()._handle_eio_message(eio_sid, data)
        except ValueError as exc:  # PacketRefused, bad JSON, an unexpected binary message, ...
            self._binary_packet.pop(eio_sid, None)
            log.warning("refused a socket.io packet; disconnecting the client", extra={"error": str(exc)[:200]})
            self.eio.disconnect(eio_sid)
            return
        self.sleep(0)


def server_for(settings: Settings, client_manager: Any = None, async_mode: str = "eventlet") -> socketio.Server:
    """The Socket.IO server; its engine.io limits come from the settings (see config.py)."""
    if client_manager is None:
        # Every gateway process subscribes to one channel: an emit made by any of them (e.g. the
        # one that took a notification off the shared queue) reaches the sockets of all.
        common = settings.common
        # Fair: a big pool's fan-out does not hold up another pool's broadcasts (fanout.py).
        client_manager = FairRedisManager(redisconn.socketio_url(common),
                                          channel=f"{common.redis_prefix}:socketio",
                                          redis_options=redisconn.socketio_options(common))
    # WebSocket only (every client of ours uses it): a long-polling POST body, up to
    # max_http_buffer_size each, would be read whole outside the WebSocket assembly budget.
    return GatewayServer(async_mode=async_mode, client_manager=client_manager, serializer=BoundedPacket,
                         transports=["websocket"],
                         cors_allowed_origins=settings.cors_origins(),
                         max_http_buffer_size=settings.max_http_buffer_size, ping_interval=settings.ping_interval,
                         ping_timeout=settings.ping_timeout, logger=False, engineio_logger=False)


class SocketServer:
    """``ports.Sockets`` over a ``socketio.Server`` (default namespace)."""

    def __init__(self, server: socketio.Server) -> None:
        self.server = server

    def emit(self, event: str, data: dict[str, Any], to: str | list[str]) -> None:
        self.server.emit(event, data, to=to)

    def emit_local(self, event: str, data: dict[str, Any], sid: str) -> None:
        self.server.emit(event, data, to=sid, ignore_queue=True)

    def backlog(self, sid: str) -> int:
        # engine.io's queue of packets for the socket, filled by emits, emptied by its writer task.
        try:
            eio_sid = self.server.manager.eio_sid_from_sid(sid, NAMESPACE)
            socket = self.server.eio.sockets.get(eio_sid) if eio_sid else None
            return int(socket.queue.qsize()) if socket is not None else 0
        except (AttributeError, KeyError, NotImplementedError):
            return 0

    def get_session(self, sid: str) -> dict[str, Any]:
        try:
            return dict(self.server.get_session(sid) or {})
        except KeyError:  # the socket is gone (or was never ours)
            return {}

    def save_session(self, sid: str, session: dict[str, Any]) -> None:
        self.server.save_session(sid, session)

    def enter_room(self, sid: str, room: str) -> None:
        self.server.enter_room(sid, room)

    def leave_room(self, sid: str, room: str) -> None:
        self.server.leave_room(sid, room)

    def disconnect(self, sid: str) -> None:
        self.server.disconnect(sid)

    def is_connected(self, sid: str) -> bool:
        return bool(self.server.manager.is_connected(sid, NAMESPACE))

    def local_sids(self, room: str) -> list[str]:
        # The manager knows only this process's sockets.
        return [sid for sid, _eio in self.server.manager.get_participants(NAMESPACE, room)]

    def start_background_task(self, target: Callable[..., Any], *args: Any) -> Any:
        return self.server.start_background_task(target, *args)

    def sleep(self, seconds: float) -> None:
        self.server.sleep(seconds)


def register(server: socketio.Server, deps: Deps) -> None:
    """Every client event of socket_events.json, and connect/disconnect, on ``server``."""
    missing, extra = set(CLIENT_EVENTS) - set(EVENTS), set(EVENTS) - set(CLIENT_EVENTS)
    if missing or extra:
        raise RuntimeError(f"socket_events.json and events.EVENTS differ: missing {sorted(missing)}, "
                           f"not in the contract {sorted(extra)}")

    def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            sockets.connect(deps, Session(sid), auth)
        except sockets.ConnectRefused as refused:
            raise socketio.exceptions.ConnectionRefusedError(refused.code, refused.data) from refused

    def on_disconnect(sid: str, reason: Any = None) -> None:
        sockets.disconnect(deps, Session(sid, deps.sockets.get_session(sid)), reason)

    server.on("connect", on_connect)
    server.on("disconnect", on_disconnect)
    for name in CLIENT_EVENTS:
        server.on(name, _handler(deps, name, EVENTS[name]))


def _handler(deps: Deps, name: str, event: sockets.Event) -> Callable[..., dict[str, Any]]:
    def handle(sid: str, data: Any = None, *_: Any) -> dict[str, Any]:
        # The session is read only once the event is admitted (in-flight bounds first).
        return sockets.answer(deps, name, event, lambda: Session(sid, deps.sockets.get_session(sid)), sid, data)

    handle.__name__ = f"on_{name.replace('-', '_')}"
    return handle
