"""What a pool file's ``FileStored`` does: the file goes into the group of its window.

decode -> core (window, late rule) -> store (conditional upserts) -> publish.
Idempotent under redelivery: a file already in a group is found by its id and
only its ``FileGrouped`` is published again.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.contracts import FileGrouped, FileStored
from services.common.timeutil import BadTimestamp, parse

from . import core, ticking
from .deps import Deps
from .ports import ADDED, CLOSED

log = logging.getLogger(__name__)

MAX_LATE_STEPS = 16  # windows ahead a late file may be pushed before we give up (requeue)


def group_file(deps: Deps, msg: FileStored) -> None:
    pool_id = str(msg.pool_id)
    found = deps.store.membership(pool_id, msg.file_id)
    if found is not None:  # redelivery: the assignment stands, tell the index again
        publish_grouped(deps, msg, found["group_id"], bool(found.get("late")))
        return
    pool = deps.pools.get(pool_id)  # AuthUnavailable -> raise -> requeued
    if pool is None:
        log.warning("file_of_unknown_pool_dropped")
        return
    entry = file_entry(deps, msg)
    outcome, group, late = place(deps, pool_id, pool, entry)
    if outcome == ADDED:
        deps.metrics.files_grouped.inc()
        if late:
            deps.metrics.late_files.inc()
        log.info("file_grouped", extra={"group_id": group["_id"], "late": late})
        if group.get("status") == core.OPEN and core.is_ready(
                deps.clock.time(), group["window_end"], float(pool.get("close_grace_seconds") or 0),
                core.contributor_count(group), pool.get("min_contributors") or None):
            ticking.make_ready(deps, group["_id"])
    publish_grouped(deps, msg, group["_id"], late)


def file_timestamp(deps: Deps, msg: FileStored) -> float:
    try:
        return parse(msg.timestamp).timestamp()
    except BadTimestamp:
        # The uploader validated it; a broken one falls back to the storing time.
        return parse(msg.created).timestamp() if msg.created else deps.clock.time()


def file_entry(deps: Deps, msg: FileStored) -> dict[str, Any]:
    return {"file_id": msg.file_id, "owner_id": msg.owner_id, "timestamp": msg.timestamp,
            "ts": file_timestamp(deps, msg), "size": int(msg.size), "sha256": msg.sha256,
            "file_name": msg.file_name, "late": False}


def place(deps: Deps, pool_id: str, pool: dict[str, Any],
          entry: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """Add ``entry`` to its window's group, or (that group closed) late to a later one: (outcome, group, late)."""
    window_seconds = int(pool["window_seconds"])
    grace = float(pool.get("close_grace_seconds") or 0)
    minimum = pool.get("min_contributors") or None
    window = core.window_for(entry["ts"], window_seconds)
    late = False
    for step in range(MAX_LATE_STEPS + 1):
        outcome, group = deps.store.add_file(pool_id=pool_id, window=window, close_grace_seconds=grace,
                                             min_contributors=minimum, entry={**entry, "late": late},
                                             now=deps.clock.time())
        if outcome != CLOSED:
            if group is None:  # add_file returns a group with every outcome; never act on a guess
                raise RuntimeError(f"no group document for {entry['file_id']}")
            return outcome, group, late
        # Its window is processing/done/failed: SPEC sends it to the current window, late.
        late = True
        window = core.late_window(entry["ts"], deps.clock.time(), window_seconds, step)
    raise RuntimeError(f"no accepting window found for {entry['file_id']}")


def publish_grouped(deps: Deps, msg: FileStored, gid: str, late: bool) -> None:
    deps.broker.publish(FileGrouped(file_id=msg.file_id, pool_id=str(msg.pool_id), group_id=gid, late=late))
