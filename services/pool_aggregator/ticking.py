"""Group transitions driven by time and by arrivals: ready, lease expiry, the gauges.

Every aggregator process runs ``tick`` every ``tick_seconds`` (a ``Periodic``
of the runtime). Several processes tick at once; each transition is a
conditional update in the store that exactly one of them wins, and only the
winner publishes ``GroupChanged`` and announces to the processor.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.contracts import GroupChanged

from . import core
from .core import epoch_iso
from .deps import Deps

log = logging.getLogger(__name__)


def publish_changed(deps: Deps, group: dict[str, Any]) -> None:
    try:
        deps.broker.publish(GroupChanged(
            pool_id=group["pool_id"], group_id=group["_id"], status=group["status"],
            window_start=epoch_iso(group["window_start"]), window_end=epoch_iso(group["window_end"]),
            reason=group.get("reason"), short=group.get("short")))
    except Exception as exc:  # noqa: BLE001 - the transition is durable; the event is informational
        log.error("group_changed_lost", extra={"group_id": group["_id"], "error": repr(exc)})


def make_ready(deps: Deps, gid: str) -> dict[str, Any] | None:
    """open -> ready (if this process wins), then the event and the announcement."""
    group = deps.store.mark_ready(gid, deps.clock.time())
    if group is None:
        return None
    log.info("group_ready", extra={"group_id": gid, "pool_id": group["pool_id"]})
    publish_changed(deps, group)
    announce(deps, group)
    return group


def announce(deps: Deps, group: dict[str, Any]) -> None:
    try:
        pool = deps.pools.get(group["pool_id"])
    except Exception as exc:  # noqa: BLE001 - auth down: the processor still polls
        log.warning("announce_skipped", extra={"group_id": group["_id"], "error": repr(exc)})
        deps.metrics.announce_failures.inc()
        return
    deps.announcer.announce(pool, group)


def is_due(group: dict[str, Any], now: float) -> bool:
    """An open group's readiness: its window (plus grace) has passed, or enough members sent."""
    grace = group.get("close_at", group["window_end"]) - group["window_end"]
    return core.is_ready(now, group["window_end"], grace, core.contributor_count(group),
                         group.get("min_contributors"))


def promote_ready(deps: Deps) -> int:
    now = deps.clock.time()
    return sum(make_ready(deps, group["_id"]) is not None
               for group in deps.store.open_groups() if is_due(group, now))


def expire_leases(deps: Deps) -> int:
    now = deps.clock.time()
    moved = 0
    for group in deps.store.expired_leases(now):
        target, count = core.after_lease_expiry(int(group.get("lease_expiries") or 0),
                                                deps.settings.lease_max_expiries)
        updated = deps.store.expire_lease(group["_id"], group.get("lease_id"), target, count, now)
        if updated is None:
            continue  # a result arrived or another process expired it first
        moved += 1
        deps.metrics.lease_expiries.labels(target).inc()
        log.warning("lease_expired", extra={"group_id": group["_id"], "pool_id": group["pool_id"],
                                            "lease_expiries": count, "status": target})
        publish_changed(deps, updated)
        if target == core.READY:
            announce(deps, updated)
    return moved


def update_gauges(deps: Deps) -> None:
    for status, count in deps.store.count_by_status().items():
        deps.metrics.groups.labels(status).set(count)


def tick(deps: Deps) -> None:
    """One pass; a failing step (a MongoDB blip) is logged and the others still run."""
    for step in (promote_ready, expire_leases, update_gauges):
        try:
            step(deps)
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("tick_failed", extra={"step": step.__name__})
