"""HotFiles: bounded, least-recently-used, one load per key under concurrency."""

from __future__ import annotations

import threading
import time

from services.file_service_manager.hotcache import HotFiles


def test_bounds_and_lru_eviction() -> None:
    hot = HotFiles(max_bytes=12, max_file_bytes=4)
    assert not hot.put("big", b"12345") and hot.get("big") is None  # larger than a file may be
    assert hot.get_or_load("big", 5, lambda: b"12345") is None
    for key in "abc":
        assert hot.put(key, key.encode() * 4)
    assert hot.size == 12
    hot.get("a")  # a is now the most recent: b goes first
    hot.put("d", b"dddd")
    assert hot.get("b") is None and hot.get("a") == b"aaaa" and hot.get("d") == b"dddd"
    assert hot.size == 12


def test_zero_budget_caches_nothing() -> None:
    hot = HotFiles(max_bytes=0, max_file_bytes=16)
    assert hot.get_or_load("k", 3, lambda: b"abc") is None and hot.size == 0


def test_concurrent_first_reads_load_once() -> None:
    hot = HotFiles(max_bytes=100, max_file_bytes=50)
    loads = []

    def load() -> bytes:
        loads.append(1)
        time.sleep(0.05)
        return b"x" * 20

    got: list[bytes | None] = []
    threads = [threading.Thread(target=lambda: got.append(hot.get_or_load("r", 20, load))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and got == [b"x" * 20] * 8
    assert (hot.misses, hot.hits) == (1, 7)


def test_a_declined_or_wrong_sized_load_is_not_cached() -> None:
    hot = HotFiles(max_bytes=100, max_file_bytes=50)
    assert hot.get_or_load("r", 20, lambda: None) is None  # e.g. checksum mismatch
    assert hot.get_or_load("r", 20, lambda: b"short") is None
    assert hot.size == 0 and hot.get("r") is None
    assert hot.get_or_load("r", 5, lambda: b"right") == b"right" and hot.get("r") == b"right"
