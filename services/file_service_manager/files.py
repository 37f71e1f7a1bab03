"""Read the file index and the audit trail: a user's history, file listings, audit pages."""

from __future__ import annotations

from typing import Any

from services.common.authclient import Identity
from services.common.errors import forbidden

from . import core
from .deps import Deps

HISTORY_LIMIT = 1000  # records in one history answer (newest first)


def history(deps: Deps, identity: Identity, client_id: str) -> list[dict[str, Any]]:
    if identity.user_id != client_id and not identity.is_admin:
        raise forbidden("you may only read your own history")
    return [core.public_record(d) for d in deps.index.find_files({"owner_id": client_id}, HISTORY_LIMIT)]


def list_files(deps: Deps, identity: Identity, filters: dict[str, str], limit: int) -> list[dict[str, Any]]:
    query: dict[str, Any] = {k: v for k, v in filters.items() if k in ("owner_id", "pool_id", "kind") and v}
    if not identity.is_admin:
        query["owner_id"] = identity.user_id  # a user lists only their own files
    return [core.public_record(d) for d in deps.index.find_files(query, limit)]


def audit_page(deps: Deps, identity: Identity, query: dict[str, Any], after: tuple[str, str] | None,
               limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """One page of audit events and the cursor of the next (None on the last page)."""
    if not identity.is_admin:
        raise forbidden("the audit trail is for admins")
    docs = deps.index.find_audit(query, after, limit)
    events = [{k: v for k, v in d.items() if k != "_id"} for d in docs]
    cursor = core.encode_cursor(docs[-1]["time"], docs[-1]["_id"]) if len(docs) == limit else None
    return events, cursor
