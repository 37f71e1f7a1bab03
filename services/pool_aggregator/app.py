"""pool_aggregator's HTTP API: the external processor's routes, plus reading for pool members.

Wiring only; the rules live in core.py, the conditional updates in store.py.
Nothing connects here: pymongo, the broker and the auth client connect on
first use.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request

from services.common import httpkit, mongo, validation
from services.common.audit import AuditTrail
from services.common.authclient import AuthClient
from services.common.httpkit import ApiError, bad_request, conflict, forbidden, not_found, unauthorized
from services.common.messaging import Broker
from services.common.timeutil import BadTimestamp, now_iso, parse

from . import core
from .archive import Member, archive_length, tar_stream
from .config import Settings
from .core import epoch_iso
from .metrics import AggregatorMetrics
from .pools import PoolCache, processing_timeout
from .store import GroupStore
from .ticker import Announcer, Lifecycle, Ticker
from .upstream import FileSource, Uploader
from .worker import StoredHandler

log = logging.getLogger(__name__)

SERVICE = "pool_aggregator"


@dataclass
class Components:
    """What __main__ and the tests reach beyond the routes."""

    store: GroupStore
    pools: PoolCache
    lifecycle: Lifecycle
    ticker: Ticker
    handler: StoredHandler
    metrics: AggregatorMetrics
    broker: Any


def group_view(group: dict) -> dict[str, Any]:
    return {
        "group_id": group["_id"], "pool_id": group["pool_id"],
        "window_start": epoch_iso(group["window_start"]), "window_end": epoch_iso(group["window_end"]),
        "status": group["status"], "file_count": int(group.get("file_count") or 0),
        "bytes": int(group.get("bytes") or 0), "late_files": int(group.get("late_count") or 0),
        "contributors": len(group.get("contributors") or ()),
        "lease_expiries": int(group.get("lease_expiries") or 0), "result_id": group.get("result_id"),
    }


RESULT_KEYS = ("result_id", "pool_id", "group_id", "window_start", "window_end", "file_name", "size",
               "sha256", "created", "download_url")


def result_view(doc: dict) -> dict[str, Any]:
    return {key: doc.get(key) for key in RESULT_KEYS}


def create_app(settings: Settings, *, db: Any = None, broker: Any = None, auth: Any = None,
               uploader: Uploader | None = None, files: FileSource | None = None,
               clock: Callable[[], float] = time.time, announcer: Announcer | None = None) -> Flask:
    common = settings.common
    app = Flask(__name__)
    db = db if db is not None else mongo.connect(common.mongodb_uri, common.mongodb_db)
    broker = broker if broker is not None else Broker(common.amqp_url)
    auth = auth if auth is not None else AuthClient(common.auth_url, common.internal_api_key)
    uploader = uploader or Uploader(common.file_uploader_url, common.internal_api_key,
                                    timeout=settings.upstream_timeout)
    files = files or FileSource(common.file_service_manager_url, timeout=settings.upstream_timeout)

    store = GroupStore(db)
    base_metrics = httpkit.install(app, SERVICE, {"mongodb": store.ping, "rabbitmq": broker.ping},
                                   cors_origins=common.cors_origins)
    metrics = AggregatorMetrics(base_metrics)
    audit = AuditTrail(broker, SERVICE, metrics.audit_lost)
    pools = PoolCache(auth, settings.pool_cache_seconds)
    announcer = announcer or Announcer(metrics, common.pool_aggregator_url, timeout=settings.announce_timeout,
                                       attempts=settings.announce_attempts)
    lifecycle = Lifecycle(store, pools, broker, metrics, announcer,
                          lease_max_expiries=settings.lease_max_expiries, clock=clock)
    handler = StoredHandler(store, pools, broker, metrics, lifecycle, clock=clock)
    app.extensions[SERVICE] = Components(store, pools, lifecycle, Ticker(lifecycle, settings.tick_seconds),
                                         handler, metrics, broker)

    # --- who is calling ------------------------------------------------------

    def processor_caller(pool_id: str) -> dict[str, str]:
        """The pool's processor key, or 401 (none/invalid) / 403 (another pool's key, or a user token)."""
        key = request.headers.get("X-API-Key", "").strip()
        if not key:
            if httpkit.bearer_token():
                raise forbidden("processor routes take the pool's X-API-Key, not a user token")
            raise unauthorized("X-API-Key required")
        if hasattr(auth, "processor_key"):
            info = auth.processor_key(key)
        else:
            granted = auth.processor_pool(key)
            info = {"pool_id": granted, "key_id": ""} if granted else None
        if info is None:
            raise unauthorized("invalid API key")
        if str(info["pool_id"]) != pool_id:
            raise forbidden("this API key belongs to another pool")
        return {"pool_id": pool_id, "key_id": info.get("key_id") or "",
                "actor": f"processor-key:{info.get('key_id') or pool_id}", "api_key": key}

    def reader_caller(pool_id: str) -> str:
        """The processor's key or a pool member's (or admin's) Bearer; returns the audit actor."""
        if request.headers.get("X-API-Key"):
            return processor_caller(pool_id)["actor"]
        token = httpkit.bearer_token()
        if not token:
            raise unauthorized("a Bearer token or the pool's X-API-Key is required")
        identity = auth.validate(token)
        if identity is None:
            raise unauthorized("invalid or expired token")
        if not identity.is_member(pool_id):
            raise forbidden("not a member of this pool")
        return f"user:{identity.user_id}"

    def pool_group(pool_id: str, gid: str, *, with_files: bool = False) -> dict:
        group = store.get(gid, with_files=with_files)
        if group is None or group["pool_id"] != pool_id:
            raise not_found("no such group in this pool")
        return group

    def leased_group(pool_id: str, gid: str, caller: dict[str, str], what: str) -> dict:
        """The group with its files; a ready group is leased (-> processing) by this very call."""
        group = pool_group(pool_id, gid, with_files=True)
        if group["status"] == core.OPEN:
            raise conflict("the group is still open; wait until it is ready")
        if group["status"] == core.READY and request.method != "HEAD":  # a HEAD only looks
            timeout = processing_timeout(pools.get(pool_id))
            leased = store.lease(gid, clock(), timeout)
            if leased is not None:
                group = leased
                lifecycle.publish_changed(group)
            else:  # another call leased it (or it moved) in between: answer with what it is now
                group = pool_group(pool_id, gid, with_files=True)
        audit.record("group_fetched", actor=caller["actor"], group_id=gid, pool_id=pool_id, via=what,
                     status=group["status"], files=int(group.get("file_count") or 0))
        return group

    # --- routes ----------------------------------------------------------------

    @app.get("/pools/<pool_id>/groups")
    def list_groups(pool_id: str) -> Response:
        reader_caller(pool_id)
        try:
            status = core.check_status_filter(request.args.get("status"))
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        return jsonify({"groups": [group_view(g) for g in store.list_groups(pool_id, status)]})

    @app.get("/pools/<pool_id>/groups/<gid>")
    def get_group(pool_id: str, gid: str) -> Response:
        reader_caller(pool_id)
        return jsonify(group_view(pool_group(pool_id, gid)))

    @app.get("/pools/<pool_id>/groups/<gid>/files")
    def group_files(pool_id: str, gid: str) -> Response:
        caller = processor_caller(pool_id)
        group = leased_group(pool_id, gid, caller, "files")
        entries = sorted(group.get("files") or (), key=lambda e: (e.get("ts", 0), e["file_id"]))
        return jsonify({"group_id": gid, "status": group["status"], "files": [
            {"file_id": e["file_id"], "owner_id": e["owner_id"], "timestamp": e["timestamp"],
             "size": e["size"], "sha256": e["sha256"], "file_name": e.get("file_name"), "late": e.get("late"),
             "download_url": f"{common.public_file_url.rstrip('/')}/file/{e['file_id']}"}
            for e in entries]})

    @app.get("/pools/<pool_id>/groups/<gid>/archive")
    def group_archive(pool_id: str, gid: str) -> Response:
        caller = processor_caller(pool_id)
        group = leased_group(pool_id, gid, caller, "archive")
        entries = sorted(group.get("files") or (), key=lambda e: (e.get("ts", 0), e["file_id"]))
        key = caller["api_key"]  # forwarded: file_service_manager checks the key's pool itself
        members = [Member(name=core.member_name(e["timestamp"], e["file_id"], e.get("file_name") or "file"),
                          size=int(e["size"]), mtime=float(e.get("ts") or 0),
                          chunks=functools.partial(files.chunks, e["file_id"], key))
                   for e in entries]
        response = Response(tar_stream(members), mimetype="application/x-tar", direct_passthrough=True)
        response.headers["Content-Length"] = str(archive_length(members))
        response.headers["Content-Disposition"] = f'attachment; filename="{core.sanitize_name(gid)}.tar"'
        response.headers["X-Group-Status"] = group["status"]
        return response

    @app.post("/pools/<pool_id>/groups/<gid>/result")
    def post_result(pool_id: str, gid: str) -> Response:
        caller = processor_caller(pool_id)
        raw_name = request.headers.get("X-File-Name", "").strip()
        if not raw_name:
            raise bad_request("X-File-Name is required")
        file_name = core.sanitize_name(raw_name, fallback="result")
        expected_sha = validation.optional_sha256(request.headers.get("X-Sha256", "").strip(), "X-Sha256")
        raw_length = request.headers.get("Content-Length")
        if raw_length is None:
            raise ApiError(411, "length_required", "Content-Length is required")
        if not raw_length.strip().isdigit():
            raise bad_request("Content-Length must be a non-negative integer")
        size = int(raw_length)
        if size == 0:
            raise bad_request("the result is empty", code="empty_file")
        if size > settings.max_result_bytes:
            raise ApiError(413, "too_large", f"a result may be at most {settings.max_result_bytes} bytes")
        group = pool_group(pool_id, gid)
        if group["status"] == core.DONE:
            raise conflict("a result was already posted for this group")
        if group["status"] not in core.RESULT_ACCEPTING:
            raise conflict(f"the group is {group['status']}; a result needs it ready or processing")

        # Claim first, upload after: of two concurrent posts exactly one passes this update.
        claim = uuid.uuid4().hex
        before = store.claim_result(gid, claim, clock())
        if before is None:
            raise conflict("a result was already posted for this group (or it is not processing)")
        owner_id, writer = f"processor:{pool_id}", uuid.uuid4().hex
        file_id: str | None = None
        try:
            started = uploader.start({
                "owner_id": owner_id, "owner_name": "processor", "writer": writer, "file_name": file_name,
                "size": size, "content_type": "application/octet-stream", "sha256": expected_sha,
                "pool_id": pool_id, "group_id": gid, "kind": "result", "timestamp": now_iso(),
                "metadata": {"group_id": gid}})
            file_id = str(started["file_id"])
            chunk_size = int(started["chunk_size"])
            digest = hashlib.sha256()
            received = 0
            index = 0
            # One chunk in memory at a time: the body is relayed, never held whole.
            while received < size:
                chunk = httpkit.read_exactly(request.stream, min(chunk_size, size - received))
                if not chunk:
                    raise bad_request("the body is shorter than Content-Length")
                digest.update(chunk)
                uploader.put_chunk(file_id, index, chunk, owner_id=owner_id, writer=writer)
                received += len(chunk)
                index += 1
            sha256 = digest.hexdigest()
            if expected_sha is not None and sha256 != expected_sha:
                raise bad_request("the body does not match X-Sha256", code="checksum_mismatch")
            # created_ts is what a client gets back by parsing ``created`` (ms precision), so a
            # client that passes its last result's ``created`` as ``since`` never sees it twice.
            created = epoch_iso(clock())
            created_ts = parse(created).timestamp()
            # Written before complete: FileStored (which marks it stored) can only follow complete.
            store.insert_result({
                "result_id": file_id, "pool_id": pool_id, "group_id": gid,
                "window_start": epoch_iso(before["window_start"]),
                "window_end": epoch_iso(before["window_end"]),
                "file_name": file_name, "size": size, "sha256": sha256, "created": created,
                "created_ts": created_ts, "stored": False, "published": False,
                "download_url": f"{common.public_file_url.rstrip('/')}/file/{file_id}"})
            uploader.complete(file_id, owner_id=owner_id, writer=writer)
            store.set_result_id(gid, claim, file_id)
        except BaseException:
            # Undo, so the processor can post again: the claim, the result doc, the upload session.
            if file_id is not None:
                store.delete_result(file_id)
                uploader.release(file_id, writer=writer)
            store.revert_claim(gid, claim, before["status"], clock())
            audit.record("result_posted", actor=caller["actor"], outcome="failed", group_id=gid,
                         pool_id=pool_id, file_id=file_id, file_name=file_name)
            raise
        metrics.results_posted.inc()
        lifecycle.publish_changed({**before, "status": core.DONE})
        audit.record("result_posted", actor=caller["actor"], group_id=gid, pool_id=pool_id, file_id=file_id,
                     size=size, sha256=sha256, file_name=file_name)
        log.info("result_posted", extra={"group_id": gid, "pool_id": pool_id, "result_id": file_id})
        response = jsonify({"result_id": file_id, "group_id": gid, "size": size, "sha256": sha256})
        response.status_code = 201
        return response

    @app.get("/pools/<pool_id>/results")
    def list_results(pool_id: str) -> Response:
        reader_caller(pool_id)
        since_raw = request.args.get("since")
        since = None
        if since_raw:
            try:
                since = parse(since_raw).timestamp()
            except BadTimestamp as exc:
                raise bad_request(str(exc)) from exc
        return jsonify({"results": [result_view(r) for r in store.list_results(pool_id, since)]})

    return app
