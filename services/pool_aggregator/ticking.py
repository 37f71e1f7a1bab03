"""Group transitions driven by time and by arrivals: ready, lease expiry, the gauges.

Every aggregator process runs ``tick`` every ``tick_seconds`` (a ``Periodic``
of the runtime), but only the holder of the ticker's leader lease
(``leadership.py``) moves groups: followers only refresh their gauges. The
leader's writes carry its term (``fence``), so an old leader paused past its
lease cannot move a group after a new leader took over, including a group
created after the takeover (it is adopted with the current term: store.py
"Fencing"; the leader's tick adopts what a dead writer left); each transition is
also a conditional update on the state it leaves, so whoever moves a group
(the leader's ticker, an arrival reaching quorum, a ``close``) does it once,
and only that winner publishes ``GroupChanged`` and announces to the processor.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.contracts import GroupChanged

from . import core
from .core import epoch_iso
from .deps import Deps

log = logging.getLogger(__name__)


SYSTEM = "system:pool_aggregator"


def publish_changed(deps: Deps, group: dict[str, Any], actor: str = SYSTEM) -> None:
    """Every state change of a group: ``GroupChanged`` (the gateway's ``group-status``, with
    reason/short when set) and an audit record naming who moved it."""
    try:
        deps.broker.publish(GroupChanged(
            pool_id=group["pool_id"], group_id=group["_id"], status=group["status"],
            window_start=epoch_iso(group["window_start"]), window_end=epoch_iso(group["window_end"]),
            reason=group.get("reason"), short=group.get("short")))
    except Exception as exc:  # noqa: BLE001 - the transition is durable; the event is informational
        log.error("group_changed_lost", extra={"group_id": group["_id"], "error": repr(exc)})
    deps.audit.record("group_status", actor=actor, group_id=group["_id"], pool_id=group["pool_id"],
                      status=group["status"], reason=group.get("reason"), short=group.get("short"))


def make_ready(deps: Deps, gid: str, *, short: bool = False, actor: str = SYSTEM,
               fence: int | None = None) -> dict[str, Any] | None:
    """open -> ready (if this process wins), then the event and the announcement."""
    group = deps.store.mark_ready(gid, deps.clock.time(), short=short, fence=fence)
    if group is None:
        return None
    log.info("group_ready", extra={"group_id": gid, "pool_id": group["pool_id"], "short": short})
    publish_changed(deps, group, actor)
    announce(deps, group)
    return group


def fail_short(deps: Deps, gid: str, reason: str, fence: int | None = None) -> dict[str, Any] | None:
    """open -> failed (quorum not met), if this process wins."""
    group = deps.store.mark_failed(gid, deps.clock.time(), reason, fence=fence)
    if group is None:
        return None
    log.warning("group_failed", extra={"group_id": gid, "pool_id": group["pool_id"], "reason": reason})
    publish_changed(deps, group)
    return group


def settle(deps: Deps, group: dict[str, Any], pool: dict[str, Any] | None,
           fence: int | None = None) -> dict[str, Any] | None:
    """Apply the quorum rule to an open group: ready (maybe short), failed, or not yet.
    ``fence``: the leader's term when the ticker settles it (None on arrival)."""
    wait, on_short = core.pool_quorum(pool)
    verdict = core.quorum_verdict(deps.clock.time(), float(group.get("close_at", group["window_end"])),
                                  core.contributor_count(group), group.get("min_contributors"), wait, on_short)
    if verdict.status not in (core.READY, core.FAILED):
        return None  # not yet
    if fence is not None and not leading(deps, fence):
        return None
    if verdict.status == core.READY:
        return make_ready(deps, group["_id"], short=verdict.short, fence=fence)
    return fail_short(deps, group["_id"], verdict.reason or core.QUORUM_NOT_MET, fence=fence)


def leading(deps: Deps, term: int) -> bool:
    """Before each of the ticker's writes: does this process still lead with ``term``? (The
    store refuses a stale term anyway; this keeps a leader whose lease ran out quiet.)"""
    if deps.leader.still(term):
        return True
    deps.metrics.fenced_writes.inc()
    return False


def announce(deps: Deps, group: dict[str, Any]) -> None:
    try:
        pool = deps.pools.get(group["pool_id"])
    except Exception as exc:  # noqa: BLE001 - auth down: the processor still polls
        log.warning("announce_skipped", extra={"group_id": group["_id"], "error": repr(exc)})
        deps.metrics.announce_failures.inc()
        return
    deps.announcer.announce(pool, group)


def promote_ready(deps: Deps, term: int | None = None) -> int:
    """Every open group whose time (or quorum) has come; a pool whose settings cannot be read
    (auth down) waits for a later tick, as its quorum rule is unknown. ``term``: the leader's."""
    moved = 0
    pools: dict[str, dict[str, Any] | None] = {}  # one look-up per pool per tick
    for group in deps.store.open_groups():
        pool_id = group["pool_id"]
        if pool_id not in pools:
            try:
                pools[pool_id] = deps.pools.get(pool_id)
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.warning("quorum_unknown", extra={"pool_id": pool_id, "error": repr(exc)})
                continue
        moved += settle(deps, group, pools[pool_id], term) is not None
    return moved


def expire_leases(deps: Deps, term: int | None = None) -> int:
    now = deps.clock.time()
    moved = 0
    for group in deps.store.expired_leases(now):
        target, count = core.after_lease_expiry(int(group.get("lease_expiries") or 0),
                                                deps.settings.lease_max_expiries)
        if term is not None and not leading(deps, term):
            break
        updated = deps.store.expire_lease(group["_id"], group.get("lease_id"), target, count, now, fence=term)
        if updated is None:
            continue  # a result arrived, or a newer leader moved or fenced it
        moved += 1
        deps.metrics.lease_expiries.labels(target).inc()
        log.warning("lease_expired", extra={"group_id": group["_id"], "pool_id": group["pool_id"],
                                            "lease_expiries": count, "status": target})
        publish_changed(deps, updated)
        if target == core.READY:
            announce(deps, updated)
    return moved


def adopt_groups(deps: Deps, term: int | None = None) -> int:
    """Groups whose creator (a consumer) or leaser (a fetch) died before adopting them get the current
    term (store.py "Fencing"); until then no term's tick may move them."""
    adopted = deps.store.adopt_pending()
    if adopted:
        log.info("groups_adopted", extra={"groups": adopted, "term": term})
    return adopted


def update_gauges(deps: Deps) -> None:
    for status, count in deps.store.count_by_status().items():
        deps.metrics.groups.labels(status).set(count)


def tick(deps: Deps) -> None:
    """One pass: the leader moves groups (fenced by its term), every replica refreshes its
    gauges; a failing step (a MongoDB blip) is logged and the others still run."""
    try:
        term = deps.leader.term()
    except Exception:  # noqa: BLE001 - the takeover stamp failed: not leading until it is written
        log.exception("tick_failed", extra={"step": "leadership"})
        term = None
    deps.metrics.leader.set(1 if term is not None else 0)
    if term is not None:
        deps.metrics.leader_term.set(term)
        for step in (adopt_groups, promote_ready, expire_leases):
            try:
                step(deps, term)
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("tick_failed", extra={"step": step.__name__})
    try:
        update_gauges(deps)
    except Exception:  # noqa: BLE001 - the next tick tries again
        log.exception("tick_failed", extra={"step": "update_gauges"})


POOL_DELETED = "pool_deleted"
ENDING_PAGE = 500  # groups ended per query; a pool's groups are paged through, never all in memory


def end_pool(deps: Deps, pool_id: str) -> int:
    """A deleted pool's groups that still wait (open, ready) turn ``failed`` (reason
    ``pool_deleted``): no processor key of it is left to fetch them. A group being processed
    keeps its lease and ends as any other; results and files follow the retention rule.
    Idempotent: a redelivered ``PoolDeleted`` finds nothing left to end."""
    ended = 0
    for status in (core.OPEN, core.READY):
        while True:
            page = deps.store.list_groups(pool_id, status, limit=ENDING_PAGE)
            moved = [g for g in (deps.store.mark_failed(g["_id"], deps.clock.time(), POOL_DELETED,
                                                        from_statuses=(status,)) for g in page) if g]
            for group in moved:
                publish_changed(deps, group)
            ended += len(moved)
            if len(page) < ENDING_PAGE or not moved:
                break
    log.info("pool_ended", extra={"pool_id": pool_id, "groups_ended": ended})
    return ended
