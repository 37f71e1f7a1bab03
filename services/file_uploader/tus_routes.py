"""The tus 1.0.0 door at ``/files/`` (SPEC file_uploader, "tus"): parse headers, call ``TusUploads``.

Every answer carries ``Tus-Resumable``; a request with another version gets 412.
Bodies: waitress has read the whole request (bounded by the server's max body and
its ``channel_timeout`` inactivity timer, ``httpkit.ServerLimits``) before a view
runs, so a stalled client never pins a worker; the view still reads the stream in
bounded pieces (``tus_uploads.READ_PIECE``) and never holds more than one chunk.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from services.common import httpkit
from services.common.authclient import Identity
from services.common.errors import ApiError

from . import tus
from .deps import Deps
from .tus_uploads import TusState, TusUploads

bp = Blueprint("tus", __name__)


def _deps() -> Deps:
    found: Deps = current_app.extensions["deps"]
    return found


def _tus() -> TusUploads:
    return _deps().tus


def _identity() -> Identity:
    return _tus().identify(httpkit.bearer_token())


@bp.before_request
def _check_version() -> None:
    if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != tus.VERSION:
        raise ApiError(412, "precondition_failed", f"Tus-Resumable must be {tus.VERSION}")


@bp.after_request
def _tus_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = tus.VERSION
    if response.status_code == 412:
        response.headers["Tus-Version"] = tus.VERSION
    return response


def _answer(status: int, state: TusState | None = None) -> Response:
    response = Response(status=status)
    if state is not None:
        response.headers["Upload-Offset"] = str(state.offset)
        if state.expires is not None:
            response.headers["Upload-Expires"] = tus.http_date(state.expires)
    return response


def _body_length() -> int | None:
    return request.content_length


def _checked_content_type() -> None:
    if request.mimetype != tus.OFFSET_CONTENT_TYPE:
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be {tus.OFFSET_CONTENT_TYPE}")


@bp.route("/files/", methods=["OPTIONS"], strict_slashes=False)
@bp.route("/files/<file_id>", methods=["OPTIONS"])
def discovery(file_id: str | None = None) -> Response:
    response = Response(status=204)
    response.headers["Tus-Version"] = tus.VERSION
    response.headers["Tus-Extension"] = tus.EXTENSIONS
    response.headers["Tus-Checksum-Algorithm"] = ",".join(tus.CHECKSUM_ALGORITHMS)
    response.headers["Tus-Max-Size"] = str(_deps().settings.limits.max_file_size)
    return response


@bp.post("/files/", strict_slashes=False)
def create() -> Response:
    identity = _identity()
    service = _tus()
    length = tus.parse_int_header(request.headers.get("Upload-Length"), "Upload-Length")
    has_body = bool(_body_length())
    checksum = None
    if has_body:  # creation-with-upload: the body is the first PATCH, checked before anything is created
        _checked_content_type()
        checksum = tus.parse_checksum(request.headers.get("Upload-Checksum"))
    file_id = service.create(identity, length, request.headers.get("Upload-Metadata"))
    # A refused first body is the answer (the upload exists; a client HEADs it to resume).
    response = _answer(201, service.append(identity, file_id, 0, request.stream, _body_length(), checksum)
                       if has_body else service.fresh(length or 0))
    response.headers["Location"] = f"{request.script_root}/files/{file_id}"
    return response


@bp.route("/files/<file_id>", methods=["HEAD"])
def offset(file_id: str) -> Response:
    state = _tus().state(_identity(), file_id)
    response = _answer(200, state)
    response.headers["Upload-Length"] = str(state.length)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.patch("/files/<file_id>")
def append(file_id: str) -> Response:
    identity = _identity()
    _checked_content_type()
    state = _tus().append(identity, file_id,
                          tus.parse_int_header(request.headers.get("Upload-Offset"), "Upload-Offset"),
                          request.stream, _body_length(),
                          tus.parse_checksum(request.headers.get("Upload-Checksum")))
    return _answer(204, state)


@bp.delete("/files/<file_id>")
def terminate(file_id: str) -> Response:
    _tus().terminate(_identity(), file_id)
    return _answer(204)


@bp.post("/files/<file_id>")
def overridden(file_id: str) -> Response:
    """X-HTTP-Method-Override (tus-js-client's ``overridePatchMethod``, for proxies without PATCH)."""
    method = (request.headers.get("X-HTTP-Method-Override") or "").upper()
    if method == "PATCH":
        return append(file_id)
    if method == "DELETE":
        return terminate(file_id)
    raise ApiError(405, "method_not_allowed", "POST a new upload to /files/; PATCH appends to one")
