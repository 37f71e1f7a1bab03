"""Store an upload: its cached chunks go to a storage backend and become index records, then it is announced.

The backend key is each item's file_id, so a redelivery or a retry never
stores twice: an item already stored and indexed is skipped; a half-written
one is deleted and written again. Every failure becomes ``UploadStoreFailed`` for
file_uploader's retry decision.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from services.common import contracts, logs
from services.common.contracts import (
    FileStatusChanged,
    FileStored,
    StoredItem,
    StoreUpload,
    UploadItem,
    UploadStored,
    UploadStoreFailed,
)
from services.common.errors import ShownToUsers

from . import core, prestoring, regrouping
from .core import StoreFailure
from .deps import Deps
from .ports import LeftoverAttempt, StorageBackend, Written

log = logging.getLogger(__name__)

GENERIC_REASON = "the file could not be stored (an internal error); it is retried"
MAX_REASON = 500  # characters of a failure reason carried in a message (bounded: it may quote input)


def store_upload(deps: Deps, msg: StoreUpload) -> None:
    """The handler's whole job: store and announce, or report the failure."""
    with logs.bound(file_id=msg.upload_id, attempt=msg.attempt):
        started = time.perf_counter()
        try:
            stored = store(deps, msg)
        except Exception as exc:  # noqa: BLE001 - every failure goes to file_uploader's retry decision
            deps.metrics.store_failures.inc()
            # The reason reaches the owner (file-status): our own words only; driver and
            # network errors (hosts, paths, internals) stay in the log.
            reason = str(exc) if isinstance(exc, ShownToUsers) else GENERIC_REASON
            log.warning("store failed", extra={"reason": reason, "error": f"{type(exc).__name__}: {exc}"},
                        exc_info=not isinstance(exc, ShownToUsers))
            # Publishing the failure is the handler's durable outcome; if even that
            # fails, raising retries the StoreUpload (a later try decides again).
            deps.broker.publish(UploadStoreFailed(upload_id=msg.upload_id, attempt=msg.attempt,
                                                  reason=reason[:MAX_REASON], command=msg))
            return
        deps.metrics.store_latency.observe(time.perf_counter() - started)
        announce(deps, msg, stored)
        # One line per stored upload (the upload's file_id is bound above; a batch's item ids are
        # its upload id and an index, so they are not listed).
        log.info("stored", extra={"pool_id": msg.pool_id, "items": len(msg.items), "announced": len(stored),
                                  "size": msg.size})


def store(deps: Deps, msg: StoreUpload) -> list[dict[str, Any]]:
    """Write every item to the storage backend and index it; returns the stored records."""
    if core.should_fail(deps.settings.store_fail_pattern, msg.file_name):
        raise StoreFailure("forced failure (STORE_FAIL_PATTERN, test setting)")
    deps.index.ensure_indexes()
    records = [_store_item(deps, msg, item) for item in msg.items]
    if [i.file_id for i in msg.items] != [msg.upload_id]:
        # A batch: the provisional record (id = upload_id) is not one of the items.
        deps.index.drop_provisional(msg.upload_id, [i.file_id for i in msg.items])
    # Only now is everything durable: the cache can go.
    deps.cache.drop(msg)
    return [r for r in records if r is not None]


def _store_item(deps: Deps, msg: StoreUpload, item: UploadItem) -> dict[str, Any] | None:
    index = deps.index
    existing = index.record(item.file_id)
    if existing is not None and existing.get("status") == core.DELETED:
        return None  # deleted meanwhile: a redelivered store never brings the bytes back
    if existing is not None and existing.get("status") == contracts.UPLOADED \
            and deps.storage.for_record(existing).exists(item.file_id):
        return existing
    # The pool's own backend (SPEC "Storage backends"); files without a pool go to DEFAULT_STORAGE.
    backend = deps.storage.for_spec(deps.pool_storage.spec_for(msg.pool_id))
    # A big upload was usually written while it arrived (``prestoring``): only checked here.
    written = prestoring.prestored(deps, msg, item, backend) if prestoring.eligible(msg, item) else None
    if written is None:
        written = _write(deps, msg, item, backend)
    size, sha256 = written
    if size != item.length:
        backend.delete(item.file_id)
        raise StoreFailure(f"{item.file_id}: stored {size} bytes, expected {item.length}")
    if len(msg.items) == 1 and item.offset == 0 and item.length == msg.size and sha256 != msg.sha256:
        backend.delete(item.file_id)
        raise StoreFailure(f"{item.file_id}: sha256 of the cached bytes does not match the upload")
    doc = core.stored_record(msg, item, sha256)
    # Where the bytes are (non-secret): reads and deletions go there even after the default changes.
    doc["storage"] = dict(backend.descriptor)
    if doc.get("kind") == "file" and doc.get("pool_id") and not doc.get("group_id"):
        # Until its group is known (FileGrouped): announced again if that takes too long (regrouping).
        doc["regroup_at"] = regrouping.due_at(deps.clock.time(), deps.settings.regroup_after_seconds)
    if not index.upsert_stored(doc):
        backend.delete(item.file_id)  # deleted while this store ran: the bytes go too
        return None
    deps.metrics.stored.inc()
    deps.metrics.bytes_stored.inc(size)
    return doc


def _write(deps: Deps, msg: StoreUpload, item: UploadItem, backend: StorageBackend) -> Written:
    try:
        return backend.write(item.file_id, deps.cache.item_pieces(msg, item),
                             content_type=msg.content_type, name=item.name)
    except LeftoverAttempt:
        # A crashed attempt (or prestore) left a half-written object under this key (GridFS's
        # unique files_id+n index and _id refuse a second copy). Clear it, write again.
        # Optimistic: the common case pays no cleanup queries.
        log.warning("clearing a half-written earlier attempt", extra={"item_file_id": item.file_id})
        backend.delete(item.file_id)
        return backend.write(item.file_id, deps.cache.item_pieces(msg, item),
                             content_type=msg.content_type, name=item.name)


def announce(deps: Deps, msg: StoreUpload, records: list[dict[str, Any]]) -> None:
    # At-least-once: a redelivery announces again; consumers are keyed by file_id.
    if len(msg.items) > 1 and msg.kind == "file" and deps.settings.announce_batches:
        # A batch (results are single files, announced below with their group_id): its records
        # in one UploadStored, one confirmed publish (not one per item), so
        # pool_aggregator groups them in one slice and another pool's file does not queue behind
        # a thousand messages of this one (issue 10). Every item deleted meanwhile: no message.
        if records:
            deps.broker.publish(UploadStored(
                upload_id=msg.upload_id, owner_id=msg.owner_id, owner_name=msg.owner_name,
                content_type=msg.content_type, created=msg.created, pool_id=msg.pool_id, kind=msg.kind,
                items=tuple(StoredItem(file_id=r["file_id"], file_name=r["file_name"], size=r["size"],
                                       sha256=r["sha256"], timestamp=r["timestamp"]) for r in records)))
    else:
        # A single file (or a processor's result): FileStored, as every version announced it, on
        # its pool's shard key; a batch too while ANNOUNCE_BATCHES is off (a rolling upgrade: see
        # config.py), and then on the unsharded key that an older pool_aggregator consumes.
        legacy_key = None if deps.settings.announce_batches else FileStored.routing_key
        for record in records:
            deps.broker.publish(FileStored(
                file_id=record["file_id"], upload_id=msg.upload_id, owner_id=msg.owner_id,
                owner_name=msg.owner_name, file_name=record["file_name"], size=record["size"],
                sha256=record["sha256"], content_type=msg.content_type, timestamp=record["timestamp"],
                created=record["created"], pool_id=msg.pool_id, kind=msg.kind, group_id=msg.group_id),
                routing_key=legacy_key)
    # The owner's notice before the audit records: each publish waits for a broker confirm, and
    # the audit trail does not need to be ahead of uploaded_successfully (it is appended either way).
    deps.broker.publish(FileStatusChanged(file_id=msg.upload_id, owner_id=msg.owner_id,
                                          status=contracts.UPLOADED, attempt=msg.attempt,
                                          pool_id=msg.pool_id, file_name=msg.file_name))
    for record in records:
        deps.audit.record("stored", actor=msg.owner_id, file_id=record["file_id"], pool_id=msg.pool_id,
                          size=record["size"], sha256=record["sha256"], upload_id=msg.upload_id)
