"""pool_aggregator's HTTP routes: the external processor's API plus reading for pool members.

Parse, call a use case, shape the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, current_app, jsonify, request

from services.common import httpkit, validation
from services.common.httpkit import bad_request, forbidden, unauthorized

from . import acks, control, core, groups, results, staging
from .archive import archive_length, tar_stream
from .deps import Deps

bp = Blueprint("pool_aggregator", __name__)


def deps() -> Deps:
    found: Deps = current_app.extensions["deps"]
    return found


@dataclass(frozen=True)
class Processor:
    pool_id: str
    actor: str
    api_key: str


def processor(pool_id: str) -> Processor:
    """The pool's processor key, or 401 (none/invalid) / 403 (another pool's key, or a user token)."""
    key = request.headers.get("X-API-Key", "").strip()
    if not key:
        if httpkit.bearer_token():
            raise forbidden("processor routes take the pool's X-API-Key, not a user token")
        raise unauthorized("X-API-Key required")
    info = deps().auth.processor_key(key)
    if info is None:
        raise unauthorized("invalid API key")
    if str(info["pool_id"]) != pool_id:
        raise forbidden("this API key belongs to another pool")
    return Processor(pool_id, f"processor-key:{info.get('key_id') or pool_id}", key)


def reader(pool_id: str) -> str:
    """The processor's key or a pool member's (or admin's) Bearer; returns the audit actor."""
    if request.headers.get("X-API-Key"):
        return processor(pool_id).actor
    token = httpkit.bearer_token()
    if not token:
        raise unauthorized("a Bearer token or the pool's X-API-Key is required")
    identity = deps().auth.validate(token)
    if identity is None:
        raise unauthorized("invalid or expired token")
    if not identity.is_member(pool_id):
        raise forbidden("not a member of this pool")
    return f"user:{identity.user_id}"


def operator(pool_id: str) -> str:
    """The pool's processor key or an admin's Bearer; returns the audit actor."""
    if request.headers.get("X-API-Key"):
        return processor(pool_id).actor
    token = httpkit.bearer_token()
    if not token:
        raise unauthorized("the pool's X-API-Key or an admin Bearer token is required")
    identity = deps().auth.validate(token)
    if identity is None:
        raise unauthorized("invalid or expired token")
    if not identity.is_admin:
        raise forbidden("only an admin or the pool's processor may do this")
    return f"user:{identity.user_id}"


def internal() -> None:
    """Only our services (the gateway, for a member it identified) call the acks routes."""
    common = deps().settings.common
    httpkit.check_internal_key(common.internal_api_key, common.internal_api_key_previous)


@bp.get("/pools/<pool_id>/groups")
def list_groups(pool_id: str) -> Response:
    reader(pool_id)
    try:
        status = core.check_status_filter(request.args.get("status"))
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    return jsonify(groups.list_groups(deps(), pool_id, status, cursor=request.args.get("cursor"),
                                      limit_raw=request.args.get("limit")))


@bp.get("/pools/<pool_id>/groups/<gid>")
def get_group(pool_id: str, gid: str) -> Response:
    reader(pool_id)
    return jsonify(groups.group_view(groups.pool_group(deps(), pool_id, gid)))


@bp.get("/pools/<pool_id>/groups/<gid>/files")
def group_files(pool_id: str, gid: str) -> Response:
    caller = processor(pool_id)
    group, entries = groups.fetch_for_processing(deps(), pool_id, gid, actor=caller.actor, via="files",
                                                 look_only=request.method == "HEAD")
    return jsonify(groups.files_view(deps(), group, entries))


@bp.get("/pools/<pool_id>/groups/<gid>/archive")
def group_archive(pool_id: str, gid: str) -> Response:
    caller = processor(pool_id)
    group, entries = groups.fetch_for_processing(deps(), pool_id, gid, actor=caller.actor, via="archive",
                                                 look_only=request.method == "HEAD")
    members = groups.archive_members(deps(), entries, caller.api_key)
    response = Response(tar_stream(members), mimetype="application/x-tar", direct_passthrough=True)
    response.headers["Content-Length"] = str(archive_length(members))
    response.headers["Content-Disposition"] = f'attachment; filename="{core.sanitize_name(gid)}.tar"'
    response.headers["X-Group-Status"] = group["status"]
    return response


@bp.post("/pools/<pool_id>/groups/<gid>/result")
def post_result(pool_id: str, gid: str) -> tuple[Response, int]:
    caller = processor(pool_id)
    headers = request.headers
    wanted = results.check_request(deps(), headers.get("X-File-Name", ""), headers.get("X-Sha256", ""),
                                   headers.get("Content-Length"))
    posted = results.post_result(deps(), pool_id, gid, caller.actor, wanted, request.stream)
    return jsonify(posted), 201


@bp.post("/pools/<pool_id>/groups/<gid>/lease")
def renew_lease(pool_id: str, gid: str) -> Response:
    caller = processor(pool_id)
    return jsonify(control.renew_lease(deps(), pool_id, gid, caller.actor))


@bp.post("/pools/<pool_id>/groups/<gid>/close")
def close_group(pool_id: str, gid: str) -> Response:
    return jsonify(groups.group_view(control.close(deps(), pool_id, gid, operator(pool_id))))


@bp.post("/pools/<pool_id>/groups/<gid>/retry")
def retry_group(pool_id: str, gid: str) -> Response:
    return jsonify(groups.group_view(control.retry(deps(), pool_id, gid, operator(pool_id))))


@bp.get("/pools/<pool_id>/results")
def list_results(pool_id: str) -> Response:
    reader(pool_id)
    args = request.args
    return jsonify(results.list_results(deps(), pool_id, since_raw=args.get("since"),
                                        after_seq_raw=args.get("after_seq"), limit_raw=args.get("limit")))


@bp.get("/internal/pools/<pool_id>/acks/<user_id>")
def get_ack(pool_id: str, user_id: str) -> Response:
    internal()
    return jsonify(acks.acked(deps(), validation.check_id(pool_id, "pool_id"),
                              validation.check_id(user_id, "user_id")))


@bp.put("/internal/pools/<pool_id>/acks/<user_id>")
def put_ack(pool_id: str, user_id: str) -> Response:
    internal()
    return jsonify(acks.ack(deps(), validation.check_id(pool_id, "pool_id"), validation.check_id(user_id, "user_id"),
                            httpkit.json_body()))


@bp.get("/pools/<pool_id>/results/<result_id>/staging")
def result_staging(pool_id: str, result_id: str) -> Response:
    operator(pool_id)
    return jsonify(staging.result_staging(deps(), pool_id, result_id))
