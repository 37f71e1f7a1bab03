"""What this process knows about the sockets it holds, beside their python-socketio sessions.

One object per process (in ``Deps``), shared by every green thread: each dict is
keyed by sid and emptied on disconnect, so it is bounded by the open sockets
(``GATEWAY_MAX_CONNECTIONS``); the in-flight counters by ``Settings.max_inflight*``.
"""

from __future__ import annotations

import threading


class LocalSockets:
    def __init__(self, max_inflight_per_socket: int, max_inflight: int, max_bytes_per_socket: int = 1 << 62,
                 max_bytes: int = 1 << 62, max_catchups: int = 16) -> None:
        self.max_inflight_per_socket = max_inflight_per_socket
        self.max_inflight = max_inflight
        self.max_bytes_per_socket = max_bytes_per_socket
        self.max_bytes = max_bytes
        # Uploads each socket is the writer of (writer id = sid): released on disconnect so a
        # reconnecting client (a new sid) may resume at once instead of waiting for the writer
        # lock to expire.
        self.writing: dict[str, set[str]] = {}
        # Each socket's latest catch-up (a counter): a catch-up goes on only while it is the
        # socket's latest (a reauth after an expiry starts a new one; the old one stops).
        self.catchups: dict[str, int] = {}
        # Events being handled, per socket and in all. python-socketio runs every event in a
        # task of its own with no limit; beyond these an event is answered `overloaded` at once.
        self.inflight: dict[str, int] = {}
        self.inflight_total = 0
        # The payload bytes those events hold (a chunk each, for write-chunk), per socket and in all:
        # counts alone allowed 64 chunks of 8 MiB per socket (see Settings.max_inflight_bytes*).
        self.inflight_bytes: dict[str, int] = {}
        self.inflight_bytes_total = 0
        # Pool uploads each socket is writing (file_id -> pool_id): their every chunk and complete
        # asks auth for the current membership (a removed contributor cannot finish them).
        self.pool_uploads: dict[str, dict[str, str]] = {}
        # Each socket's token expiry (epoch seconds) and, once expired or revoked, the monotonic
        # moment it is disconnected unless reauth succeeds (SPEC's 30-s grace). Both keyed by sid,
        # emptied on disconnect: bounded by the open sockets; the sweep (guard.sweep) reads them.
        self.expires: dict[str, float] = {}
        self.expired: dict[str, float] = {}
        # Catch-ups on connect running at once (each holds a page of results): the others wait.
        self.deliveries = threading.BoundedSemaphore(max_catchups)
        # Green threads switch only on I/O, but the consumers may run in real threads in tests.
        self._lock = threading.Lock()

    def connected(self, sid: str, expires_at: float | None = None) -> None:
        self.writing[sid] = set()
        if expires_at is not None:
            self.expires[sid] = expires_at

    def renewed(self, sid: str, expires_at: float | None) -> bool:
        """reauth: a new token (and expiry); True when the socket was in its grace."""
        if sid not in self.writing:
            return False
        if expires_at is not None:
            self.expires[sid] = expires_at
        else:
            self.expires.pop(sid, None)
        return self.expired.pop(sid, None) is not None

    def mark_expired(self, sid: str, disconnect_at: float) -> bool:
        """The socket's token expired or was revoked; True the first time (token-expired is sent once)."""
        if sid not in self.writing or sid in self.expired:
            return False
        self.expired[sid] = disconnect_at
        return True

    def is_expired(self, sid: str) -> bool:
        return sid in self.expired

    def due(self, now: float, monotonic_now: float) -> tuple[list[str], list[str]]:
        """(sockets whose token expired by ``now``, not yet marked; sockets whose grace is over)."""
        expiring = [sid for sid, at in self.expires.items() if at <= now and sid not in self.expired]
        return expiring, [sid for sid, at in self.expired.items() if at <= monotonic_now]

    def pool_upload(self, sid: str, file_id: str, pool_id: str) -> None:
        if sid in self.writing:
            self.pool_uploads.setdefault(sid, {})[file_id] = pool_id

    def pool_of_upload(self, sid: str, file_id: str) -> str | None:
        return self.pool_uploads.get(sid, {}).get(file_id)

    def is_writing(self, sid: str, file_id: str) -> bool:
        return file_id in self.writing.get(sid, set())

    def holds(self, sid: str) -> bool:
        return sid in self.writing

    def gone(self, sid: str) -> set[str]:
        """Forget a socket; returns the uploads it was writing."""
        self.pool_uploads.pop(sid, None)
        self.expires.pop(sid, None)
        self.expired.pop(sid, None)
        self.catchups.pop(sid, None)
        return self.writing.pop(sid, set())

    def wrote(self, sid: str, file_id: str) -> None:
        if sid in self.writing:  # not after a disconnect: nothing stays per old sid
            self.writing[sid].add(file_id)

    def finished(self, sid: str, file_id: str) -> None:
        self.writing.get(sid, set()).discard(file_id)
        self.pool_uploads.get(sid, {}).pop(file_id, None)

    def catch_up_started(self, sid: str) -> int:
        """A new catch-up of the socket; its number (any older one of the socket stops)."""
        with self._lock:
            number = self.catchups.get(sid, 0) + 1
            if sid in self.writing:  # not after a disconnect: nothing stays per old sid
                self.catchups[sid] = number
            return number

    def may_catch_up(self, sid: str, number: int) -> bool:
        """Catch-up ``number`` may go on: the socket is here, its token good, and no newer one began."""
        return sid in self.writing and sid not in self.expired and self.catchups.get(sid) == number

    def enter(self, sid: str, size: int = 0) -> bool:
        """Admit one event of ``size`` payload bytes, or refuse it (nothing is counted then)."""
        with self._lock:
            mine = self.inflight.get(sid, 0)
            if mine >= self.max_inflight_per_socket or self.inflight_total >= self.max_inflight:
                return False
            my_bytes = self.inflight_bytes.get(sid, 0)
            # One event is always admitted however large (the message cap bounds it already).
            if size and ((mine and my_bytes + size > self.max_bytes_per_socket)
                         or (self.inflight_total and self.inflight_bytes_total + size > self.max_bytes)):
                return False
            self.inflight[sid] = mine + 1
            self.inflight_total += 1
            self.inflight_bytes[sid] = my_bytes + size
            self.inflight_bytes_total += size
            return True

    def leave(self, sid: str, size: int = 0) -> None:
        with self._lock:
            self.inflight_total -= 1
            self.inflight_bytes_total -= size
            left = self.inflight.get(sid, 1) - 1
            if left > 0:
                self.inflight[sid] = left
                self.inflight_bytes[sid] = self.inflight_bytes.get(sid, size) - size
            else:
                self.inflight.pop(sid, None)  # also after a disconnect: nothing stays per old sid
                self.inflight_bytes.pop(sid, None)
