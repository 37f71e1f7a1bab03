"""file_uploader HTTP: the internal upload routes (ARCHITECTURE) and SPEC's public ones."""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask, Response, jsonify, request

from services.common import httpkit, messaging, validation
from services.common.authclient import AuthClient
from services.common.errors import ApiError
from services.common.httpkit import check_internal_key, json_body

from .config import Settings
from .service import UploaderMetrics, UploadService
from .store import UploadStore


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def create_app(settings: Settings, *, store: UploadStore | None = None, broker: Any = None,
               auth: Any = None, redis_client: redis.Redis | None = None) -> Flask:
    """Wire the service; nothing connects until a request or a check needs it."""
    app = Flask("file_uploader")
    # Multipart uploads: the file plus a little form data; bigger bodies are refused as 413.
    limits = settings.limits
    app.config["MAX_CONTENT_LENGTH"] = limits.max_file_size + limits.max_metadata_bytes + 65536
    if store is None:
        client = redis_client or redis.Redis.from_url(settings.common.redis_url, socket_timeout=10,
                                                      health_check_interval=30)
        store = UploadStore(client, settings.common.redis_prefix, upload_ttl=settings.upload_ttl_seconds,
                            cached_ttl=settings.cached_ttl_seconds, status_ttl=settings.status_ttl_seconds,
                            lock_seconds=settings.writer_lock_seconds)
    broker = broker or messaging.Broker(settings.common.amqp_url)
    auth = auth or AuthClient(settings.common.auth_url, settings.common.internal_api_key)
    metrics = httpkit.install(app, "file_uploader", {"redis": store.ping, "rabbitmq": broker.ping})
    service = UploadService(settings, store, broker, UploaderMetrics(metrics))
    app.extensions["upload_service"] = service
    internal_key = settings.common.internal_api_key

    # --- internal routes (the gateway, pool_aggregator) ----------------------------
    @app.post("/uploads")
    def start_upload() -> Response:
        check_internal_key(internal_key)
        body = json_body()
        result, status = service.start(body, owner_id=str(body.get("owner_id") or ""),
                                       owner_name=str(body.get("owner_name") or ""),
                                       writer=str(body.get("writer") or ""))
        return _json(result, status)

    @app.put("/uploads/<file_id>/chunks/<index>")
    def write_chunk(file_id: str, index: str) -> Response:
        check_internal_key(internal_key)
        chunk_size = settings.limits.chunk_size
        if request.content_length is not None and request.content_length > chunk_size:
            raise ApiError(413, "too_large", f"a chunk is at most {chunk_size} bytes")
        # Bounded read: never more than one chunk (+1 byte to see an oversize body) in memory.
        data = request.stream.read(chunk_size + 1)
        if len(data) > chunk_size:
            raise ApiError(413, "too_large", f"a chunk is at most {chunk_size} bytes")
        result = service.write_chunk(file_id, index, data, owner_id=request.headers.get("X-Owner-Id", ""),
                                     writer=request.headers.get("X-Writer", ""),
                                     chunk_sha256=request.headers.get("X-Chunk-Sha256"))
        return _json(result)

    @app.post("/uploads/<file_id>/complete")
    def complete_upload(file_id: str) -> Response:
        check_internal_key(internal_key)
        body = json_body()
        return _json(service.complete(file_id, owner_id=str(body.get("owner_id") or ""),
                                      writer=body.get("writer")))

    @app.post("/uploads/<file_id>/release")
    def release_upload(file_id: str) -> Response:
        check_internal_key(internal_key)
        body = json_body()
        released = service.release(file_id, str(body.get("writer") or ""))
        return _json({"file_id": file_id, "released": released})

    @app.get("/uploads/<file_id>")
    def describe_upload(file_id: str) -> Response:
        check_internal_key(internal_key)
        return _json(service.describe(file_id, request.args.get("owner_id", "")))

    # --- SPEC routes --------------------------------------------------------------
    @app.post("/file/upload")
    def http_upload() -> Response:
        if request.headers.get("X-Internal-Key"):
            check_internal_key(internal_key)
            owner_id = request.form.get("user_id") or ""
            if not owner_id:
                raise httpkit.bad_request("user_id is required with X-Internal-Key")
            owner_name = request.form.get("user_name") or owner_id
            identity = None
        else:
            identity = auth.validate(httpkit.bearer_token())
            if identity is None:
                raise httpkit.unauthorized()
            owner_id, owner_name = identity.user_id, identity.user_name
        service.check_load()
        part = request.files.get("file")
        if part is None:
            raise httpkit.bad_request("the multipart field 'file' is required")
        pool_id = request.form.get("pool_id") or None
        if pool_id and identity is not None and not identity.can_contribute(pool_id):
            raise httpkit.forbidden("you are not a contributor of this pool")
        stream = part.stream
        # werkzeug spools the part to a temporary file: measure it without reading it.
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(0)
        payload = {"file_name": part.filename, "content_type": part.mimetype or None, "pool_id": pool_id,
                   "timestamp": request.form.get("timestamp") or None,
                   "metadata": request.form.get("metadata") or None,
                   "sha256": request.form.get("sha256") or None}
        validation.check_file_name(part.filename or "")
        file_id = service.upload_stream(stream, size, payload, owner_id=owner_id, owner_name=owner_name)
        return _json({"file_id": file_id}, 201)

    @app.put("/file/update/status")
    def update_status() -> Response:
        check_internal_key(internal_key)
        body = json_body()
        return _json(service.update_status(body.get("file_id"), body.get("status")))

    return app
