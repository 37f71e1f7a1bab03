"""Result posts waiting for their result to be stored and numbered, woken by this process's consumer.

A post answers 201 only once its result is stored (file_service_manager's ``FileStored``) and
numbered (``results.publish_stored_result``). That happens on a consumer thread, usually of
this very process: the consumer hands the numbered result to the waiting post at once, instead
of the post reading MongoDB in a loop (which cost a poll interval of latency and ~5 reads a
result, on the database every step of the pipeline shares). When another replica consumed the
``FileStored``, the post finds its result by reading the store every ``POLL_SECONDS``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Doc = dict[str, Any]

# Between a waiting post's reads of the store: only for a result another replica numbered (this
# process's consumer wakes its post at once). 0.25 s: such a post answers at most that late.
POLL_SECONDS = 0.25


class _Waiter:
    __slots__ = ("event", "doc")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.doc: Doc | None = None


class StoredWaits:
    """result_id -> the post waiting for it. Bounded: one entry per post in flight (at most the
    HTTP threads, ``POOL_AGGREGATOR_THREADS``), each removed when its post stops waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiter] = {}

    def expect(self, result_id: str) -> None:
        """Before the upload is completed: a FileStored consumed right after it finds the waiter."""
        with self._lock:
            self._waiting.setdefault(result_id, _Waiter())

    def arrived(self, result_id: str, doc: Doc) -> None:
        """The result is numbered (and its group done): wake its post, if it waits here."""
        with self._lock:
            waiter = self._waiting.get(result_id)
        if waiter is not None:
            waiter.doc = doc
            waiter.event.set()

    def wait(self, result_id: str, timeout: float, read: Callable[[], Doc | None]) -> Doc | None:
        """The numbered result, or None after ``timeout``. ``read`` looks it up in the store (a
        result with a ``seq`` is numbered) every POLL_SECONDS while no consumer here wakes it,
        and once more at the deadline."""
        deadline = time.monotonic() + timeout
        with self._lock:
            waiter = self._waiting.setdefault(result_id, _Waiter())
        try:
            while True:
                left = deadline - time.monotonic()
                if waiter.event.wait(max(0.0, min(POLL_SECONDS, left))) and waiter.doc is not None:
                    return waiter.doc
                found = read()
                if found is not None and found.get("seq") is not None:
                    return found
                if left <= POLL_SECONDS:
                    return None
        finally:
            self.forget(result_id)

    def forget(self, result_id: str) -> None:
        with self._lock:
            self._waiting.pop(result_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)
