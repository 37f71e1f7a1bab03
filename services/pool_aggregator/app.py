"""pool_aggregator's wiring: one Deps, the routes, the FileStored/UploadStored consumers and the ticker."""

from __future__ import annotations

import functools

from flask import Flask

from services.common import httpkit, messaging, mongo
from services.common.audit import AuditTrail
from services.common.authclient import AuthClient
from services.common.leader import LeaderLease, LeaseStore, LocalLeaseStore
from services.common.ports import AuthLookup, Clock, Publisher, SystemClock
from services.common.runtime import Periodic, Runtime

from . import grouping, handlers, results, ticking
from .announcing import Announcer
from .config import Settings
from .deps import Deps
from .leadership import LEASE_NAME, Leadership
from .metrics import AggregatorMetrics
from .pools import PoolCache
from .ports import Announcer as AnnouncerPort
from .ports import FileReader, GroupStore, ResultUploader, StagingReader
from .routes import bp
from .store import MongoGroupStore, MongoLeaseStore
from .upstream import FileSource, StagingSource, Uploader

SERVICE = "pool_aggregator"


def create_app(settings: Settings, *, store: GroupStore | None = None, broker: Publisher | None = None,
               auth: AuthLookup | None = None, uploader: ResultUploader | None = None,
               files: FileReader | None = None, clock: Clock | None = None,
               announcer: AnnouncerPort | None = None, staging: StagingReader | None = None,
               leases: LeaseStore | None = None) -> Flask:
    """Wire the service; pymongo, the broker and the auth client connect lazily on first use.

    The ticker's lease is kept next to the groups (MongoDB) unless ``leases`` is given; an
    injected ``store`` without ``leases`` (a single-process test) gets a lease in memory."""
    common = settings.common
    if store is None:
        db = mongo.connect(common.mongodb_uri, common.mongodb_db)
        the_store: GroupStore = MongoGroupStore(db)
        the_leases = leases or MongoLeaseStore(db)
    else:
        the_store, the_leases = store, leases or LocalLeaseStore()
    # Eight publishing channels: each FileGrouped/FilesGrouped is confirmed from its consumer thread.
    the_broker = broker or messaging.Broker(common.amqp_url, pool_size=8)
    the_auth = auth or AuthClient(common.auth_url, common.internal_api_key)
    app = Flask(SERVICE)
    metrics = AggregatorMetrics(httpkit.install(app, SERVICE, {"mongodb": the_store.ping,
                                                               "rabbitmq": the_broker.ping},
                                                cors_origins=common.cors_origins))
    deps = Deps(
        settings=settings, store=the_store, broker=the_broker, auth=the_auth,
        pools=PoolCache(the_auth, settings.pool_cache_seconds),
        uploader=uploader or Uploader(common.file_uploader_url, common.internal_api_key,
                                      timeout=settings.upstream_timeout),
        files=files or FileSource(common.file_service_manager_url, timeout=settings.upstream_timeout),
        announcer=announcer or Announcer(metrics, common.pool_aggregator_url, timeout=settings.announce_timeout,
                                         attempts=settings.announce_attempts),
        metrics=metrics, audit=AuditTrail(the_broker, SERVICE, metrics.audit_lost), clock=clock or SystemClock(),
        grouper=grouping.slice_runner(settings.grouping_slice, settings.grouping_leaders),
        staging=staging or StagingSource(common.file_service_manager_url, common.internal_api_key,
                                         timeout=settings.upstream_timeout),
        leader=Leadership(LeaderLease(the_leases, LEASE_NAME, ttl=settings.leader_lease_seconds), the_store))
    app.extensions["deps"] = deps
    app.register_blueprint(bp)
    app.extensions["runtime"] = Runtime(
        prepare=functools.partial(prepare, deps), consumers=handlers.consumers(deps),
        periodic=passes(settings, deps),
        # The lease is renewed in its own thread: a slow tick must not let it lapse.
        services=[deps.leader.lease.start], audit=deps.audit)
    return app


# Between background passes giving old results their created_max: in the background, never
# before serving (a walk over a big database took ~2 ms a result); a pass is one look-up per
# pool once every result has it, and mends a chain an older replica's numbering broke.
BACKFILL_SECONDS = 300


def passes(settings: Settings, deps: Deps) -> list[Periodic]:
    """The background passes: the ticker (it acts only while this replica leads) and the backfill."""
    return [Periodic("ticker", settings.tick_seconds, functools.partial(ticking.tick, deps)),
            Periodic("created-max-backfill", BACKFILL_SECONDS, functools.partial(results.backfill_created_max, deps))]


def prepare(deps: Deps) -> None:
    """Before consuming: indexes, then the one-off backfill of results from before seq (their
    created_max comes later, in the background: BACKFILL_SECONDS)."""
    deps.store.ensure_indexes()
    results.backfill_seq(deps)
