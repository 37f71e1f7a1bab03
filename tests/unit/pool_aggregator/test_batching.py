"""Grouping in slices: concurrent deliveries share one slice of bulk writes; one bad message fails alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from services.common.contracts import FileGrouped
from services.pool_aggregator import core, grouping
from services.pool_aggregator.batching import SliceRunner

from .conftest import POOL, Kit, W


def _concurrently(runner: SliceRunner[str], items: list[str], work) -> dict[str, object]:
    answers: dict[str, object] = {}

    def one(item: str) -> None:
        try:
            answers[item] = runner.run(item, work)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            answers[item] = exc

    threads = [threading.Thread(target=one, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return answers


def test_items_arriving_during_a_slice_share_the_next_one() -> None:
    runner: SliceRunner[str] = SliceRunner(lambda item: item, max_slice=64, max_leaders=1)
    first_started, release = threading.Event(), threading.Event()
    slices: list[list[str]] = []

    def work(items: Sequence[str]) -> dict[str, str]:
        slices.append(list(items))
        if len(slices) == 1:
            first_started.set()
            release.wait(5)
        return {item: item.upper() for item in items}

    lone = threading.Thread(target=lambda: runner.run("a0", work))
    lone.start()
    assert first_started.wait(5)
    others = [f"b{i}" for i in range(20)]
    waiting = threading.Thread(target=lambda: answers.update(_concurrently(runner, others, work)))
    answers: dict[str, object] = {}
    waiting.start()
    deadline = threading.Event()
    for _ in range(1000):  # every other item is pending before the first slice ends (10 s at most)
        if len(runner._pending) == 21:
            break
        deadline.wait(0.01)
    release.set()
    lone.join(5)
    waiting.join(10)
    assert answers == {item: item.upper() for item in others}
    assert [sorted(s) for s in slices] == [["a0"], sorted(others)]


def test_another_lanes_items_run_beside_a_slow_slice_up_to_max_leaders() -> None:
    """A slow slice of one pool (a big batch's writes) does not hold up another pool's files:
    they get a slice at once, one per lane, and no more than ``max_leaders`` run together."""
    runner: SliceRunner[str] = SliceRunner(lambda item: item, max_slice=64, max_leaders=2,
                                           lane=lambda item: item[0])
    first_started, release = threading.Event(), threading.Event()
    lock = threading.Lock()
    slices: list[list[str]] = []
    running = [0, 0]  # now, most

    def work(items: Sequence[str]) -> dict[str, str]:
        with lock:
            slices.append(list(items))
            running[0] += 1
            running[1] = max(running[1], running[0])
            first = len(slices) == 1
        if first:
            first_started.set()
            release.wait(10)
        with lock:
            running[0] -= 1
        return {item: item.upper() for item in items}

    lone = threading.Thread(target=lambda: runner.run("a0", work))
    lone.start()
    assert first_started.wait(5)
    others = [f"b{i}" for i in range(20)]
    answers = _concurrently(runner, others, work)  # returns while a0's slice is still held
    assert answers == {item: item.upper() for item in others}
    assert not release.is_set() and lone.is_alive(), "the others were grouped beside the slow slice"
    release.set()
    lone.join(5)
    assert running[1] == 2 == runner.most_leaders  # never more than max_leaders at once
    assert sorted(i for s in slices for i in s) == sorted(["a0", *others])  # each item once
    assert all(len({i[0] for i in s}) == 1 for s in slices)  # a slice holds one lane


def test_one_lane_runs_one_slice_at_a_time_so_its_slices_stay_large() -> None:
    runner: SliceRunner[str] = SliceRunner(lambda item: item, max_slice=64, max_leaders=4,
                                           lane=lambda item: item[0])
    lock = threading.Lock()
    running = [0, 0]

    def work(items: Sequence[str]) -> dict[str, str]:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        threading.Event().wait(0.02)
        with lock:
            running[0] -= 1
        return {item: item.upper() for item in items}

    answers = _concurrently(runner, [f"a{i}" for i in range(40)], work)
    assert answers == {f"a{i}": f"A{i}" for i in range(40)}
    assert running[1] == 1 and runner.slices < 40  # one slice at a time, several items each


def test_a_slice_is_bounded() -> None:
    runner: SliceRunner[str] = SliceRunner(lambda item: item, max_slice=4)
    gate = threading.Lock()
    sizes: list[int] = []

    def work(items: Sequence[str]) -> dict[str, int]:
        with gate:
            sizes.append(len(items))
        return dict.fromkeys(items, 1)

    answers = _concurrently(runner, [f"i{n}" for n in range(30)], work)
    assert answers == {f"i{n}": 1 for n in range(30)} and max(sizes) <= 4 and sum(sizes) == 30


def test_one_bad_message_fails_alone_not_its_slice_mates() -> None:
    runner: SliceRunner[str] = SliceRunner(lambda item: item, max_slice=64)

    def work(items: Sequence[str]) -> dict[str, str]:
        if "bad" in items:
            raise ValueError("poison")
        return {item: "ok" for item in items}

    answers = _concurrently(runner, ["bad"] + [f"g{n}" for n in range(10)], work)
    assert isinstance(answers.pop("bad"), ValueError)
    assert answers == {f"g{n}": "ok" for n in range(10)}


def test_a_slice_makes_one_add_per_window_not_per_file(kit: Kit) -> None:
    start = kit.window_start()
    messages = [kit.stored(f"f{i:03d}", ts=start + (i % 2) * W + i / 100, owner=f"u{i % 7}") for i in range(100)]
    members = grouping.group_files(kit.deps, messages)
    assert kit.store.add_calls == 2  # two windows
    first, second = core.group_id(POOL, start), core.group_id(POOL, start + W)
    assert {m["group_id"] for m in members.values()} == {first, second} and len(members) == 100
    assert (kit.store.get(first)["file_count"], kit.store.get(second)["file_count"]) == (50, 50)
    again = grouping.group_files(kit.deps, messages[:10] + messages[:10])  # redelivered, twice in one slice
    assert again == {m.file_id: members[m.file_id] for m in messages[:10]}
    # No look-up first: the redelivery is answered by add_files (one call per window, as a new
    # slice would be), and nothing is counted twice.
    assert kit.store.add_calls == 4
    assert (kit.store.get(first)["file_count"], kit.store.get(second)["file_count"]) == (50, 50)


def test_a_late_slice_goes_to_the_current_window_together(kit: Kit) -> None:
    start = kit.window_start()
    kit.deliver(kit.stored("first", ts=start + 1))
    kit.clock.advance(2 * W)
    kit.store.mark_ready(core.group_id(POOL, start), kit.clock.time())
    kit.store.lease(core.group_id(POOL, start), kit.clock.time(), 30)
    members = grouping.group_files(kit.deps, [kit.stored(f"l{i}", ts=start + 2 + i) for i in range(5)])
    current = core.group_id(POOL, start + 2 * W)
    assert set(members) == {f"l{i}" for i in range(5)}
    assert all(m == {"group_id": current, "late": True} for m in members.values())
    assert kit.store.get(current)["late_count"] == 5


def test_two_pools_in_one_slice_each_get_their_groups(kit: Kit) -> None:
    kit.auth.pools["p2"] = {**kit.auth.pools[POOL], "pool_id": "p2", "window_seconds": 10}
    start = kit.window_start()
    messages = [kit.stored("a", ts=start + 1), kit.stored("b", ts=start + 1, pool_id="p2"),
                kit.stored("c", ts=start + 1, pool_id="nope")]
    members = grouping.group_files(kit.deps, messages)
    assert members == {"a": {"group_id": core.group_id(POOL, start), "late": False},
                       "b": {"group_id": core.group_id("p2", core.window_for(start + 1, 10).start), "late": False}}


def test_the_handler_publishes_each_files_assignment(kit: Kit) -> None:
    start = kit.window_start()
    kit.deliver(kit.stored("f1", ts=start + 1))
    assert [(m.file_id, m.late) for m in kit.broker.of_type(FileGrouped)] == [("f1", False)]
    assert kit.deps.grouper.slices == 1


def test_auth_down_fails_the_slice(kit: Kit) -> None:
    kit.auth.down = True
    with pytest.raises(Exception, match="FakeAuth.down"):
        grouping.group_files(kit.deps, [kit.stored("f1", ts=kit.window_start() + 1)])
