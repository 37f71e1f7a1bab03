"""The gateway's wiring: one Deps, the Socket.IO server and its events, the dashboard's routes.

``create_app`` returns the Flask app with python-socketio in front of it (``app.wsgi_app``)
and connects to nothing: the Redis manager, the HTTP sessions and the broker connect on
first use; the consumers start with ``runtime.start``. ``deps_of(app)`` is the one typed
place that holds every reference (the ``socketio.Server`` is ``deps_of(app).server``).
"""

from __future__ import annotations

from typing import Any, cast

import socketio
from flask import Flask

from services.common import httpkit, messaging
from services.common.audit import AuditTrail
from services.common.authclient import AuthClient
from services.common.ports import AuthLookup
from services.common.revocations import Reader, RevocationList
from services.common.runtime import Periodic, Runtime

from . import events, guard, handlers
from .clients import AggregatorClient, FileManagerClient, UploaderClient
from .config import Settings
from .deps import Deps, GatewayMetrics
from .local import LocalSockets
from .ports import FileHistory, PoolResults, Uploader
from .routes import bp
from .store import DeliveryStore, GatewayRedis


def create_app(settings: Settings, *, auth: AuthLookup | None = None, uploader: Uploader | None = None,
               history: FileHistory | None = None, results: PoolResults | None = None,
               client_manager: Any = None, async_mode: str = "eventlet",
               audit: AuditTrail | None = None) -> Flask:
    common, timeout = settings.common, settings.http_timeout
    server = events.server_for(settings, client_manager, async_mode)
    # auth's revocation list lives in Redis (and so does the socket.io channel): /ready asks it.
    the_redis = GatewayRedis(common)
    # Audit records (result_delivered) travel as events; the Broker connects on first use.
    broker = messaging.Broker(common.amqp_url, pool_size=2)
    app = Flask("socket_gateway", static_folder=None)
    ready = {"redis": the_redis.ping, "rabbitmq": broker.ping}
    metrics = GatewayMetrics(httpkit.install(app, "socket_gateway", ready, cors_origins=settings.cors_allowed_origins),
                             settings.max_connections)
    the_auth = auth or AuthClient(common.auth_url, common.internal_api_key, timeout=timeout)
    deps = Deps(settings=settings, auth=the_auth,
                uploader=uploader or UploaderClient(common.file_uploader_url, common.internal_api_key, timeout=timeout),
                history=history or FileManagerClient(common.file_service_manager_url, timeout=timeout),
                results=results or AggregatorClient(common.pool_aggregator_url, common.internal_api_key,
                                                    timeout=timeout),
                sockets=events.SocketServer(server), metrics=metrics, server=server,
                local=LocalSockets(settings.max_inflight_per_socket, settings.max_inflight,
                                   settings.max_inflight_bytes_per_socket, settings.max_inflight_bytes,
                                   max_catchups=settings.max_catchups),
                audit=audit or AuditTrail(broker, "socket_gateway"),
                # auth's revocation list in Redis, written before auth answers a logout/disable: a lost
                # broker message cannot keep a revoked token alive (1-s local cache, bounded per socket).
                revocations=RevocationList(cast(Reader, the_redis.client),
                                           common.redis_prefix,
                                           max_entries=4 * settings.max_connections),
                deliveries=DeliveryStore(the_redis.client, common.redis_prefix))
    events.register(server, deps)
    app.extensions["deps"] = deps
    app.register_blueprint(bp)
    # Every second: token-expired for idle sockets whose token expired, disconnect after the grace.
    app.extensions["runtime"] = Runtime(consumers=handlers.consumers(deps),
                                        periodic=[Periodic("gateway-token-sweep", 1.0, lambda: guard.sweep(deps))],
                                        audit=deps.audit)
    app.wsgi_app = socketio.WSGIApp(server, app.wsgi_app)  # type: ignore[method-assign]
    return app


def deps_of(app: Flask) -> Deps:
    found: Deps = app.extensions["deps"]
    return found
