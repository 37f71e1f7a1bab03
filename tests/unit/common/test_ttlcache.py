"""TtlCache: answers kept ttl seconds, at most capacity entries, least recently used dropped first."""

from __future__ import annotations

from services.common.ttlcache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_ttl_seconds_then_is_a_miss() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(5.0, clock=clock)
    assert cache.get("a") == (False, None)
    cache.put("a", 1)
    clock.now = 4.9
    assert cache.get("a") == (True, 1)
    clock.now = 5.0
    assert cache.get("a") == (False, None)


def test_capacity_drops_the_least_recently_used_and_forget_drops_one() -> None:
    clock = Clock()
    cache: TtlCache[str] = TtlCache(60.0, capacity=2, clock=clock)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == (True, "A")  # a is now the most recently used
    cache.put("c", "C")
    assert sorted(cache) == ["a", "c"] and len(cache) == 2
    cache.forget("a")
    assert cache.get("a") == (False, None) and list(cache) == ["c"]
