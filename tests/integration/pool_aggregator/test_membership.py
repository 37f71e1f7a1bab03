"""Group membership in its own collection: a group document does not grow with its files,
a file counts once whatever happens between the writes, and legacy groups stay readable."""

from __future__ import annotations

import bson

from services.common.contracts import FileGrouped, FilesGrouped, GroupedFiles, StoredItem, UploadStored
from services.pool_aggregator import core
from services.pool_aggregator import store as store_module

from .conftest import POOL, Rig

W = 60


def _start(rig: Rig) -> int:
    return core.window_for(rig.clock(), W).start


def test_a_group_document_does_not_grow_with_its_files(rig: Rig) -> None:
    start = _start(rig)
    gid = core.group_id(POOL, start)
    rig.handle(rig.stored("first", ts=start + 0.5))
    small = len(bson.encode(rig.store.groups.find_one({"_id": gid})))
    for i in range(150):
        rig.handle(rig.stored(f"f{i:03d}", ts=start + 1 + i / 1000, owner=f"u{i % 3}"))
    raw = rig.store.groups.find_one({"_id": gid})
    # 150 more files (~200 bytes each when embedded) leave the document the same size, give or take.
    assert len(bson.encode(raw)) < small + 200, raw.keys()
    assert "files" not in raw and raw["pending"] == []
    assert (raw["file_count"], raw["bytes"], sorted(raw["contributors"])) == (151, 15100, ["u0", "u1", "u2"])
    assert [e["file_id"] for e in rig.store.files_of(gid)] == ["first"] + [f"f{i:03d}" for i in range(150)]
    assert rig.store.files.count_documents({"group_id": gid}) == 151


def _member(rig: Rig, file_id: str, gid: str, sid: str, ts: float, age: float = 60) -> None:
    rig.store.files.insert_one({"_id": file_id, "file_id": file_id, "group_id": gid, "pool_id": POOL, "slice": sid,
                                "at": rig.clock() - age, "owner_id": "u1", "size": 100, "ts": ts, "timestamp": "x",
                                "sha256": "s", "file_name": file_id, "late": False})


def test_a_crash_before_the_counters_is_settled_by_the_redelivery(rig: Rig) -> None:
    start = _start(rig)
    gid = core.group_id(POOL, start)
    rig.handle(rig.stored("f1", ts=start + 1))
    # Step 1 done a minute ago, never counted (the process died): the redelivery groups it afresh.
    _member(rig, "f2", gid, "crashed-slice", start + 2)
    assert [e["file_id"] for e in rig.store.files_of(gid)] == ["f1"]  # not counted, not listed
    rig.handle(rig.stored("f2", ts=start + 2))
    group = rig.store.get(gid)
    assert (group["file_count"], group["bytes"]) == (2, 200)
    assert rig.store.files.find_one({"_id": "f2"})["slice"] != "crashed-slice"
    assert [e["file_id"] for e in rig.store.files_of(gid)] == ["f1", "f2"]


def test_a_batchs_redelivery_settles_a_crashed_slice_and_counts_each_file_once(rig: Rig, monkeypatch) -> None:
    """UploadStored takes the same four steps: a crash before the counters (step 1 done for some
    of the batch's files a minute ago) is dropped and grouped afresh, with the rest in one slice,
    its memberships inserted in several chunks (the leftovers clash in two of them)."""
    monkeypatch.setattr(store_module, "INSERT_CHUNK", 2)
    start = _start(rig)
    gid = core.group_id(POOL, start)
    rig.handle(rig.stored("before", ts=start + 1))
    _member(rig, "b2", gid, "crashed-slice", start + 2)
    _member(rig, "b3", gid, "crashed-slice", start + 3)
    files = [rig.stored(f"b{n}", ts=start + n) for n in range(1, 6)]
    batch = UploadStored(upload_id="up1", owner_id="u1", owner_name="u1", content_type="application/octet-stream",
                         created=files[0].created, pool_id=POOL, items=tuple(
                             StoredItem(file_id=f.file_id, file_name=f.file_name, size=f.size, sha256=f.sha256,
                                        timestamp=f.timestamp) for f in files))
    rig.handle(batch)
    rig.handle(batch)  # and redelivered once more: nothing counted twice
    group = rig.store.get(gid)
    assert (group["file_count"], group["bytes"]) == (6, 600)
    assert rig.store.files.count_documents({"slice": "crashed-slice"}) == 0
    assert [e["file_id"] for e in rig.store.files_of(gid)] == ["b1", "before", "b2", "b3", "b4", "b5"]  # by ts, id
    answers = rig.events.of(FilesGrouped, count=2)
    assert len(answers) == 2 and all(a.groups == (GroupedFiles(gid, False, tuple(f"b{n}" for n in range(1, 6))),)
                                     for a in answers)


def test_a_crash_after_the_counters_is_not_counted_twice(rig: Rig) -> None:
    start = _start(rig)
    gid = core.group_id(POOL, start)
    rig.handle(rig.stored("f1", ts=start + 1))
    # Steps 1 and 2 done (counters moved, slice pending), steps 3-4 lost: the redelivery only records it.
    _member(rig, "f2", gid, "half-slice", start + 2)
    rig.store.groups.update_one({"_id": gid}, {"$inc": {"file_count": 1, "bytes": 100},
                                               "$push": {"pending": "half-slice"}})
    assert [e["file_id"] for e in rig.store.files_of(gid)] == ["f1", "f2"]  # pending slices are listed
    rig.handle(rig.stored("f2", ts=start + 2))
    raw = rig.store.groups.find_one({"_id": gid})
    assert (raw["file_count"], raw["bytes"], raw["pending"]) == (2, 200, [])
    assert rig.store.slices.find_one({"_id": "half-slice"})["group_id"] == gid
    assert [m.group_id for m in rig.events.of(FileGrouped, count=2) if m.file_id == "f2"] == [gid]


def test_a_consumer_killed_between_the_membership_and_the_counters_loses_no_file(rig: Rig, monkeypatch) -> None:
    """SIGKILL between steps 1 and 2, and the redelivery comes at once (another replica): the
    membership is young, so it may be a live delivery's; the redelivery waits for it to be
    counted and, as it never is, groups the file afresh (it used to answer it as grouped:
    the file was never counted)."""
    import threading
    import time

    from services.pool_aggregator import store as store_module

    monkeypatch.setattr(store_module, "SETTLE_AFTER_SECONDS", 1.0)  # the wait, shortened for the test
    start = _start(rig)
    gid = core.group_id(POOL, start)
    rig.handle(rig.stored("f1", ts=start + 1))
    _member(rig, "f2", gid, "killed-slice", start + 2, age=0)
    began = time.monotonic()
    rig.handle(rig.stored("f2", ts=start + 2))
    assert time.monotonic() - began >= 0.9  # it waited for the slice before settling it
    group = rig.store.get(gid)
    assert (group["file_count"], group["bytes"]) == (2, 200)
    assert [e["file_id"] for e in rig.store.files_of(gid)] == ["f1", "f2"]
    # A live duplicate's slice that is counted during the wait is taken as it is (not regrouped).
    _member(rig, "f3", gid, "live-slice", start + 3, age=0)

    def live_delivery_counts_it() -> None:
        time.sleep(0.3)
        rig.store.groups.update_one({"_id": gid}, {"$inc": {"file_count": 1, "bytes": 100},
                                                   "$push": {"pending": "live-slice"}})

    threading.Thread(target=live_delivery_counts_it).start()
    rig.handle(rig.stored("f3", ts=start + 3))
    raw = rig.store.groups.find_one({"_id": gid})
    assert (raw["file_count"], raw["pending"]) == (3, [])
    assert rig.store.files.find_one({"_id": "f3"})["slice"] == "live-slice"


def test_legacy_groups_with_embedded_files_stay_readable(rig: Rig) -> None:
    start = _start(rig)
    gid = core.group_id(POOL, start)
    entry = {"file_id": "old1", "owner_id": "u1", "timestamp": core.epoch_iso(start + 1), "ts": start + 1,
             "size": 5, "sha256": "s", "file_name": "old1.f64", "late": False}
    rig.store._legacy = None  # the store asks once whether legacy groups exist
    rig.store.groups.insert_one({"_id": gid, "pool_id": POOL, "window_start": start, "window_end": start + W,
                                 "status": "open", "close_at": start + W, "min_contributors": None,
                                 "files": [entry], "contributors": ["u1"], "file_count": 1, "bytes": 5,
                                 "late_count": 0, "lease_expiries": 0})
    rig.handle(rig.stored("old1", ts=start + 1, size=5))  # a redelivery of the embedded file
    rig.handle(rig.stored("new1", ts=start + 2, size=7, owner="u2"))
    group = rig.store.get(gid)
    assert "files" not in group
    assert (group["file_count"], group["bytes"], sorted(group["contributors"])) == (2, 12, ["u1", "u2"])
    assert [e["file_id"] for e in rig.store.files_of(gid)] == ["old1", "new1"]


def test_one_batch_on_two_replicas_at_once_counts_each_file_once(rig: Rig, monkeypatch) -> None:
    """The same 40 files in two slices of two processes (a redelivered batch), their inserts
    interleaved one file at a time: each file is counted once and has its one membership. With
    unordered inserts each slice held some of the other's files, both waited for each other,
    then each dropped the other's memberships as a crash's leftovers: every file counted twice
    and some left in no group."""
    import threading

    from services.pool_aggregator.store import MongoGroupStore

    monkeypatch.setattr(store_module, "INSERT_CHUNK", 1)  # the most interleaving
    monkeypatch.setattr(store_module, "SETTLE_AFTER_SECONDS", 2.0)  # a wrong guess shows in seconds
    start = _start(rig)
    window = core.window_for(start + 1, W)
    entries = [{"file_id": f"b{i:02d}", "owner_id": f"u{i % 4}", "timestamp": "x", "ts": start + 1 + i / 100,
                "size": 100, "sha256": "s", "file_name": f"b{i:02d}", "late": False} for i in range(40)]
    replicas = [rig.store, MongoGroupStore(rig.store.db)]
    outcomes: list[tuple] = []
    go = threading.Barrier(2)

    def slice_of(store: MongoGroupStore, order: list[dict]) -> None:
        go.wait()
        outcomes.append(store.add_files(pool_id=POOL, window=window, close_grace_seconds=0, min_contributors=None,
                                        entries=order, now=rig.clock()))

    threads = [threading.Thread(target=slice_of, args=(replicas[0], entries)),
               threading.Thread(target=slice_of, args=(replicas[1], entries[::-1]))]  # any order in
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 2, "a slice did not finish"
    gid = core.group_id(POOL, window.start)
    group = rig.store.get(gid)
    assert (group["file_count"], group["bytes"]) == (40, 4000)
    assert [e["file_id"] for e in rig.store.files_of(gid)] == [e["file_id"] for e in entries]
    assert rig.store.files.count_documents({"group_id": gid}) == 40


def test_a_killed_replicas_leftover_holds_only_its_own_file_not_the_pools_slice(rig: Rig, monkeypatch) -> None:
    """A replica SIGKILLed between steps 1 and 2 left a young membership (another owner). A slice of
    that file and others groups the others at once and leaves that file UNSETTLED; only that
    file's delivery waits (outside the slice, so the pool's other deliveries are not held: in
    the replica kill test 47 files waited 30 s behind one and went late)."""
    import time

    from services.pool_aggregator.ports import ADDED, UNSETTLED

    monkeypatch.setattr(store_module, "SETTLE_AFTER_SECONDS", 3.0)
    start = _start(rig)
    gid = core.group_id(POOL, start)
    rig.handle(rig.stored("f0", ts=start + 0.5))
    _member(rig, "f2", gid, "killed-slice", start + 2, age=0)
    rig.store.files.update_one({"_id": "f2"}, {"$set": {"owner": "another-host:1:dead"}})
    entries = [{"file_id": f, "owner_id": "u1", "timestamp": "x", "ts": start + n, "size": 100, "sha256": "s",
                "file_name": f, "late": False} for n, f in ((1, "f1"), (2, "f2"), (3, "f3"))]
    began = time.monotonic()
    outcome, group, present = rig.store.add_files(pool_id=POOL, window=core.window_for(start + 1, W),
                                                  close_grace_seconds=0, min_contributors=None,
                                                  entries=entries, now=rig.clock())
    assert time.monotonic() - began < 1.5, "the slice did not wait for the leftover"
    assert outcome == ADDED and present == {"f2": {"group_id": None, "late": False, UNSETTLED: True}}
    assert group["file_count"] == 3, "f0, f1, f3 counted; f2 not yet"
    # The delivery of f2 itself waits for the leftover, drops it and groups the file: counted once.
    rig.handle(rig.stored("f2", ts=start + 2))
    raw = rig.store.groups.find_one({"_id": gid})
    assert (raw["file_count"], raw["pending"]) == (4, [])
    assert [e["file_id"] for e in rig.store.files_of(gid)] == ["f0", "f1", "f2", "f3"]


def test_a_leftover_of_this_process_is_dropped_at_once(rig: Rig, monkeypatch) -> None:
    """This process's slice failed between steps 1 and 2 (its counters never moved): its
    redelivery does not wait SETTLE_AFTER_SECONDS for what will never be counted."""
    import time

    import pytest

    start = _start(rig)
    gid = core.group_id(POOL, start)
    rig.handle(rig.stored("f1", ts=start + 1))
    real_insert, calls = rig.store._insert_memberships, []

    def inserted_then_fails_once(*args, **kwargs):
        present = real_insert(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("MongoDB went away between the memberships and the counters")
        return present

    monkeypatch.setattr(rig.store, "_insert_memberships", inserted_then_fails_once)
    with pytest.raises(ConnectionError):
        rig.handle(rig.stored("f2", ts=start + 2))
    assert rig.store.files.find_one({"_id": "f2"})["owner"] == rig.store.instance, "its leftover"
    began = time.monotonic()
    rig.handle(rig.stored("f2", ts=start + 2))  # the redelivery
    assert time.monotonic() - began < store_module.SETTLE_AFTER_SECONDS / 3
    raw = rig.store.groups.find_one({"_id": gid})
    assert (raw["file_count"], raw["pending"]) == (2, [])
