"""Everything pool_aggregator's use cases, routes and handlers use, wired once by create_app."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.audit import AuditTrail
from services.common.contracts import FileStored, UploadStored
from services.common.ports import AuthLookup, Clock, Publisher

from .batching import SliceRunner
from .config import Settings
from .leadership import Leadership
from .metrics import AggregatorMetrics
from .pools import PoolCache
from .ports import Announcer, FileReader, GroupStore, ResultUploader, StagingReader
from .stored_waits import StoredWaits


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: GroupStore
    broker: Publisher
    auth: AuthLookup
    pools: PoolCache  # pool settings from auth, cached a few seconds
    uploader: ResultUploader
    files: FileReader
    announcer: Announcer
    metrics: AggregatorMetrics
    audit: AuditTrail
    clock: Clock
    # Concurrent FileStored/UploadStored deliveries grouped in one slice of bulk writes (batching.py).
    grouper: SliceRunner[FileStored | UploadStored]
    # Results' staging status, kept by file_service_manager (which delivers them).
    staging: StagingReader
    # The ticker's leader lease: only its holder ticks and announces what the ticker moved.
    leader: Leadership
    # Result posts waiting for their result to be numbered, woken by this process's consumer.
    stored_waits: StoredWaits = field(default_factory=StoredWaits)
