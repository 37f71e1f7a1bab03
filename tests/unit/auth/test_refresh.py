"""Refresh tokens: rotation, reuse ends the login, logout ends the login, expiry, settings."""

from __future__ import annotations

import pytest

from services.auth import accounts, core
from services.auth.config import Settings
from services.auth.deps import Deps
from services.common.contracts import TokenRevoked
from services.common.errors import ApiError
from services.common.settings import ConfigError
from services.common.testing import FakeClock, InMemoryBroker
from services.common.testing.auth import FakeAuthStore

from .conftest import make_deps, metric


def status_of(fn) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as caught:
        fn()
    return caught.value.status


def _signup(deps: Deps, name: str = "alice") -> dict:
    return accounts.signup(deps, {"user_name": name, "password": "password-123"})


def test_signup_and_login_answer_a_refresh_token_stored_only_hashed(deps: Deps) -> None:
    first = _signup(deps)
    second = accounts.login(deps, "alice", {"password": "password-123"})
    assert first["expires_in"] == second["expires_in"] == 600
    assert first["refresh_token"].startswith("rt_") and first["refresh_token"] != second["refresh_token"]
    store = deps.store
    assert isinstance(store, FakeAuthStore)
    assert core.hash_refresh_token(first["refresh_token"]) in store.refresh
    assert first["refresh_token"] not in repr(store.refresh) + repr(store.sessions)


def test_refresh_rotates_and_each_refresh_token_works_once(deps: Deps) -> None:
    login = _signup(deps)
    renewed = accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    assert renewed["refresh_token"] != login["refresh_token"] and renewed["expires_in"] == 600
    who = accounts.authenticate(deps, renewed["access_token"])
    assert who.identity["user_name"] == "alice" and who.claims.session_id is not None
    again = accounts.refresh(deps, {"refresh_token": renewed["refresh_token"]})
    assert accounts.authenticate(deps, again["access_token"]).claims.session_id == who.claims.session_id
    assert metric(deps, "auth_refreshes_total", {"outcome": "ok"}) == 2


def test_reusing_a_used_refresh_token_revokes_the_whole_login(deps: Deps) -> None:
    login = _signup(deps)
    other_login = accounts.login(deps, "alice", {"password": "password-123"})
    renewed = accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    assert status_of(lambda: accounts.refresh(deps, {"refresh_token": login["refresh_token"]})) == 401
    # Every token of that login ends: the first access token, the renewed one, the newest refresh token.
    for token in (login["access_token"], renewed["access_token"]):
        assert status_of(lambda t=token: accounts.authenticate(deps, t)) == 401
    assert status_of(lambda: accounts.refresh(deps, {"refresh_token": renewed["refresh_token"]})) == 401
    # Another login of the same user is untouched.
    assert accounts.authenticate(deps, other_login["access_token"]).identity["user_name"] == "alice"
    assert accounts.refresh(deps, {"refresh_token": other_login["refresh_token"]})["access_token"]
    broker = deps.broker
    assert isinstance(broker, InMemoryBroker)
    assert [m.user_id for m in broker.of_type(TokenRevoked)] == [login["user_id"]]
    assert metric(deps, "auth_refreshes_total", {"outcome": "reused"}) == 1


def test_logout_ends_the_login_refresh_tokens_included(deps: Deps) -> None:
    login = _signup(deps)
    accounts.logout(deps, login["access_token"], "alice")
    assert status_of(lambda: accounts.refresh(deps, {"refresh_token": login["refresh_token"]})) == 401
    # A logout retried with the revoked (unexpired) token answers the same.
    assert accounts.logout(deps, login["access_token"], "alice")["logged_out"] is True
    assert metric(deps, "auth_tokens_revoked_total") == 1


@pytest.mark.parametrize("body", [{}, {"refresh_token": 5}, {"refresh_token": ""}, {"refresh_token": ["rt_x"]}])
def test_refresh_bad_input_is_a_400(deps: Deps, body: dict) -> None:
    assert status_of(lambda: accounts.refresh(deps, body)) == 400


@pytest.mark.parametrize("token", ["rt_unknown", "not-ours", "rt_" + "x" * 500])
def test_unknown_refresh_tokens_are_401(deps: Deps, token: str) -> None:
    assert status_of(lambda: accounts.refresh(deps, {"refresh_token": token})) == 401


def test_refresh_tokens_expire_and_access_tokens_follow_the_access_ttl() -> None:
    deps = make_deps(ACCESS_TOKEN_TTL_SECONDS="5", REFRESH_TOKEN_TTL_SECONDS="120")
    login = _signup(deps)
    clock = deps.clock
    assert isinstance(clock, FakeClock) and login["expires_in"] == 5
    clock.advance(6)
    assert status_of(lambda: accounts.authenticate(deps, login["access_token"])) == 401
    renewed = accounts.refresh(deps, {"refresh_token": login["refresh_token"]})  # rotated: 120 s more
    assert accounts.authenticate(deps, renewed["access_token"]).identity["user_name"] == "alice"
    clock.advance(121)
    assert status_of(lambda: accounts.refresh(deps, {"refresh_token": renewed["refresh_token"]})) == 401
    assert metric(deps, "auth_refreshes_total", {"outcome": "expired"}) == 1


def test_ttl_settings() -> None:
    assert Settings.from_env({"ACCESS_TOKEN_TTL_SECONDS": "5"}).token_ttl_seconds == 5
    assert Settings.from_env({"REFRESH_TOKEN_TTL_SECONDS": "3600"}).refresh_ttl_seconds == 3600
    for env in ({"ACCESS_TOKEN_TTL_SECONDS": "4"}, {"REFRESH_TOKEN_TTL_SECONDS": "10"}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)
