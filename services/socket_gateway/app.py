"""Wiring of the gateway: the Socket.IO server, its handlers and the dashboard's Flask app.

``create_app`` builds everything and connects to nothing: the Redis manager, the HTTP
sessions and the RabbitMQ consumers connect on first use / on ``start_workers()``.
Handlers are thin: check the payload (core), call the owning service (clients), answer.
Identity lives in the socket session (set at connect from auth), never in a payload.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import socketio
from flask import Flask, Response, jsonify, send_from_directory
from prometheus_client import Counter, Gauge

from services.common import errors, httpkit, logs, messaging, redisconn, timeutil
from services.common.audit import AuditTrail
from services.common.authclient import AuthClient, AuthUnavailable, Identity
from services.common.errors import ApiError

from . import core, wsfast
from .clients import AggregatorClient, FileManagerClient, UploaderClient
from .config import Settings
from .store import SeenStore
from .worker import Notifier

log = logging.getLogger("services.socket_gateway")

EVENTS = ("start-transfer", "write-chunk", "complete-upload", "get-history", "get-results", "alive")


class GatewayMetrics:
    def __init__(self, metrics: httpkit.ServiceMetrics, max_connections: int) -> None:
        registry = metrics.registry
        self.connected = Gauge("gateway_connected_sockets", "Sockets connected to this process",
                               registry=registry)
        self.max_connections = Gauge("gateway_max_connections", "GATEWAY_MAX_CONNECTIONS of this process",
                                     registry=registry)
        self.max_connections.set(max_connections)
        self.ws_fast_unmask = Gauge("gateway_ws_fast_unmask",
                                    "1 when eventlet unmasks WebSocket frames with the fast path",
                                    registry=registry)
        self.ws_fast_unmask.set_function(lambda: 1.0 if wsfast.is_active() else 0.0)
        self.events = Counter("gateway_events_total", "Socket events handled", ["event", "outcome"],
                              registry=registry)
        self.connects = Counter("gateway_connects_total", "Connection attempts", ["outcome"],
                                registry=registry)
        self.chunk_bytes = Counter("gateway_chunk_bytes_total", "Chunk bytes received from sockets",
                                   registry=registry)
        self.emits = Counter("gateway_emits_total", "Events emitted to sockets", ["event"], registry=registry)


class Gateway:
    """The Socket.IO handlers of one gateway process."""

    def __init__(self, settings: Settings, sio: socketio.Server, *, auth: AuthClient,
                 uploader: UploaderClient, fsm: FileManagerClient, aggregator: AggregatorClient,
                 seen: SeenStore, metrics: GatewayMetrics, audit: AuditTrail | None = None) -> None:
        self.settings = settings
        self.sio = sio
        self.audit = audit
        self.auth = auth
        self.uploader = uploader
        self.fsm = fsm
        self.aggregator = aggregator
        self.seen = seen
        self.metrics = metrics
        # Uploads each local socket is the writer of (writer id = sid): released on disconnect
        # so a reconnecting client (a new sid) may resume at once instead of waiting for the
        # writer lock to expire.
        self.writing: dict[str, set[str]] = {}
        # Pools whose offline delivery failed for a socket: their last-seen must not move on
        # disconnect, or the results they missed would never be re-sent.
        self.undelivered: dict[str, set[str]] = {}
        # Events being handled, per socket and in all (see Settings.max_inflight_per_socket).
        self.inflight: dict[str, int] = {}
        self.inflight_total = 0
        self._inflight_lock = threading.Lock()

    def register(self) -> None:
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        handlers: dict[str, Callable[[str, Any], dict[str, Any]]] = {
            "start-transfer": self.start_transfer, "write-chunk": self.write_chunk,
            "complete-upload": self.complete_upload, "get-history": self.get_history,
            "get-results": self.get_results, "alive": self.alive,
        }
        for name, handler in handlers.items():
            self.sio.on(name, self._answer(name, handler))

    def _answer(self, name: str,
                handler: Callable[[str, Any], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        """Every event answers through its ack: the result, or SPEC's error shape."""

        @functools.wraps(handler)
        def wrapped(sid: str, data: Any = None, *_: Any) -> dict[str, Any]:
            if not self._enter(sid):
                # Refused before any work: the event's payload (a chunk holds megabytes) is
                # dropped now instead of waiting, with thousands of others, for its turn.
                self.metrics.events.labels(name, "overloaded").inc()
                return core.error("overloaded", "too many requests in flight; wait for their answers",
                                  retry_after=1)
            try:
                with logs.bound(sid=sid, event=name):
                    try:
                        ack = handler(sid, data)
                        self.metrics.events.labels(name, "ok").inc()
                        return ack
                    except ApiError as err:
                        self.metrics.events.labels(name, err.code).inc()
                        return err.body()
                    except Exception:  # noqa: BLE001 - the socket gets an answer, the log the trace
                        log.exception("socket event failed")
                        self.metrics.events.labels(name, "internal_error").inc()
                        # SPEC's socket codes are a closed list: a transient "try again" is overloaded.
                        return core.error("overloaded", "the gateway failed to answer; try again",
                                          retry_after=1)
            finally:
                self._leave(sid)

        return wrapped

    def _enter(self, sid: str) -> bool:
        with self._inflight_lock:
            mine = self.inflight.get(sid, 0)
            if mine >= self.settings.max_inflight_per_socket or self.inflight_total >= self.settings.max_inflight:
                return False
            self.inflight[sid] = mine + 1
            self.inflight_total += 1
            return True

    def _leave(self, sid: str) -> None:
        with self._inflight_lock:
            self.inflight_total -= 1
            left = self.inflight.get(sid, 1) - 1
            if left > 0:
                self.inflight[sid] = left
            else:
                self.inflight.pop(sid, None)  # also after a disconnect: nothing stays per old sid

    # --- identity --------------------------------------------------------------------------

    def _session(self, sid: str) -> dict[str, Any]:
        session = self.sio.get_session(sid)
        if not session or "user_id" not in session:
            raise errors.unauthorized("this socket has no identity; reconnect with a token")
        return session

    def _fresh_identity(self, token: str) -> Identity:
        """Ask auth now: memberships and revocations as of this moment."""
        try:
            identity = self.auth.validate(token)
        except AuthUnavailable as exc:
            raise core.unavailable("auth") from exc
        if identity is None:
            raise errors.unauthorized("the token is no longer valid; log in again")
        return identity

    # --- connection ------------------------------------------------------------------------

    def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            self.metrics.connects.labels("unauthorized").inc()
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized", {"code": "unauthorized", "message": "connect with auth {\"token\": ...}"})
        try:
            identity = self.auth.validate(token)
        except AuthUnavailable as exc:
            self.metrics.connects.labels("auth_unavailable").inc()
            log.warning("auth unavailable at connect", extra={"error": str(exc)})
            raise socketio.exceptions.ConnectionRefusedError(
                "overloaded", {"code": "overloaded", "message": "auth is unavailable; try again",
                               "retry_after": 2}) from exc
        if identity is None:
            self.metrics.connects.labels("unauthorized").inc()
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized", {"code": "unauthorized", "message": "invalid or expired token"})
        self.sio.save_session(sid, core.identity_to_session(identity, token))
        for room in core.rooms_for(identity):
            self.sio.enter_room(sid, room)
        self.writing[sid] = set()
        self.undelivered[sid] = set(identity.pools)
        self.metrics.connects.labels("ok").inc()
        self.metrics.connected.inc()
        log.info("socket connected", extra={"sid": sid, "user_id": identity.user_id})
        pools = sorted(identity.pools)
        client_since = core.results_since_from_auth(auth, pools)
        # After the connect handler returns python-socketio sends the CONNECT packet; the
        # missed results must follow it, so they go out from a task of their own.
        self.sio.start_background_task(self.deliver_missed, sid, identity.user_id, token, pools, client_since)

    def deliver_missed(self, sid: str, user_id: str, token: str, pools: list[str],
                       client_since: dict[str, str]) -> int:
        """Send this socket the results of its pools it may have missed while offline."""
        deadline = time.monotonic() + 5
        while not self.sio.manager.is_connected(sid, "/"):
            if time.monotonic() > deadline or sid not in self.writing:
                return 0
            self.sio.sleep(0.02)
        sent = 0
        try:
            last_seen = self.seen.get_many(user_id, pools)
        except redis.RedisError as exc:
            log.warning("last-seen unreadable; no offline delivery", extra={"error": str(exc)})
            return 0
        delivered = []
        for pool_id in pools:
            since = core.redelivery_since(last_seen.get(pool_id), client_since.get(pool_id),
                                          self.settings.redelivery_margin_seconds)
            if since is not None:
                try:
                    results = self.aggregator.results(pool_id, token, since).get("results") or []
                except ApiError as err:
                    log.warning("offline delivery failed", extra={"pool_id": pool_id, "code": err.code})
                    continue
                for result in results:
                    if not isinstance(result, dict):
                        continue
                    self.sio.emit("pool-result", core.pool_result_event(result), to=sid)
                    self.metrics.emits.labels("pool-result").inc()
                    if self.audit is not None:
                        self.audit.record("result_delivered", actor=user_id, file_id=result.get("result_id"),
                                          group_id=result.get("group_id"), pool_id=pool_id,
                                          size=result.get("size"), sha256=result.get("sha256"),
                                          delivery="on_connect")
                    sent += 1
            delivered.append(pool_id)
        if sid in self.undelivered:
            self.undelivered[sid] -= set(delivered)
        try:
            # From now on the socket is in the pool rooms and receives results live.
            self.seen.touch(user_id, delivered)
        except redis.RedisError as exc:
            log.warning("last-seen not written", extra={"error": str(exc)})
        return sent

    def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.metrics.connected.dec()
        uploads = self.writing.pop(sid, set())
        undelivered = self.undelivered.pop(sid, set())
        try:
            session = self.sio.get_session(sid) or {}
        except KeyError:
            session = {}
        for file_id in uploads:
            try:
                self.uploader.release(file_id, writer=sid)
            except ApiError as err:
                # The writer lock expires on its own; the client's resume then waits for that.
                log.info("release failed", extra={"file_id": file_id, "code": err.code})
        if "user_id" in session:
            pools = [p for p in session.get("pools", {}) if p not in undelivered]
            try:
                self.seen.touch(session["user_id"], pools)
            except redis.RedisError as exc:
                log.warning("last-seen not written", extra={"error": str(exc)})
        log.info("socket disconnected", extra={"sid": sid, "reason": str(reason)})

    # --- events ----------------------------------------------------------------------------

    def start_transfer(self, sid: str, data: Any) -> dict[str, Any]:
        session = self._session(sid)
        identity = core.identity_from_session(session)
        body = core.start_transfer_request(data, identity, writer=sid)
        if "pool_id" in body:
            # Memberships change: the session's copy is as old as the socket, so ask auth now.
            identity = self._fresh_identity(session["token"])
            if not identity.can_contribute(body["pool_id"]):
                raise errors.forbidden("only a contributor of the pool may upload to it")
            body.update(owner_id=identity.user_id, owner_name=identity.user_name, is_admin=identity.is_admin)
        ack = self.uploader.start(body)
        file_id = ack.get("file_id")
        if isinstance(file_id, str) and sid in self.writing:
            self.writing[sid].add(file_id)
        return ack

    def write_chunk(self, sid: str, data: Any) -> dict[str, Any]:
        session = self._session(sid)
        file_id, index, chunk, sha = core.write_chunk_request(data, self.settings.max_chunk_bytes)
        self.metrics.chunk_bytes.inc(len(chunk))
        ack = self.uploader.put_chunk(file_id, index, chunk, owner_id=session["user_id"], writer=sid,
                                      sha256=sha)
        if sid in self.writing:
            self.writing[sid].add(file_id)
        return ack

    def complete_upload(self, sid: str, data: Any) -> dict[str, Any]:
        session = self._session(sid)
        file_id = core.file_id_request(data)
        ack = self.uploader.complete(file_id, owner_id=session["user_id"], writer=sid)
        self.writing.get(sid, set()).discard(file_id)
        return ack

    def get_history(self, sid: str, data: Any) -> dict[str, Any]:
        session = self._session(sid)
        answer = self.fsm.files(session["token"])  # fsm answers by the token: admin gets everyone's
        return {"files": answer.get("files", [])}

    def get_results(self, sid: str, data: Any) -> dict[str, Any]:
        session = self._session(sid)
        pool_id, since = core.results_request(data)
        if not core.identity_from_session(session).is_member(pool_id):
            # The session may predate a new membership: ask auth before refusing.
            if not self._fresh_identity(session["token"]).is_member(pool_id):
                raise errors.forbidden("only members of the pool may read its results")
        answer = self.aggregator.results(pool_id, session["token"], since)
        return {"results": answer.get("results", [])}

    def alive(self, sid: str, data: Any) -> dict[str, Any]:
        self._session(sid)
        return {"ok": True, "server_time": timeutil.now_iso()}


def create_app(settings: Settings, *, auth: AuthClient | None = None, uploader: UploaderClient | None = None,
               fsm: FileManagerClient | None = None, aggregator: AggregatorClient | None = None,
               redis_client: redis.Redis | None = None, client_manager: Any = None,
               async_mode: str = "eventlet", audit: AuditTrail | None = None) -> socketio.WSGIApp:
    """The gateway's WSGI app (``socketio.WSGIApp(sio, flask_app)``).

    The returned app carries ``.sio``, ``.gateway``, ``.notifier``, ``.flask_app`` and
    ``.start_workers()`` (the RabbitMQ consumers; ``__main__`` calls it).
    """
    common = settings.common
    auth = auth or AuthClient(common.auth_url, common.internal_api_key, timeout=settings.http_timeout)
    uploader = uploader or UploaderClient(common.file_uploader_url, common.internal_api_key,
                                          timeout=settings.http_timeout)
    fsm = fsm or FileManagerClient(common.file_service_manager_url, timeout=settings.http_timeout)
    aggregator = aggregator or AggregatorClient(common.pool_aggregator_url, timeout=settings.http_timeout)
    redis_client = redis_client or redisconn.redis_client(common, socket_timeout=5)
    seen = SeenStore(redis_client, common.redis_prefix, settings.seen_ttl_seconds)
    if client_manager is None:
        # Every gateway process subscribes to one channel: an emit made by any of them (e.g.
        # the one that took a notification off the shared queue) reaches the sockets of all.
        client_manager = socketio.RedisManager(redisconn.socketio_url(common),
                                               channel=f"{common.redis_prefix}:socketio",
                                               redis_options=redisconn.socketio_options(common))

    sio = socketio.Server(
        async_mode=async_mode,
        client_manager=client_manager,
        cors_allowed_origins=settings.cors_origins(),
        max_http_buffer_size=settings.max_http_buffer_size,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        logger=False,
        engineio_logger=False,
    )

    flask_app = Flask("socket_gateway", static_folder=None)
    # Audit records (result_delivered) travel as events; the Broker connects on first use.
    audit = audit or AuditTrail(messaging.Broker(common.amqp_url, pool_size=2), "socket_gateway")
    notifier = Notifier(sio, settings, seen, audit=audit)
    http_metrics = httpkit.install(
        flask_app, "socket_gateway",
        {"redis": seen.ping, "rabbitmq": notifier.connected},
        cors_origins=settings.cors_allowed_origins,
    )
    metrics = GatewayMetrics(http_metrics, settings.max_connections)
    notifier.metrics = metrics
    gateway = Gateway(settings, sio, auth=auth, uploader=uploader, fsm=fsm, aggregator=aggregator, seen=seen,
                      metrics=metrics, audit=audit)
    gateway.register()
    frontend = settings.frontend_dir

    @flask_app.get("/")
    def index() -> Response:
        return send_from_directory(frontend, "index.html")

    @flask_app.get("/config.json")
    def config_json() -> Response:
        # Exactly what frontend/api.js loadConfig() reads (client/api.py and bench/ read the URLs too).
        return jsonify({
            "auth_url": settings.public_auth_url,
            "file_service_manager_url": settings.public_file_service_manager_url,
            "pool_aggregator_url": settings.public_pool_aggregator_url,
            "file_uploader_url": settings.public_file_uploader_url,
            "socket_gateway_url": settings.public_socket_gateway_url,  # "" = this page's origin
        })

    @flask_app.get("/<path:filename>")
    def static_file(filename: str) -> Response:
        # send_from_directory refuses paths outside frontend/ (404), e.g. "../pyproject.toml".
        return send_from_directory(frontend, filename)

    app = socketio.WSGIApp(sio, flask_app)
    app.sio = sio
    app.gateway = gateway
    app.notifier = notifier
    app.flask_app = flask_app
    app.start_workers = notifier.start
    return app
