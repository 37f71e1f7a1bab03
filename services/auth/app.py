"""auth's wiring: one Deps, the routes blueprint, the start-up step (``startup.prepare``).

Nothing connects at import time or in ``create_app``: the store and the broker connect on first use.
"""

from __future__ import annotations

from typing import cast

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from services.common import httpkit, messaging, redisconn
from services.common.audit import AuditTrail
from services.common.ports import Publisher, SystemClock
from services.common.revocations import Reader, RevocationList
from services.common.runtime import Runtime
from services.common.serviceclient import StorageProbeClient

from . import core, startup
from .accounts import bootstrap_admin
from .config import Settings
from .deps import AuthMetrics, Deps
from .ports import AuthStore, RateCounters, Revocations, StorageProbe
from .routes import bp
from .store import RedisCounters, RedisRevocations, Store

__all__ = ["bootstrap_admin", "create_app"]



def create_app(settings: Settings, *, store: AuthStore | None = None, broker: Publisher | None = None,
               passwords: core.Passwords | None = None, counters: RateCounters | None = None,
               revocations: Revocations | None = None, storage_probe: StorageProbe | None = None) -> Flask:
    the_store = store or Store(settings.database_url, pool_size=settings.db_pool_size)
    # Few publish attempts: a logout waits for them while RabbitMQ is down (see events.publish).
    the_broker = broker or messaging.Broker(settings.common.amqp_url, publish_attempts=3)
    the_passwords = passwords or core.Passwords(slots=settings.hash_slots, queue=settings.hash_queue,
                                                wait=settings.hash_wait_seconds)
    # Short Redis timeouts: a login waits at most this long on an unreachable Redis, then goes on (throttle.py).
    # (Lazy: redis-py connects on the first command.)
    client = redisconn.redis_client(settings.common, socket_timeout=0.5, socket_connect_timeout=0.5)
    the_counters = counters or RedisCounters(client, settings.common.redis_prefix)
    the_revocations = revocations or RedisRevocations(client)
    # The list is read where it is written (a test's in-memory list has mget too).
    reader = the_revocations if isinstance(the_revocations, Reader) else cast(Reader, client)
    app = Flask("services.auth")
    if settings.trusted_proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = core.MAX_BODY  # bounds a body read without Content-Length
    metrics = httpkit.install(app, "auth", checks={"postgres": the_store.ping, "rabbitmq": the_broker.ping},
                              cors_origins=settings.common.cors_origins)
    auth_metrics = AuthMetrics(metrics)
    deps = Deps(settings=settings, store=the_store, broker=the_broker, passwords=the_passwords,
                metrics=auth_metrics, audit=AuditTrail(the_broker, "auth", auth_metrics.audit_lost),
                clock=SystemClock(), counters=the_counters,
                revocations=the_revocations,
                revocation_list=RevocationList(reader, settings.common.redis_prefix),
                storage_probe=storage_probe or StorageProbeClient(settings.common.file_service_manager_url,
                                                                  settings.common.internal_api_key))
    app.extensions["deps"] = deps
    app.register_blueprint(bp)
    app.extensions["runtime"] = Runtime(prepare=lambda: startup.prepare(deps), audit=deps.audit)
    return app
