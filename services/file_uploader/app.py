"""file_uploader's wiring: one Deps, the routes, the store-failure consumer and the sweeper."""

from __future__ import annotations

import redis
from flask import Flask

from services.common import httpkit, messaging, redisconn
from services.common.authclient import AuthClient
from services.common.ports import AuthLookup
from services.common.runtime import Periodic, Runtime

from . import handlers, sweep, tus
from .config import Settings
from .deps import Deps
from .identities import RecentIdentities
from .pools import PoolPolicies
from .ports import Broker, UploadCache
from .routes import bp
from .store import UploadStore
from .tus_routes import bp as tus_bp
from .tus_uploads import TusUploads
from .uploads import UploaderMetrics, UploadService


def create_app(settings: Settings, *, store: UploadCache | None = None, broker: Broker | None = None,
               auth: AuthLookup | None = None, redis_client: redis.Redis | None = None) -> Flask:
    """Wire the service; nothing connects until a request or a check needs it."""
    app = Flask("file_uploader")
    # Multipart uploads: the file plus a little form data; bigger bodies are refused as 413.
    limits = settings.limits
    app.config["MAX_CONTENT_LENGTH"] = limits.max_file_size + limits.max_metadata_bytes + 65536
    the_store = store or UploadStore(
        redis_client or redisconn.redis_client(settings.common, socket_timeout=10, health_check_interval=30),
        settings.common.redis_prefix, upload_ttl=settings.upload_ttl_seconds, cached_ttl=settings.cached_ttl_seconds,
        status_ttl=settings.status_ttl_seconds, lock_seconds=settings.writer_lock_seconds)
    the_broker = broker or messaging.Broker(settings.common.amqp_url)
    metrics = httpkit.install(app, "file_uploader", {"redis": the_store.ping, "rabbitmq": the_broker.ping},
                              cors_origins=settings.common.cors_origins, expose_headers=tus.EXPOSED_HEADERS)
    the_auth = auth or AuthClient(settings.common.auth_url, settings.common.internal_api_key)
    uploads = UploadService(settings, the_store, the_broker, UploaderMetrics(metrics), pools=PoolPolicies(the_auth))
    deps = Deps(settings=settings, uploads=uploads, auth=the_auth,
                tus=TusUploads(uploads, the_store, RecentIdentities(the_auth)))
    app.extensions["deps"] = deps
    app.register_blueprint(bp)
    app.register_blueprint(tus_bp)
    # The sweeper scans Redis keys: an in-memory cache (fast tests) has nothing to sweep.
    periodic = [Periodic("upload-sweeper", settings.sweep_interval_seconds,
                         sweep.pass_for(the_store, upload_ttl=settings.upload_ttl_seconds))] \
        if isinstance(the_store, UploadStore) else []
    app.extensions["runtime"] = Runtime(consumers=handlers.consumers(deps), periodic=periodic, audit=uploads.audit)
    return app


