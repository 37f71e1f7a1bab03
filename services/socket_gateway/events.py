"""python-socketio's side of the gateway: each SPEC event name mapped to its use case.

The names come from ``services/common/socket_events.json`` (``socketcontract``):
``register`` refuses to start when a client event has no use case here or a use
case no client event. ``SocketServer`` is the ``ports.Sockets`` the use cases
and handlers emit through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import socketio

from services.common.socketcontract import CLIENT_EVENTS

from . import sockets
from .config import Settings
from .deps import Deps
from .sockets import Session

NAMESPACE = "/"

EVENTS: dict[str, sockets.Event] = {
    "start-transfer": sockets.start_transfer,
    "write-chunk": sockets.write_chunk,
    "complete-upload": sockets.complete_upload,
    "get-history": sockets.get_history,
    "get-results": sockets.get_results,
    "alive": sockets.alive,
}


def server_for(settings: Settings, client_manager: Any = None, async_mode: str = "eventlet") -> socketio.Server:
    """The Socket.IO server; its engine.io limits come from the settings (see config.py)."""
    if client_manager is None:
        # Every gateway process subscribes to one channel: an emit made by any of them (e.g. the
        # one that took a notification off the shared queue) reaches the sockets of all.
        common = settings.common
        client_manager = socketio.RedisManager(common.redis_url, channel=f"{common.redis_prefix}:socketio")
    return socketio.Server(async_mode=async_mode, client_manager=client_manager,
                           cors_allowed_origins=settings.cors_origins(),
                           max_http_buffer_size=settings.max_http_buffer_size, ping_interval=settings.ping_interval,
                           ping_timeout=settings.ping_timeout, logger=False, engineio_logger=False)


class SocketServer:
    """``ports.Sockets`` over a ``socketio.Server`` (default namespace)."""

    def __init__(self, server: socketio.Server) -> None:
        self.server = server

    def emit(self, event: str, data: dict[str, Any], to: str | list[str]) -> None:
        self.server.emit(event, data, to=to)

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
