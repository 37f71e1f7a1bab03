"""In-memory stand-ins for socket_gateway's ports (``Sockets``, ``Uploader``, ``FileHistory``,
``PoolResults``), implemented by shape: this package imports no service.

``FakeSockets`` keeps sessions, rooms and emits as python-socketio's manager would for
one process; background tasks run when ``run_background()`` is called. The HTTP fakes
answer from dicts and raise a queued ``ApiError`` when told (``fail_next``). Only tests
import this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import timeutil
from ..errors import ApiError

__all__ = ["Emitted", "FakeDeliveries", "FakeFileHistory", "FakePoolResults", "FakeSockets", "FakeUploader"]


@dataclass(frozen=True)
class Emitted:
    event: str
    data: dict[str, Any]
    to: str | tuple[str, ...]


class FakeSockets:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.rooms: dict[str, set[str]] = {}  # room -> sids
        self.connected: set[str] = set()
        self.emitted: list[Emitted] = []
        self.disconnected: list[str] = []
        self.background: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.slept = 0.0
        self.on_sleep: Callable[[], object] | None = None  # e.g. finish a handshake while a task waits
        self.local: list[Emitted] = []  # emit_local's (also in ``emitted``)
        # Packets queued per sid and not yet written: a test sets it (and drains it in on_sleep).
        self.queued: dict[str, int] = {}

    # --- test controls -------------------------------------------------------------
    def add(self, sid: str) -> None:
        """python-socketio finished the CONNECT handshake of ``sid``."""
        self.connected.add(sid)

    def run_background(self) -> list[Any]:
        tasks, self.background = self.background, []
        return [target(*args) for target, args in tasks]

    def rooms_of(self, sid: str) -> set[str]:
        return {room for room, sids in self.rooms.items() if sid in sids}

    def to(self, target: str) -> list[Emitted]:
        """Emits that reached ``target`` (a sid or a room) directly."""
        return [e for e in self.emitted if target == e.to or (isinstance(e.to, tuple) and target in e.to)]

    # --- ports.Sockets --------------------------------------------------------------
    def emit(self, event: str, data: dict[str, Any], to: str | list[str]) -> None:
        self.emitted.append(Emitted(event, data, to if isinstance(to, str) else tuple(to)))

    def emit_local(self, event: str, data: dict[str, Any], sid: str) -> None:
        if sid in self.connected:  # python-socketio drops an emit to a socket that is gone
            self.local.append(Emitted(event, data, sid))
            self.emitted.append(Emitted(event, data, sid))

    def backlog(self, sid: str) -> int:
        return self.queued.get(sid, 0)

    def get_session(self, sid: str) -> dict[str, Any]:
        return dict(self.sessions.get(sid, {}))

    def save_session(self, sid: str, session: dict[str, Any]) -> None:
        self.sessions[sid] = dict(session)

    def enter_room(self, sid: str, room: str) -> None:
        self.rooms.setdefault(room, set()).add(sid)

    def leave_room(self, sid: str, room: str) -> None:
        self.rooms.get(room, set()).discard(sid)

    def disconnect(self, sid: str) -> None:
        self.disconnected.append(sid)
        self.connected.discard(sid)
        for sids in self.rooms.values():
            sids.discard(sid)

    def is_connected(self, sid: str) -> bool:
        return sid in self.connected

    def local_sids(self, room: str) -> list[str]:
        return sorted(self.rooms.get(room, set()))

    def start_background_task(self, target: Callable[..., Any], *args: Any) -> None:
        self.background.append((target, args))

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        if self.on_sleep is not None:
            self.on_sleep()


class _Failing:
    def __init__(self) -> None:
        self.failures: list[ApiError] = []
        self.calls: list[tuple[str, Any]] = []

    def fail_next(self, error: ApiError, times: int = 1) -> None:
        self.failures.extend([error] * times)

    def _call(self, name: str, detail: Any) -> None:
        self.calls.append((name, detail))
        if self.failures:
            raise self.failures.pop(0)


class FakeUploader(_Failing):
    """file_uploader's ``/uploads`` routes: upload ids ``up-1``, ``up-2``, ...; chunks kept by (file_id, index)."""

    def __init__(self, chunk_size: int = 4) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.started: list[dict[str, Any]] = []
        self.chunks: dict[tuple[str, int], bytes] = {}
        self.completed: list[str] = []
        self.released: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self.described: dict[str, str | None] = {}
        # Set by a test: answered to the next resume (start with file_id), as file_uploader does.
        self.resume_pool: str | None = None

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        self._call("start", body)
        self.started.append(dict(body))
        if body.get("file_id"):
            return {"file_id": body["file_id"], "chunk_size": self.chunk_size, "missing": [],
                    **({"pool_id": self.resume_pool} if self.resume_pool else {})}
        return {"file_id": f"up-{len(self.started)}", "chunk_size": self.chunk_size}

    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, writer: str,
                  sha256: str | None = None) -> dict[str, Any]:
        self._call("put_chunk", (file_id, index, owner_id, writer))
        self.chunks[(file_id, index)] = data
        return {"file_id": file_id, "index": index, "received": sum(1 for f, _ in self.chunks if f == file_id)}

    def complete(self, file_id: str, *, owner_id: str, writer: str) -> dict[str, Any]:
        self._call("complete", (file_id, owner_id, writer))
        self.completed.append(file_id)
        return {"file_id": file_id, "status": "cached"}

    def release(self, file_id: str, *, writer: str) -> None:
        self._call("release", (file_id, writer))
        self.released.append((file_id, writer))

    def describe(self, file_id: str, *, owner_id: str) -> dict[str, Any]:
        """Uploads named in ``described`` (file_id -> pool_id or None); any other is a 404."""
        self._call("describe", (file_id, owner_id))
        if file_id not in self.described:
            raise ApiError(404, "not_found", "no such upload")
        return {"file_id": file_id, "status": "uploading", "pool_id": self.described[file_id]}

    def cancel(self, file_id: str, *, owner_id: str) -> dict[str, Any]:
        self._call("cancel", (file_id, owner_id))
        self.cancelled.append(file_id)
        return {"file_id": file_id, "status": "cancelled"}


class FakeFileHistory(_Failing):
    def __init__(self) -> None:
        super().__init__()
        self.by_token: dict[str, list[dict[str, Any]]] = {}

    def files(self, token: str) -> dict[str, Any]:
        self._call("files", token)
        return {"files": list(self.by_token.get(token, []))}


class FakePoolResults(_Failing):
    """Results per pool (each with ``seq``; ``since`` keeps those created after it, as
    pool_aggregator) and acks per (pool, user), forward only, never past the pool's last seq."""

    def __init__(self) -> None:
        super().__init__()
        self.by_pool: dict[str, list[dict[str, Any]]] = {}
        self.acks: dict[tuple[str, str], int] = {}
        self.pages: list[tuple[str, str | None, int | None, int | None]] = []  # (pool, since, after, limit)

    def add(self, pool_id: str, count: int, created: str = "2024-01-01T00:00:00.000Z") -> list[dict[str, Any]]:
        """``count`` more results of the pool, numbered on from its last seq."""
        found = self.by_pool.setdefault(pool_id, [])
        added = []
        for _ in range(count):
            seq = len(found) + 1
            added.append({"result_id": f"{pool_id}-r{seq}", "pool_id": pool_id, "group_id": f"{pool_id}-g{seq}",
                          "seq": seq, "file_name": f"r{seq}.bin", "size": 1, "sha256": "0" * 64, "created": created,
                          "download_url": f"http://files/{pool_id}-r{seq}"})
            found.append(added[-1])
        return added

    def results(self, pool_id: str, token: str, since: str | None = None, after_seq: int | None = None,
                limit: int | None = None) -> dict[str, Any]:
        self._call("results", (pool_id, token, since, after_seq, limit))
        self.pages.append((pool_id, since, after_seq, limit))
        found = [r for r in self.by_pool.get(pool_id, []) if r.get("seq", 0) > (after_seq or 0)]
        if since is not None:
            cutoff = timeutil.parse(since)
            found = [r for r in found if timeutil.parse(r["created"]) > cutoff]
        size = limit or 100
        page = found[:size]
        return {"results": page, "next_seq": page[-1]["seq"] if page else (after_seq or 0),
                "more": len(found) > size}

    def ack(self, pool_id: str, user_id: str, seq: int) -> dict[str, Any]:
        self._call("ack", (pool_id, user_id, seq))
        last = max((r.get("seq", 0) for r in self.by_pool.get(pool_id, [])), default=0)
        if seq > last:
            raise ApiError(400, "bad_request", f"seq {seq} is beyond the pool's last result ({last})")
        key = (pool_id, user_id)
        self.acks[key] = max(seq, self.acks.get(key, 0))
        return {"pool_id": pool_id, "user_id": user_id, "acked_seq": self.acks[key]}

    def acked(self, pool_id: str, user_id: str) -> int | None:
        self._call("acked", (pool_id, user_id))
        return self.acks.get((pool_id, user_id))


@dataclass
class FakeDeliveries:
    """Once-only notifications already emitted (``ports.Deliveries`` by shape)."""

    keys: set[str] = field(default_factory=set)

    def delivered(self, key: str) -> bool:
        return key in self.keys

    def mark_delivered(self, key: str) -> None:
        self.keys.add(key)
