"""file_uploader's consumer table: UploadStoreFailed delivered through the in-memory broker."""

from __future__ import annotations

import dataclasses

from services.common import contracts, topology
from services.common.contracts import FileStatusChanged, StoreUpload, UploadStoreFailed
from services.file_uploader import handlers

from .conftest import cached_upload


def failure(command: StoreUpload, attempt: int) -> UploadStoreFailed:
    return UploadStoreFailed(upload_id=command.upload_id, attempt=attempt, reason=f"failed {attempt}",
                             command=dataclasses.replace(command, attempt=attempt))


def test_the_table_consumes_store_failures_from_its_queue(deps) -> None:
    assert handlers.HANDLERS == {UploadStoreFailed: handlers.on_upload_store_failed}
    [spec] = handlers.consumers(deps)
    assert spec.queue == topology.STORE_FAILED_QUEUE


def test_a_delivered_failure_schedules_a_retry(deps, broker) -> None:
    command = cached_upload(deps.uploads, broker)
    broker.publish(failure(command, 1))
    assert broker.deliver(handlers.consumers(deps)) == 1
    assert [p.message.attempt for p in broker.delayed()] == [2]
    assert broker.of_type(FileStatusChanged)[-1].status == contracts.RETRYING


def test_three_delivered_failures_end_in_upload_failed(deps, cache, broker) -> None:
    command = cached_upload(deps.uploads, broker)
    for attempt in (1, 2, 3):
        broker.publish(failure(command, attempt))
        broker.deliver(handlers.consumers(deps))
    assert [n.status for n in broker.of_type(FileStatusChanged)] == [
        contracts.CACHED, contracts.RETRYING, contracts.RETRYING, contracts.FAILED]
    assert command.upload_id not in cache.uploads
    assert cache.status(command.upload_id)["status"] == contracts.FAILED


def test_a_redelivered_failure_changes_nothing(deps, broker) -> None:
    command = cached_upload(deps.uploads, broker)
    for _ in range(2):
        broker.publish(failure(command, 1))
    broker.deliver(handlers.consumers(deps))
    assert len(broker.delayed()) == 1
    assert [n.status for n in broker.of_type(FileStatusChanged)].count(contracts.RETRYING) == 1


def test_the_handler_sees_messages_as_they_come_off_the_wire(deps, broker) -> None:
    command = cached_upload(deps.uploads, broker)
    wire = contracts.decode(failure(command, 1).encode())
    assert isinstance(wire, UploadStoreFailed) and isinstance(wire.command, StoreUpload)
    handlers.on_upload_store_failed(deps, wire)
    assert broker.delayed()[0].message.upload_id == command.upload_id
