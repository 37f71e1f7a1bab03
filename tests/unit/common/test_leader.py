"""The leader lease (services/common/leader.py): terms, takeover, the local trust window."""

from __future__ import annotations

import time

import pytest

from services.common.leader import MARGIN, LeaderLease, LeaseState, LocalLeaseStore


class Clocks:
    """A wall clock (only recorded in the store, never compared) and the processes' monotonic
    clock; a paused process is one whose clock is not advanced."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class DownStore(LocalLeaseStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def renew(self, name: str, holder: str, term: int, now: float, ttl: float) -> bool:
        if self.down:
            raise ConnectionError("store down")
        return super().renew(name, holder, term, now, ttl)


def lease(store: LocalLeaseStore, name: str, clocks: Clocks, holder: str, ttl: float = 10.0,
          changes: list[int | None] | None = None) -> LeaderLease:
    return LeaderLease(store, name, ttl=ttl, holder=holder, wall=lambda: clocks.wall,
                       monotonic=lambda: clocks.mono, on_change=changes.append if changes is not None else None)


def test_local_store_renews_the_same_term_and_takes_over_only_the_lease_it_saw() -> None:
    store = LocalLeaseStore()
    assert store.take("t", "a", None, 0.0, 10.0) == 1
    assert store.take("t", "b", None, 0.0, 10.0) is None  # there is a lease already
    seen = store.read("t")
    assert seen == LeaseState("a", 1, 0, renewed=0.0)
    assert store.renew("t", "a", 1, 1.0, 10.0)
    assert store.take("t", "b", seen, 2.0, 10.0) is None  # a renewed since b saw it: alive
    assert store.take("t", "b", store.read("t"), 3.0, 10.0) == 2
    assert not store.renew("t", "a", 1, 4.0, 10.0)  # a's term is gone: no renewal
    store.release("t", "a", 1)  # not a's any more: nothing happens
    assert store.peek("t") == LeaseState("b", 2, 0, renewed=3.0)
    store.release("t", "b", 2)
    assert not store.renew("t", "b", 2, 5.0, 10.0)
    released = store.read("t")
    assert released is not None and released.released
    assert store.take("t", "a", released, 5.0, 10.0) == 3


def test_one_leader_of_two_and_a_quick_takeover_when_it_dies() -> None:
    store, clocks = LocalLeaseStore(), Clocks()
    a, b = lease(store, "t", clocks, "a"), lease(store, "t", clocks, "b")
    assert a.term() == 1
    assert b.term() is None
    clocks.advance(a.interval)
    assert (a.term(), b.term()) == (1, None)  # renewed on demand, b still refused
    # a dies (renews no more): b takes over once the lease ran out, not before.
    clocks.advance(9.0)
    assert b.step() is None
    clocks.advance(1.1)
    assert b.step() == 2
    assert b.term() == 2


def test_a_paused_leader_stops_trusting_its_lease_before_it_can_be_taken_over() -> None:
    store, clocks = LocalLeaseStore(), Clocks()
    changes: list[int | None] = []
    a = lease(store, "t", clocks, "a", changes=changes)
    assert a.step() == 1
    a._thread = object()  # type: ignore[assignment]  # as if a renewal thread ran, so term() never renews
    clocks.advance(10 * (1 - MARGIN) - 0.01)
    assert a.term() == 1
    clocks.advance(0.02)  # its renewals stalled: it stops acting while the store still says it leads
    assert a.term() is None
    held = store.peek("t")
    assert held is not None and (held.holder, held.term) == ("a", 1)
    assert changes == [1]


def test_a_store_error_means_not_leading_and_the_lease_comes_back_with_its_term() -> None:
    store, clocks = DownStore(), Clocks()
    changes: list[int | None] = []
    a = lease(store, "t", clocks, "a", changes=changes)
    assert a.step() == 1
    store.down = True
    assert a.step() is None
    assert a.term() is None
    store.down = False
    clocks.advance(a.interval)
    assert a.term() == 1  # nobody took it meanwhile: the same term, renewed
    assert changes == [1, None, 1]


def test_the_renewal_thread_keeps_the_lease_and_stop_releases_it() -> None:
    store = LocalLeaseStore()
    a = LeaderLease(store, "t", ttl=0.3, holder="a")
    b = LeaderLease(store, "t", ttl=0.3, holder="b")
    stop = a.start()
    try:
        deadline = time.monotonic() + 5
        while a.term() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert a.term() == 1
        time.sleep(0.6)  # two lease lengths: only the thread's renewals keep it
        assert a.term() == 1
        assert b.step() is None
    finally:
        stop()
    assert a.term() is None
    assert b.step() == 2  # released on stop: no need to wait out the ttl


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LeaderLease(LocalLeaseStore(), "t", ttl=0)


def test_a_contender_whose_wall_clock_runs_ahead_does_not_take_over_a_live_lease() -> None:
    """Replicas' wall clocks differ (here by an hour): expiry is measured by the contender's own
    monotonic clock from the last change it saw, so b never takes a lease that a keeps renewing,
    and takes it one lease after a's last renewal once a dies."""
    store = LocalLeaseStore()
    mono = [100.0]
    a = LeaderLease(store, "t", ttl=10.0, holder="a", wall=lambda: 1_800_000_000.0, monotonic=lambda: mono[0])
    b = LeaderLease(store, "t", ttl=10.0, holder="b", wall=lambda: 1_800_003_600.0, monotonic=lambda: mono[0])
    assert a.step() == 1
    for _ in range(9):  # three lease lengths
        assert b.step() is None
        mono[0] += a.interval
        assert a.step() == 1
    assert b.step() is None  # sees a's last renewal
    mono[0] += 9.9
    assert b.step() is None
    mono[0] += 0.2
    assert b.step() == 2
