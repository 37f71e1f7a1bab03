"""The UNSETTLED path under races (found by review): a live slice of this process is never
dropped, and a killed replica's first slice (no group yet) is waited for, not failed."""

from __future__ import annotations

import threading
from typing import Any

from services.pool_aggregator import core
from services.pool_aggregator.ports import ADDED, UNSETTLED

from .conftest import POOL, Rig

W = 60


class _FindHook:
    """The real collection, except that ``find`` from one thread first lets another thread act."""

    def __init__(self, real: Any, thread: threading.Thread | None, before_find) -> None:
        self._real, self._before = real, before_find
        self.thread_id: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == self.thread_id:
            self.thread_id = None
            self._before()
        return self._real.find(*args, **kwargs)


def _entry(file_id: str, ts: float) -> dict[str, Any]:
    return {"file_id": file_id, "owner_id": "u1", "timestamp": "x", "ts": ts, "size": 100, "sha256": "s",
            "file_name": file_id, "late": False}


def test_a_look_drops_a_live_slice_of_this_process_that_started_after_its_running_snapshot(rig: Rig) -> None:
    """_memberships_once snapshots ``_running`` *before* reading the memberships. A slice of this
    process that starts after the snapshot and inserts its membership before the read is taken
    for this process's failed leftover (owner == self.instance, sid not in the snapshot) and
    dropped while it is about to be counted. The looking delivery then groups the file again:
    counted twice (file_count 2 for one file), the first slice's membership gone.

    Real interleaving: two deliveries of file F in one process (a regroup re-announcement and a
    redelivery; an UploadStored and a FileStored) both wait in grouping._grouped for a dead
    replica's leftover, outside the pool's lane. D1's look drops it and D1's next round runs a
    slice S that inserts F; D2's poll (every 0.1 s) snapshots ``_running`` just before S adds
    itself and reads F just after S's insert."""
    store = rig.store
    start = core.window_for(rig.clock(), W).start
    gid = core.group_id(POOL, start)
    window = core.window_for(start + 1, W)
    snapshot_taken, inserted, look_done = threading.Event(), threading.Event(), threading.Event()

    def let_the_slice_insert() -> None:  # T1: between its _running snapshot and its find
        snapshot_taken.set()
        assert inserted.wait(10)

    hook = _FindHook(store.files, None, let_the_slice_insert)
    real_count_in = store._count_in

    def count_in_after_the_look(*args: Any, **kwargs: Any) -> Any:  # T2: between steps 1 and 2
        inserted.set()
        assert look_done.wait(10)
        return real_count_in(*args, **kwargs)

    store._count_in = count_in_after_the_look  # type: ignore[method-assign]
    store.files = hook  # type: ignore[assignment]
    looked: dict[str, Any] = {}

    def look() -> None:
        hook.thread_id = threading.get_ident()
        looked["answer"] = store._memberships_once(POOL, ["F"], rig.clock())
        look_done.set()

    def slice_() -> None:
        assert snapshot_taken.wait(10)
        looked["slice"] = store.add_files(pool_id=POOL, window=window, close_grace_seconds=0, min_contributors=None,
                                          entries=[_entry("F", start + 1)], now=rig.clock())

    t1, t2 = threading.Thread(target=look), threading.Thread(target=slice_)
    t1.start()
    t2.start()
    t1.join(20)
    t2.join(20)
    store.files = hook._real  # type: ignore[assignment]
    store._count_in = real_count_in  # type: ignore[method-assign]
    assert looked["slice"][0] == ADDED and looked["slice"][1]["file_count"] == 1
    survived = store.files.count_documents({"_id": "F"})  # the live slice's counted membership
    # The looking delivery goes on to group F again (grouping._grouped's next round).
    rig.handle(rig.stored("F", ts=start + 1))
    assert (survived, store.get(gid)["file_count"]) == (1, 1), "membership dropped / file counted twice"


def test_a_killed_replicas_whole_batch_redelivered_fails_while_its_window_has_no_group(rig: Rig, monkeypatch) -> None:
    """Replica B is SIGKILLed after inserting all of a batch's memberships (step 1; a 1,000-file
    insert takes 0.3-2 s on secantusdb, so a kill lands there often) and before step 2, which
    creates the window's group. Replica A gets the UploadStored redelivered: every file clashes
    with B's young leftover (another owner) and is UNSETTLED, so add_files answers
    (ADDED, self.get(gid) = None, present) and place() raises "no group document". Before this
    change the wait was inside the slice and the group existed by the time it returned.
    Each redelivery fails the same way until the leftover is 30 s old; the consumer retries
    after 1 s and the quorum queue dead-letters at DELIVERY_LIMIT (5): the batch is
    dead-lettered after ~5 s and its files are grouped only by regrouping (120 s+, late)."""
    from services.common.contracts import StoredItem, UploadStored

    start = core.window_for(rig.clock(), W).start
    gid = core.group_id(POOL, start)
    files = [rig.stored(f"b{n}", ts=start + n) for n in range(1, 4)]
    for f in files:
        rig.store.files.insert_one({**_entry(f.file_id, start + 1), "_id": f.file_id, "group_id": gid,
                                    "pool_id": POOL, "slice": "killed-replica-slice", "at": rig.clock(),
                                    "owner": "other-host:1:dead"})
    assert rig.store.get(gid) is None
    batch = UploadStored(upload_id="up1", owner_id="u1", owner_name="u1", content_type="application/octet-stream",
                         created=files[0].created, pool_id=POOL, items=tuple(
                             StoredItem(file_id=f.file_id, file_name=f.file_name, size=f.size, sha256=f.sha256,
                                        timestamp=f.timestamp) for f in files))
    from services.pool_aggregator import grouping

    # The slice must answer the files UNSETTLED (their delivery then waits outside it), not raise.
    answers = grouping.group_messages(rig.deps, [batch])
    assert all(m.get(UNSETTLED) for m in list(answers.values())[0].values())
