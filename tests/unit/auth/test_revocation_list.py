"""auth writes the shared revocation list before answering; a reader (as the gateway) refuses what it lists."""

from __future__ import annotations

import pytest

from services.auth import accounts
from services.auth.deps import Deps
from services.common import revocations
from services.common.authclient import Identity
from services.common.contracts import TokenRevoked
from services.common.errors import ApiError
from services.common.revocations import RevocationList
from services.common.testing import InMemoryBroker
from services.common.testing.auth import FakeRevocations

from .conftest import metric


def _listed(deps: Deps) -> FakeRevocations:
    found = deps.revocations
    assert isinstance(found, FakeRevocations)
    return found


def gateway_reader(deps: Deps) -> RevocationList:
    """A reader as another service builds one: over the same Redis, with the real 1 s cache."""
    return RevocationList(_listed(deps), deps.settings.common.redis_prefix)


def identity_of(deps: Deps, token: str) -> Identity:
    """What the gateway holds for a socket: /auth/validate's answer."""
    return Identity.from_validate(accounts.validate(accounts.authenticate(deps, token)))


def _login(deps: Deps, name: str = "alice") -> dict:
    return accounts.signup(deps, {"user_name": name, "password": "password-123"})


def test_a_logout_whose_broker_publish_fails_is_still_refused_by_the_reader(deps: Deps) -> None:
    login = _login(deps)
    who = identity_of(deps, login["access_token"])
    other = identity_of(deps, accounts.login(deps, "alice", {"password": "password-123"})["access_token"])
    reader = gateway_reader(deps)
    assert who.session_id and who.issued_at and not reader.is_revoked(who)
    broker = deps.broker
    assert isinstance(broker, InMemoryBroker)
    broker.fail_publishes(1)
    assert accounts.logout(deps, login["access_token"], "alice")["logged_out"] is True
    assert broker.of_type(TokenRevoked) == []  # the broker message was lost
    fresh = gateway_reader(deps)  # no cached answer (the 1 s cache is tested apart)
    assert fresh.is_revoked(who)
    assert not fresh.is_revoked(other)  # another login of the same user lives on


def test_list_entries_live_as_long_as_the_tokens_they_refuse(deps: Deps) -> None:
    login = _login(deps)
    who = identity_of(deps, login["access_token"])
    accounts.logout(deps, login["access_token"], "alice")
    listed, prefix, now = _listed(deps), deps.settings.common.redis_prefix, deps.clock.time()
    assert who.expires_at is not None and who.token_id and who.session_id
    expected = who.expires_at - now + revocations.CLOCK_SLACK_SECONDS
    for key in (revocations.token_key(prefix, who.token_id), revocations.session_key(prefix, who.session_id)):
        ttl = listed.ttl(key)
        assert ttl is not None and expected <= ttl <= expected + 2, (key, ttl)


def test_a_logout_is_503_when_the_list_cannot_be_written_and_a_retry_completes_it(deps: Deps) -> None:
    login = _login(deps)
    who = identity_of(deps, login["access_token"])
    _listed(deps).down = True
    with pytest.raises(ApiError) as caught:
        accounts.logout(deps, login["access_token"], "alice")
    assert (caught.value.status, caught.value.code) == (503, "unavailable")
    assert metric(deps, "auth_revocation_write_failures_total") == 1
    _listed(deps).down = False
    assert not gateway_reader(deps).is_revoked(who)  # nothing listed: hence not a 200
    assert accounts.logout(deps, login["access_token"], "alice")["logged_out"] is True
    assert gateway_reader(deps).is_revoked(who)


def test_refresh_reuse_lists_the_login_so_every_access_token_of_it_is_refused(deps: Deps) -> None:
    login = _login(deps)
    renewed = accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    newest = identity_of(deps, renewed["access_token"])
    with pytest.raises(ApiError):
        accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    assert gateway_reader(deps).is_revoked(newest)


def test_a_reuse_whose_list_write_failed_is_listed_by_the_next_refused_refresh(deps: Deps) -> None:
    login = _login(deps)
    renewed = accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    newest = identity_of(deps, renewed["access_token"])
    _listed(deps).down = True
    with pytest.raises(ApiError) as caught:
        accounts.refresh(deps, {"refresh_token": login["refresh_token"]})
    assert caught.value.status == 503
    _listed(deps).down = False
    assert not gateway_reader(deps).is_revoked(newest)
    with pytest.raises(ApiError) as caught:
        accounts.refresh(deps, {"refresh_token": renewed["refresh_token"]})
    assert caught.value.status == 401
    assert gateway_reader(deps).is_revoked(newest)


def test_validate_honours_the_list(deps: Deps) -> None:
    login = _login(deps)
    who = identity_of(deps, login["access_token"])
    assert who.session_id is not None
    _listed(deps).write([(revocations.session_key(deps.settings.common.redis_prefix, who.session_id), "1", 60)])
    with pytest.raises(ApiError) as caught:
        accounts.authenticate(deps, login["access_token"])
    assert caught.value.status == 401


def test_validate_goes_on_from_postgresql_when_the_list_is_unreadable(deps: Deps) -> None:
    login = _login(deps)
    _listed(deps).down = True
    assert accounts.authenticate(deps, login["access_token"]).identity["user_name"] == "alice"
    assert metric(deps, "auth_revocation_read_failures_total") == 1
