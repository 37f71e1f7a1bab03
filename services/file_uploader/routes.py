"""file_uploader's HTTP routes: the internal ``/uploads`` routes (ARCHITECTURE) and SPEC's public ones."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from services.common import errors, httpkit, validation
from services.common.httpkit import check_internal_key, json_body

from .deps import Deps
from .uploads import UploadService

bp = Blueprint("file_uploader", __name__)


def deps() -> Deps:
    found: Deps = current_app.extensions["deps"]
    return found


def uploads() -> UploadService:
    return deps().uploads


def internal() -> None:
    common = deps().settings.common
    check_internal_key(common.internal_api_key, common.internal_api_key_previous)


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


# --- internal routes (the gateway, pool_aggregator) ------------------------------------
@bp.post("/uploads")
def start_upload() -> Response:
    internal()
    body = json_body(httpkit.JSON_BODY_LIMIT + httpkit.JSON_ITEM_BYTES * deps().settings.limits.max_items)
    result, status = uploads().start(body, owner_id=str(body.get("owner_id") or ""),
                                     owner_name=str(body.get("owner_name") or ""),
                                     writer=str(body.get("writer") or ""))
    return _json(result, status)


@bp.put("/uploads/<file_id>/chunks/<index>")
def write_chunk(file_id: str, index: str) -> Response:
    internal()
    chunk_size = deps().settings.limits.chunk_size
    if request.content_length is not None and request.content_length > chunk_size:
        raise errors.too_large(f"a chunk is at most {chunk_size} bytes")
    # Bounded read: never more than one chunk (+1 byte to see an oversize body) in memory.
    data = request.stream.read(chunk_size + 1)
    if len(data) > chunk_size:
        raise errors.too_large(f"a chunk is at most {chunk_size} bytes")
    result = uploads().write_chunk(file_id, index, data, owner_id=request.headers.get("X-Owner-Id", ""),
                                   writer=request.headers.get("X-Writer", ""),
                                   chunk_sha256=request.headers.get("X-Chunk-Sha256"))
    return _json(result)


@bp.post("/uploads/<file_id>/complete")
def complete_upload(file_id: str) -> Response:
    internal()
    body = json_body()
    return _json(uploads().complete(file_id, owner_id=str(body.get("owner_id") or ""), writer=body.get("writer")))


@bp.post("/uploads/<file_id>/cancel")
def cancel_upload(file_id: str) -> Response:
    internal()
    return _json(uploads().cancel(file_id, owner_id=str(json_body().get("owner_id") or "")))


@bp.post("/uploads/<file_id>/release")
def release_upload(file_id: str) -> Response:
    internal()
    released = uploads().release(file_id, str(json_body().get("writer") or ""))
    return _json({"file_id": file_id, "released": released})


@bp.get("/uploads/<file_id>")
def describe_upload(file_id: str) -> Response:
    internal()
    return _json(uploads().describe(file_id, request.args.get("owner_id", "")))


# --- SPEC routes ------------------------------------------------------------------------
def _uploader() -> tuple[str, str, bool]:
    """(owner_id, owner_name, trusted): an internal caller names the owner; a user is the owner."""
    if request.headers.get("X-Internal-Key"):
        internal()
        owner_id = request.form.get("user_id") or ""
        if not owner_id:
            raise httpkit.bad_request("user_id is required with X-Internal-Key")
        return owner_id, request.form.get("user_name") or owner_id, True
    identity = deps().auth.validate(httpkit.bearer_token())
    if identity is None:
        raise httpkit.unauthorized()
    pool_id = request.form.get("pool_id") or None
    if pool_id and not identity.can_contribute(pool_id):
        raise httpkit.forbidden("you are not a contributor of this pool")
    return identity.user_id, identity.user_name, False


@bp.post("/file/upload")
def http_upload() -> Response:
    owner_id, owner_name, _trusted = _uploader()
    uploads().check_load()
    part = request.files.get("file")
    if part is None:
        raise httpkit.bad_request("the multipart field 'file' is required")
    stream = part.stream
    # werkzeug spools the part to a temporary file: measure it without reading it.
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    payload = {"file_name": part.filename, "content_type": part.mimetype or None,
               "pool_id": request.form.get("pool_id") or None, "timestamp": request.form.get("timestamp") or None,
               "metadata": request.form.get("metadata") or None, "sha256": request.form.get("sha256") or None}
    validation.check_file_name(part.filename or "")
    file_id = uploads().upload_stream(stream, size, payload, owner_id=owner_id, owner_name=owner_name)
    return _json({"file_id": file_id}, 201)


@bp.put("/file/update/status")
def update_status() -> Response:
    internal()
    body = json_body()
    return _json(uploads().update_status(body.get("file_id"), body.get("status")))
