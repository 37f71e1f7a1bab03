"""file_service_manager's wiring: one Deps, the routes, the consumers and the background passes."""

from __future__ import annotations

from typing import cast

from flask import Flask

from services.common import httpkit, messaging, mongo, redisconn
from services.common.audit import AuditTrail
from services.common.authclient import AuthClient
from services.common.httpkit import ServiceMetrics
from services.common.ports import AuthLookup, Clock, Publisher, SystemClock
from services.common.runtime import Periodic, Runtime

from . import backends, handlers, regrouping, retention, sweep
from .config import Settings
from .deps import Deps, FsmMetrics
from .health import StorageProbes
from .hotcache import HotFiles
from .pools import PoolStorage
from .ports import Cache, Index, PoolDirectory, StagingStore
from .routes import bp
from .store import FileIndex, StagingStatuses, StorageCatalog, UploadCache


def create_app(settings: Settings, *, index: Index | None = None, cache: Cache | None = None,
               broker: Publisher | None = None, auth: AuthLookup | None = None,
               storage: backends.Storages | None = None, pools: PoolDirectory | None = None,
               staging: StagingStore | None = None, clock: Clock | None = None) -> Flask:
    """Wire the service; pymongo, redis, the broker and the backends connect lazily on first use."""
    common = settings.common
    the_index = index or FileIndex(mongo.connect(common.mongodb_uri, common.mongodb_db))
    registry = ServiceMetrics("file_service_manager")
    metrics = FsmMetrics(registry)
    # GridFS buckets live in the index's database; every backend is metered.
    db = the_index.db if isinstance(the_index, FileIndex) else mongo.connect(common.mongodb_uri, common.mongodb_db)
    the_storage = storage or backends.storages_for(settings.default_storage, db=db, catalog=StorageCatalog(db),
                                                   box=settings.secrets, meters=metrics.storage_meters())
    probes = StorageProbes(the_storage, metrics.storage_up, settings.storage_probe_seconds)
    the_cache = cache or UploadCache(redisconn.redis_client(common, socket_timeout=10,
                                                          health_check_interval=30), common.redis_prefix)
    the_broker = broker or messaging.Broker(common.amqp_url)
    app = Flask("file_service_manager")
    httpkit.install(app, "file_service_manager", {"mongodb": the_index.ping, "redis": the_cache.ping,
                                                  "rabbitmq": the_broker.ping, **probes.checks()}, metrics=registry,
                    cors_origins=common.cors_origins, reports=probes.reports)
    hot = HotFiles(settings.download_cache_bytes, settings.download_cache_file_bytes)
    metrics.hot_bytes.set_function(lambda: hot.size)
    the_auth = auth or AuthClient(common.auth_url, common.internal_api_key)
    # The auth client answers pools and retention rules too (a test's stand-in may be given apart).
    directory = pools or cast(PoolDirectory, the_auth)
    deps = Deps(settings=settings, index=the_index, cache=the_cache, broker=the_broker, hot=hot, metrics=metrics,
                storage=the_storage, auth=the_auth,
                audit=AuditTrail(the_broker, "file_service_manager", metrics.audit_lost),
                pool_storage=PoolStorage(directory, settings.pool_cache_seconds,
                                           roots=settings.common.filesystem_roots),
                staging=staging or StagingStatuses(db), clock=clock or SystemClock())
    app.extensions["deps"] = deps
    app.register_blueprint(bp)
    app.extensions["runtime"] = Runtime(prepare=deps.staging.ensure_indexes, consumers=handlers.consumers(deps),
                                        audit=deps.audit, periodic=passes(deps, probes, directory))
    return app


def passes(deps: Deps, probes: StorageProbes, directory: PoolDirectory) -> list[Periodic]:
    """The background passes: leftovers swept, backends probed, retention, files regrouped."""
    settings = deps.settings
    return [
        Periodic("gridfs-sweeper", settings.sweep_interval_seconds,
                 sweep.pass_for(deps.index, grace_seconds=settings.sweep_grace_seconds, audit=deps.audit,
                                storages=deps.storage, waiting=deps.cache.upload_waiting)),
        Periodic("storage-probe", settings.storage_probe_seconds, probes.run_all),
        Periodic("retention", settings.retention_interval_seconds, lambda: retention.sweep(deps, directory)),
        Periodic("regroup", settings.regroup_interval_seconds, lambda: regrouping.regroup_pass(deps))]
