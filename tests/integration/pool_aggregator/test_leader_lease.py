"""The ticker's leader lease and its fencing against the real MongoDB (secantusdb).

Two electors share one ``leases`` collection; a "paused" leader is one whose clock is
frozen and whose renewals stopped (what SIGSTOP does), while the shared wall clock runs on.
"""

from __future__ import annotations

import threading

from pymongo.database import Database

from services.common.leader import LeaderLease
from services.pool_aggregator import core
from services.pool_aggregator.leadership import LEASE_NAME, Leadership
from services.pool_aggregator.store import MongoGroupStore, MongoLeaseStore

TTL = 10.0
POOL = "pool1"


class Frozen:
    """A process's clocks: ``wall`` is shared by reference, ``mono`` stops while paused."""

    def __init__(self, world: list[float]) -> None:
        self.world = world
        self.mono = 0.0
        self.paused = False

    def wall(self) -> float:
        return self.world[0]

    def monotonic(self) -> float:
        return self.mono


def electors(db: Database) -> tuple[list[float], dict[str, Frozen], dict[str, LeaderLease], MongoLeaseStore]:
    world = [1_800_000_000.0]
    store = MongoLeaseStore(db)
    clocks = {name: Frozen(world) for name in ("a", "b")}
    leases = {name: LeaderLease(store, LEASE_NAME, ttl=TTL, holder=name, wall=clocks[name].wall,
                                monotonic=clocks[name].monotonic) for name in ("a", "b")}
    return world, clocks, leases, store


def advance(world: list[float], clocks: dict[str, Frozen], seconds: float) -> None:
    world[0] += seconds
    for clock in clocks.values():
        if not clock.paused:
            clock.mono += seconds


def open_group(store: MongoGroupStore, start: int, now: float) -> str:
    outcome, group, _ = store.add_files(
        pool_id=POOL, window=core.Window(start, start + 60), close_grace_seconds=0, min_contributors=None,
        entries=[{"file_id": f"f{start}", "owner_id": "u1", "size": 10, "ts": float(start)}], now=now)
    assert outcome == "added" and group is not None
    return str(group["_id"])


def test_one_holder_then_a_takeover_with_the_next_term(mongo_db: Database) -> None:
    world, clocks, leases, store = electors(mongo_db)
    assert leases["a"].step() == 1
    assert leases["b"].step() is None
    advance(world, clocks, TTL / 3)
    assert leases["a"].step() == 1  # a renewal keeps the term
    assert leases["b"].step() is None
    clocks["a"].paused = True  # a stops renewing (SIGSTOP)
    advance(world, clocks, TTL - 0.5)
    assert leases["b"].step() is None  # a's last renewal still runs
    advance(world, clocks, 1.0)
    assert leases["b"].step() == 2
    doc = store.get(LEASE_NAME)
    assert doc is not None and (doc["holder"], doc["term"]) == ("b", 2)
    # a wakes: its renewal names term 1, which is gone; it is a follower.
    clocks["a"].paused = False
    assert leases["a"].step() is None
    assert leases["a"].term() is None
    leases["b"].release()
    assert leases["a"].step() == 3  # released: taken at once, the term still grows


def test_racing_electors_get_one_lease(mongo_db: Database) -> None:
    store = MongoLeaseStore(mongo_db)
    got: list[int | None] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait(timeout=10)
        got.append(store.acquire(LEASE_NAME, f"h{i}", None, 1000.0, TTL))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(got, key=lambda t: t or 0) == [None] * 7 + [1]


def test_a_paused_leaders_writes_are_refused_by_the_store(mongo_db: Database) -> None:
    world, clocks, leases, _ = electors(mongo_db)
    groups = MongoGroupStore(mongo_db)
    groups.ensure_indexes()
    ready_one = open_group(groups, 1000, world[0])
    expiring = open_group(groups, 2000, world[0])
    assert groups.mark_ready(expiring, world[0]) is not None
    assert groups.lease(expiring, world[0], 5.0) is not None
    leading = {name: Leadership(lease, groups) for name, lease in leases.items()}
    assert leading["a"].term() == 1
    assert groups.get(ready_one)["fence"] == 1  # type: ignore[index]  # stamped at a's takeover
    # a passed its local check, then froze; b takes over once the lease ran out.
    clocks["a"].paused = True
    advance(world, clocks, TTL + 1)
    assert leases["b"].step() == 2
    assert leading["b"].term() == 2
    assert leases["a"].term() == 1  # a's frozen clock: it still believes it leads
    processing = groups.get(expiring)
    assert processing is not None
    assert groups.mark_ready(ready_one, world[0], fence=1) is None
    assert groups.mark_failed(ready_one, world[0], "quorum_not_met", fence=1) is None
    assert groups.expire_lease(expiring, processing["lease_id"], core.READY, 1, world[0], fence=1) is None
    assert groups.get(ready_one)["status"] == core.OPEN  # type: ignore[index]
    assert groups.get(expiring)["status"] == core.PROCESSING  # type: ignore[index]
    # The new leader's writes go through, and an unfenced write (a request) is not affected.
    moved = groups.mark_ready(ready_one, world[0], fence=2)
    assert moved is not None and moved["fence"] == 2
    assert groups.expire_lease(expiring, processing["lease_id"], core.READY, 1, world[0], fence=2) is not None
    late = open_group(groups, 3000, world[0])
    assert groups.mark_ready(late, world[0]) is not None
