"""What the gateway's socket use cases and handlers need, as small Protocols.

Real ones: ``clients.UploaderClient`` / ``FileManagerClient`` / ``AggregatorClient``
(HTTP) and ``events.SocketServer`` (python-socketio);
in-memory ones for fast tests: ``services.common.testing.socket_gateway``. No
socketio, redis or requests type appears here. Every call may raise
``errors.ApiError`` (the answer the socket must see).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class StoreError(RuntimeError):
    """The gateway's Redis did not answer (``DeliveryStore``: the once-only record)."""


@dataclass(frozen=True)
class SocketToken:
    """The access token a socket connected (or reauthed) with, as a revocation list sees it.

    ``token_id``, ``user_id``, ``session_id`` and ``issued_at`` are what the shared revocation reader
    (services/common/revocations.py, auth's Redis list) reads; ``token`` is what ``reauth`` and the
    membership checks send to auth.
    """

    token: str
    token_id: str
    user_id: str
    issued_at: float | None = None
    session_id: str | None = None  # the login the token belongs to (auth's refresh-token family)


class Revocations(Protocol):
    """Is a socket's token revoked (logout, login ended) or its user disabled? Cheap enough to ask
    on every event (an answer may be a few seconds old: SPEC wants revocations honoured within 5 s).
    When it cannot tell it raises (``errors.ApiError`` or its own error): the event is refused as
    ``overloaded``, never served on a guess (guard.check)."""

    def is_revoked(self, claims: SocketToken) -> bool: ...


class Uploader(Protocol):
    """file_uploader's internal ``/uploads`` routes; one writer = one socket sid."""

    def start(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, writer: str,
                  sha256: str | None = None) -> dict[str, Any]: ...

    def complete(self, file_id: str, *, owner_id: str, writer: str) -> dict[str, Any]: ...

    def release(self, file_id: str, *, writer: str) -> None: ...

    def cancel(self, file_id: str, *, owner_id: str) -> dict[str, Any]: ...

    def describe(self, file_id: str, *, owner_id: str) -> dict[str, Any]: ...


class FileHistory(Protocol):
    """file_service_manager's ``GET /files`` as the token's owner (an admin: everyone's)."""

    def files(self, token: str) -> dict[str, Any]: ...


class PoolResults(Protocol):
    """pool_aggregator's result feed: ``GET /pools/<id>/results`` as a member (its token), and the
    members' acks (internal routes: the gateway has identified the member)."""

    def results(self, pool_id: str, token: str, since: str | None = None, after_seq: int | None = None,
                limit: int | None = None) -> dict[str, Any]:
        """A page ``{results, next_seq, more}`` in seq order."""
        ...

    def ack(self, pool_id: str, user_id: str, seq: int) -> dict[str, Any]:
        """``{pool_id, acked_seq}``: the member's ack moved forward to ``seq`` (bad_request past the last)."""
        ...

    def acked(self, pool_id: str, user_id: str) -> int | None:
        """The member's acknowledged seq, or None when it never acknowledged one."""
        ...


class Deliveries(Protocol):
    """Which notifications this fleet of gateways already emitted (keys expire: see store.py).

    ``StoreError`` when Redis is unreachable."""

    def delivered(self, key: str) -> bool: ...

    def mark_delivered(self, key: str) -> None: ...


class Sockets(Protocol):
    """The Socket.IO server as the use cases see it: sessions, rooms, emits (the emitter)."""

    def emit(self, event: str, data: dict[str, Any], to: str | list[str]) -> None: ...

    def emit_local(self, event: str, data: dict[str, Any], sid: str) -> None:
        """To one socket this process holds, without the message queue every process reads
        (a catch-up sends thousands: they need not cross Redis to every gateway)."""
        ...

    def backlog(self, sid: str) -> int:
        """Packets queued for ``sid`` and not yet written to it (0 when unknown or gone)."""
        ...

    def get_session(self, sid: str) -> dict[str, Any]:
        """The saved session; ``{}`` for a socket this process does not (or no longer) hold."""
        ...

    def save_session(self, sid: str, session: dict[str, Any]) -> None: ...

    def enter_room(self, sid: str, room: str) -> None: ...

    def leave_room(self, sid: str, room: str) -> None: ...

    def disconnect(self, sid: str) -> None: ...

    def is_connected(self, sid: str) -> bool: ...

    def local_sids(self, room: str) -> list[str]:
        """The sockets of ``room`` held by this process (each process acts on its own)."""
        ...

    def start_background_task(self, target: Callable[..., Any], *args: Any) -> Any: ...

    def sleep(self, seconds: float) -> None: ...
