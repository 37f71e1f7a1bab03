"""The index's side of regrouping on a MongoDB-wire server (secantusdb here): the files still
waiting for their group are found by ``regroup_at`` (sparse index), soonest first; a claim moves
it once; FileGrouped, FilesGrouped and a delete take the file out of the waiting set."""

from __future__ import annotations

from services.common import contracts
from services.file_service_manager.store import FileIndex


def _store(index: FileIndex, file_id: str, regroup_at: float | None, status: str = contracts.UPLOADED) -> None:
    doc = {"file_id": file_id, "status": status, "pool_id": "p1", "kind": "file", "upload_id": file_id,
           "owner_id": "7", "created": "2026-01-01T00:00:00.000Z"}
    if regroup_at is not None:
        doc["regroup_at"] = regroup_at
    assert index.upsert_stored(doc)


def test_waiting_files_are_found_soonest_first_and_claimed_once(mongo_db) -> None:
    index = FileIndex(mongo_db)
    index.ensure_indexes()
    _store(index, "late", 300.0)
    _store(index, "early", 100.0)
    _store(index, "later", 900.0)
    _store(index, "grouped", None)
    assert [r["_id"] for r in index.due_for_regroup(500.0, 10)] == ["early", "late"]
    assert [r["_id"] for r in index.due_for_regroup(500.0, 1)] == ["early"], "bounded by the limit"
    assert index.reschedule_regroup("early", 100.0, 700.0)
    assert not index.reschedule_regroup("early", 100.0, 700.0), "moved already: another pass's claim fails"
    assert index.record("early")["regroups"] == 1
    assert [r["_id"] for r in index.due_for_regroup(500.0, 10)] == ["late"]
    assert index.reschedule_regroup("late", 300.0, None)
    record = index.record("late")
    assert record["never_grouped"] is True and "regroup_at" not in record


def test_grouping_and_deleting_end_the_wait(mongo_db) -> None:
    index = FileIndex(mongo_db)
    index.ensure_indexes()
    for file_id in ("single", "batch-0", "batch-1", "deleted"):
        _store(index, file_id, 100.0)
    assert index.set_group("single", "g1", False) == 1
    assert index.set_groups(["batch-0", "batch-1"], "g1", True) == 2
    assert index.mark_deleted("deleted", "7")
    assert index.due_for_regroup(1e12, 10) == []
    assert index.record("batch-1")["group_id"] == "g1" and "regroup_at" not in index.record("batch-1")


def test_only_stored_files_are_announced_again(mongo_db) -> None:
    index = FileIndex(mongo_db)
    _store(index, "stored", 100.0)
    _store(index, "failed", 100.0, status=contracts.FAILED)
    assert [r["_id"] for r in index.due_for_regroup(1e12, 10)] == ["stored"]
