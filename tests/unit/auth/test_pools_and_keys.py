"""Pools, members and processor keys, on the in-memory store and broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.auth import accounts, pools, processor_keys
from services.auth.accounts import Caller
from services.auth.deps import Deps
from services.common.contracts import MembershipChanged
from services.common.errors import ApiError
from services.common.testing import InMemoryBroker

POOL = {"name": "Morning", "window_seconds": 60, "processor_url": "http://proc.example:8080/run"}


def refused(fn: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fn()
    return caught.value


@pytest.fixture
def admin(login_as: Callable[..., Caller]) -> Caller:
    return login_as("admin", "admin-password")


@pytest.fixture
def alice(deps: Deps, login_as: Callable[..., Caller]) -> Caller:
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    return login_as("alice")


def broker_of(deps: Deps) -> InMemoryBroker:
    assert isinstance(deps.broker, InMemoryBroker)
    return deps.broker


def test_only_admins_create_pools(deps: Deps, admin: Caller, alice: Caller) -> None:
    assert refused(lambda: pools.create_pool(deps, alice, POOL)).status == 403
    pool = pools.create_pool(deps, admin, POOL)
    assert pool["pool_id"].startswith("p_") and pool["name"] == "Morning" and pool["window_seconds"] == 60
    err = refused(lambda: pools.create_pool(deps, admin, {"name": "x"}))
    assert (err.status, err.code) == (400, "bad_request") and "window_seconds" in err.message
    assert [p["pool_id"] for p in pools.list_pools(deps, admin)] == [pool["pool_id"]]


def test_member_management_publishes_membership_changed(deps: Deps, admin: Caller, alice: Caller,
                                                       login_as: Callable[..., Caller]) -> None:
    pid = pools.create_pool(deps, admin, POOL)["pool_id"]
    added = pools.add_member(deps, admin, pid, {"user_name": "alice", "role": "contributor"})
    assert added["role"] == "contributor" and added["user_name"] == "alice"
    uid = alice.identity["user_id"]
    changes = broker_of(deps).of_type(MembershipChanged)
    assert changes == [MembershipChanged(pool_id=pid, user_id=uid, user_name="alice", role="contributor")]
    listed = pools.members(deps, login_as("alice"), pid)
    assert listed == [{"user_id": uid, "user_name": "alice", "role": "contributor"}]
    removed = pools.remove_member(deps, admin, pid, "alice")
    assert removed["removed"] is True
    assert broker_of(deps).of_type(MembershipChanged)[-1].role is None
    assert refused(lambda: pools.remove_member(deps, admin, pid, "alice")).status == 404
    assert len(broker_of(deps).of_type(MembershipChanged)) == 2  # a refused removal publishes nothing


def test_member_management_is_admin_only_and_checks_input(deps: Deps, admin: Caller, alice: Caller) -> None:
    pid = pools.create_pool(deps, admin, POOL)["pool_id"]
    assert refused(lambda: pools.add_member(deps, alice, pid, {"user_name": "alice", "role": "listener"})).status \
        == 403
    assert refused(lambda: pools.add_member(deps, admin, pid, {"user_name": "alice", "role": "owner"})).status == 400
    assert refused(lambda: pools.add_member(deps, admin, pid, {"user_name": "nobody", "role": "listener"})).status \
        == 404
    assert refused(lambda: pools.add_member(deps, admin, "p_none", {"user_name": "alice", "role": "listener"})) \
        .status == 404
    assert refused(lambda: pools.remove_member(deps, alice, pid, "alice")).status == 403
    assert broker_of(deps).of_type(MembershipChanged) == []


def test_members_see_their_pool_others_do_not(deps: Deps, admin: Caller, alice: Caller,
                                              login_as: Callable[..., Caller]) -> None:
    pid = pools.create_pool(deps, admin, POOL)["pool_id"]
    assert refused(lambda: pools.get_pool(deps, alice, pid)).status == 403
    assert pools.list_pools(deps, alice) == []
    pools.add_member(deps, admin, pid, {"user_name": "alice", "role": "listener"})
    alice = login_as("alice")  # a fresh identity: the membership is read per request
    assert pools.get_pool(deps, alice, pid)["role"] == "listener"
    assert [p["role"] for p in pools.list_pools(deps, alice)] == ["listener"]
    assert pools.get_pool(deps, admin, pid)["role"] is None
    assert refused(lambda: pools.get_pool(deps, alice, "p_" + "x" * 200)).status == 404


def test_processor_keys_create_verify_revoke(deps: Deps, admin: Caller, alice: Caller) -> None:
    pid = pools.create_pool(deps, admin, POOL)["pool_id"]
    assert refused(lambda: processor_keys.create_key(deps, alice, pid)).status == 403
    key = processor_keys.create_key(deps, admin, pid)
    assert processor_keys.verify_key(deps, key["api_key"]) == {"pool_id": pid, "key_id": key["key_id"]}
    forged = key["api_key"][:-1] + ("0" if key["api_key"][-1] != "0" else "1")
    for bad in (forged, "pk_nothing", None, 42):
        assert refused(lambda bad=bad: processor_keys.verify_key(deps, bad)).status == 401
    assert refused(lambda: processor_keys.list_keys(deps, alice, pid)).status == 403
    assert processor_keys.revoke_key(deps, admin, pid, key["key_id"])["revoked"] is True
    assert refused(lambda: processor_keys.verify_key(deps, key["api_key"])).status == 401
    listed = processor_keys.list_keys(deps, admin, pid)
    assert [(k["key_id"], k["revoked"]) for k in listed] == [(key["key_id"], True)]
    assert refused(lambda: processor_keys.revoke_key(deps, admin, pid, "nokey")).status == 404
    assert "api_key" not in listed[0] and "key_hash" not in listed[0]


def test_internal_pool_views(deps: Deps, admin: Caller, alice: Caller) -> None:
    pid = pools.create_pool(deps, admin, POOL)["pool_id"]
    pools.add_member(deps, admin, pid, {"user_name": "alice", "role": "contributor"})
    assert pools.internal_pool(deps, pid)["processor_url"] == POOL["processor_url"]
    assert [m["user_name"] for m in pools.internal_members(deps, pid)] == ["alice"]
    assert refused(lambda: pools.internal_members(deps, "p_missing")).status == 404


def test_processor_url_is_shown_to_admins_only(deps: Deps, admin: Caller, alice: Caller,
                                               login_as: Callable[..., Caller]) -> None:
    pid = pools.create_pool(deps, admin, POOL)["pool_id"]
    pools.add_member(deps, admin, pid, {"user_name": "alice", "role": "contributor"})
    alice = login_as("alice")
    assert "processor_url" not in pools.get_pool(deps, alice, pid)
    assert all("processor_url" not in p for p in pools.list_pools(deps, alice))
    assert pools.get_pool(deps, alice, pid)["window_seconds"] == 60  # the rest of the pool is there
    assert pools.get_pool(deps, admin, pid)["processor_url"] == POOL["processor_url"]
    assert pools.list_pools(deps, admin)[0]["processor_url"] == POOL["processor_url"]
