"""Signup and login rate limits (issue 10): per address, per user name, fail open without Redis."""

from __future__ import annotations

import logging

import pytest

from services.auth import accounts, core, events
from services.auth.deps import Deps
from services.common.errors import ApiError
from services.common.testing import FakeClock
from services.common.testing.auth import FakeRateCounters

from .conftest import make_deps, metric


def clock_of(deps: Deps) -> FakeClock:
    assert isinstance(deps.clock, FakeClock)
    return deps.clock


def test_rate_window_counts_down_to_the_next_minute() -> None:
    assert core.rate_window(120.0) == (2, 60)
    assert core.rate_window(179.2) == (2, 1)
    assert core.rate_window(179.99) == (2, 1)
    assert core.rate_key("login", "user", "Alice", 3) == core.rate_key("login", "user", "alice", 3)
    assert len(core.rate_key("login", "user", "x" * 100_000, 3)) < 80


def test_failed_logins_per_user_name_and_address_are_limited_then_the_window_passes() -> None:
    deps = make_deps(LOGIN_RATE_PER_MINUTE="3")
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    for _ in range(3):
        with pytest.raises(ApiError) as wrong:
            accounts.login(deps, "alice", {"password": "wrong-password"}, "10.0.0.1")
        assert wrong.value.status == 401
    # Someone guessing from 10.0.0.1 does not lock alice out from her own address.
    assert accounts.login(deps, "alice", {"password": "password-123"}, "10.0.0.2")["user_name"] == "alice"
    with pytest.raises(ApiError) as limited:  # from the guessing address, even the right password
        accounts.login(deps, "ALICE", {"password": "password-123"}, "10.0.0.1")
    assert (limited.value.status, limited.value.code) == (429, "overloaded")
    retry_after = limited.value.extra["retry_after"]
    assert 1 <= retry_after <= 60 and limited.value.body()["error"]["retry_after"] == retry_after
    assert metric(deps, "auth_rate_limited_total", {"action": "login", "scope": "user"}) == 1
    clock_of(deps).advance(retry_after)
    assert accounts.login(deps, "alice", {"password": "password-123"}, "10.0.0.1")["user_name"] == "alice"


def test_successful_logins_do_not_use_up_the_per_name_limit() -> None:
    deps = make_deps(LOGIN_RATE_PER_MINUTE="2", LOGIN_IP_RATE_PER_MINUTE="0")
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    for _ in range(5):
        accounts.login(deps, "alice", {"password": "password-123"}, "10.0.0.1")


def test_logins_per_address_are_limited() -> None:
    deps = make_deps(LOGIN_IP_RATE_PER_MINUTE="4", LOGIN_RATE_PER_MINUTE="0")
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    for _ in range(4):
        accounts.login(deps, "alice", {"password": "password-123"}, "10.0.0.1")
    with pytest.raises(ApiError) as limited:
        accounts.login(deps, "alice", {"password": "password-123"}, "10.0.0.1")
    assert limited.value.status == 429
    accounts.login(deps, "alice", {"password": "password-123"}, "10.0.0.9")  # another address is not held


def test_signups_per_address_and_per_name_are_limited() -> None:
    deps = make_deps(SIGNUP_IP_RATE_PER_MINUTE="3", SIGNUP_RATE_PER_MINUTE="2")
    for n in range(3):
        accounts.signup(deps, {"user_name": f"user{n}", "password": "password-123"}, "10.0.0.1")
    with pytest.raises(ApiError) as by_ip:
        accounts.signup(deps, {"user_name": "user9", "password": "password-123"}, "10.0.0.1")
    assert by_ip.value.status == 429
    assert deps.store.user_by_name("user9") is None  # nothing created, no hash computed
    with pytest.raises(ApiError) as taken:
        accounts.signup(deps, {"user_name": "user0", "password": "password-123"}, "10.0.0.2")
    assert taken.value.status == 409
    with pytest.raises(ApiError) as by_name:
        accounts.signup(deps, {"user_name": "USER0", "password": "password-123"}, "10.0.0.3")
    assert by_name.value.status == 429


def test_login_still_works_when_the_counters_are_down(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_last_warned", {})
    caplog.set_level(logging.WARNING)
    deps = make_deps(LOGIN_RATE_PER_MINUTE="1", LOGIN_IP_RATE_PER_MINUTE="1")
    accounts.signup(deps, {"user_name": "alice", "password": "password-123"})
    assert isinstance(deps.counters, FakeRateCounters)
    deps.counters.down = True
    for _ in range(3):
        assert accounts.login(deps, "alice", {"password": "password-123"}, "10.0.0.1")["user_name"] == "alice"
    assert metric(deps, "auth_rate_unchecked_total", {"action": "login"}) >= 3
    # Logged, but not once per request: a flood during an outage must not flood the logs.
    assert sum("rate counters unreachable" in r.getMessage() for r in caplog.records) == 1
