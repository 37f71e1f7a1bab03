"""Acknowledged results: how far each member has got in its pool's result feed (SPEC ``ack-result``).

The gateway calls these (internal routes, ``X-Internal-Key``) for the member it has already
identified: ``ack`` when the member's client says it has every result up to ``seq``,
``acked`` when the member connects (its catch-up starts after that seq). An ack only moves
forward, and never past the pool's last result: a client cannot claim results that do not
exist yet (it would then skip them when they come).
"""

from __future__ import annotations

from typing import Any

from services.common import validation
from services.common.httpkit import bad_request

from .deps import Deps


def ack(deps: Deps, pool_id: str, user_id: str, body: Any) -> dict[str, Any]:
    """``{pool_id, acked_seq}``: the member's ack after moving it to ``body["seq"]`` (or past it)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object {seq}")
    raw = body.get("seq")
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise bad_request("seq must be a non-negative integer")
    # Within a 64-bit database field (and far beyond any pool's count of results).
    seq = validation.count_param(str(raw), "seq") or 0
    last = deps.store.last_seq(pool_id)
    if seq > last:
        raise bad_request(f"seq {seq} is beyond the pool's last result ({last})")
    if seq == 0:
        # Nothing to acknowledge (a pool without results, or an unknown pool id an admin may
        # name): no document is written, so such acks cannot grow the collection.
        current = deps.store.acked(pool_id, user_id)
        return {"pool_id": pool_id, "user_id": user_id, "acked_seq": current or 0}
    acked = deps.store.ack(pool_id, user_id, seq, deps.clock.time())
    return {"pool_id": pool_id, "user_id": user_id, "acked_seq": acked}


def acked(deps: Deps, pool_id: str, user_id: str) -> dict[str, Any]:
    """``{pool_id, user_id, acked_seq, last_seq}``; ``acked_seq`` is null when the member never acked."""
    return {"pool_id": pool_id, "user_id": user_id, "acked_seq": deps.store.acked(pool_id, user_id),
            "last_seq": deps.store.last_seq(pool_id)}
