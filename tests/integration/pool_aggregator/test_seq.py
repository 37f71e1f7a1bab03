"""seq on a real MongoDB-wire server (secantusdb): gapless and once each under races, retries and crashes."""

from __future__ import annotations

import random
import threading

from services.pool_aggregator.store import MongoGroupStore

from .conftest import number_on_replicas

POOL = "seq-pool"


def _results(store: MongoGroupStore, count: int, pool_id: str = POOL) -> list[str]:
    ids = [f"{pool_id}-r{n}" for n in range(count)]
    store.results.insert_many([{"_id": rid, "result_id": rid, "pool_id": pool_id, "created_ts": float(n),
                                "stored": True} for n, rid in enumerate(ids)])
    return ids


def test_replicas_racing_number_every_result_once_with_no_gap(mongo_db) -> None:
    store = MongoGroupStore(mongo_db)
    store.ensure_indexes()
    ids = _results(store, 30)
    other = _results(store, 5, pool_id="other-pool")
    number_on_replicas(store, ids + other, 6)  # every replica numbers every result: duplicates galore
    seqs = sorted(d["seq"] for d in store.results.find({"pool_id": POOL}))
    assert seqs == list(range(1, 31))
    assert sorted(d["seq"] for d in store.results.find({"pool_id": "other-pool"})) == [1, 2, 3, 4, 5]
    assert store.counters.find_one({"_id": POOL}) == {"_id": POOL, "seq": 30, "pending": None}
    page = store.list_results(POOL, after_seq=10, limit=5)
    assert [d["seq"] for d in page] == [11, 12, 13, 14, 15]


def test_a_crash_between_the_counter_and_the_result_burns_no_seq(mongo_db) -> None:
    store = MongoGroupStore(mongo_db)
    first, second, third = _results(store, 3)
    assert store.assign_seq(first)["seq"] == 1
    # A replica took seq 2 for `second`, then died before writing it on the result.
    store.counters.update_one({"_id": POOL}, {"$set": {"seq": 2, "pending": {"result_id": second, "seq": 2}}})
    assert store.assign_seq(third)["seq"] == 3  # rolled forward first: `second` got its 2
    assert store.get_result(second)["seq"] == 2
    # Another took seq 4 for a result whose post was then undone (deleted): 4 is given back.
    store.counters.update_one({"_id": POOL}, {"$set": {"seq": 4, "pending": {"result_id": "gone", "seq": 4}}})
    (late,) = _results(store, 1, pool_id="x")
    store.results.insert_one({"_id": "r4", "result_id": "r4", "pool_id": POOL, "created_ts": 9.0, "stored": True})
    assert store.assign_seq("r4")["seq"] == 4
    assert store.assign_seq(late)["seq"] == 1


def test_backfill_order_and_unnumbered_listing(mongo_db) -> None:
    store = MongoGroupStore(mongo_db)
    store.results.insert_many([{"_id": f"b{n}", "result_id": f"b{n}", "pool_id": POOL, "created_ts": ts,
                                "stored": stored} for n, (ts, stored) in enumerate(((3.0, True), (1.0, True),
                                                                                     (2.0, False)))])
    assert [d["_id"] for d in store.unnumbered_results()] == ["b1", "b0"]
    for doc in store.unnumbered_results():
        store.assign_seq(doc["_id"])
    assert [(d["_id"], d["seq"]) for d in store.list_results(POOL)] == [("b1", 1), ("b0", 2)]
    assert store.unnumbered_results() == []


def test_acks_only_move_forward_under_racing_writers(mongo_db) -> None:
    store = MongoGroupStore(mongo_db)
    store.ensure_indexes()
    assert store.last_seq(POOL) == 0 and store.acked(POOL, "u1") is None
    for rid in _results(store, 4):
        store.assign_seq(rid)
    # An unstored (invisible) result does not count as the pool's last.
    store.results.insert_one({"_id": "hidden", "result_id": "hidden", "pool_id": POOL, "created_ts": 99.0,
                              "stored": False})
    assert store.last_seq(POOL) == 4 and store.last_seq("other-pool") == 0
    rng = random.Random(7)
    seqs = [rng.randint(0, 4) for _ in range(40)] + [4]
    barrier = threading.Barrier(4)

    def writer(part: list[int]) -> None:
        barrier.wait()
        for seq in part:
            store.ack(POOL, "u1", seq, 1.0)

    threads = [threading.Thread(target=writer, args=(seqs[n::4],)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert store.acked(POOL, "u1") == 4
    assert store.ack(POOL, "u1", 1, 2.0) == 4  # never back
    assert store.acked(POOL, "u2") is None and store.ack(POOL, "u2", 0, 2.0) == 0


def test_pages_by_seq_range_to_the_end_and_past_a_gap(mongo_db) -> None:
    """list_results pages by seq ranges (what secantusdb's index serves): every result once, in
    order, the last page short; and should a gap ever be there, nothing behind it is lost."""
    store = MongoGroupStore(mongo_db)
    store.ensure_indexes()
    for rid in _results(store, 23):
        store.assign_seq(rid)
    seen, after = [], 0
    while True:
        page = store.list_results(POOL, after_seq=after, limit=5)
        seen += [d["seq"] for d in page]
        if len(page) < 5:
            break
        after = page[-1]["seq"]
    assert seen == list(range(1, 24))
    assert store.list_results(POOL, after_seq=23, limit=5) == []
    # A gap (seq 8 gone) and an unstored record: skipped, and the page still fills from behind them.
    store.results.delete_one({"pool_id": POOL, "seq": 8})
    store.results.update_one({"pool_id": POOL, "seq": 10}, {"$set": {"stored": False}})
    assert [d["seq"] for d in store.list_results(POOL, after_seq=5, limit=5)] == [6, 7, 9, 11, 12]
    # A gap at the end of a range: the rest comes from behind it.
    store.results.delete_many({"pool_id": POOL, "seq": {"$gte": 13, "$lte": 20}})
    assert [d["seq"] for d in store.list_results(POOL, after_seq=11, limit=5)] == [12, 21, 22, 23]
    # Created after `since` (a member that never acknowledged): filtered, in seq order.
    assert [d["seq"] for d in store.list_results(POOL, since=20.5, limit=5)] == [22, 23]
