"""SPEC "Retention": expired files leave their backend and the index; each deletion is audited.

Rules: each pool's ``retention_days`` (auth's internal retention route, deleted pools
included: a deleted pool's files follow the rule it had) and ``RETENTION_DAYS`` for files
without a pool. A file expires ``days`` after it was stored (its record's ``created``); 0 days
means at the next pass.

Two replicas may run a pass at once: the bytes are deleted first (idempotent: deleting what is
gone is a no-op in every backend), then the record is marked ``deleted`` with a conditional
update that only one of them wins; only the winner audits. A crash between the two leaves a
record whose bytes are gone, and the next pass finishes it (the DELETE route's order, for the
same reason). A backend that fails leaves its files for the next pass.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from services.common import timeutil
from services.common.authclient import AuthUnavailable

from .backends import LEGACY
from .deps import Deps
from .ports import PoolDirectory

log = logging.getLogger(__name__)

ACTOR = "file_service_manager.retention"
MAX_PER_RULE = 500  # expired files taken per rule per pass (the next pass takes the rest)
MAX_PER_PASS = 5000  # deletions per pass in all: a pass is bounded in time whatever has piled up
MAX_DAYS = 100 * 365


def rules(deps: Deps, directory: PoolDirectory) -> list[tuple[str | None, int]]:
    """``(pool_id or None for files without a pool, days)``; auth unreachable: only RETENTION_DAYS."""
    found: list[tuple[str | None, int]] = []
    if deps.settings.retention_days is not None:
        found.append((None, deps.settings.retention_days))
    try:
        answered = directory.retention_rules()
    except AuthUnavailable as exc:
        log.warning("retention rules unavailable; pools skipped this pass", extra={"reason": str(exc)[:200]})
        return found
    for rule in answered:  # auth's answer, still checked: a bad row is skipped, never guessed
        pool_id, days = rule.get("pool_id"), rule.get("retention_days")
        if isinstance(pool_id, str) and pool_id and isinstance(days, int) and not isinstance(days, bool) \
                and 0 <= days <= MAX_DAYS:
            found.append((pool_id, days))
    return found


def sweep(deps: Deps, directory: PoolDirectory, *, now: datetime | None = None) -> dict[str, Any]:
    """One pass; returns the ids deleted and those whose backend failed."""
    moment = now or timeutil.now()
    deleted: list[str] = []
    failed: list[str] = []
    budget = MAX_PER_PASS
    for pool_id, days in rules(deps, directory):
        if budget <= 0:
            break
        cutoff = timeutil.iso(moment - timedelta(days=days))
        batch = deps.index.expired(pool_id, cutoff, min(MAX_PER_RULE, budget))
        budget -= len(batch)
        for record in batch:
            (deleted if expire(deps, record, days) else failed).append(record["file_id"])
    if deleted or failed:
        log.info("retention pass", extra={"deleted": len(deleted), "failed": len(failed)})
    return {"deleted": deleted, "failed": failed}


def expire(deps: Deps, record: dict[str, Any], days: int) -> bool:
    """Delete one expired file (bytes, then record); False when its backend failed (next pass)."""
    file_id = record["file_id"]
    try:
        deps.storage.for_record(record).delete(file_id)
    except Exception as exc:  # noqa: BLE001 - one backend down must not stop the pass
        log.warning("retention: delete failed in the backend", extra={"file_id": file_id,
                                                                      "reason": type(exc).__name__})
        return False
    deps.hot.discard(file_id)
    if deps.index.mark_deleted(file_id, ACTOR):  # one replica wins; only it audits
        storage = record.get("storage")
        deps.audit.record("deleted", actor=ACTOR, file_id=file_id, pool_id=record.get("pool_id"),
                          size=record.get("size"), sha256=record.get("sha256"),
                          storage=storage.get("id") if isinstance(storage, dict) else LEGACY.id,
                          reason="retention", retention_days=days)
    return True
