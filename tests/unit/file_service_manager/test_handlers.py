"""file_service_manager's handlers and the store use case, with in-memory stores and broker."""

from __future__ import annotations

import dataclasses
import hashlib

from services.common import contracts, topology
from services.common.contracts import (
    AuditRecorded,
    AuditsRecorded,
    FileGrouped,
    FilesGrouped,
    FileStatusChanged,
    FileStored,
    GroupedFiles,
    UploadStored,
    UploadStoreFailed,
)
from services.common.testing import InMemoryBroker
from services.file_service_manager import handlers, storing
from services.file_service_manager.config import Settings

from .conftest import command


def _deliver(deps, message) -> InMemoryBroker:
    broker = deps.broker
    broker.publish(message)
    broker.deliver(handlers.consumers(deps))
    return broker


def test_a_stored_upload_is_indexed_announced_and_leaves_the_cache(deps) -> None:
    msg = command(deps, b"0123456789")
    broker = _deliver(deps, msg)
    assert deps.index.files["u1"] == b"0123456789"
    assert deps.index.record("u1")["status"] == contracts.UPLOADED
    assert [m.file_id for m in broker.of_type(FileStored)] == ["u1"]
    assert [m.status for m in broker.of_type(FileStatusChanged)] == [contracts.UPLOADED]
    assert deps.cache.dropped == ["u1"] and not deps.cache.chunks
    assert [a.action for a in broker.of_type(AuditRecorded)] == ["stored"]
    assert deps.index.audit  # the audit queue's handler appended the record


def test_a_batch_stores_every_item_from_chunk_spans(deps) -> None:
    msg = command(deps, b"abcdefghij", items=[(0, 3), (3, 5), (8, 2)])
    broker = _deliver(deps, msg)
    assert [deps.index.files[f"u1-{n:04d}"] for n in range(3)] == [b"abc", b"defgh", b"ij"]
    # One UploadStored for the whole batch (issue 10), with each item's facts; no FileStored each.
    [announced] = broker.of_type(UploadStored)
    assert not broker.of_type(FileStored)
    assert [(i.file_id, i.file_name, i.size, i.sha256) for i in announced.items] == [
        (f"u1-{n:04d}", f"a.bin.{n}", size, hashlib.sha256(data).hexdigest())
        for n, (size, data) in enumerate([(3, b"abc"), (5, b"defgh"), (2, b"ij")])]
    assert (announced.upload_id, announced.pool_id, announced.owner_id, announced.kind) == ("u1", "p1", "7", "file")
    assert [f.file_id for f in announced.files()] == ["u1-0000", "u1-0001", "u1-0002"]
    # On its pool's shard queue, not the legacy one (issue 10: a pool's backlog stays in its shard).
    assert broker.routed_to(topology.AGGREGATOR_SHARD_QUEUES[topology.stored_shard("p1")]) == [announced]
    assert broker.routed_to(topology.AGGREGATOR_QUEUE) == []


def test_a_batch_of_max_items_is_one_message_of_sane_size(deps) -> None:
    """1,000 items (file_uploader's MAX_ITEMS): one publish of a few hundred KB, also in the worst
    case (255-byte names of 4-byte characters, carried as UTF-8, not as JSON escapes)."""
    msg = command(deps, bytes(1000), items=[(n, 1) for n in range(1000)])
    broker = _deliver(deps, msg)
    [announced] = broker.of_type(UploadStored)
    assert len(announced.items) == 1000
    size = len(announced.encode())
    assert size < 300_000, size
    worst = dataclasses.replace(announced, items=tuple(
        dataclasses.replace(i, file_name="\U0001F600" * 63 + ".bin"[:255 - 4 * 63]) for i in announced.items))
    assert len(worst.encode()) < 500_000, len(worst.encode())
    assert contracts.decode(worst.encode()) == worst
    lone = dataclasses.replace(announced, items=(dataclasses.replace(announced.items[0], file_name="a\udc80b"),))
    assert contracts.decode(lone.encode()) == lone  # a lone surrogate: escaped JSON, still decodable


def test_a_redelivered_batch_is_announced_again_whole(deps) -> None:
    msg = command(deps, b"abcdefghij", items=[(0, 3), (3, 5), (8, 2)])
    _deliver(deps, msg)
    _deliver(deps, msg)
    first, second = deps.broker.of_type(UploadStored)
    assert first == second  # at-least-once: the consumers are keyed by file id


def test_with_announce_batches_off_a_batch_is_announced_per_item_as_before(deps) -> None:
    """ANNOUNCE_BATCHES=false: what a pool_aggregator older than UploadStored (and than the shards)
    understands: per item, on the unsharded key of the legacy queue."""
    deps = dataclasses.replace(deps, settings=Settings.from_env({"INTERNAL_API_KEY": "k" * 32,
                                                                 "ANNOUNCE_BATCHES": "false"}))
    broker = _deliver(deps, command(deps, b"abcdefghij", items=[(0, 3), (3, 5), (8, 2)]))
    assert not broker.of_type(UploadStored)
    stored = broker.of_type(FileStored)
    assert [(m.file_id, m.size, m.pool_id) for m in stored] == [("u1-0000", 3, "p1"), ("u1-0001", 5, "p1"),
                                                               ("u1-0002", 2, "p1")]
    assert broker.routed_to(topology.AGGREGATOR_QUEUE) == stored
    assert {p.routing_key for p in broker.published if isinstance(p.message, FileStored)} == {"file.stored"}
    assert not any(broker.routed_to(q) for q in topology.AGGREGATOR_SHARD_QUEUES)


def test_a_one_item_batch_and_a_result_are_announced_as_file_stored(deps) -> None:
    _deliver(deps, command(deps, b"abc", items=[(0, 3)]))
    assert [m.file_id for m in deps.broker.of_type(FileStored)] == ["u1-0000"]
    assert not deps.broker.of_type(UploadStored)
    shard = topology.AGGREGATOR_SHARD_QUEUES[topology.stored_shard("p1")]
    assert deps.broker.routed_to(shard) == deps.broker.of_type(FileStored)


def test_a_redelivery_stores_nothing_twice(deps) -> None:
    msg = command(deps, b"0123456789")
    _deliver(deps, msg)
    deps.index.files["u1"] = b"sentinel: must not be rewritten"
    deps.index.records["u1"]["status"] = contracts.UPLOADED
    _deliver(deps, msg)
    assert deps.index.files["u1"] == b"sentinel: must not be rewritten"


def test_a_missing_chunk_is_a_failure_with_the_typed_command(deps) -> None:
    msg = command(deps, b"0123456789")
    del deps.cache.chunks[msg.chunk_key(1)]
    broker = _deliver(deps, msg)
    [failed] = broker.of_type(UploadStoreFailed)
    assert failed.command == msg and failed.attempt == 1 and "missing" in failed.reason
    assert broker.routed_to(topology.STORE_FAILED_QUEUE) == [failed]
    assert not broker.of_type(FileStored) and deps.cache.dropped == []


def test_a_sha256_mismatch_is_a_failure_and_keeps_nothing(deps) -> None:
    msg = dataclasses.replace(command(deps, b"0123456789"), sha256="0" * 64)
    broker = _deliver(deps, msg)
    assert "sha256" in broker.of_type(UploadStoreFailed)[0].reason
    assert "u1" not in deps.index.files


def test_the_forced_failure_pattern_fails_the_store(deps) -> None:
    broker = _deliver(deps, command(deps, b"0123", name="fail-me.bin"))
    assert "forced failure" in broker.of_type(UploadStoreFailed)[0].reason


def test_a_database_error_is_reported_not_raised(deps) -> None:
    deps.storage.default.fail_writes = 1  # type: ignore[attr-defined]
    broker = _deliver(deps, command(deps, b"0123"))
    reason = broker.of_type(UploadStoreFailed)[0].reason
    # The owner sees a generic reason; the driver's text stays in the log.
    assert reason == storing.GENERIC_REASON and "FakeIndex" not in reason and "ConnectionError" not in reason


def test_status_notices_update_the_index_but_never_claim_stored(deps) -> None:
    index_spec = {s.name: s for s in handlers.consumers(deps)}["index"]
    index_spec.dispatch(FileStatusChanged(file_id="u9", owner_id="7", status=contracts.CACHED, file_name="x"))
    assert deps.index.record("u9")["status"] == contracts.CACHED and deps.index.record("u9")["provisional"]
    index_spec.dispatch(FileStatusChanged(file_id="u9", owner_id="7", status=contracts.UPLOADED))
    assert deps.index.record("u9")["status"] == contracts.CACHED  # only a store says stored
    index_spec.dispatch(FileStatusChanged(file_id="u9", owner_id="7", status=contracts.RETRYING, attempt=2))
    assert deps.index.record("u9")["attempt"] == 2


def test_grouping_is_recorded(deps) -> None:
    _deliver(deps, command(deps, b"0123"))
    _deliver(deps, FileGrouped(file_id="u1", pool_id="p1", group_id="g1", late=True))
    assert (deps.index.record("u1")["group_id"], deps.index.record("u1")["late"]) == ("g1", True)


def test_a_batchs_grouping_is_recorded_in_one_write_per_group(deps) -> None:
    _deliver(deps, command(deps, b"abcdefghij", items=[(0, 3), (3, 5), (8, 2)]))
    grouped = FilesGrouped(pool_id="p1", upload_id="u1", groups=(
        GroupedFiles(group_id="g1", late=False, file_ids=("u1-0000", "u1-0002")),
        GroupedFiles(group_id="g2", late=True, file_ids=("u1-0001",))))
    for _ in range(2):  # a redelivery writes the same again
        _deliver(deps, grouped)
    assert [(deps.index.record(f"u1-{n:04d}")["group_id"], deps.index.record(f"u1-{n:04d}")["late"])
            for n in range(3)] == [("g1", False), ("g2", True), ("g1", False)]
    assert deps.index.group_writes == 4  # one per (group, late) part and delivery, not one per file
    assert deps.broker.routed_to(topology.INDEX_QUEUE).count(grouped) == 2


def test_an_audit_record_is_appended_once(deps) -> None:
    event = AuditRecorded(audit_id="a1", time="t", service="s", actor="7", action="downloaded", outcome="ok")
    spec = {s.name: s for s in handlers.consumers(deps)}["audit"]
    spec.dispatch(event)
    spec.dispatch(event)
    assert list(deps.index.audit) == ["a1"]


def test_an_audit_batch_is_appended_once_beside_single_records(deps) -> None:
    """The audit queue takes both contracts; a redelivered batch (or one overlapping a record that is
    already there) appends each record once."""
    records = tuple(AuditRecorded(audit_id=f"b{n}", time=f"t{n}", service="file_uploader", actor="7",
                                  action="upload_started", outcome="ok", file_id=f"f{n}") for n in range(3))
    single = AuditRecorded(audit_id="b1", time="t1", service="file_uploader", actor="7", action="upload_started",
                           outcome="ok", file_id="f1")
    _deliver(deps, single)  # an older replica's single record, already appended
    for _ in range(2):
        _deliver(deps, AuditsRecorded(records=records))
    assert sorted(deps.index.audit) == ["b0", "b1", "b2"]
    assert deps.index.audit["b2"]["file_id"] == "f2" and deps.index.audit["b2"]["_id"] == "b2"
    assert len(deps.broker.routed_to(topology.AUDIT_QUEUE)) == 3


def test_every_queue_has_the_settings_consumer_count(deps) -> None:
    specs = {s.name: s for s in handlers.consumers(deps)}
    assert specs["store"].count == deps.settings.store_consumers
    assert specs["store"].prefetch == deps.settings.store_prefetch
    assert specs["staging"].count == deps.settings.staging.consumers and specs["staging"].prefetch == 1
    assert sorted(s.queue.name for s in specs.values()) == sorted(
        q.name for q in (topology.STORE_QUEUE, topology.PRESTORE_QUEUE, topology.INDEX_QUEUE, topology.AUDIT_QUEUE,
                         topology.STAGING_QUEUE))
    assert specs["prestore"].prefetch == 1  # a prestore holds its message for the upload's length
