"""A catch-up ``since`` a time on a real MongoDB-wire server (secantusdb): the same answer as the
open query it replaced, for random pools whose created_ts is not monotonic in seq, read by seq
look-ups only."""

from __future__ import annotations

import random
from typing import Any

import pymongo
from pymongo import monitoring

from services.pool_aggregator.store import MongoGroupStore

from .conftest import number_on_replicas

T0 = 1_800_000_000.0


def old_query(store: MongoGroupStore, pool_id: str, since: float, after_seq: int, limit: int) -> list[dict]:
    """The since path before (one open query): the reference answer."""
    return list(store.results.find({"pool_id": pool_id, "stored": True, "seq": {"$gt": after_seq},
                                    "created_ts": {"$gt": since}}).sort("seq", pymongo.ASCENDING).limit(limit))


def make_pool(store: MongoGroupStore, rng: random.Random, pool_id: str, n: int) -> list[float]:
    """``n`` results created a few ms apart (ties), stored and numbered out of created order, some
    numbered before created_max existed (then maybe backfilled), some after, some never."""
    created = sorted(T0 + rng.randint(0, 25) / 1000 for _ in range(n))
    ids = [f"{pool_id}-r{i}" for i in range(n)]
    for rid, ts in zip(ids, created, strict=True):
        store.insert_result({"result_id": rid, "pool_id": pool_id, "created_ts": ts, "stored": False})
    order = list(range(n))
    if rng.random() < 0.3:
        rng.shuffle(order)
    else:
        for _ in range(rng.randint(1, 6)):  # a few numbered late
            i = rng.randrange(n)
            order.insert(rng.randint(i, n - 1), order.pop(i))
    late = set(rng.sample(range(n), rng.randint(0, 3)))
    never = set(rng.sample(range(n), rng.randint(0, 2)))
    for i in order:
        store.mark_result_stored(ids[i], T0, 1, "0" * 64)
        if i not in late and i not in never:
            store.assign_seq(ids[i])
    if rng.random() < 0.5:  # numbered before created_max existed
        store.results.update_many({"pool_id": pool_id}, {"$unset": {"created_max": ""}})
        if rng.random() < 0.5:
            store.backfill_created_max(pool_id)
    for i in order:
        if i in late and i not in never:
            store.assign_seq(ids[i])
    return created


def test_the_since_path_answers_the_open_query_on_random_pools(mongo_db) -> None:
    store = MongoGroupStore(mongo_db)
    store.ensure_indexes()
    rng = random.Random(11)  # fixed: a failure replays
    for p in range(6):
        pool_id = f"pool{p}"
        created = make_pool(store, rng, pool_id, rng.randint(15, 35))
        last = int((store.counters.find_one({"_id": pool_id}) or {}).get("seq") or 0)
        for _ in range(25):
            base = rng.choice(created) if rng.random() < 0.7 else T0 + rng.randint(-2, 27) / 1000
            since = base + rng.choice([0.0, -0.0005, 0.0005])
            after_seq = rng.randint(0, last + 1)
            limit = rng.randint(1, last + 2)
            found = store.list_results(pool_id, since=since, after_seq=after_seq, limit=limit)
            expected = old_query(store, pool_id, since, after_seq, limit)
            assert [d["_id"] for d in found] == [d["_id"] for d in expected], (pool_id, since, after_seq, limit)


class Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.filters: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == "results":
            self.filters.append(dict(event.command.get("filter") or {}))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_the_since_path_reads_the_seq_index_only(mongo_db) -> None:
    """No open query on created_ts (a collection scan on secantusdb): point look-ups of seqs and
    bounded seq ranges, a logarithmic number of them plus one range per page."""
    store = MongoGroupStore(mongo_db)
    store.ensure_indexes()
    ids = [f"r{i}" for i in range(300)]
    for i, rid in enumerate(ids):
        store.insert_result({"result_id": rid, "pool_id": "p", "created_ts": T0 + i, "stored": False})
        store.mark_result_stored(rid, T0, 1, "0" * 64)
        store.assign_seq(rid)
    finds = Finds()
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_db.client.address[0], mongo_db.client.address[1],
                                                      event_listeners=[finds])
    try:
        watched = MongoGroupStore(client[mongo_db.name])
        page = watched.list_results("p", since=T0 + 199.5, limit=51)
    finally:
        client.close()
    assert [d["seq"] for d in page] == list(range(201, 252))
    assert all(set(f) == {"pool_id", "seq"} for f in finds.filters), finds.filters
    assert all(isinstance(f["seq"], int) or set(f["seq"]) == {"$gt", "$lte"} for f in finds.filters)
    assert len(finds.filters) <= 11  # log2(300) + 1 look-ups and one range


def test_created_max_is_the_running_maximum_under_racing_replicas(mongo_db) -> None:
    store = MongoGroupStore(mongo_db)
    rng = random.Random(7)
    ids = [f"r{n}" for n in range(30)]
    store.results.insert_many([{"_id": rid, "result_id": rid, "pool_id": "p", "created_ts": T0 + rng.randint(0, 9),
                                "stored": True} for rid in ids])
    number_on_replicas(store, ids, 4)  # every replica numbers every result, in its own order
    docs = sorted(store.results.find({"pool_id": "p"}), key=lambda d: d["seq"])
    assert [d["seq"] for d in docs] == list(range(1, 31))
    high = float("-inf")
    for doc in docs:
        high = max(high, doc["created_ts"])
        assert doc["created_max"] == high, doc


def test_the_backfill_gives_legacy_results_the_same_created_max(mongo_db) -> None:
    store = MongoGroupStore(mongo_db)
    for i, ts in enumerate([5, 1, 9, 3, 9, 2]):
        store.insert_result({"result_id": f"r{i}", "pool_id": "p", "created_ts": T0 + ts, "stored": False})
        store.mark_result_stored(f"r{i}", T0, 1, "0" * 64)
        store.assign_seq(f"r{i}")
    chain = [d["created_max"] for d in store.results.find({"pool_id": "p"}).sort("seq", 1)]
    assert chain == [T0 + 5, T0 + 5, T0 + 9, T0 + 9, T0 + 9, T0 + 9]
    store.results.update_many({}, {"$unset": {"created_max": ""}})  # numbered before it existed
    store = MongoGroupStore(mongo_db)  # ... by an older process: this one remembers no created_max
    store.insert_result({"result_id": "new", "pool_id": "p", "created_ts": T0 + 12, "stored": False})
    store.mark_result_stored("new", T0, 1, "0" * 64)
    assert "created_max" not in store.assign_seq("new")  # its seq - 1 has none: nothing provable
    assert store.result_pools() == ["p"]
    assert store.backfill_created_max("p") == 7
    assert [d["created_max"] for d in store.results.find({"pool_id": "p"}).sort("seq", 1)] == chain + [T0 + 12]
    assert store.backfill_created_max("p") == 0  # the last has one: a single look-up
