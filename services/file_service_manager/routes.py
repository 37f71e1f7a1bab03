"""file_service_manager's HTTP routes: parse, call a use case, shape the answer."""

from __future__ import annotations

import io
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.wsgi import wrap_file

from services.common import httpkit, validation
from services.common.authclient import Identity

from . import core, deleting, downloads, files, probing, staging
from .deps import Deps

bp = Blueprint("file_service_manager", __name__)


def deps() -> Deps:
    found: Deps = current_app.extensions["deps"]
    return found


def user() -> Identity:
    identity = deps().auth.validate(httpkit.bearer_token())
    if identity is None:
        raise httpkit.unauthorized()
    return identity


def caller() -> core.Caller:
    """A processor (X-API-Key, its one pool) or a user (Bearer)."""
    api_key = request.headers.get("X-API-Key")
    if api_key and not httpkit.bearer_token():
        pool_id = deps().auth.processor_pool(api_key)
        if pool_id is None:
            raise httpkit.unauthorized("invalid API key")
        return core.Caller(processor_pool=pool_id)
    identity = user()
    return core.Caller(user_id=identity.user_id, is_admin=identity.is_admin, pools=frozenset(identity.pools))


def limit() -> int:
    try:
        return core.parse_limit(request.args.get("limit"))
    except ValueError as exc:
        raise httpkit.bad_request(str(exc)) from exc


@bp.get("/client/history/<client_id>")
def history(client_id: str) -> Response:
    return jsonify({"files": files.history(deps(), user(), client_id)})


@bp.get("/files")
def list_files() -> Response:
    identity = user()
    return jsonify({"files": files.list_files(deps(), identity, dict(request.args), limit())})


@bp.get("/audit")
def audit() -> Response:
    identity = user()
    query: dict[str, Any] = {}
    for arg, field in (("file_id", "file_id"), ("user", "actor"), ("pool_id", "pool_id")):
        if request.args.get(arg):
            query[field] = request.args[arg]
    if request.args.get("since"):
        query["time"] = {"$gte": validation.check_timestamp(request.args["since"], "since")}
    after = None
    if request.args.get("cursor"):
        try:
            after = core.decode_cursor(request.args["cursor"])
        except ValueError as exc:
            raise httpkit.bad_request(str(exc)) from exc
    events, cursor = files.audit_page(deps(), identity, query, after, limit())
    return jsonify({"events": events, "next_cursor": cursor})


@bp.delete("/file/<file_id>")
def delete(file_id: str) -> Response:
    return jsonify(deleting.delete_file(deps(), user(), file_id))


@bp.get("/file/<file_id>")
def download(file_id: str) -> Response:
    who = caller()
    try:
        plan = downloads.plan_download(deps(), file_id, who, request.headers.get("Range"),
                                       request.headers.get("If-None-Match"))
    except downloads.RangeRefused as refused:
        response = httpkit.error_response(refused)
        response.headers["Content-Range"] = refused.content_range
        return response
    if plan.status == 304:
        return Response(status=304, headers=plan.headers)
    if plan.memory is not None:
        # waitress's wsgi.file_wrapper sends straight from the buffer (no copy into its output
        # buffers, which spill to temp files past 1 MB) and frees this worker thread.
        body: Any = wrap_file(request.environ, io.BytesIO(plan.memory), buffer_size=deps().settings.download_piece)
    else:
        body = plan.stream
    return Response(body, status=plan.status, headers=plan.headers, mimetype=plan.content_type,
                    direct_passthrough=True)


@bp.get("/internal/staging/<result_id>")
def staging_status(result_id: str) -> Response:
    """Internal (X-Internal-Key): a result's staging status, for pool_aggregator's staging route."""
    common = deps().settings.common
    httpkit.check_internal_key(common.internal_api_key, common.internal_api_key_previous)
    return jsonify(staging.status(deps(), validation.check_id(result_id, "result_id")))


@bp.post("/internal/storage/probe")
def probe_storage() -> Response:
    """auth checks a pool's storage here before saving it (X-Internal-Key)."""
    found = deps()
    httpkit.check_internal_key(found.settings.common.internal_api_key,
                               found.settings.common.internal_api_key_previous)
    return jsonify(probing.probe_storage(found, httpkit.json_body()))
