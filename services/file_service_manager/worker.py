"""RabbitMQ handlers of file_service_manager: store uploads, index statuses, append audit records."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Gauge

from services.common import contracts, logs
from services.common.audit import AuditTrail
from services.common.contracts import (
    AuditRecorded,
    FileGrouped,
    FileStatusChanged,
    FileStored,
    Message,
    StoreUpload,
    UploadStoreFailed,
)
from services.common.httpkit import ServiceMetrics

from . import core
from .core import StoreFailure
from .store import FileIndex, LeftoverAttempt, UploadCache

log = logging.getLogger(__name__)


class FsmMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.stored = metrics.counter("files_stored_total", "file records stored")
        self.bytes_stored = metrics.counter("file_bytes_stored_total", "bytes written to permanent storage")
        self.store_latency = metrics.histogram("store_seconds", "time to store one upload",
                                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.store_failures = metrics.counter("store_failures_total", "store attempts that failed")
        self.downloads = metrics.counter("downloads_total", "downloads served", ("status",))
        self.bytes_served = metrics.counter("download_bytes_total", "bytes served by downloads")
        self.audit_lost = metrics.counter("audit_write_lost_total",
                                          "audit records that could not be published")
        self.hot_reads = metrics.counter("download_hot_reads_total",
                                         "result downloads served from memory or streamed from GridFS (not cacheable)",
                                         ("outcome",))
        self.hot_bytes = Gauge("download_hot_cache_bytes", "bytes of results held in the download cache",
                               registry=metrics.registry)


class Worker:
    def __init__(self, index: FileIndex, cache: UploadCache, broker: Any, metrics: FsmMetrics, *,
                 fail_pattern: str | None = None, audit: AuditTrail | None = None) -> None:
        self.index = index
        self.cache = cache
        self.broker = broker
        self.metrics = metrics
        self.fail_pattern = fail_pattern
        self.audit = audit or AuditTrail(broker, "file_service_manager", metrics.audit_lost)

    # --- StoreUpload -------------------------------------------------------------
    def handle_store(self, message: Message) -> None:
        if not isinstance(message, StoreUpload):
            log.warning("ignoring unexpected message", extra={"message_type": type(message).__name__})
            return
        with logs.bound(file_id=message.upload_id, attempt=message.attempt):
            started = time.perf_counter()
            try:
                stored = self.store(message)
            except Exception as exc:  # noqa: BLE001 - every failure goes to file_uploader's retry decision
                self.metrics.store_failures.inc()
                reason = str(exc) if isinstance(exc, StoreFailure) else f"{type(exc).__name__}: {exc}"
                log.warning("store failed", extra={"reason": reason})
                # Publishing the failure is the handler's durable outcome; if even that
                # fails, raising requeues the StoreUpload (a later try decides again).
                self.broker.publish(UploadStoreFailed(upload_id=message.upload_id, attempt=message.attempt,
                                                      reason=reason[:500], command=message))
                return
            self.metrics.store_latency.observe(time.perf_counter() - started)
            self.announce(message, stored)

    def store(self, msg: StoreUpload) -> list[dict[str, Any]]:
        """Write every item to GridFS and index it; returns the stored records.

        The GridFS id is the item's file_id, so a redelivery or a retry never
        stores twice: an item already stored and indexed is skipped; a
        half-written one is deleted and written again.
        """
        if core.should_fail(self.fail_pattern, msg.file_name):
            raise StoreFailure("forced failure (STORE_FAIL_PATTERN, test setting)")
        self.index.ensure_indexes()
        records = []
        for item in msg.items:
            if self.index.is_stored(item.file_id):
                records.append(self.index.record(item.file_id))
                continue
            try:
                size, sha256 = self.index.write_file(item.file_id, item.name,
                                                     self.cache.item_pieces(msg, item), msg.content_type)
            except LeftoverAttempt:
                # A crashed attempt left GridFS documents under this id (the unique
                # files_id+n index and the _id refuse a second copy). Clear them, write
                # again. Optimistic: the common case pays no cleanup queries.
                log.warning("clearing a half-written earlier attempt", extra={"item_file_id": item.file_id})
                self.index.remove_partial(item.file_id)
                size, sha256 = self.index.write_file(item.file_id, item.name,
                                                     self.cache.item_pieces(msg, item), msg.content_type)
            if size != item.length:
                self.index.remove_partial(item.file_id)
                raise StoreFailure(f"{item.file_id}: stored {size} bytes, expected {item.length}")
            if len(msg.items) == 1 and item.offset == 0 and item.length == msg.size and sha256 != msg.sha256:
                self.index.remove_partial(item.file_id)
                raise StoreFailure(f"{item.file_id}: sha256 of the cached bytes does not match the upload")
            doc = core.stored_record(msg, item, sha256)
            self.index.upsert_stored(doc)
            self.metrics.stored.inc()
            self.metrics.bytes_stored.inc(size)
            records.append(doc)
        if [i.file_id for i in msg.items] != [msg.upload_id]:
            # A batch: the provisional record (id = upload_id) is not one of the items.
            self.index.drop_provisional(msg.upload_id, [i.file_id for i in msg.items])
        # Only now is everything durable: the cache can go.
        self.cache.drop(msg)
        return [r for r in records if r is not None]

    def announce(self, msg: StoreUpload, records: list[dict[str, Any]]) -> None:
        # At-least-once: a redelivery announces again; consumers are keyed by file_id.
        for record in records:
            self.broker.publish(FileStored(
                file_id=record["file_id"], upload_id=msg.upload_id, owner_id=msg.owner_id,
                owner_name=msg.owner_name, file_name=record["file_name"], size=record["size"],
                sha256=record["sha256"], content_type=msg.content_type, timestamp=record["timestamp"],
                created=record["created"], pool_id=msg.pool_id, kind=msg.kind, group_id=msg.group_id))
            self.audit.record("stored", actor=msg.owner_id, file_id=record["file_id"], pool_id=msg.pool_id,
                              size=record["size"], sha256=record["sha256"], upload_id=msg.upload_id)
        self.broker.publish(FileStatusChanged(file_id=msg.upload_id, owner_id=msg.owner_id,
                                              status=contracts.UPLOADED, attempt=msg.attempt,
                                              pool_id=msg.pool_id, file_name=msg.file_name))

    # --- the index -----------------------------------------------------------------
    def handle_index(self, message: Message) -> None:
        if isinstance(message, FileStatusChanged):
            if message.status == contracts.UPLOADED:
                # Only a store makes a record uploaded_successfully (it writes that status
                # itself, with the bytes durable); the notice it publishes has nothing to add,
                # and one from elsewhere must not mark bytes stored that are not.
                return
            self.index.apply_status(message.file_id, message.owner_id, message.status,
                                    attempt=message.attempt, reason=message.reason, pool_id=message.pool_id,
                                    file_name=message.file_name)
        elif isinstance(message, FileGrouped):
            self.index.set_group(message.file_id, message.group_id, message.late)
        else:
            log.warning("ignoring unexpected message", extra={"message_type": type(message).__name__})

    # --- audit ---------------------------------------------------------------------
    def handle_audit(self, message: Message) -> None:
        if not isinstance(message, AuditRecorded):
            log.warning("ignoring unexpected message", extra={"message_type": type(message).__name__})
            return
        doc = message.to_dict()
        doc["_id"] = message.audit_id
        self.index.add_audit(doc)
