"""Everything file_service_manager's use cases, routes and handlers use, wired once by create_app."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Gauge

from services.common.audit import AuditTrail
from services.common.httpkit import ServiceMetrics
from services.common.ports import AuthLookup, Clock, Publisher

from .backends import Storages
from .backends.metered import StorageMetrics
from .config import Settings
from .hotcache import HotFiles
from .pools import PoolStorage
from .ports import Cache, Index, StagingStore


class FsmMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.registry = metrics.registry
        self.stored = metrics.counter("files_stored_total", "file records stored")
        self.bytes_stored = metrics.counter("file_bytes_stored_total", "bytes written to permanent storage")
        self.store_latency = metrics.histogram("store_seconds", "time to store one upload",
                                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.store_failures = metrics.counter("store_failures_total", "store attempts that failed")
        self.regrouped = metrics.counter("files_announced_again_total",
                                         "stored pool files announced again: no group known in time (regrouping)")
        self.never_grouped = metrics.counter("files_never_grouped_total",
                                             "stored pool files given up after every announcement went unanswered")
        self.downloads = metrics.counter("downloads_total", "downloads served", ("status",))
        self.bytes_served = metrics.counter("download_bytes_total", "bytes served by downloads")
        self.audit_lost = metrics.counter("audit_write_lost_total",
                                          "audit records that could not be published")
        self.hot_reads = metrics.counter("download_hot_reads_total",
                                         "result downloads served from memory or streamed from GridFS (not cacheable)",
                                         ("outcome",))
        # Per storage backend (label ``backend`` = its descriptor id; ``kind`` gridfs/filesystem/s3).
        self.storage_bytes = metrics.counter("storage_bytes_written_total", "bytes written per storage backend",
                                             ("backend",))
        self.storage_errors = metrics.counter("storage_errors_total", "storage backend operations that failed",
                                              ("backend", "op"))
        self.storage_latency = metrics.histogram("storage_seconds", "storage backend operation latency",
                                                 ("backend", "op"),
                                                 buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        # role: "default" (DEFAULT_STORAGE: the service's own, alerts critical) or "pool" (a pool's or an
        # old location's, often run by the pool's owner: alerts as a warning).
        self.storage_up = Gauge("storage_backend_up", "1 when the storage backend passed its last probe",
                                ("backend", "kind", "role"), registry=metrics.registry)
        # Staging (SPEC "Staging"): attempts by target kind and outcome (done, retry, failed).
        self.staging_attempts = metrics.counter("staging_attempts_total",
                                                "staging attempts per target kind and outcome", ("kind", "outcome"))
        self.hot_bytes = Gauge("download_hot_cache_bytes", "bytes of results held in the download cache",
                               registry=metrics.registry)


    def storage_meters(self) -> StorageMetrics:
        return StorageMetrics(self.storage_bytes, self.storage_errors, self.storage_latency)


@dataclass(frozen=True)
class Deps:
    settings: Settings
    index: Index
    cache: Cache
    broker: Publisher
    auth: AuthLookup
    metrics: FsmMetrics
    audit: AuditTrail
    # Where bytes are written (``storage.default``) and read back (``storage.for_record``).
    storage: Storages
    # Pool results fan out to every member at once: served from memory after one GridFS read.
    hot: HotFiles
    # Each pool's storage, asked of auth and kept briefly (new files of a pool go there).
    pool_storage: PoolStorage
    # SPEC "Staging": each result's delivery status per target of its pool (``staging``).
    staging: StagingStore
    clock: Clock
