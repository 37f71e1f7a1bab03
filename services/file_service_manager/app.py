"""file_service_manager HTTP: history, downloads, the file list and the audit trail."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from werkzeug.wsgi import wrap_file

from services.common import httpkit, messaging, mongo, timeutil
from services.common.authclient import AuthClient
from services.common.httpkit import ApiError

from . import core
from .config import Settings
from .hotcache import HotFiles
from .store import FileIndex, UploadCache
from .worker import FsmMetrics, Worker


def create_app(settings: Settings, *, index: FileIndex | None = None, cache: UploadCache | None = None,
               broker: Any = None, auth: Any = None) -> Flask:
    """Wire the service; pymongo, redis and the broker connect lazily on first use."""
    app = Flask("file_service_manager")
    index = index or FileIndex(mongo.connect(settings.common.mongodb_uri, settings.common.mongodb_db))
    cache = cache or UploadCache(redis.Redis.from_url(settings.common.redis_url, socket_timeout=10,
                                                      health_check_interval=30))
    broker = broker or messaging.Broker(settings.common.amqp_url)
    auth = auth or AuthClient(settings.common.auth_url, settings.common.internal_api_key)
    metrics = httpkit.install(app, "file_service_manager",
                              {"mongodb": index.ping, "redis": cache.ping, "rabbitmq": broker.ping})
    fsm_metrics = FsmMetrics(metrics)
    worker = Worker(index, cache, broker, fsm_metrics, fail_pattern=settings.store_fail_pattern)
    app.extensions["fsm_worker"] = worker
    # Pool results fan out to every member at once: served from memory after one GridFS read.
    hot = HotFiles(settings.download_cache_bytes, settings.download_cache_file_bytes)
    app.extensions["fsm_hot_files"] = hot
    fsm_metrics.hot_bytes.set_function(lambda: hot.size)

    def load_whole(grid: Any, sha256: str) -> bytes | None:
        """The whole (small, cacheable) file from GridFS; None if it does not match its sha256."""
        grid.seek(0)
        data = grid.read()
        return data if hashlib.sha256(data).hexdigest() == sha256 else None

    def user() -> Any:
        identity = auth.validate(httpkit.bearer_token())
        if identity is None:
            raise httpkit.unauthorized()
        return identity

    def caller() -> core.Caller:
        api_key = request.headers.get("X-API-Key")
        if api_key and not httpkit.bearer_token():
            pool_id = auth.processor_pool(api_key)
            if pool_id is None:
                raise httpkit.unauthorized("invalid API key")
            return core.Caller(processor_pool=pool_id)
        identity = user()
        return core.Caller(user_id=identity.user_id, is_admin=identity.is_admin,
                           pools=frozenset(identity.pools))

    def limit() -> int:
        try:
            return core.parse_limit(request.args.get("limit"))
        except ValueError as exc:
            raise httpkit.bad_request(str(exc)) from exc

    @app.get("/client/history/<client_id>")
    def history(client_id: str) -> Response:
        identity = user()
        if identity.user_id != client_id and not identity.is_admin:
            raise httpkit.forbidden("you may only read your own history")
        docs = index.find_files({"owner_id": client_id}, 1000)
        return jsonify({"files": [core.public_record(d) for d in docs]})

    @app.get("/files")
    def list_files() -> Response:
        identity = user()
        query: dict[str, Any] = {}
        for key in ("owner_id", "pool_id", "kind"):
            if request.args.get(key):
                query[key] = request.args[key]
        if not identity.is_admin:
            query["owner_id"] = identity.user_id  # a user lists only their own files
        docs = index.find_files(query, limit())
        return jsonify({"files": [core.public_record(d) for d in docs]})

    @app.get("/audit")
    def audit() -> Response:
        if not user().is_admin:
            raise httpkit.forbidden("the audit trail is for admins")
        query: dict[str, Any] = {}
        for arg, field in (("file_id", "file_id"), ("user", "actor"), ("pool_id", "pool_id")):
            if request.args.get(arg):
                query[field] = request.args[arg]
        if request.args.get("since"):
            try:
                query["time"] = {"$gte": timeutil.iso(timeutil.parse(request.args["since"]))}
            except timeutil.BadTimestamp as exc:
                raise httpkit.bad_request(str(exc)) from exc
        after = None
        if request.args.get("cursor"):
            try:
                after = core.decode_cursor(request.args["cursor"])
            except ValueError as exc:
                raise httpkit.bad_request(str(exc)) from exc
        n = limit()
        docs = index.find_audit(query, after, n)
        events = [{k: v for k, v in d.items() if k != "_id"} for d in docs]
        cursor = core.encode_cursor(docs[-1]["time"], docs[-1]["_id"]) if len(docs) == n else None
        return jsonify({"events": events, "next_cursor": cursor})

    @app.get("/file/<file_id>")
    def download(file_id: str) -> Response:
        who = caller()
        record = index.record(file_id)
        # Unknown, not stored yet, or not yours: the same 404, so ids cannot be probed.
        if record is None or record.get("status") != "uploaded_successfully" \
                or not core.can_download(record, who):
            raise httpkit.not_found("no such file")
        grid = index.open_download(file_id)
        if grid is None:
            raise httpkit.not_found("no such file")
        size = grid.length
        sha256 = record.get("sha256") or ""
        headers = {"ETag": core.etag(sha256), "Accept-Ranges": "bytes",
                   "Content-Disposition": core.content_disposition(record.get("file_name") or file_id),
                   "Cache-Control": "private, max-age=0"}
        if core.etag_matches(request.headers.get("If-None-Match"), sha256):
            grid.close()
            fsm_metrics.downloads.labels("304").inc()
            return Response(status=304, headers=headers)
        try:
            span = core.parse_range(request.headers.get("Range"), size)
        except core.RangeNotSatisfiable:
            grid.close()
            fsm_metrics.downloads.labels("416").inc()
            response = httpkit.error_response(ApiError(416, "range_not_satisfiable",
                                                       f"the file has {size} bytes"))
            response.headers["Content-Range"] = f"bytes */{size}"
            return response
        start, end = span if span is not None else (0, size - 1)
        length = max(0, end - start + 1)
        status = 206 if span is not None else 200
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(length)
        piece = settings.download_piece
        content_type = record.get("content_type") or "application/octet-stream"
        cached = None
        if record.get("kind") == "result" and sha256:
            cached = hot.get_or_load(file_id, size, lambda: load_whole(grid, sha256))
            fsm_metrics.hot_reads.labels("memory" if cached is not None else "gridfs").inc()
        if cached is not None:
            grid.close()
            fsm_metrics.downloads.labels(str(status)).inc()
            fsm_metrics.bytes_served.inc(length)
            worker.audit.record("downloaded", actor=who.actor, file_id=file_id, pool_id=record.get("pool_id"),
                                size=length, sha256=sha256, range=headers.get("Content-Range"))
            # BytesIO of a whole bytes object shares it (no copy); a range is a bounded slice copy,
            # so no server can send past it.
            view = io.BytesIO(cached if length == size else cached[start:start + length])
            # waitress's wsgi.file_wrapper: the channel sends straight from it (no copy into its
            # output buffers, which spill to temp files past 1 MB) and frees this worker thread.
            return Response(wrap_file(request.environ, view, buffer_size=piece), status=status,
                            headers=headers, mimetype=content_type, direct_passthrough=True)

        def body() -> Iterator[bytes]:
            try:
                grid.seek(start)
                left = length
                while left > 0:
                    data = grid.read(min(piece, left))
                    if not data:
                        break
                    left -= len(data)
                    fsm_metrics.bytes_served.inc(len(data))
                    yield data
            finally:
                grid.close()

        fsm_metrics.downloads.labels(str(status)).inc()
        worker.audit.record("downloaded", actor=who.actor, file_id=file_id, pool_id=record.get("pool_id"),
                            size=length, sha256=sha256, range=headers.get("Content-Range"))
        return Response(body(), status=status, headers=headers, mimetype=content_type,
                        direct_passthrough=True)

    return app
