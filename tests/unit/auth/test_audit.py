"""Every login, refusal, logout, user, pool, member and key change is in the audit trail, with its actor."""

from __future__ import annotations

import pytest

from services.auth import accounts, pools, processor_keys
from services.auth.deps import Deps
from services.common.contracts import AuditRecorded
from services.common.errors import ApiError
from services.common.testing import FakeClock, InMemoryBroker

from .conftest import metric


def trail(deps: Deps) -> list[AuditRecorded]:
    assert isinstance(deps.broker, InMemoryBroker)
    return [m for m in deps.broker.of_type(AuditRecorded) if m.service == "auth"]


def actions(deps: Deps) -> list[tuple[str, str, str]]:
    return [(m.action, m.actor, m.outcome) for m in trail(deps)]


def test_the_whole_story_is_audited_with_actors_and_no_secret(deps: Deps) -> None:
    secrets: list[str] = ["password-123", "admin-password", "password-999"]
    alice = accounts.signup(deps, {"user_name": "alice", "password": "password-123"}, "10.0.0.1")
    uid = alice["user_id"]
    with pytest.raises(ApiError):
        accounts.login(deps, "alice", {"password": "password-999"}, "10.0.0.2")
    with pytest.raises(ApiError):
        accounts.login(deps, "ghost" + "x" * 200, {"password": "password-999"})
    login = accounts.login(deps, "alice", {"password": "password-123"}, "10.0.0.3")
    renewed = accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    with pytest.raises(ApiError):
        accounts.refresh(deps, {"refresh_token": login["refresh_token"]})  # reuse
    admin_login = accounts.login(deps, "admin", {"password": "admin-password"})
    admin = accounts.authenticate(deps, admin_login["access_token"])
    aid = admin.identity["user_id"]
    pool = pools.create_pool(deps, admin, {"name": "P", "window_seconds": 60})
    pid = pool["pool_id"]
    pools.patch_pool(deps, admin, pid, {"on_short": "fail"})
    pools.add_member(deps, admin, pid, {"user_name": "alice", "role": "listener"})
    pools.remove_member(deps, admin, pid, "alice")
    key = processor_keys.create_key(deps, admin, pid)
    processor_keys.revoke_key(deps, admin, pid, key["key_id"])
    clock = deps.clock
    assert isinstance(clock, FakeClock)
    clock.advance(0.01)
    accounts.patch_user(deps, admin, "alice", {"role": "admin"})
    accounts.patch_user(deps, admin, "alice", {"disabled": True})
    pools.delete_pool(deps, admin, pid)
    accounts.logout(deps, admin_login["access_token"], "admin")
    secrets += [alice["access_token"], alice["refresh_token"], login["access_token"], login["refresh_token"],
                renewed["access_token"], renewed["refresh_token"], admin_login["access_token"],
                admin_login["refresh_token"], key["api_key"]]

    assert actions(deps) == [
        ("signup", uid, "ok"),
        ("login_failed", uid, "refused"),
        ("login_failed", "anonymous", "refused"),
        ("login", uid, "ok"),
        ("refresh_reused", uid, "refused"),
        ("login", aid, "ok"),
        ("pool_created", aid, "ok"),
        ("pool_changed", aid, "ok"),
        ("member_set", aid, "ok"),
        ("member_removed", aid, "ok"),
        ("processor_key_created", aid, "ok"),
        ("processor_key_revoked", aid, "ok"),
        ("user_role_changed", aid, "ok"),
        ("user_disabled", aid, "ok"),
        ("pool_deleted", aid, "ok"),
        ("logout", aid, "ok"),
    ]
    records = trail(deps)
    assert records[1].detail["client_ip"] == "10.0.0.2"
    assert len(records[2].detail["user_name"]) == 64  # a long refused name is cut, not kept whole
    assert all(r.pool_id == pid for r in records[6:12]) and records[14].pool_id == pid
    assert records[8].detail == {"actor_name": "admin", "user_id": uid, "user_name": "alice", "role": "listener"}
    assert records[12].detail["new_role"] == "admin" and records[12].detail["user_id"] == uid
    assert records[7].detail["changed"] == {"on_short": "fail"}
    wire = b"".join(r.encode() for r in records).decode()
    for secret in secrets:
        assert secret not in wire


def test_an_audit_record_that_cannot_be_published_does_not_stop_the_login(deps: Deps) -> None:
    accounts.signup(deps, {"user_name": "bob", "password": "password-123"})
    assert isinstance(deps.broker, InMemoryBroker)
    deps.broker.fail_publishes(1)
    assert accounts.login(deps, "bob", {"password": "password-123"})["user_name"] == "bob"
    assert metric(deps, "audit_write_lost_total") == 1
