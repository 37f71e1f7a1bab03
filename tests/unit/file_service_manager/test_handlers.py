"""file_service_manager's handlers and the store use case, with in-memory stores and broker."""

from __future__ import annotations

import dataclasses

from services.common import contracts, topology
from services.common.contracts import AuditRecorded, FileGrouped, FileStatusChanged, FileStored, UploadStoreFailed
from services.common.testing import InMemoryBroker
from services.file_service_manager import handlers, storing

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
    assert sorted(m.file_id for m in broker.of_type(FileStored)) == ["u1-0000", "u1-0001", "u1-0002"]


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


def test_an_audit_record_is_appended_once(deps) -> None:
    event = AuditRecorded(audit_id="a1", time="t", service="s", actor="7", action="downloaded", outcome="ok")
    spec = {s.name: s for s in handlers.consumers(deps)}["audit"]
    spec.dispatch(event)
    spec.dispatch(event)
    assert list(deps.index.audit) == ["a1"]


def test_every_queue_has_the_settings_consumer_count(deps) -> None:
    specs = {s.name: s for s in handlers.consumers(deps)}
    assert specs["store"].count == deps.settings.store_consumers
    assert specs["store"].prefetch == deps.settings.store_prefetch
    assert specs["staging"].count == deps.settings.staging.consumers and specs["staging"].prefetch == 1
    assert sorted(s.queue.name for s in specs.values()) == sorted(
        q.name for q in (topology.STORE_QUEUE, topology.PRESTORE_QUEUE, topology.INDEX_QUEUE, topology.AUDIT_QUEUE,
                         topology.STAGING_QUEUE))
    assert specs["prestore"].prefetch == 1  # a prestore holds its message for the upload's length
