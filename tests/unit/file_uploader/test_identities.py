"""RecentIdentities: the tus door's few seconds of memory of validated tokens."""

from __future__ import annotations

import pytest

from services.common.authclient import AuthUnavailable
from services.common.testing import FakeAuth
from services.file_uploader.identities import RecentIdentities


class Counting(FakeAuth):
    calls: int = 0

    def validate(self, token):
        self.calls += 1
        return super().validate(token)


@pytest.fixture
def clock():
    now = [100.0]
    return now


def recent(auth, clock, **kw) -> RecentIdentities:
    return RecentIdentities(auth, clock=lambda: clock[0], **kw)


def test_an_identity_is_reused_within_ttl_then_asked_again(clock) -> None:
    auth = Counting()
    auth.add_user("t", "1", "a")
    cache = recent(auth, clock, ttl=2.0)
    assert cache.validate("t").user_id == "1"
    clock[0] += 1.9
    assert cache.validate("t").user_id == "1"
    assert auth.calls == 1
    del auth.tokens["t"]  # revoked at auth
    clock[0] += 0.2
    assert cache.validate("t") is None  # past ttl: auth's answer, the revocation, is seen
    assert auth.calls == 2


def test_refusals_are_not_remembered_and_auth_down_raises(clock) -> None:
    auth = Counting()
    cache = recent(auth, clock)
    assert cache.validate("new") is None
    auth.add_user("new", "2", "b")
    assert cache.validate("new").user_id == "2"
    assert cache.validate(None) is None and cache.validate("") is None
    auth.down = True
    with pytest.raises(AuthUnavailable):
        cache.validate("other")


def test_capacity_bounds_the_memory(clock) -> None:
    auth = Counting()
    for i in range(5):
        auth.add_user(f"t{i}", str(i), f"u{i}")
    cache = recent(auth, clock, capacity=3)
    for i in range(5):
        cache.validate(f"t{i}")
    assert len(cache._seen) == 3
    assert all("t" not in key for key in cache._seen)  # kept as sha256, never the bearer string
    cache.validate("t0")  # dropped earlier: asked again
    assert auth.calls == 6
