"""What a processor or an admin does to a group by hand: renew a lease, close a window, retry.

Each is one conditional transition in the store (409 when the group is not in the state it
leaves); a transition publishes ``GroupChanged`` and an audit record (``ticking.publish_changed``),
a lease renewal (no change of state) an audit record.
"""

from __future__ import annotations

from typing import Any

from services.common.httpkit import conflict

from . import core, ticking
from .core import epoch_iso
from .deps import Deps
from .groups import pool_group
from .pools import processing_timeout


def renew_lease(deps: Deps, pool_id: str, gid: str, actor: str) -> dict[str, Any]:
    """processing: the lease runs the pool's processing timeout from now."""
    group = pool_group(deps, pool_id, gid)
    if group["status"] != core.PROCESSING:
        raise conflict(f"the group is {group['status']}; only a processing group's lease can be renewed")
    timeout = processing_timeout(deps.pools.get(pool_id))
    renewed = deps.store.extend_lease(gid, deps.clock.time(), timeout)
    # (The group is read after the write: a ticker's expiry or a result landing in between shows
    # here as a group no longer processing, which is what it is by now.)
    if renewed is None or renewed.get("status") != core.PROCESSING or "lease_expires_at" not in renewed:
        raise conflict("the group is no longer processing")
    deps.audit.record("lease_renewed", actor=actor, group_id=gid, pool_id=pool_id,
                      lease_expires=epoch_iso(renewed["lease_expires_at"]))
    return {"group_id": gid, "status": renewed["status"], "lease_expires": epoch_iso(renewed["lease_expires_at"])}


def close(deps: Deps, pool_id: str, gid: str, actor: str) -> dict[str, Any]:
    """open -> ready now, whatever its window and quorum."""
    pool_group(deps, pool_id, gid)
    group = ticking.make_ready(deps, gid, actor=actor)
    if group is None:
        raise conflict(f"the group is {pool_group(deps, pool_id, gid)['status']}; only an open group can be closed")
    return group


def retry(deps: Deps, pool_id: str, gid: str, actor: str) -> dict[str, Any]:
    """failed -> ready again (its lease expiries counted afresh), announced to the processor."""
    pool_group(deps, pool_id, gid)
    group = deps.store.retry(gid, deps.clock.time())
    if group is None:
        raise conflict(f"the group is {pool_group(deps, pool_id, gid)['status']}; only a failed group can be retried")
    ticking.publish_changed(deps, group, actor)
    ticking.announce(deps, group)
    return group
