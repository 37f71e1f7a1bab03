"""Processor API keys: created and revoked by admins per pool, verified for other services."""

from __future__ import annotations

import logging
from typing import Any

from services.common.errors import not_found, unauthorized

from . import core
from .accounts import Caller, require_admin
from .deps import Deps
from .pools import MAX_ID, audit, pool_or_404

log = logging.getLogger(__name__)

KEY_REFUSED = "unknown or revoked API key"  # one message: it does not tell which part was wrong


def create_key(deps: Deps, caller: Caller, pool_id: str) -> dict[str, Any]:
    """A new key; its secret is in this answer only (the store keeps a hash)."""
    require_admin(caller)
    pool_or_404(deps, pool_id)
    key = core.new_api_key()
    row = deps.store.add_processor_key(key.key_id, pool_id, key.key_hash)
    log.info("processor key created", extra={"pool_id": pool_id, "key_id": key.key_id})
    audit(deps, caller, "processor_key_created", pool_id, key_id=key.key_id)  # the id, never the key
    return {"api_key": key.api_key, "key_id": key.key_id, "pool_id": pool_id, "created": row["created"]}


def list_keys(deps: Deps, caller: Caller, pool_id: str) -> list[dict[str, Any]]:
    require_admin(caller)
    pool_or_404(deps, pool_id)
    return deps.store.processor_keys(pool_id)


def revoke_key(deps: Deps, caller: Caller, pool_id: str, key_id: str) -> dict[str, Any]:
    require_admin(caller)
    pool_or_404(deps, pool_id)
    if len(key_id) > MAX_ID or not deps.store.revoke_processor_key(pool_id, key_id):
        raise not_found(f"no processor key {key_id!r} in this pool")
    log.info("processor key revoked", extra={"pool_id": pool_id, "key_id": key_id})
    audit(deps, caller, "processor_key_revoked", pool_id, key_id=key_id)
    return {"pool_id": pool_id, "key_id": key_id, "revoked": True}


def verify_key(deps: Deps, api_key: Any) -> dict[str, Any]:
    """The pool and key id of a valid, unrevoked key, or 401."""
    key_id = core.api_key_id(api_key)
    row = deps.store.processor_key(key_id) if key_id else None
    if row is None or not core.api_key_matches(api_key, row["key_hash"]):
        raise unauthorized(KEY_REFUSED)
    return {"pool_id": row["pool_id"], "key_id": row["key_id"]}
