"""Lease renewal, close, retry and the quorum rule, through the real routes and ticker on in-memory stores."""

from __future__ import annotations

from services.common.authclient import Identity
from services.common.contracts import AuditRecorded, GroupChanged, PoolDeleted
from services.pool_aggregator import core, handlers, ticking

from .conftest import KEY, MEMBER, OTHER_KEY, POOL, Kit, W

ADMIN = "tok-admin"


def _group(kit: Kit, owners: tuple[str, ...] = ("u1",), prefix: str = "f") -> str:
    start = kit.window_start()
    for n, owner in enumerate(owners):
        kit.deliver(kit.stored(f"{prefix}{n}", ts=start + n, owner=owner))
    return core.group_id(POOL, start)


def _changes(kit: Kit, gid: str) -> list[tuple[str, str | None, bool | None]]:
    return [(m.status, m.reason, m.short) for m in kit.broker.of_type(GroupChanged) if m.group_id == gid]


def _audited(kit: Kit, action: str) -> list[AuditRecorded]:
    return [a for a in kit.broker.of_type(AuditRecorded) if a.action == action]


def test_lease_renewal_extends_a_processing_groups_lease_only(kit: Kit) -> None:
    gid = _group(kit)
    client = kit.app.test_client()
    url = f"/pools/{POOL}/groups/{gid}/lease"
    assert client.post(url, headers={"X-API-Key": KEY}).status_code == 409  # still open
    kit.clock.advance(W)
    ticking.promote_ready(kit.deps)
    client.get(f"/pools/{POOL}/groups/{gid}/files", headers={"X-API-Key": KEY})
    kit.clock.advance(25)  # the 30 s lease has 5 s left
    renewed = client.post(url, headers={"X-API-Key": KEY})
    assert renewed.status_code == 200
    assert renewed.get_json()["lease_expires"] == core.epoch_iso(kit.clock.time() + 30)
    kit.clock.advance(20)  # past the first lease, within the renewed one
    assert ticking.expire_leases(kit.deps) == 0 and kit.store.get(gid)["status"] == "processing"
    assert [a.actor for a in _audited(kit, "lease_renewed")] == ["processor-key:k1"]
    for headers, status in (({"X-API-Key": OTHER_KEY}, 403), ({"Authorization": f"Bearer {MEMBER}"}, 403), ({}, 401)):
        assert client.post(url, headers=headers).status_code == status
    assert client.post(f"/pools/{POOL}/groups/{POOL}-0/lease", headers={"X-API-Key": KEY}).status_code == 404


def test_close_turns_an_open_group_ready_now_for_the_key_or_an_admin(kit: Kit) -> None:
    kit.auth.tokens[ADMIN] = Identity("u0", "admin", "admin", {})
    gid = _group(kit)
    client = kit.app.test_client()
    url = f"/pools/{POOL}/groups/{gid}/close"
    assert client.post(url, headers={"Authorization": f"Bearer {MEMBER}"}).status_code == 403
    assert kit.store.get(gid)["status"] == "open"
    closed = client.post(url, headers={"Authorization": f"Bearer {ADMIN}"})
    assert closed.status_code == 200 and closed.get_json()["status"] == "ready"
    assert _changes(kit, gid) == [("ready", None, None)]
    assert (gid in [g for _, g in kit.announcer.announced])
    again = client.post(url, headers={"X-API-Key": KEY})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"
    assert [(a.actor, a.detail["status"]) for a in _audited(kit, "group_status")] == [("user:u0", "ready")]


def test_quorum_met_is_ready_at_once_and_not_short(kit: Kit) -> None:
    kit.auth.pools[POOL].update(min_contributors=2, quorum_wait_seconds=60, on_short="fail")
    gid = _group(kit, owners=("u1", "u2"))
    assert kit.store.get(gid)["status"] == "ready" and not kit.store.get(gid).get("short")
    assert _changes(kit, gid) == [("ready", None, None)]


def test_quorum_short_waits_then_fails_then_retry_makes_it_ready(kit: Kit) -> None:
    kit.auth.pools[POOL].update(min_contributors=3, quorum_wait_seconds=60, on_short="fail")
    gid = _group(kit, owners=("u1", "u2"))
    kit.clock.advance(W)
    ticking.promote_ready(kit.deps)
    assert kit.store.get(gid)["status"] == "open"  # short: waiting up to 60 s more
    kit.clock.advance(60)
    ticking.promote_ready(kit.deps)
    assert kit.store.get(gid)["status"] == "failed" and kit.store.get(gid)["reason"] == "quorum_not_met"
    assert _changes(kit, gid) == [("failed", "quorum_not_met", None)]
    listed = kit.app.test_client().get(f"/pools/{POOL}/groups", headers={"X-API-Key": KEY}).get_json()["groups"]
    assert (listed[0]["status"], listed[0]["reason"]) == ("failed", "quorum_not_met")
    client = kit.app.test_client()
    retried = client.post(f"/pools/{POOL}/groups/{gid}/retry", headers={"X-API-Key": KEY})
    assert retried.status_code == 200 and retried.get_json()["status"] == "ready"
    assert "reason" not in kit.store.get(gid)
    assert _changes(kit, gid)[-1] == ("ready", None, None)
    assert client.post(f"/pools/{POOL}/groups/{gid}/retry", headers={"X-API-Key": KEY}).status_code == 409


def test_quorum_short_with_process_turns_ready_short(kit: Kit) -> None:
    kit.auth.pools[POOL].update(min_contributors=3, quorum_wait_seconds=10, on_short="process")
    gid = _group(kit, owners=("u1",))
    kit.clock.advance(W + 5)
    ticking.promote_ready(kit.deps)
    assert kit.store.get(gid)["status"] == "open"
    kit.clock.advance(5)
    ticking.promote_ready(kit.deps)
    assert kit.store.get(gid)["status"] == "ready" and kit.store.get(gid)["short"] is True
    assert _changes(kit, gid) == [("ready", None, True)]
    listed = kit.app.test_client().get(f"/pools/{POOL}/groups", headers={"X-API-Key": KEY}).get_json()["groups"]
    assert listed[0]["short"] is True


def test_a_pool_without_quorum_settings_gets_the_defaults(kit: Kit) -> None:
    kit.auth.pools[POOL].update(min_contributors=2)  # auth sends no quorum_wait_seconds / on_short
    gid = _group(kit, owners=("u1",))
    kit.clock.advance(W)
    ticking.promote_ready(kit.deps)
    assert (kit.store.get(gid)["status"], kit.store.get(gid)["short"]) == ("ready", True)


def test_a_lease_that_runs_out_for_good_fails_with_a_reason_and_can_be_retried(kit: Kit) -> None:
    gid = _group(kit)
    kit.clock.advance(W)
    ticking.promote_ready(kit.deps)
    for _ in range(3):
        kit.app.test_client().get(f"/pools/{POOL}/groups/{gid}/files", headers={"X-API-Key": KEY})
        kit.clock.advance(31)
        ticking.expire_leases(kit.deps)
    assert (kit.store.get(gid)["status"], kit.store.get(gid)["reason"]) == ("failed", "lease_expired")
    assert _changes(kit, gid)[-1] == ("failed", "lease_expired", None)
    assert kit.app.test_client().post(f"/pools/{POOL}/groups/{gid}/retry",
                                      headers={"X-API-Key": KEY}).status_code == 200
    assert kit.store.get(gid)["lease_expiries"] == 0


def test_a_deleted_pools_waiting_groups_end_and_the_rest_keep_going(kit: Kit) -> None:
    waiting = _group(kit)  # open, this window
    kit.clock.advance(W)
    ticking.promote_ready(kit.deps)  # the first window is ready now
    still_open = _group(kit, prefix="g")  # the next window, open
    kit.broker.publish(PoolDeleted(pool_id=POOL))
    kit.broker.deliver(handlers.consumers(kit.deps))
    assert kit.store.get(waiting)["status"] == core.FAILED
    assert kit.store.get(still_open)["status"] == core.FAILED
    assert _changes(kit, waiting)[-1] == (core.FAILED, "pool_deleted", None)
    assert _changes(kit, still_open)[-1] == (core.FAILED, "pool_deleted", None)
    published = len(kit.broker.of_type(GroupChanged))
    kit.broker.publish(PoolDeleted(pool_id=POOL))  # redelivered: nothing left to end
    kit.broker.deliver(handlers.consumers(kit.deps))
    assert len(kit.broker.of_type(GroupChanged)) == published


def test_deleting_a_pool_leaves_other_pools_alone(kit: Kit) -> None:
    gid = _group(kit)
    kit.broker.publish(PoolDeleted(pool_id="another-pool"))
    kit.broker.deliver(handlers.consumers(kit.deps))
    assert kit.store.get(gid)["status"] == core.OPEN


def test_the_runtime_starts_the_audit_trail_the_service_records_into(kit: Kit) -> None:
    from services.common.runtime import runtime_of

    assert runtime_of(kit.app).audit is kit.deps.audit
