"""auth's HTTP routes (SPEC "auth" plus the internal routes): parse, call a use case, shape the answer."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from services.common import httpkit
from services.common.httpkit import json_body

from . import accounts, pools, processor_keys
from .accounts import Caller
from .deps import Deps

bp = Blueprint("auth", __name__)


def deps() -> Deps:
    found: Deps = current_app.extensions["deps"]
    return found


def caller() -> Caller:
    return accounts.authenticate(deps(), httpkit.bearer_token())


def client_ip() -> str:
    # The TCP peer (waitress clears untrusted proxy headers); X-Forwarded-For counts only
    # when AUTH_TRUSTED_PROXY_HOPS says which proxies to believe (ProxyFix in app.py).
    return request.remote_addr or ""


def internal() -> Deps:
    """The deps, once the caller proved it is one of our services (X-Internal-Key)."""
    found = deps()
    httpkit.check_internal_key(found.settings.internal_api_key, found.settings.common.internal_api_key_previous)
    return found


def created(doc: dict[str, object]) -> tuple[Response, int]:
    return jsonify(doc), 201


# --- users and tokens ---------------------------------------------------------------


@bp.post("/auth/signup")
def signup() -> tuple[Response, int]:
    return created(accounts.signup(deps(), json_body(), client_ip()))


@bp.put("/auth/login/<user_name>")
def login(user_name: str) -> Response:
    return jsonify(accounts.login(deps(), user_name, json_body(), client_ip()))


@bp.put("/auth/logout/<user_name>")
def logout(user_name: str) -> Response:
    return jsonify(accounts.logout(deps(), httpkit.bearer_token(), user_name))


@bp.post("/auth/refresh")
def refresh() -> Response:
    return jsonify(accounts.refresh(deps(), json_body()))


@bp.get("/auth/validate")
def validate() -> Response:
    return jsonify(accounts.validate(caller()))


@bp.get("/auth/users")
def users() -> Response:
    return jsonify(accounts.users(deps(), caller(), request.args.get("limit"), request.args.get("cursor")))


@bp.patch("/auth/users/<user_name>")
def patch_user(user_name: str) -> Response:
    who = accounts.require_admin(caller())  # a non-admin is refused before its body is read
    return jsonify(accounts.patch_user(deps(), who, user_name, json_body()))


# --- pools and members ----------------------------------------------------------------


@bp.post("/auth/pools")
def create_pool() -> tuple[Response, int]:
    who = accounts.require_admin(caller())  # a non-admin is refused before its body is read
    return created(pools.create_pool(deps(), who, json_body()))


@bp.get("/auth/pools")
def list_pools() -> Response:
    return jsonify({"pools": pools.list_pools(deps(), caller())})


@bp.get("/auth/pools/<pool_id>")
def get_pool(pool_id: str) -> Response:
    return jsonify(pools.get_pool(deps(), caller(), pool_id))


@bp.patch("/auth/pools/<pool_id>")
def patch_pool(pool_id: str) -> Response:
    who = accounts.require_admin(caller())
    return jsonify(pools.patch_pool(deps(), who, pool_id, json_body()))


@bp.delete("/auth/pools/<pool_id>")
def delete_pool(pool_id: str) -> Response:
    return jsonify(pools.delete_pool(deps(), caller(), pool_id))


@bp.get("/auth/pools/<pool_id>/members")
def list_members(pool_id: str) -> Response:
    return jsonify({"pool_id": pool_id, "members": pools.members(deps(), caller(), pool_id)})


@bp.post("/auth/pools/<pool_id>/members")
def add_member(pool_id: str) -> tuple[Response, int]:
    who = accounts.require_admin(caller())
    return created(pools.add_member(deps(), who, pool_id, json_body()))


@bp.delete("/auth/pools/<pool_id>/members/<user_name>")
def remove_member(pool_id: str, user_name: str) -> Response:
    return jsonify(pools.remove_member(deps(), caller(), pool_id, user_name))


# --- processor keys -------------------------------------------------------------------


@bp.post("/auth/pools/<pool_id>/processor-keys")
def create_key(pool_id: str) -> tuple[Response, int]:
    return created(processor_keys.create_key(deps(), caller(), pool_id))


@bp.get("/auth/pools/<pool_id>/processor-keys")
def list_keys(pool_id: str) -> Response:
    return jsonify({"pool_id": pool_id, "keys": processor_keys.list_keys(deps(), caller(), pool_id)})


@bp.delete("/auth/pools/<pool_id>/processor-keys/<key_id>")
def revoke_key(pool_id: str, key_id: str) -> Response:
    return jsonify(processor_keys.revoke_key(deps(), caller(), pool_id, key_id))


# --- internal routes (X-Internal-Key) ---------------------------------------------------


@bp.post("/auth/internal/processor-keys/verify")
def verify_key() -> Response:
    found = internal()
    return jsonify(processor_keys.verify_key(found, json_body().get("api_key")))


@bp.get("/auth/internal/pools/<pool_id>")
def internal_pool(pool_id: str) -> Response:
    return jsonify(pools.internal_pool(internal(), pool_id))


@bp.get("/auth/internal/retention")
def internal_retention() -> Response:
    return jsonify(pools.internal_retention(internal()))


@bp.get("/auth/internal/pools/<pool_id>/members")
def internal_members(pool_id: str) -> Response:
    return jsonify({"pool_id": pool_id, "members": pools.internal_members(internal(), pool_id)})
