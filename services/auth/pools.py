"""Pools and their members: create, list, read; add and remove members (each change published)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from services.common import poolstorage
from services.common.contracts import MembershipChanged, PoolDeleted
from services.common.errors import ApiError, Duplicate, bad_request, forbidden, not_found
from services.common.secretbox import SecretError

from . import core, events
from .accounts import Caller, checked, require_admin
from .deps import Deps

log = logging.getLogger(__name__)

MAX_ID = 128  # longer path ids cannot exist; answer 404 without a query
POOL_ID_ATTEMPTS = 3  # 64 random bits: a collision is all but impossible, but cheap to handle


def audit(deps: Deps, caller: Caller, action: str, pool_id: str, **detail: Any) -> None:
    """An admin's action on a pool, in the audit trail with who did it (never a key or a secret)."""
    deps.audit.record(action, actor=caller.identity["user_id"], pool_id=pool_id,
                      actor_name=caller.identity["user_name"], **detail)


def pool_or_404(deps: Deps, pool_id: str) -> dict[str, Any]:
    pool = deps.store.get_pool(pool_id) if len(pool_id) <= MAX_ID else None
    if pool is None:
        raise not_found(f"no pool {pool_id!r}")
    return pool


def user_or_404(deps: Deps, user_name: str) -> dict[str, Any]:
    user = deps.store.user_by_name(user_name) if len(user_name) <= MAX_ID else None
    if user is None:
        raise not_found(f"no user {user_name!r}")
    return user


def member_or_admin(deps: Deps, caller: Caller, pool_id: str) -> tuple[dict[str, Any], str | None]:
    """The pool and the caller's role in it (None for an admin who is not a member), or 403/404."""
    pool = pool_or_404(deps, pool_id)
    role = caller.pool_role(pool_id)
    if role is None and not caller.is_admin:
        raise forbidden("not a member of this pool")
    return pool, role


def bad_storage(message: str) -> ApiError:
    return ApiError(400, "bad_storage", message)


def parsed(rule: Any, body: dict[str, Any]) -> core.PoolSpec:
    """``rule(body)``: a bad storage is SPEC's 400 ``bad_storage``, anything else 400 ``bad_request``."""
    try:
        spec: core.PoolSpec = rule(body)
        return spec
    except core.BadStorage as exc:
        raise bad_storage(str(exc)) from None
    except core.Invalid as exc:
        raise bad_request(str(exc)) from None


def _encrypt(deps: Deps) -> Any:
    box = deps.settings.secrets
    if box is None:
        def refuse(_value: str) -> str:
            raise poolstorage.StorageInvalid("STORAGE_SECRETS_KEY is not set on auth: secrets cannot be kept")
        return refuse
    return box.encrypt


def opened(deps: Deps, pool: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """A stored pool's storage and staging with their secrets in clear (never shown to a client)."""
    box = deps.settings.secrets

    def decrypt(value: str) -> str:
        if box is None:
            raise ApiError(503, "unavailable", "STORAGE_SECRETS_KEY is not set on auth: secrets cannot be read")
        try:
            return box.decrypt(value)
        except SecretError as exc:  # the message never quotes the value
            raise ApiError(503, "unavailable", f"a stored secret of pool {pool.get('pool_id')}: {exc}") from None
    return poolstorage.unseal(pool.get("storage"), pool.get("staging") or [], decrypt)


def sealed(deps: Deps, spec: core.PoolSpec, body: dict[str, Any],
           current: dict[str, Any] | None) -> core.PoolSpec:
    """``spec`` as it is stored. For a new pool, and for each of ``storage``/``staging`` a PATCH names: a
    ``"***"`` keeps the stored secret (same place only), a storage passes the write-read-delete probe, and
    every secret is encrypted. A field a PATCH does not name stays exactly as stored."""
    encrypt = _encrypt(deps)
    storage, staging = spec.storage, spec.staging
    if current is None or "storage" in body:
        try:
            stored = opened(deps, {"storage": current.get("storage")})[0] if current else None
            storage = poolstorage.keep_masked(storage, stored)
            poolstorage.check_roots(storage, None, deps.settings.common.filesystem_roots)
            if "storage" in body:  # the default (GridFS) needs no probe: pools are made while it is down too
                deps.storage_probe.probe(storage)  # 400 bad_storage with the backend's reason
            storage = poolstorage.seal(storage, None, encrypt)[0] or dict(core.DEFAULT_STORAGE)
        except poolstorage.StorageInvalid as exc:
            raise bad_storage(str(exc)) from None
    else:
        storage = current["storage"]
    if current is None or "staging" in body:
        try:
            poolstorage.check_roots(None, staging, deps.settings.common.filesystem_roots)
            old = opened(deps, {"staging": current.get("staging") or []})[1] or [] if current else []
            # A target keeps its secret by position: the list an admin GETs, edited and sent back.
            staging = [poolstorage.keep_masked(t, old[i] if i < len(old) else None) for i, t in enumerate(staging)]
            staging = poolstorage.seal(None, staging, encrypt)[1] or []
        except poolstorage.StorageInvalid as exc:
            raise bad_request(str(exc)) from None
    else:
        staging = current.get("staging") or []
    return dataclasses.replace(spec, storage=storage, staging=staging)


def audited(fields: dict[str, Any]) -> dict[str, Any]:
    """Pool fields as the audit trail keeps them: secrets masked."""
    storage, staging = poolstorage.mask(fields.get("storage"), fields.get("staging"))
    out = dict(fields)
    if "storage" in fields:
        out["storage"] = storage
    if "staging" in fields:
        out["staging"] = staging
    return out


def create_pool(deps: Deps, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    require_admin(caller)
    spec = sealed(deps, parsed(core.parse_pool, body), body, None)
    for _ in range(POOL_ID_ATTEMPTS):
        try:
            pool = deps.store.create_pool(core.new_pool_id(), spec)
            break
        except Duplicate:
            continue
    else:
        raise ApiError(500, "internal_error", "could not allocate a pool id")
    log.info("pool created", extra={"pool_id": pool["pool_id"]})
    audit(deps, caller, "pool_created", pool["pool_id"], fields=sorted(k for k in core.POOL_SPEC_FIELDS if k in body))
    return core.pool_view(pool, admin=True)


def patch_pool(deps: Deps, caller: Caller, pool_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """SPEC's PATCH /auth/pools/<pool_id>: any field of POST, the result checked as POST checks it."""
    require_admin(caller)
    current = pool_or_404(deps, pool_id)
    spec = sealed(deps, parsed(lambda b: core.parse_pool_patch(current, b), body), body, current)
    pool = deps.store.update_pool(pool_id, spec)
    if pool is None:  # deleted meanwhile
        raise not_found(f"no pool {pool_id!r}")
    log.info("pool changed", extra={"pool_id": pool_id})
    audit(deps, caller, "pool_changed", pool_id,
          changed=audited({k: pool[k] for k in core.POOL_SPEC_FIELDS if k in body and k != "processor_url"}),
          processor_url_changed=("processor_url" in body) or None)
    return core.pool_view(pool, admin=True)


def delete_pool(deps: Deps, caller: Caller, pool_id: str) -> dict[str, Any]:
    """SPEC's DELETE /auth/pools/<pool_id>: members and keys end with it (one transaction); the fleet
    is told each membership ended (gateways cut sockets' access) and that the pool is gone
    (``PoolDeleted``: pool_aggregator ends its open groups)."""
    require_admin(caller)
    gone = deps.store.delete_pool(pool_id) if len(pool_id) <= MAX_ID else None
    if gone is None:
        raise not_found(f"no pool {pool_id!r}")
    # Bounded by the pool's members; each publish is a confirmed one (events.publish).
    for member in gone["members"]:
        events.publish(deps, MembershipChanged(pool_id=pool_id, user_id=member["user_id"],
                                               user_name=member["user_name"], role=None))
    events.publish(deps, PoolDeleted(pool_id=pool_id))
    log.info("pool deleted", extra={"pool_id": pool_id, "members": len(gone["members"]), "keys": gone["keys"]})
    audit(deps, caller, "pool_deleted", pool_id, members_removed=len(gone["members"]), keys_revoked=gone["keys"])
    return {"pool_id": pool_id, "deleted": True, "members_removed": len(gone["members"]), "keys_revoked": gone["keys"]}


def list_pools(deps: Deps, caller: Caller) -> list[dict[str, Any]]:
    """The caller's pools with its role; an admin sees every pool."""
    found = deps.store.list_pools(caller.identity["user_id"], all_pools=caller.is_admin)
    return [core.pool_view(pool, admin=caller.is_admin) for pool in found]


def get_pool(deps: Deps, caller: Caller, pool_id: str) -> dict[str, Any]:
    pool, role = member_or_admin(deps, caller, pool_id)
    return {**core.pool_view(pool, admin=caller.is_admin), "role": role}


def members(deps: Deps, caller: Caller, pool_id: str) -> list[dict[str, Any]]:
    member_or_admin(deps, caller, pool_id)
    return deps.store.members(pool_id)


def add_member(deps: Deps, caller: Caller, pool_id: str, body: dict[str, Any]) -> dict[str, Any]:
    require_admin(caller)
    user_name = checked(core.check_user_name, body.get("user_name"))
    role = checked(core.check_pool_role, body.get("role"))
    pool_or_404(deps, pool_id)
    user = user_or_404(deps, user_name)
    deps.store.set_member(pool_id, user["user_id"], role)
    events.publish(deps, MembershipChanged(pool_id=pool_id, user_id=user["user_id"], user_name=user["user_name"],
                                           role=role))
    audit(deps, caller, "member_set", pool_id, user_id=user["user_id"], user_name=user["user_name"], role=role)
    return {"pool_id": pool_id, "user_id": user["user_id"], "user_name": user["user_name"], "role": role}


def remove_member(deps: Deps, caller: Caller, pool_id: str, user_name: str) -> dict[str, Any]:
    require_admin(caller)
    pool_or_404(deps, pool_id)
    user = user_or_404(deps, user_name)
    if not deps.store.remove_member(pool_id, user["user_id"]):
        raise not_found(f"{user['user_name']!r} is not a member of this pool")
    events.publish(deps, MembershipChanged(pool_id=pool_id, user_id=user["user_id"], user_name=user["user_name"],
                                           role=None))
    audit(deps, caller, "member_removed", pool_id, user_id=user["user_id"], user_name=user["user_name"])
    return {"pool_id": pool_id, "user_id": user["user_id"], "user_name": user["user_name"], "removed": True}


def internal_pool(deps: Deps, pool_id: str) -> dict[str, Any]:
    """A pool as other services see it (the internal key was checked by the route): its storage and
    staging secrets in clear, for file_service_manager and pool_aggregator to use (never to show)."""
    pool = pool_or_404(deps, pool_id)
    storage, staging = opened(deps, pool)
    return {**pool, "storage": storage, "staging": staging}


MAX_RETENTION_ROWS = 10_000  # pools with a retention rule in one answer (the sweeper asks every few minutes)


def internal_retention(deps: Deps) -> dict[str, Any]:
    """Every pool with a ``retention_days``, live or deleted (a deleted pool's files follow its rule)."""
    rows = deps.store.retention_rules(MAX_RETENTION_ROWS)
    return {"pools": rows, "truncated": len(rows) >= MAX_RETENTION_ROWS}


def internal_members(deps: Deps, pool_id: str) -> list[dict[str, Any]]:
    pool_or_404(deps, pool_id)
    return deps.store.members(pool_id)
