"""The ticker's leader lease and its fencing against the real MongoDB (secantusdb).

Two electors share one ``leases`` collection; a "paused" leader is one whose clock is
frozen and whose renewals stopped (what SIGSTOP does), while the shared wall clock runs on.
"""

from __future__ import annotations

import threading
from typing import Any

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


def test_racing_takeovers_of_one_seen_lease_get_one(mongo_db: Database) -> None:
    """Eight contenders that all saw the same expired lease: one takeover wins."""
    store = MongoLeaseStore(mongo_db)
    assert store.take(LEASE_NAME, "dead", None, 1000.0, TTL) == 1
    seen = store.read(LEASE_NAME)
    assert seen is not None
    assert _race_for(store, seen) == [None] * 7 + [2]
    assert not store.renew(LEASE_NAME, "dead", 1, 1001.0, TTL)


def test_a_contender_whose_wall_clock_runs_ahead_does_not_take_over(mongo_db: Database) -> None:
    """b's wall clock is an hour ahead of a's: it still waits for a's lease to stop changing."""
    store = MongoLeaseStore(mongo_db)
    mono = [0.0]
    a = LeaderLease(store, LEASE_NAME, ttl=TTL, holder="a", wall=lambda: 1_800_000_000.0, monotonic=lambda: mono[0])
    b = LeaderLease(store, LEASE_NAME, ttl=TTL, holder="b", wall=lambda: 1_800_003_600.0,
                    monotonic=lambda: mono[0])
    assert a.step() == 1
    for _ in range(6):  # two lease lengths of renewals
        assert b.step() is None
        mono[0] += a.interval
        assert a.step() == 1
    assert b.step() is None
    mono[0] += TTL + 0.1  # a died after its last renewal
    assert b.step() == 2
    doc = store.get(LEASE_NAME)
    assert doc is not None and (doc["holder"], doc["term"]) == ("b", 2)


def test_a_lease_renewed_by_a_replica_of_the_previous_version_is_left_alone(mongo_db: Database) -> None:
    """A rolling update: the leader still runs the previous version (its renewals set ``renewed``
    and ``expires_at``, no ``version``). A new replica takes over only once those stop."""
    leases = mongo_db["leases"]
    leases.insert_one({"_id": LEASE_NAME, "holder": "old", "term": 7, "expires_at": 1010.0, "renewed": 1000.0})
    mono = [0.0]
    b = LeaderLease(MongoLeaseStore(mongo_db), LEASE_NAME, ttl=TTL, holder="b", monotonic=lambda: mono[0])
    for i in range(1, 7):  # two lease lengths of the old leader's renewals
        assert b.step() is None
        mono[0] += TTL / 3
        leases.update_one({"_id": LEASE_NAME, "holder": "old", "term": 7},
                          {"$set": {"expires_at": 1010.0 + i, "renewed": 1000.0 + i}})
    assert b.step() is None
    mono[0] += TTL
    assert b.step() == 8  # the old leader stopped renewing a lease ago
    doc = leases.find_one({"_id": LEASE_NAME})
    assert doc is not None and doc["holder"] == "b" and doc["expires_at"] > doc["renewed"]  # read by old replicas


def _race_for(store: MongoLeaseStore, seen: Any) -> list[int | None]:
    """Eight contenders take the lease at once, each having seen ``seen``: the terms they got, sorted."""
    got: list[int | None] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait(timeout=10)
        got.append(store.take(LEASE_NAME, f"h{i}", seen, 1000.0, TTL))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(got, key=lambda t: t or 0)


def test_racing_electors_get_one_lease(mongo_db: Database) -> None:
    assert _race_for(MongoLeaseStore(mongo_db), None) == [None] * 7 + [1]


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
    assert leases["b"].step() is None  # b sees a's lease; it takes over a lease after that
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


def took_over(db: Database) -> tuple[list[float], MongoGroupStore, dict[str, Leadership]]:
    """a leads with term 1 and stamped it, then freezes after its local check; b takes over with
    term 2 and stamps it. a still believes it leads."""
    world, clocks, leases, _ = electors(db)
    groups = MongoGroupStore(db)
    groups.ensure_indexes()
    leading = {name: Leadership(lease, groups) for name, lease in leases.items()}
    assert leading["a"].term() == 1
    assert leases["b"].step() is None  # b sees a's lease; it takes over a lease after that
    clocks["a"].paused = True
    advance(world, clocks, TTL + 1)
    assert leases["b"].step() == 2
    assert leading["b"].term() == 2
    assert leases["a"].term() == 1
    return world, groups, leading


def test_an_old_term_cannot_move_a_group_created_after_a_newer_term_took_over(mongo_db: Database) -> None:
    """Issue 14: a group grouped after b's takeover stamp (by a consumer on any replica) is refused
    to a's term 1 on every ticker transition; b's term moves it."""
    world, groups, _ = took_over(mongo_db)
    created = open_group(groups, 1000, world[0])
    assert groups.mark_ready(created, world[0], fence=1) is None
    assert groups.mark_failed(created, world[0], core.QUORUM_NOT_MET, fence=1) is None
    assert groups.get(created)["status"] == core.OPEN  # type: ignore[index]
    # Another one made ready without the ticker (close), leased by the processor, its lease over.
    leased = open_group(groups, 2000, world[0])
    assert groups.mark_ready(leased, world[0]) is not None
    _only_the_new_term_expires(groups, leased, world[0])
    # The new term's writes go through.
    moved = groups.mark_ready(created, world[0], fence=2)
    assert moved is not None and moved["fence"] == 2


def _only_the_new_term_expires(groups: MongoGroupStore, gid: str, now: float) -> None:
    """Lease ``gid`` (ready) as a processor would; once the lease is over, term 1's expire_lease is
    refused (the group stays processing) and term 2's goes through."""
    processing = groups.lease(gid, now, 5.0)
    assert processing is not None
    assert groups.expire_lease(gid, processing["lease_id"], core.READY, 1, now + 6, fence=1) is None
    assert groups.get(gid)["status"] == core.PROCESSING  # type: ignore[index]
    assert groups.expire_lease(gid, processing["lease_id"], core.READY, 1, now + 6, fence=2) is not None


class HeldCreator(MongoGroupStore):
    """A consumer's store that stops right after creating a group, before adopting it (paused, or
    killed if never resumed)."""

    held: list[tuple[str, str]]

    def _adopt_created(self, doc: dict, sid: str) -> dict:
        if doc.get("fence_pending") == sid:
            self.held.append((doc["_id"], sid))
        return doc


def test_a_creation_that_read_the_term_before_a_takeover_cannot_hand_the_group_to_the_old_term(
        mongo_db: Database) -> None:
    """The race the adoption order is for: a consumer creates a group, reads the term (1), pauses;
    b takes over (term 2) and stamps; the consumer wakes and adopts with its stale 1. The group
    never becomes movable by term 1: pending until adopted, and b's stamp is kept ($max)."""
    world, clocks, leases, _ = electors(mongo_db)
    groups = MongoGroupStore(mongo_db)
    groups.ensure_indexes()
    creator = HeldCreator(mongo_db)
    creator.held = []
    leading = {name: Leadership(lease, groups) for name, lease in leases.items()}
    assert leading["a"].term() == 1
    gid = open_group(creator, 1000, world[0])
    ((held_gid, nonce),) = creator.held
    assert held_gid == gid
    stale = creator.fence_term()  # read after the creation, before b's takeover
    assert stale == 1
    assert groups.mark_ready(gid, world[0], fence=1) is None  # pending: nobody's yet
    assert leases["b"].step() is None  # b sees a's lease; it takes over a lease after that
    clocks["a"].paused = True
    advance(world, clocks, TTL + 1)
    assert leases["b"].step() == 2
    assert leading["b"].term() == 2  # stamps the pending group too
    assert groups.mark_ready(gid, world[0], fence=2) is None  # still pending
    assert creator._adopt([(gid, nonce)], stale) == 1  # the consumer wakes and adopts
    group = groups.get(gid)
    assert group is not None and group["fence"] == 2 and "fence_pending" not in group
    assert groups.mark_ready(gid, world[0], fence=1) is None
    assert groups.mark_failed(gid, world[0], core.QUORUM_NOT_MET, fence=1) is None
    assert groups.mark_ready(gid, world[0], fence=2) is not None


def test_the_leaders_sweep_adopts_a_group_whose_creator_died(mongo_db: Database) -> None:
    world, groups, _ = took_over(mongo_db)
    creator = HeldCreator(mongo_db)
    creator.held = []
    gid = open_group(creator, 1000, world[0])  # its consumer is killed before adopting it
    assert groups.mark_ready(gid, world[0], fence=2) is None
    assert groups.adopt_pending() == 1
    assert groups.adopt_pending() == 0
    assert groups.mark_ready(gid, world[0], fence=1) is None
    moved = groups.mark_ready(gid, world[0], fence=2)
    assert moved is not None and moved["fence"] == 2 and "fence_pending" not in moved


def test_a_retry_after_a_takeover_carries_the_new_term(mongo_db: Database) -> None:
    """A group failed by term 1 (failed groups are not stamped at a takeover), retried after b's
    takeover, leased (which adopts it with the current term), its lease over: term 1 cannot
    expire it."""
    world, clocks, leases, _ = electors(mongo_db)
    groups = MongoGroupStore(mongo_db)
    groups.ensure_indexes()
    leading = {name: Leadership(lease, groups) for name, lease in leases.items()}
    assert leading["a"].term() == 1
    gid = open_group(groups, 1000, world[0])
    assert groups.mark_failed(gid, world[0], core.QUORUM_NOT_MET, fence=1) is not None
    assert leases["b"].step() is None  # b sees a's lease; it takes over a lease after that
    clocks["a"].paused = True
    advance(world, clocks, TTL + 1)
    assert leases["b"].step() == 2
    assert leading["b"].term() == 2
    assert groups.retry(gid, world[0]) is not None
    _only_the_new_term_expires(groups, gid, world[0])


def test_a_group_ready_during_a_takeover_and_leased_after_it_carries_the_new_term(mongo_db: Database) -> None:
    world, clocks, leases, _ = electors(mongo_db)
    groups = MongoGroupStore(mongo_db)
    groups.ensure_indexes()
    leading = {name: Leadership(lease, groups) for name, lease in leases.items()}
    assert leading["a"].term() == 1
    gid = open_group(groups, 1000, world[0])
    assert groups.mark_ready(gid, world[0], fence=1) is not None
    assert leases["b"].step() is None
    clocks["a"].paused = True
    advance(world, clocks, TTL + 1)
    assert leases["b"].step() == 2
    assert leading["b"].term() == 2
    processing = groups.lease(gid, world[0], 5.0)
    assert processing is not None and processing["fence"] == 2 and "fence_pending" not in processing
    assert groups.expire_lease(gid, processing["lease_id"], core.READY, 1, world[0] + 6, fence=1) is None
    assert groups.expire_lease(gid, processing["lease_id"], core.READY, 1, world[0] + 6, fence=2) is not None


def test_a_released_lease_taken_by_a_previous_version_replica_is_not_stolen_at_once(mongo_db: Database) -> None:
    """A rolling update: a new replica releases on stop, an old-version replica takes the lease
    by its expires_at (setting its holder, leaving ``released`` as it was); a new contender must
    treat that as a live lease -- before, it saw ``released`` and took it at once: two tickers."""
    from pymongo import ReturnDocument

    store = MongoLeaseStore(mongo_db)
    mono = [0.0]
    a = LeaderLease(store, LEASE_NAME, ttl=TTL, holder="new-a", monotonic=lambda: mono[0])
    assert a.step() == 1
    a.release()
    now = 1_800_000_000.0
    # The previous version's takeover, as it was written (by expires_at alone).
    taken = mongo_db["leases"].find_one_and_update(
        {"_id": LEASE_NAME, "expires_at": {"$lte": now}},
        {"$set": {"holder": "old-x", "expires_at": now + TTL, "since": now, "renewed": now}, "$inc": {"term": 1}},
        return_document=ReturnDocument.AFTER, projection={"term": 1})
    assert taken is not None and taken["term"] == 2
    b = LeaderLease(store, LEASE_NAME, ttl=TTL, holder="new-b", monotonic=lambda: mono[0])
    assert b.step() is None, "a new replica took a previous-version replica's live lease at once"
    mono[0] += TTL + 0.1  # the old replica stopped renewing
    assert b.step() == 3
