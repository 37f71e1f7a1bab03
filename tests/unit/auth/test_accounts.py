"""Signup, login, logout, validate and the users list, on the in-memory store and broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.auth import accounts
from services.auth.accounts import Caller
from services.auth.deps import Deps
from services.common.contracts import TokenRevoked
from services.common.errors import ApiError
from services.common.testing import FakeClock, InMemoryBroker
from services.common.testing.auth import FakeAuthStore

from .conftest import metric


def refused(fn: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fn()
    return caught.value


def test_signup_gives_a_working_session(deps: Deps) -> None:
    session = accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    assert session["user_name"] == "alice" and session["role"] == "user" and session["token_type"] == "Bearer"
    assert session["expires_in"] == 600
    who = accounts.authenticate(deps, session["access_token"])
    assert who.identity["user_id"] == session["user_id"] and not who.is_admin
    assert metric(deps, "auth_signups_total") == 1


def test_signup_duplicate_name_is_a_conflict_regardless_of_case(deps: Deps) -> None:
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    err = refused(lambda: accounts.signup(deps, {"user_name": "ALICE", "password": "password-456"}))
    assert (err.status, err.code) == (409, "conflict")
    assert len(deps.store.list_users()) == 2  # the admin and alice: nothing was added


@pytest.mark.parametrize("body", [{"user_name": "a", "password": "password-123"},
                                  {"user_name": "bob", "password": "short"},
                                  {"user_name": "bob", "password": 12345678},
                                  {"user_name": ["bob"], "password": "password-123"}])
def test_signup_bad_input_is_a_400(deps: Deps, body: dict[str, object]) -> None:
    err = refused(lambda: accounts.signup(deps, body))
    assert (err.status, err.code) == (400, "bad_request")
    assert [u["user_name"] for u in deps.store.list_users()] == ["admin"]


def test_login_wrong_password_and_unknown_user_read_the_same(deps: Deps) -> None:
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    wrong = refused(lambda: accounts.login(deps, "alice", {"password": "password-999"}))
    unknown = refused(lambda: accounts.login(deps, "nobody", {"password": "password-123"}))
    bad_name = refused(lambda: accounts.login(deps, "x", {"password": "password-123"}))
    assert wrong.body() == unknown.body() == bad_name.body()
    assert wrong.status == 401 and wrong.message == accounts.LOGIN_FAILED
    assert metric(deps, "auth_logins_total", {"outcome": "failed"}) == 3
    assert accounts.login(deps, "ALICE", {"password": "password-123"})["user_name"] == "alice"


def test_login_refuses_a_missing_or_huge_password(deps: Deps) -> None:
    assert refused(lambda: accounts.login(deps, "admin", {})).status == 400
    assert refused(lambda: accounts.login(deps, "admin", {"password": "p" * 5000})).status == 401


def test_logout_revokes_the_token_and_publishes(deps: Deps, login_as: Callable[..., Caller]) -> None:
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    session = accounts.login(deps, "alice", {"password": "password-123"})
    who = accounts.authenticate(deps, session["access_token"])
    answer = accounts.logout(deps, session["access_token"], "Alice")
    assert answer == {"user_name": "alice", "token_id": who.claims.jti, "logged_out": True}
    err = refused(lambda: accounts.authenticate(deps, session["access_token"]))
    assert err.status == 401 and "revoked" in err.message
    broker = deps.broker
    assert isinstance(broker, InMemoryBroker)
    assert broker.of_type(TokenRevoked) == [TokenRevoked(token_id=who.claims.jti, user_id=who.claims.user_id)]
    other = login_as("alice")  # another token of the same user is not touched
    assert other.claims.jti != who.claims.jti


def test_logout_of_another_user_is_forbidden(deps: Deps, login_as: Callable[..., Caller]) -> None:
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    token = _token_of(deps, "alice")
    assert refused(lambda: accounts.logout(deps, token, "admin")).status == 403
    assert accounts.authenticate(deps, token).identity["user_name"] == "alice"


def _token_of(deps: Deps, user_name: str) -> str:
    return str(accounts.login(deps, user_name, {"password": "password-123"})["access_token"])


def test_logout_still_succeeds_when_the_broker_refuses(deps: Deps, login_as: Callable[..., Caller]) -> None:
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    token = _token_of(deps, "alice")
    who = accounts.authenticate(deps, token)
    broker = deps.broker
    assert isinstance(broker, InMemoryBroker)
    broker.fail_publishes(1)
    assert accounts.logout(deps, token, "alice")["logged_out"] is True
    assert deps.store.identity(who.claims.user_id, who.claims.jti) is None  # durable anyway
    assert metric(deps, "auth_publish_failures_total", {"event": "TokenRevoked"}) == 1


def test_validate_refuses_expired_tokens_by_the_clock(deps: Deps) -> None:
    token = _signup_token(deps, "alice")
    doc = accounts.validate(accounts.authenticate(deps, token))
    assert doc["user_name"] == "alice" and doc["pools"] == [] and doc["expires_at"] > 0
    clock = deps.clock
    assert isinstance(clock, FakeClock)
    clock.advance(599)
    accounts.authenticate(deps, token)
    clock.advance(1)
    err = refused(lambda: accounts.authenticate(deps, token))
    assert err.status == 401 and "expired" in err.message
    assert metric(deps, "auth_validations_total", {"outcome": "invalid"}) == 1


def test_validate_refuses_missing_forged_and_deleted_users(deps: Deps) -> None:
    token = _signup_token(deps, "alice")
    assert refused(lambda: accounts.authenticate(deps, None)).status == 401
    assert refused(lambda: accounts.authenticate(deps, token[:-2] + "xx")).status == 401
    store = deps.store
    assert isinstance(store, FakeAuthStore)
    store.users.clear()
    assert refused(lambda: accounts.authenticate(deps, token)).status == 401
    assert metric(deps, "auth_validations_total", {"outcome": "missing"}) == 1
    assert metric(deps, "auth_validations_total", {"outcome": "revoked"}) == 1


def _signup_token(deps: Deps, user_name: str) -> str:
    return str(accounts.signup(deps, {"user_name": user_name, "password": "password-123"})["access_token"])


def test_users_list_is_admin_only(deps: Deps, login_as: Callable[..., Caller]) -> None:
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    assert refused(lambda: accounts.users(deps, login_as("alice"))).status == 403
    listed = accounts.users(deps, login_as("admin", "admin-password"))["users"]
    assert [u["user_name"] for u in listed] == ["admin", "alice"]
    assert all("password_hash" not in u for u in listed)


def test_bootstrap_admin_keeps_an_existing_password(deps: Deps) -> None:
    assert accounts.bootstrap_admin(deps.store, deps.passwords, "admin", "another-password") is False
    assert accounts.login(deps, "admin", {"password": "admin-password"})["role"] == "admin"
    accounts.signup(deps, {"user_name": "ivy", "password": "password-123"})
    assert accounts.bootstrap_admin(deps.store, deps.passwords, "ivy", "whatever-pass") is False
    assert accounts.login(deps, "ivy", {"password": "password-123"})["role"] == "admin"
