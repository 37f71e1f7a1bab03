"""The messages file_service_manager consumes, one function each, in a table per queue.

STORE_QUEUE: ``StoreUpload`` -> store it (``storing``). PRESTORE_QUEUE: ``PrestoreUpload`` ->
write it while its chunks arrive (``prestoring``). INDEX_QUEUE:
``FileStatusChanged``, ``FileGrouped`` and ``FilesGrouped`` (a batch's files at once) -> the
file index. AUDIT_QUEUE:
``AuditsRecorded`` (a service's records in one batch: one insert) and ``AuditRecorded`` (one
record: an older replica's, or one published in place) -> the append-only audit trail.
STAGING_QUEUE: ``ResultPublished`` -> the result's staging planned, one ``StageResult`` per
target of its pool; ``StageResult`` -> one attempt at one target (``staging``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.common import contracts, topology
from services.common.contracts import (
    AuditRecorded,
    AuditsRecorded,
    FileGrouped,
    FilesGrouped,
    FileStatusChanged,
    Message,
    PrestoreUpload,
    ResultPublished,
    StageResult,
    StoreUpload,
)
from services.common.handlers import ConsumerSpec, bind

from . import prestoring, staging, storing
from .deps import Deps


def on_store_upload(deps: Deps, message: StoreUpload) -> None:
    storing.store_upload(deps, message)


def on_prestore_upload(deps: Deps, message: PrestoreUpload) -> None:
    prestoring.prestore(deps, message)


def on_file_status_changed(deps: Deps, message: FileStatusChanged) -> None:
    if message.status == contracts.UPLOADED:
        # Only a store makes a record uploaded_successfully (it writes that status itself, with
        # the bytes durable); the notice it publishes adds nothing, and one from elsewhere must
        # not mark bytes stored that are not.
        return
    deps.index.apply_status(message.file_id, message.owner_id, message.status, attempt=message.attempt,
                            reason=message.reason, pool_id=message.pool_id, file_name=message.file_name)


def on_file_grouped(deps: Deps, message: FileGrouped) -> None:
    deps.index.set_group(message.file_id, message.group_id, message.late)


def on_files_grouped(deps: Deps, message: FilesGrouped) -> None:
    # One write per (group, late) part: usually one for the whole batch.
    for part in message.groups:
        deps.index.set_groups(list(part.file_ids), part.group_id, part.late)


def _audit_doc(record: AuditRecorded) -> dict[str, Any]:
    doc = record.to_dict()
    doc["_id"] = record.audit_id  # the id makes a redelivered record a no-op
    return doc


def on_audit_recorded(deps: Deps, message: AuditRecorded) -> None:
    deps.index.add_audit(_audit_doc(message))


def on_audits_recorded(deps: Deps, message: AuditsRecorded) -> None:
    # One insert_many for the batch; a redelivery skips what is there (duplicate _id) and
    # writes the rest, so nothing is doubled and nothing is missed.
    deps.index.add_audits([_audit_doc(record) for record in message.records])


def on_result_published(deps: Deps, message: ResultPublished) -> None:
    staging.plan(deps, message)


def on_stage_result(deps: Deps, message: StageResult) -> None:
    staging.deliver(deps, message)


STORE_HANDLERS = {StoreUpload: on_store_upload}
PRESTORE_HANDLERS = {PrestoreUpload: on_prestore_upload}
INDEX_HANDLERS: dict[type[Message], Callable[[Deps, Any], None]] = {
    FileStatusChanged: on_file_status_changed, FileGrouped: on_file_grouped, FilesGrouped: on_files_grouped}
AUDIT_HANDLERS: dict[type[Message], Callable[[Deps, Any], None]] = {
    AuditRecorded: on_audit_recorded, AuditsRecorded: on_audits_recorded}
STAGING_HANDLERS: dict[type[Message], Callable[[Deps, Any], None]] = {
    ResultPublished: on_result_published, StageResult: on_stage_result}


def consumers(deps: Deps) -> list[ConsumerSpec]:
    """CONSUMERS: each queue with its table bound to ``deps``."""
    settings = deps.settings
    return [
        ConsumerSpec("store", topology.STORE_QUEUE, bind(STORE_HANDLERS, deps), prefetch=settings.store_prefetch,
                     count=settings.store_consumers),
        # prefetch 1: a prestore holds its message for the upload's length; a second waits
        # in the queue, not in this process's memory.
        ConsumerSpec("prestore", topology.PRESTORE_QUEUE, bind(PRESTORE_HANDLERS, deps), prefetch=1,
                     count=prestoring.PRESTORE_CONSUMERS),
        ConsumerSpec("index", topology.INDEX_QUEUE, bind(INDEX_HANDLERS, deps), prefetch=16),
        ConsumerSpec("audit", topology.AUDIT_QUEUE, bind(AUDIT_HANDLERS, deps), prefetch=32),
        # prefetch 1: a delivery streams up to 50 MB and may wait on a slow target; the bound on
        # deliveries in flight is ``staging.consumers``.
        ConsumerSpec("staging", topology.STAGING_QUEUE, bind(STAGING_HANDLERS, deps), prefetch=1,
                     count=settings.staging.consumers),
    ]
