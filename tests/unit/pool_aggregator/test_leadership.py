"""Only the ticker lease's holder ticks and announces; a paused old leader's writes are refused."""

from __future__ import annotations

import dataclasses

from services.common.leader import LeaderLease, LocalLeaseStore
from services.pool_aggregator import core, ticking
from services.pool_aggregator.deps import Deps
from services.pool_aggregator.leadership import LEASE_NAME, Leadership

from .conftest import POOL, Kit, W

TTL = 10.0


class ProcessClock:
    """One replica's monotonic clock: a paused (SIGSTOPped) replica's does not move."""

    def __init__(self) -> None:
        self.t = 100.0
        self.paused = False

    def advance(self, seconds: float) -> None:
        if not self.paused:
            self.t += seconds


class Replicas:
    """Two aggregator replicas over one group store and one lease store (the shared MongoDB)."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.leases = LocalLeaseStore()
        self.mono = {"a": ProcessClock(), "b": ProcessClock()}
        self.deps = {name: self._replica(name) for name in ("a", "b")}

    def _replica(self, name: str) -> Deps:
        clock = self.mono[name]
        lease = LeaderLease(self.leases, LEASE_NAME, ttl=TTL, holder=name, wall=self.kit.clock.time,
                            monotonic=lambda: clock.t)
        lease._thread = object()  # type: ignore[assignment]  # renewals only when a test calls step()
        return dataclasses.replace(self.kit.deps, leader=Leadership(lease, self.kit.store))

    def advance(self, seconds: float) -> None:
        self.kit.clock.advance(seconds)
        for clock in self.mono.values():
            clock.advance(seconds)

    def renew(self, name: str) -> int | None:
        return self.deps[name].leader.lease.step()


def due_group(kit: Kit, file_id: str = "f1") -> str:
    """An open group whose window is over (the next tick makes it ready)."""
    kit.deliver(kit.stored(file_id, ts=kit.clock.time()))
    (group,) = kit.store.list_groups(POOL)
    kit.clock.advance(W + 1)
    return str(group["_id"])


def test_only_the_leader_ticks_and_announces(kit: Kit) -> None:
    r = Replicas(kit)
    assert r.renew("a") == 1
    assert r.renew("b") is None
    gid = due_group(kit)
    ticking.tick(r.deps["b"])
    assert kit.store.get(gid)["status"] == core.OPEN  # type: ignore[index]
    assert kit.announcer.announced == []
    assert r.deps["b"].metrics.leader._value.get() == 0  # type: ignore[attr-defined]
    ticking.tick(r.deps["a"])
    assert kit.store.get(gid)["status"] == core.READY  # type: ignore[index]
    assert kit.announcer.announced == [("http://processor.example/hook", gid)]
    assert kit.store.get(gid)["fence"] == 1  # type: ignore[index]
    ticking.tick(r.deps["a"])
    ticking.tick(r.deps["b"])
    assert len(kit.announcer.announced) == 1


def test_a_paused_old_leader_cannot_move_a_group_after_a_new_leader_took_over(kit: Kit) -> None:
    r = Replicas(kit)
    assert r.renew("a") == 1
    gid = due_group(kit)
    assert r.deps["a"].leader.term() == 1
    # a is SIGSTOPped right after its local check said it leads: its clock stands still,
    # the world's moves on, its lease runs out and b takes over with the next term.
    assert r.renew("b") is None  # b's renewal thread sees a's lease (a takeover waits a lease from there)
    r.mono["a"].paused = True
    r.advance(TTL + 1)
    assert r.renew("b") == 2
    assert r.deps["b"].leader.term() == 2  # the takeover stamps live groups with term 2
    assert kit.store.get(gid)["fence"] == 2  # type: ignore[index]
    # a wakes up and does the write it was about to do, with its old term: refused.
    assert r.deps["a"].leader.lease.term() == 1  # it still believes it leads
    assert ticking.make_ready(r.deps["a"], gid, fence=1) is None
    assert kit.store.fenced_off == 1
    assert kit.store.get(gid)["status"] == core.OPEN  # type: ignore[index]
    assert kit.announcer.announced == []
    ticking.tick(r.deps["b"])
    assert kit.store.get(gid)["status"] == core.READY  # type: ignore[index]
    assert [g for _, g in kit.announcer.announced] == [gid]


def test_a_paused_old_leader_cannot_expire_a_processing_lease(kit: Kit) -> None:
    r = Replicas(kit)
    assert r.renew("a") == 1
    gid = due_group(kit)
    ticking.tick(r.deps["a"])
    leased = kit.store.lease(gid, kit.clock.time(), 30)
    assert leased is not None
    assert r.renew("b") is None  # b's renewal thread sees a's lease (a takeover waits a lease from there)
    r.mono["a"].paused = True
    r.advance(31)  # the processing lease ran out, and so did a's leader lease
    assert r.renew("b") == 2
    assert r.deps["b"].leader.term() == 2
    assert ticking.expire_leases(r.deps["a"], 1) == 0  # a still trusts term 1 locally; the store refuses
    assert kit.store.get(gid)["status"] == core.PROCESSING  # type: ignore[index]
    assert ticking.expire_leases(r.deps["b"], 2) == 1
    assert kit.store.get(gid)["status"] == core.READY  # type: ignore[index]


def test_a_leader_whose_renewals_stall_stops_ticking_on_its_own(kit: Kit) -> None:
    r = Replicas(kit)
    assert r.renew("a") == 1
    gid = due_group(kit)
    r.advance(TTL)  # no renewal for a whole lease: a no longer trusts it (nobody else took it yet)
    assert r.deps["a"].leader.term() is None
    ticking.tick(r.deps["a"])
    assert kit.store.get(gid)["status"] == core.OPEN  # type: ignore[index]
    assert r.renew("a") == 1  # renewed with the same term: nobody took over meanwhile
    ticking.tick(r.deps["a"])
    assert kit.store.get(gid)["status"] == core.READY  # type: ignore[index]


def test_arrivals_reach_quorum_on_any_replica_unfenced(kit: Kit) -> None:
    """Readiness by arrival (min_contributors) is the consumer's, on every replica: not fenced,
    still once (the transition is conditional on ``open``)."""
    r = Replicas(kit)
    assert r.renew("a") == 1
    kit.auth.pools[POOL]["min_contributors"] = 2
    kit.deliver(kit.stored("f1", ts=kit.clock.time(), owner="u1"))
    kit.deliver(kit.stored("f2", ts=kit.clock.time(), owner="u2"))
    (group,) = kit.store.list_groups(POOL)
    assert group["status"] == core.READY
    assert group["fence"] == 0  # adopted at creation (no takeover stamp yet); the arrival's write left it
    assert len(kit.announcer.announced) == 1


def took_over(r: Replicas) -> None:
    """a leads with term 1, freezes right after its local check (SIGSTOP); b takes over with term 2
    and writes its takeover stamp. a still believes it leads."""
    assert r.renew("a") == 1
    assert r.deps["a"].leader.term() == 1
    assert r.renew("b") is None  # b's renewal thread sees a's lease (a takeover waits a lease from there)
    r.mono["a"].paused = True
    r.advance(TTL + 1)
    assert r.renew("b") == 2
    assert r.deps["b"].leader.term() == 2
    assert r.deps["a"].leader.lease.term() == 1


def test_a_paused_old_leader_cannot_move_a_group_created_after_the_takeover(kit: Kit) -> None:
    """The gap of issue 14: a group a consumer creates after the new leader's takeover stamp
    carries the current term from birth, so the old term cannot mark it ready or failed."""
    r = Replicas(kit)
    took_over(r)
    gid = due_group(kit)  # grouped after b's fence_live (by a consumer, on any replica)
    assert ticking.make_ready(r.deps["a"], gid, fence=1) is None
    assert ticking.fail_short(r.deps["a"], gid, core.QUORUM_NOT_MET, fence=1) is None
    assert kit.store.get(gid)["status"] == core.OPEN  # type: ignore[index]
    assert kit.store.get(gid)["fence"] == 2  # type: ignore[index]  # the term current at its creation
    assert kit.announcer.announced == []
    ticking.tick(r.deps["b"])
    assert kit.store.get(gid)["status"] == core.READY  # type: ignore[index]
    assert [g for _, g in kit.announcer.announced] == [gid]


def _only_the_new_leader_expires(kit: Kit, r: Replicas, gid: str) -> None:
    """Lease ``gid`` as a processor would and let the lease run out: the old leader (term 1)
    expires nothing, the new one (term 2) moves it back."""
    assert kit.store.lease(gid, kit.clock.time(), 30) is not None
    r.advance(31)
    assert r.renew("b") == 2
    assert ticking.expire_leases(r.deps["a"], 1) == 0
    assert kit.store.get(gid)["status"] == core.PROCESSING  # type: ignore[index]
    assert ticking.expire_leases(r.deps["b"], 2) == 1


def test_a_paused_old_leader_cannot_expire_the_lease_of_a_group_created_after_the_takeover(kit: Kit) -> None:
    """Made ready without the ticker (``close``), leased by the processor, its lease run out:
    the old term's ``expire_lease`` is refused, the new leader's goes through (announced once)."""
    r = Replicas(kit)
    took_over(r)
    gid = due_group(kit)
    assert ticking.make_ready(kit.deps, gid) is not None  # a close: unfenced
    _only_the_new_leader_expires(kit, r, gid)
    assert kit.store.get(gid)["status"] == core.READY  # type: ignore[index]


def test_a_group_ready_during_the_takeover_and_leased_after_it_carries_the_new_term(kit: Kit) -> None:
    """A group that was ``ready`` when b took over (the ticker does not move ready groups, so the
    stamp skips it) turns ``processing`` by a processor's lease: the lease adopts it with the
    current term, so a's ``expire_lease`` on it is refused."""
    r = Replicas(kit)
    assert r.renew("a") == 1
    gid = due_group(kit)
    ticking.tick(r.deps["a"])  # ready, written with term 1
    assert kit.store.get(gid)["status"] == core.READY  # type: ignore[index]
    assert r.renew("b") is None  # b's renewal thread sees a's lease (a takeover waits a lease from there)
    r.mono["a"].paused = True
    r.advance(TTL + 1)
    assert r.renew("b") == 2
    assert r.deps["b"].leader.term() == 2
    assert kit.store.get(gid)["fence"] == 1  # type: ignore[index]
    leased = kit.store.lease(gid, kit.clock.time(), 30)
    assert leased is not None and leased["fence"] == 2
    r.advance(31)
    assert r.renew("b") == 2
    assert ticking.expire_leases(r.deps["a"], 1) == 0
    assert kit.store.get(gid)["status"] == core.PROCESSING  # type: ignore[index]
    assert ticking.expire_leases(r.deps["b"], 2) == 1


def test_a_group_whose_leaser_died_before_adopting_it_is_expired_by_no_term_until_adopted(kit: Kit) -> None:
    r = Replicas(kit)
    took_over(r)
    gid = due_group(kit)
    ticking.tick(r.deps["b"])
    kit.store.hold_adoption = True
    assert kit.store.lease(gid, kit.clock.time(), 30) is not None  # the fetch's replica dies here
    r.advance(31)
    assert r.renew("b") == 2
    assert ticking.expire_leases(r.deps["a"], 1) == 0
    assert ticking.expire_leases(r.deps["b"], 2) == 0  # pending: not even the new term's
    ticking.tick(r.deps["b"])  # adopts it (term 2), then expires its lease
    group = kit.store.get(gid)
    assert group is not None and group["status"] == core.READY and group["fence"] == 2


def test_a_group_retried_after_the_takeover_carries_the_new_term(kit: Kit) -> None:
    """failed -> ready (``retry``) is a way back into the ticker's reach that no takeover stamp
    saw (failed groups are not stamped): the next lease adopts it with the current term."""
    r = Replicas(kit)
    assert r.renew("a") == 1
    gid = due_group(kit)
    assert r.deps["a"].leader.term() == 1
    assert ticking.fail_short(r.deps["a"], gid, core.QUORUM_NOT_MET, fence=1) is not None
    assert r.renew("b") is None  # b's renewal thread sees a's lease (a takeover waits a lease from there)
    r.mono["a"].paused = True
    r.advance(TTL + 1)
    assert r.renew("b") == 2
    assert r.deps["b"].leader.term() == 2
    assert kit.store.retry(gid, kit.clock.time()) is not None
    _only_the_new_leader_expires(kit, r, gid)


def test_a_group_whose_creator_died_before_adopting_it_is_moved_by_no_term_until_the_leader_adopts_it(
        kit: Kit) -> None:
    """A consumer killed between creating a group and adopting it: the group is nobody's (not the
    old term's, not the new one's) until the leader's next tick adopts it with its term."""
    r = Replicas(kit)
    took_over(r)
    kit.store.hold_adoption = True
    gid = due_group(kit)
    assert "fence_pending" in kit.store.get(gid)  # type: ignore[operator]
    assert ticking.make_ready(r.deps["a"], gid, fence=1) is None
    assert ticking.make_ready(r.deps["b"], gid, fence=2) is None
    assert kit.store.get(gid)["status"] == core.OPEN  # type: ignore[index]
    # a still believes it leads: its tick's sweep adopts the group, but with the term the store
    # holds (2, b's), so a's own write with term 1 is refused.
    ticking.tick(r.deps["a"])
    group = kit.store.get(gid)
    assert group is not None and group["status"] == core.OPEN and group["fence"] == 2
    assert kit.announcer.announced == []
    ticking.tick(r.deps["b"])
    group = kit.store.get(gid)
    assert group is not None and group["status"] == core.READY and group["fence"] == 2
    assert "fence_pending" not in group
    assert [g for _, g in kit.announcer.announced] == [gid]


def test_the_leaders_tick_adopts_a_group_left_pending(kit: Kit) -> None:
    r = Replicas(kit)
    assert r.renew("a") == 1
    kit.store.hold_adoption = True
    gid = due_group(kit)
    assert ticking.make_ready(r.deps["a"], gid, fence=1) is None  # not adopted: nobody's yet
    ticking.tick(r.deps["a"])  # takeover stamp (term 1 into the store), adoption, then ready
    group = kit.store.get(gid)
    assert group is not None and group["status"] == core.READY and group["fence"] == 1
