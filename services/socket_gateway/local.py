"""What this process knows about the sockets it holds, beside their python-socketio sessions.

One object per process (in ``Deps``), shared by every green thread: each dict is
keyed by sid and emptied on disconnect, so it is bounded by the open sockets
(``GATEWAY_MAX_CONNECTIONS``); the in-flight counters by ``Settings.max_inflight*``.
"""

from __future__ import annotations

import threading


class LocalSockets:
    def __init__(self, max_inflight_per_socket: int, max_inflight: int, max_bytes_per_socket: int = 1 << 62,
                 max_bytes: int = 1 << 62, max_deliveries: int = 16) -> None:
        self.max_inflight_per_socket = max_inflight_per_socket
        self.max_inflight = max_inflight
        self.max_bytes_per_socket = max_bytes_per_socket
        self.max_bytes = max_bytes
        # Uploads each socket is the writer of (writer id = sid): released on disconnect so a
        # reconnecting client (a new sid) may resume at once instead of waiting for the writer
        # lock to expire.
        self.writing: dict[str, set[str]] = {}
        # Pools whose offline delivery failed for a socket: their last-seen must not move on
        # disconnect, or the results they missed would never be re-sent.
        self.undelivered: dict[str, set[str]] = {}
        # Events being handled, per socket and in all. python-socketio runs every event in a
        # task of its own with no limit; beyond these an event is answered `overloaded` at once.
        self.inflight: dict[str, int] = {}
        self.inflight_total = 0
        # The payload bytes those events hold (a chunk each, for write-chunk), per socket and in all:
        # counts alone allowed 64 chunks of 8 MiB per socket (see Settings.max_inflight_bytes*).
        self.inflight_bytes: dict[str, int] = {}
        self.inflight_bytes_total = 0
        # Offline deliveries on connect running at once (each holds a page of results).
        self.deliveries = threading.BoundedSemaphore(max_deliveries)
        # Green threads switch only on I/O, but the consumers may run in real threads in tests.
        self._lock = threading.Lock()

    def connected(self, sid: str, pools: set[str]) -> None:
        self.writing[sid] = set()
        self.undelivered[sid] = set(pools)

    def holds(self, sid: str) -> bool:
        return sid in self.writing

    def gone(self, sid: str) -> tuple[set[str], set[str]]:
        """Forget a socket; returns (uploads it was writing, pools still undelivered)."""
        return self.writing.pop(sid, set()), self.undelivered.pop(sid, set())

    def wrote(self, sid: str, file_id: str) -> None:
        if sid in self.writing:  # not after a disconnect: nothing stays per old sid
            self.writing[sid].add(file_id)

    def finished(self, sid: str, file_id: str) -> None:
        self.writing.get(sid, set()).discard(file_id)

    def delivered(self, sid: str, pools: list[str]) -> None:
        if sid in self.undelivered:
            self.undelivered[sid] -= set(pools)

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
