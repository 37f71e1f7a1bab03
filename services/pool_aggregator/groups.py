"""Reading groups: the listing, one group, its files and its archive (which lease a ready group)."""

from __future__ import annotations

import functools
from typing import Any

from services.common import validation
from services.common.httpkit import conflict, not_found

from . import core, ticking
from .archive import Member
from .core import epoch_iso
from .deps import Deps
from .pools import processing_timeout


def group_view(group: dict[str, Any]) -> dict[str, Any]:
    return {
        "group_id": group["_id"], "pool_id": group["pool_id"],
        "window_start": epoch_iso(group["window_start"]), "window_end": epoch_iso(group["window_end"]),
        "status": group["status"], "file_count": int(group.get("file_count") or 0),
        "bytes": int(group.get("bytes") or 0), "late_files": int(group.get("late_count") or 0),
        "contributors": core.contributor_count(group),
        "lease_expiries": int(group.get("lease_expiries") or 0), "result_id": group.get("result_id"),
        **{key: group[key] for key in ("reason", "short") if group.get(key) is not None},
        **({"lease_expires": epoch_iso(group["lease_expires_at"])} if group.get("lease_expires_at") else {}),
    }


def list_groups(deps: Deps, pool_id: str, status: str | None, *, cursor: str | None = None,
                limit_raw: str | None = None) -> dict[str, Any]:
    """A page ``{groups, next_cursor}`` oldest window first; ``next_cursor`` (the last window's
    start) is null on the last page. ``limit``: default 100, at most 1000."""
    limit = validation.page_limit(limit_raw)
    after = validation.count_param(cursor, "cursor", signed=True)  # a window start (epoch seconds)
    found = deps.store.list_groups(pool_id, status, limit=limit + 1, after=after)
    page = found[:limit]
    more = len(found) > limit
    return {"groups": [group_view(g) for g in page],
            "next_cursor": str(int(page[-1]["window_start"])) if more and page else None}


def pool_group(deps: Deps, pool_id: str, gid: str) -> dict[str, Any]:
    """The group, or 404 when it does not exist or belongs to another pool."""
    group = deps.store.get(gid)
    if group is None or group["pool_id"] != pool_id:
        raise not_found("no such group in this pool")
    return group


def fetch_for_processing(deps: Deps, pool_id: str, gid: str, *, actor: str, via: str,
                         look_only: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The group and its files; a ready group is leased (-> processing) by this very call
    unless ``look_only`` (a HEAD)."""
    group = pool_group(deps, pool_id, gid)
    if group["status"] == core.OPEN:
        raise conflict("the group is still open; wait until it is ready")
    if group["status"] == core.READY and not look_only:
        timeout = processing_timeout(deps.pools.get(pool_id))
        leased = deps.store.lease(gid, deps.clock.time(), timeout)
        if leased is not None:
            group = leased
            ticking.publish_changed(deps, group)
        else:  # another call leased it (or it moved) in between: answer with what it is now
            group = pool_group(deps, pool_id, gid)
    entries = deps.store.files_of(gid)
    deps.audit.record("group_fetched", actor=actor, group_id=gid, pool_id=pool_id, via=via,
                      status=group["status"], files=int(group.get("file_count") or 0))
    return group, entries


def download_url(deps: Deps, file_id: str) -> str:
    return f"{deps.settings.common.public_file_url.rstrip('/')}/file/{file_id}"


def files_view(deps: Deps, group: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"group_id": group["_id"], "status": group["status"], "files": [
        {"file_id": e["file_id"], "owner_id": e["owner_id"], "timestamp": e["timestamp"],
         "size": e["size"], "sha256": e["sha256"], "file_name": e.get("file_name"), "late": e.get("late"),
         "download_url": download_url(deps, e["file_id"])}
        for e in entries]}


def archive_members(deps: Deps, entries: list[dict[str, Any]], api_key: str) -> list[Member]:
    """Tar members read lazily from file_service_manager with the processor's own key
    (file_service_manager checks the key's pool itself)."""
    return [Member(name=core.member_name(e["timestamp"], e["file_id"], e.get("file_name") or "file"),
                   size=int(e["size"]), mtime=float(e.get("ts") or 0),
                   chunks=functools.partial(deps.files.chunks, e["file_id"], api_key))
            for e in entries]
