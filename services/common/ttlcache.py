"""A small thread-safe cache of recent answers: each kept ``ttl`` seconds, at most ``capacity``.

For answers a service asks another one for on a hot path (a token's identity, a pool's
rules): a burst of requests costs one call, a change is seen within ``ttl``. Bounded: past
``capacity`` entries the least recently used goes first. The lookup itself is the
caller's, made outside the lock, so one slow answer does not queue the other keys.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(self, ttl: float, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()  # key -> (when, value)

    def get(self, key: str) -> tuple[bool, V | None]:
        """(True, value) while ``key``'s entry is younger than ``ttl``; else (False, None)."""
        now = self.clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                self._entries.move_to_end(key)
                return True, hit[1]
        return False, None

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._entries[key] = (self.clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        """The keys held now (a copy: the cache may change meanwhile)."""
        with self._lock:
            return iter(list(self._entries))
