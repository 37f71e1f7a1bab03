"""A catch-up ``since`` a time (core.results_since) answers exactly what the open query did.

Property-style (hypothesis) over the in-memory store: results created in one order and numbered
in another (so created_ts is not monotonic in seq, with ties and late numberings right at the
boundary), some numbered before ``created_max`` existed (then backfilled, or not), some never
numbered; every (since, after_seq, limit) compared with the open query, which the fake's
``list_results`` still runs as it always did.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.testing.pool_aggregator import FakeGroupStore
from services.pool_aggregator import core, results
from services.pool_aggregator.app import prepare

POOL = "p1"
T0 = 1_800_000_000.0


def build(created: list[int], order: list[int], *, late: frozenset[int] = frozenset(),
          never: frozenset[int] = frozenset(), legacy: bool = False, backfill: bool = False) -> FakeGroupStore:
    """Results created at T0 + created[i] ms (ties allowed), stored and numbered in ``order``;
    ``legacy``: those numbered lose created_max (numbered before it existed), then ``backfill``;
    then the ``late`` ones are numbered (after the upgrade); ``never`` ones stay stored, unnumbered
    (a crash between the two). Another pool's result shares the collection."""
    store = FakeGroupStore()
    for i, ms in enumerate(created):
        store.insert_result({"result_id": f"r{i}", "pool_id": POOL, "created_ts": T0 + ms / 1000,
                             "stored": False})
    store.insert_result({"result_id": "x", "pool_id": "other", "created_ts": T0, "stored": False})
    store.mark_result_stored("x", T0, 1, "0" * 64)
    store.assign_seq("x")
    for i in order:
        store.mark_result_stored(f"r{i}", T0, 1, "0" * 64)
        if i not in late and i not in never:
            store.assign_seq(f"r{i}")
    if legacy:
        for doc in store.results.values():
            doc.pop("created_max", None)
    if backfill:
        store.backfill_created_max(POOL)
    for i in order:
        if i in late and i not in never:
            store.assign_seq(f"r{i}")
    return store


def new_path(store: FakeGroupStore, since: float, after_seq: int, limit: int) -> list[dict[str, Any]]:
    by_seq = {int(r["seq"]): dict(r) for r in store.results.values()
              if r["pool_id"] == POOL and r.get("seq") is not None}

    def created_max(seq: int) -> float | None:
        high = by_seq.get(seq, {}).get("created_max")
        return float(high) if high is not None else None

    def read_range(low: int, high: int) -> list[dict[str, Any]]:
        return [by_seq[k] for k in range(low + 1, high + 1) if k in by_seq]

    return core.results_since(since, after_seq, limit, store.counters.get(POOL, 0), created_max, read_range)


@st.composite
def pools(draw: st.DrawFn) -> tuple[FakeGroupStore, list[int]]:
    n = draw(st.integers(0, 40))
    # Few distinct times: many ties, and late numberings of early results near every boundary.
    created = sorted(draw(st.lists(st.integers(0, 30), min_size=n, max_size=n)))
    order = list(range(n))
    # Mostly numbered in created order, some results numbered later than created (moved on)...
    for _ in range(draw(st.integers(0, 6))):
        if n > 1:
            i = draw(st.integers(0, n - 1))
            order.insert(draw(st.integers(i, n - 1)), order.pop(i))
    if draw(st.booleans()):  # ... or in any order at all
        order = draw(st.permutations(order))
    picks = st.frozensets(st.integers(0, n - 1), max_size=4) if n else st.just(frozenset[int]())
    store = build(created, order, late=draw(picks), never=draw(picks), legacy=draw(st.booleans()),
                  backfill=draw(st.booleans()))
    return store, created


@settings(max_examples=400, deadline=None)
@given(pools(), st.data())
def test_the_since_path_answers_the_open_query(pool: tuple[FakeGroupStore, list[int]], data: st.DataObject) -> None:
    store, created = pool
    last = store.counters.get(POOL, 0)
    for _ in range(8):
        ms = data.draw(st.sampled_from(created)) if created and data.draw(st.booleans()) \
            else data.draw(st.integers(-2, 32))
        since = T0 + ms / 1000 + data.draw(st.sampled_from([0.0, -0.0005, 0.0005]))
        after_seq = data.draw(st.integers(0, last + 2))
        limit = data.draw(st.integers(1, last + 2))
        expected = store.list_results(POOL, since=since, after_seq=after_seq, limit=limit)
        found = new_path(store, since, after_seq, limit)
        assert [d["result_id"] for d in found] == [d["result_id"] for d in expected]


def test_created_max_is_the_running_maximum_and_the_backfill_writes_the_same() -> None:
    store = build([5, 1, 9, 3, 9, 2], [0, 1, 2, 3, 4, 5])
    chain = [store.result_at(POOL, k)["created_max"] for k in range(1, 7)]  # type: ignore[index]
    assert chain == [T0 + 0.005, T0 + 0.005, T0 + 0.009, T0 + 0.009, T0 + 0.009, T0 + 0.009]
    for doc in store.results.values():
        doc.pop("created_max", None)
    assert store.backfill_created_max(POOL) == 6
    assert [store.result_at(POOL, k)["created_max"] for k in range(1, 7)] == chain  # type: ignore[index]


def test_the_background_pass_backfills_created_max_and_prepare_does_not_wait_for_it(kit) -> None:  # type: ignore[no-untyped-def]
    """A start must not walk every result before serving (review: ~2 ms a result on secantusdb,
    a crash-looping pod past its startup probe on a big database); the periodic pass does it,
    and mends a chain broken by a result numbered without created_max (an older replica)."""
    store = kit.store
    for i, ms in enumerate([3, 1, 2, 5]):
        store.insert_result({"result_id": f"r{i}", "pool_id": POOL, "created_ts": T0 + ms, "stored": False})
        store.mark_result_stored(f"r{i}", T0, 1, "0" * 64)
        store.assign_seq(f"r{i}")
    for i in (1, 2, 3):
        store.results[f"r{i}"].pop("created_max", None)  # numbered without created_max
    prepare(kit.deps)
    assert store.result_at(POOL, 2).get("created_max") is None  # type: ignore[union-attr]
    assert results.backfill_created_max(kit.deps) == 3
    assert [store.result_at(POOL, k)["created_max"] for k in (1, 2, 3, 4)] == [T0 + 3] * 3 + [T0 + 5]  # type: ignore[index]
    assert results.backfill_created_max(kit.deps) == 0


def test_the_search_takes_a_logarithmic_number_of_look_ups() -> None:
    asked: list[int] = []

    def created_max(seq: int) -> float:
        asked.append(seq)
        return float(seq)

    assert core.first_seq_after(5000.5, 0, 10000, created_max) == 5001
    assert len(asked) <= 15
    assert core.first_seq_after(0.5, 0, 10000, lambda seq: None) == 1  # unknown: read from the start
    assert core.first_seq_after(1e9, 0, 10000, lambda seq: float(seq)) == 10001
    assert core.first_seq_after(1.0, 7, 7, created_max) == 8
