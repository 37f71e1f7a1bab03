"""A bounded in-memory cache of hot, immutable files (pool results) for downloads.

A pool result is downloaded by every member of the pool within seconds of its
announcement: hundreds of reads of the same bytes. Reading each from GridFS costs
the database (a chunk query per 255 KB) and this process (BSON decoding) for every
member; served from memory it costs one GridFS read. Stored files never change (a
file_id names one upload's bytes), so an entry never goes stale.

Bounded twice: files larger than ``max_file_bytes`` are never cached (they stream
from GridFS as before), and the total is kept under ``max_bytes`` by evicting the
least recently used. A per-file lock makes concurrent first downloads wait for one
fill instead of all reading GridFS (the notification reaches every member at once).
No I/O here: the caller passes the loader.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class HotFiles:
    def __init__(self, max_bytes: int, max_file_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self.max_file_bytes = min(max(0, max_file_bytes), self.max_bytes)
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._filling: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        return self._size

    def cacheable(self, size: int) -> bool:
        return 0 < size <= self.max_file_bytes

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> bool:
        if not self.cacheable(len(data)):
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = data
            self._size += len(data)
            while self._size > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)
        return True

    def discard(self, key: str) -> None:
        """Forget ``key`` (a deleted file is never served from memory again)."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)

    def get_or_load(self, key: str, size: int, load: Callable[[], bytes | None]) -> bytes | None:
        """The cached bytes of ``key``, loading them once (other callers wait for that load).

        ``None`` when the file is not cacheable or ``load`` declined (returned None, e.g.
        a checksum mismatch): the caller then streams it as usual. ``load`` errors propagate.
        """
        if not self.cacheable(size):
            return None
        data = self.get(key)
        if data is not None:
            with self._lock:
                self.hits += 1
            return data
        with self._lock:
            fill = self._filling.setdefault(key, threading.Lock())
        with fill:
            try:
                data = self.get(key)  # filled while we waited
                if data is not None:
                    with self._lock:
                        self.hits += 1
                    return data
                with self._lock:
                    self.misses += 1
                data = load()
                if data is None or len(data) != size:
                    return None
                self.put(key, data)
                return data
            finally:
                with self._lock:
                    if self._filling.get(key) is fill:
                        self._filling.pop(key, None)
