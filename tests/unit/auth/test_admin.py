"""Admin control: the users list paged, PATCH users (role, disabled), PATCH and DELETE pools."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.auth import accounts, core, pools, processor_keys
from services.auth.accounts import Caller
from services.auth.deps import Deps
from services.common.authclient import Identity
from services.common.contracts import MembershipChanged, PoolDeleted, TokenRevoked
from services.common.errors import ApiError
from services.common.revocations import RevocationList
from services.common.testing import FakeClock, InMemoryBroker
from services.common.testing.auth import FakeRevocations

POOL = {"name": "Morning", "window_seconds": 60}


def refused(fn: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fn()
    return caught.value


@pytest.fixture
def admin(login_as: Callable[..., Caller]) -> Caller:
    return login_as("admin", "admin-password")


def signup(deps: Deps, name: str) -> dict:
    return accounts.signup(deps, {"user_name": name, "password": "password-123"})


def broker_of(deps: Deps) -> InMemoryBroker:
    assert isinstance(deps.broker, InMemoryBroker)
    return deps.broker


# --- the users list -------------------------------------------------------------------------


def test_users_are_paged_with_a_cursor_and_nothing_is_cut(deps: Deps, admin: Caller) -> None:
    for i in range(6):
        signup(deps, f"user{i}")
    seen, cursor, pages = [], None, 0
    while True:
        page = accounts.users(deps, admin, "3", cursor)
        assert len(page["users"]) <= 3
        seen += [u["user_name"] for u in page["users"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["admin"] + [f"user{i}" for i in range(6)] and pages == 3
    first = accounts.users(deps, admin)["users"][0]
    assert set(first) == {"user_id", "user_name", "role", "disabled", "created"} and first["disabled"] is False


@pytest.mark.parametrize(("limit", "cursor"), [("0", None), ("1001", None), ("x", None), ("-1", None),
                                                ("²", None), (None, "zz"), (None, "a" * 33)])
def test_bad_paging_is_a_400(deps: Deps, admin: Caller, limit: str | None, cursor: str | None) -> None:
    err = refused(lambda: accounts.users(deps, admin, limit, cursor))
    assert (err.status, err.code) == (400, "bad_request")


def test_only_admins_list_or_change_users(deps: Deps, login_as: Callable[..., Caller]) -> None:
    signup(deps, "alice")
    alice = login_as("alice")
    assert refused(lambda: accounts.users(deps, alice)).status == 403
    assert refused(lambda: accounts.patch_user(deps, alice, "alice", {"role": "admin"})).status == 403
    assert deps.store.user_by_name("alice")["role"] == "user"  # type: ignore[index]


# --- PATCH users ----------------------------------------------------------------------------


def _gateway_view(deps: Deps, token: str) -> Identity:
    return Identity.from_validate(accounts.validate(accounts.authenticate(deps, token)))


def _reader(deps: Deps) -> RevocationList:
    listed = deps.revocations
    assert isinstance(listed, FakeRevocations)
    return RevocationList(listed, deps.settings.common.redis_prefix, cache_seconds=0)


def _later(deps: Deps) -> None:
    clock = deps.clock
    assert isinstance(clock, FakeClock)
    clock.advance(0.01)


def test_a_role_change_refuses_older_tokens_and_refresh_gives_the_new_role(deps: Deps, admin: Caller) -> None:
    login = signup(deps, "alice")
    seen = _gateway_view(deps, login["access_token"])
    _later(deps)
    changed = accounts.patch_user(deps, admin, "alice", {"role": "admin"})
    assert changed["role"] == "admin" and changed["disabled"] is False
    assert refused(lambda: accounts.authenticate(deps, login["access_token"])).status == 401
    assert _reader(deps).is_revoked(seen)
    _later(deps)
    renewed = accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    who = accounts.authenticate(deps, renewed["access_token"])
    assert who.is_admin and who.claims.role == "admin"
    assert not _reader(deps).is_revoked(_gateway_view(deps, renewed["access_token"]))


def test_a_disabled_user_is_refused_everywhere(deps: Deps, admin: Caller) -> None:
    login = signup(deps, "bob")
    seen = _gateway_view(deps, login["access_token"])
    _later(deps)
    assert accounts.patch_user(deps, admin, "bob", {"disabled": True})["disabled"] is True
    assert refused(lambda: accounts.authenticate(deps, login["access_token"])).status == 401
    assert _reader(deps).is_revoked(seen)
    assert refused(lambda: accounts.refresh(deps, {"refresh_token": login["refresh_token"]})).status == 401
    err = refused(lambda: accounts.login(deps, "bob", {"password": "password-123"}))
    assert (err.status, err.code) == (403, "forbidden")
    # A wrong password still reads as any failed login: "disabled" is told only to the password's holder.
    assert refused(lambda: accounts.login(deps, "bob", {"password": "password-999"})).status == 401
    assert TokenRevoked(token_id=seen.token_id or "", user_id=seen.user_id) in broker_of(deps).of_type(TokenRevoked)
    _later(deps)
    accounts.patch_user(deps, admin, "bob", {"disabled": False})
    again = accounts.login(deps, "bob", {"password": "password-123"})
    assert accounts.authenticate(deps, again["access_token"]).identity["user_name"] == "bob"
    assert not _reader(deps).is_revoked(_gateway_view(deps, again["access_token"]))


def test_disabling_is_503_when_the_list_cannot_be_written_and_a_retry_completes_it(deps: Deps,
                                                                                    admin: Caller) -> None:
    listed = deps.revocations
    assert isinstance(listed, FakeRevocations)
    login = signup(deps, "carl2")
    seen = _gateway_view(deps, login["access_token"])
    _later(deps)
    listed.down = True
    err = refused(lambda: accounts.patch_user(deps, admin, "carl2", {"disabled": True}))
    assert (err.status, err.code) == (503, "unavailable")
    listed.down = False
    assert not _reader(deps).is_revoked(seen)
    # The same PATCH again completes it, although the store already says disabled.
    assert accounts.patch_user(deps, admin, "carl2", {"disabled": True})["disabled"] is True
    assert _reader(deps).is_revoked(seen)


@pytest.mark.parametrize("body", [{}, {"role": "root"}, {"disabled": "yes"}, {"disabled": 1}, {"role": None}])
def test_bad_user_patches_are_a_400(deps: Deps, admin: Caller, body: dict) -> None:
    signup(deps, "dina")
    assert refused(lambda: accounts.patch_user(deps, admin, "dina", body)).status == 400
    assert deps.store.user_by_name("dina")["role"] == "user"  # type: ignore[index]


def test_unknown_users_and_self_lockout(deps: Deps, admin: Caller) -> None:
    assert refused(lambda: accounts.patch_user(deps, admin, "nobody", {"role": "admin"})).status == 404
    assert refused(lambda: accounts.patch_user(deps, admin, "admin", {"disabled": True})).status == 403
    assert refused(lambda: accounts.patch_user(deps, admin, "admin", {"role": "user"})).status == 403
    assert accounts.authenticate(deps, accounts.login(deps, "admin", {"password": "admin-password"})[
        "access_token"]).is_admin


# --- PATCH / DELETE pools ---------------------------------------------------------------------


def test_patch_pool_changes_fields_checked_as_post_checks_them(deps: Deps, admin: Caller) -> None:
    pool = pools.create_pool(deps, admin, POOL)
    assert (pool["quorum_wait_seconds"], pool["on_short"], pool["max_late_seconds"]) == (0, "process", 7 * 86400)
    changed = pools.patch_pool(deps, admin, pool["pool_id"], {"min_contributors": 3, "quorum_wait_seconds": 120,
                                                              "on_short": "fail", "max_late_seconds": 3600})
    assert (changed["min_contributors"], changed["quorum_wait_seconds"], changed["on_short"],
            changed["max_late_seconds"], changed["window_seconds"], changed["name"]) == (3, 120, "fail", 3600, 60,
                                                                                       "Morning")
    assert deps.store.get_pool(pool["pool_id"]) == changed
    for body in ({}, {"on_short": "maybe"}, {"quorum_wait_seconds": -1}, {"window_seconds": 0},
                 {"name": ""}, {"max_late_seconds": True}, {"processor_url": "ftp://x"}):
        err = refused(lambda b=body: pools.patch_pool(deps, admin, pool["pool_id"], b))
        assert (err.status, err.code) == (400, "bad_request"), body
    assert deps.store.get_pool(pool["pool_id"]) == changed  # nothing half-applied
    assert pools.patch_pool(deps, admin, pool["pool_id"], {"min_contributors": None})["min_contributors"] is None
    assert refused(lambda: pools.patch_pool(deps, admin, "p_none", {"name": "x"})).status == 404


def test_post_pool_takes_the_quorum_fields(deps: Deps, admin: Caller) -> None:
    pool = pools.create_pool(deps, admin, {**POOL, "min_contributors": 2, "quorum_wait_seconds": 30,
                                           "on_short": "fail"})
    assert (pool["quorum_wait_seconds"], pool["on_short"]) == (30, "fail")
    assert refused(lambda: pools.create_pool(deps, admin, {**POOL, "on_short": "drop"})).status == 400


def test_delete_pool_ends_members_and_keys_and_tells_the_fleet(deps: Deps, admin: Caller,
                                                                login_as: Callable[..., Caller]) -> None:
    pool = pools.create_pool(deps, admin, POOL)
    pid = pool["pool_id"]
    for name in ("erin", "finn"):
        signup(deps, name)
        pools.add_member(deps, admin, pid, {"user_name": name, "role": "contributor"})
    key = processor_keys.create_key(deps, admin, pid)["api_key"]
    erin = login_as("erin")
    assert refused(lambda: pools.delete_pool(deps, erin, pid)).status == 403
    answer = pools.delete_pool(deps, admin, pid)
    assert answer == {"pool_id": pid, "deleted": True, "members_removed": 2, "keys_revoked": 1}
    assert deps.store.get_pool(pid) is None and deps.store.members(pid) == []
    assert refused(lambda: processor_keys.verify_key(deps, key)).status == 401
    assert login_as("erin").identity["pools"] == []
    broker = broker_of(deps)
    removed = [m for m in broker.of_type(MembershipChanged) if m.role is None]
    assert sorted(m.user_name for m in removed) == ["erin", "finn"]
    assert broker.of_type(PoolDeleted) == [PoolDeleted(pool_id=pid)]
    assert refused(lambda: pools.delete_pool(deps, admin, pid)).status == 404


def test_a_token_minted_from_a_read_before_a_role_change_is_refused(deps: Deps, admin: Caller) -> None:
    """The race: a refresh reads the old role, the role change commits, then the token is signed."""
    login = signup(deps, "rory")
    store = deps.store
    real = store.rotate_refresh

    def rotate_then_change_role(*args: object, **kwargs: object) -> object:
        found = real(*args, **kwargs)  # type: ignore[arg-type]
        clock = deps.clock
        assert isinstance(clock, FakeClock)
        clock.advance(0.01)
        accounts.patch_user(deps, admin, "rory", {"role": "admin"})
        clock.advance(0.01)
        return found

    store.rotate_refresh = rotate_then_change_role  # type: ignore[method-assign]
    stale = accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    store.rotate_refresh = real  # type: ignore[method-assign]
    assert refused(lambda: accounts.authenticate(deps, stale["access_token"])).status == 401
    claims = core.decode_token(deps.settings.jwt_secret, stale["access_token"], now=deps.clock.time())
    assert claims.role == "user" and _reader(deps).is_revoked(claims)  # the gateway refuses it too
    fresh = accounts.refresh(deps, {"refresh_token": stale["refresh_token"]})
    assert accounts.authenticate(deps, fresh["access_token"]).claims.role == "admin"
