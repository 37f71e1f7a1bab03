"""A batch upload's files as one UploadStored: one slice, one FilesGrouped, idempotent under
redelivery, and an older file_service_manager's FileStored of the same files still understood."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from services.common.contracts import FileGrouped, FilesGrouped, GroupedFiles
from services.pool_aggregator import core, grouping, ticking
from services.pool_aggregator.batching import SliceRunner

from .conftest import POOL, Kit, W


def test_a_batch_is_one_slice_one_add_per_window_and_one_answer(kit: Kit) -> None:
    start = kit.window_start()
    ids = [f"b{i:04d}" for i in range(1000)]
    # Half in this window, half in the next: two add_files, whatever the number of files.
    stamps = [start + (i % 2) * W + i / 1000 for i in range(1000)]
    kit.deliver(kit.batch("up1", ids, ts=stamps))
    first, second = core.group_id(POOL, start), core.group_id(POOL, start + W)
    assert kit.store.add_calls == 2 and kit.deps.grouper.slices == 1
    assert (kit.store.get(first)["file_count"], kit.store.get(second)["file_count"]) == (500, 500)
    [answer] = kit.broker.of_type(FilesGrouped)
    assert not kit.broker.of_type(FileGrouped)  # no per-file answers for a batch
    assert (answer.pool_id, answer.upload_id) == (POOL, "up1")
    assert answer.groups == (GroupedFiles(first, False, tuple(ids[0::2])),
                             GroupedFiles(second, False, tuple(ids[1::2])))


def test_a_redelivered_batch_counts_once_and_is_answered_again(kit: Kit) -> None:
    start = kit.window_start()
    message = kit.batch("up1", [f"b{i}" for i in range(50)], ts=start + 1)
    for _ in range(3):
        kit.deliver(message)
    gid = core.group_id(POOL, start)
    assert (kit.store.get(gid)["file_count"], kit.store.get(gid)["bytes"], len(kit.store.files_of(gid))) == (
        50, 500, 50)
    answers = kit.broker.of_type(FilesGrouped)
    assert len(answers) == 3 and answers[0] == answers[1] == answers[2]  # the index catches up after a crash


def test_files_an_older_version_announced_one_by_one_count_once_in_the_batch(kit: Kit) -> None:
    """Rolling upgrade: FileStored of some of a batch's files (an older file_service_manager, or
    messages still queued) and then the batch's UploadStored (its store redelivered to a new one)."""
    start = kit.window_start()
    ids = [f"b{i}" for i in range(10)]
    batch = kit.batch("up1", ids, ts=start + 1)
    for stored in batch.files()[:4]:
        kit.deliver(stored)
    kit.deliver(batch)
    gid = core.group_id(POOL, start)
    assert kit.store.get(gid)["file_count"] == 10
    assert [m.file_id for m in kit.broker.of_type(FileGrouped)] == ids[:4]
    [answer] = kit.broker.of_type(FilesGrouped)
    assert answer.groups == (GroupedFiles(gid, False, tuple(ids)),)  # the whole batch, the 4 included


def test_a_batch_for_a_closed_window_goes_late_together(kit: Kit) -> None:
    start = kit.window_start()
    kit.deliver(kit.stored("first", ts=start + 1))
    kit.clock.advance(3 * W)
    ticking.promote_ready(kit.deps)
    assert kit.store.lease(core.group_id(POOL, start), kit.clock.time(), 30) is not None
    kit.deliver(kit.batch("up1", ["l1", "l2", "l3"], ts=start + 2))
    current = core.group_id(POOL, start + 3 * W)
    [answer] = kit.broker.of_type(FilesGrouped)
    assert answer.groups == (GroupedFiles(current, True, ("l1", "l2", "l3")),)
    assert kit.store.get(current)["late_count"] == 3


def test_a_batch_of_no_pool_or_an_unknown_pool_is_not_grouped(kit: Kit) -> None:
    kit.deliver(kit.batch("up1", ["a", "b"], ts=kit.clock.time(), pool_id=None))
    kit.deliver(kit.batch("up2", ["c", "d"], ts=kit.clock.time(), pool_id="nope"))
    assert kit.store.groups == {} and not kit.broker.of_type(FilesGrouped)


def test_readiness_by_contributors_counts_a_batchs_owner_once(kit: Kit) -> None:
    kit.auth.pools[POOL]["min_contributors"] = 2
    start = kit.window_start()
    kit.deliver(kit.batch("up1", [f"a{i}" for i in range(5)], ts=start + 1, owner="u1"))
    gid = core.group_id(POOL, start)
    assert kit.store.get(gid)["status"] == "open"  # five files, one contributor
    kit.deliver(kit.batch("up2", ["b0"], ts=start + 1, owner="u2"))
    assert kit.store.get(gid)["status"] == "ready"


def test_a_slice_is_bounded_by_weight_and_a_heavy_item_is_a_slice_of_its_own() -> None:
    """A batch's one message weighs its files: small deliveries fill a slice up to max_slice
    files, a heavier batch runs alone (never split, never merged past the bound)."""
    weights = {"big": 300, **{f"s{i}": 1 for i in range(40)}, "mid": 20}
    runner: SliceRunner[str] = SliceRunner(lambda item: item, max_slice=32, max_leaders=1,
                                           weight=lambda item: weights[item])
    gate, release = threading.Event(), threading.Event()
    slices: list[list[str]] = []
    lock = threading.Lock()

    def work(items: Sequence[str]) -> dict[str, str]:
        with lock:
            slices.append(list(items))
            first = len(slices) == 1
        if first:
            gate.set()
            release.wait(10)
        return {item: item.upper() for item in items}

    answers: dict[str, object] = {}
    threads = [threading.Thread(target=lambda: answers.update(blocker=runner.run("blocker", work)))]
    weights["blocker"] = 1
    threads[0].start()
    assert gate.wait(5)
    for item in ["big", *[f"s{i}" for i in range(40)], "mid"]:
        thread = threading.Thread(target=lambda item=item: answers.update({item: runner.run(item, work)}))
        threads.append(thread)
        thread.start()
    for _ in range(1000):  # everything pending behind the blocker's slice (10 s at most)
        if len(runner._pending) == 43:
            break
        threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    assert answers == {item: item.upper() for item in weights}
    assert all(sum(weights[i] for i in s) <= 32 for s in slices if len(s) > 1)
    assert ["big"] in slices  # heavier than max_slice: alone
    assert sorted(i for s in slices for i in s) == sorted(weights)


def test_another_pools_file_is_grouped_while_a_batch_slice_runs(kit: Kit, monkeypatch) -> None:
    """Fairness: pool A's batch holds its lane; pool B's file takes another lane at once."""
    kit.auth.pools["p2"] = {**kit.auth.pools[POOL], "pool_id": "p2"}
    start = kit.window_start()
    entered, release = threading.Event(), threading.Event()
    original = grouping.group_pool_files

    def slow_for_a(deps, pool_id, messages):  # type: ignore[no-untyped-def]
        if pool_id == POOL:
            entered.set()
            release.wait(10)
        return original(deps, pool_id, messages)

    monkeypatch.setattr(grouping, "group_pool_files", slow_for_a)
    batch = kit.batch("up1", [f"a{i}" for i in range(100)], ts=start + 1)
    a = threading.Thread(target=grouping.group_upload, args=(kit.deps, batch))
    a.start()
    assert entered.wait(5)
    grouping.group_file(kit.deps, kit.stored("b1", ts=start + 1, pool_id="p2"))  # returns while A is held
    assert [m.file_id for m in kit.broker.of_type(FileGrouped)] == ["b1"] and a.is_alive()
    release.set()
    a.join(10)
    assert kit.store.get(core.group_id(POOL, start))["file_count"] == 100
