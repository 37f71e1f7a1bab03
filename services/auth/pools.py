"""Pools and their members: create, list, read; add and remove members (each change published)."""

from __future__ import annotations

import logging
from typing import Any

from services.common.contracts import MembershipChanged, PoolDeleted
from services.common.errors import ApiError, Duplicate, forbidden, not_found

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


def create_pool(deps: Deps, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    require_admin(caller)
    spec = checked(core.parse_pool, body)
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
    return pool


def patch_pool(deps: Deps, caller: Caller, pool_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """SPEC's PATCH /auth/pools/<pool_id>: any field of POST, the result checked as POST checks it."""
    require_admin(caller)
    current = pool_or_404(deps, pool_id)
    spec = checked(lambda b: core.parse_pool_patch(current, b), body)
    pool = deps.store.update_pool(pool_id, spec)
    if pool is None:  # deleted meanwhile
        raise not_found(f"no pool {pool_id!r}")
    log.info("pool changed", extra={"pool_id": pool_id})
    audit(deps, caller, "pool_changed", pool_id,
          changed={k: pool[k] for k in core.POOL_SPEC_FIELDS if k in body and k != "processor_url"},
          processor_url_changed=("processor_url" in body) or None)
    return pool


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
    """A pool as other services see it (the internal key was checked by the route)."""
    return pool_or_404(deps, pool_id)


def internal_members(deps: Deps, pool_id: str) -> list[dict[str, Any]]:
    pool_or_404(deps, pool_id)
    return deps.store.members(pool_id)
