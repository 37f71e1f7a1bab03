"""The shared revocation list's reader: what it refuses, its 1 s cache, its bound, Redis down."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.common import revocations
from services.common.authclient import Identity
from services.common.revocations import RevocationList, RevocationsUnavailable
from services.common.testing.auth import FakeRevocations

PREFIX = "t"


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


class CountingRedis(FakeRevocations):
    calls: int = 0

    def mget(self, keys):  # type: ignore[no-untyped-def,override]
        self.calls += 1
        return super().mget(keys)


def ident(token_id: str = "t1", session_id: str | None = "s1", issued_at: float | None = 1000.0) -> Identity:
    return Identity(user_id="u1", user_name="alice", role="user", token_id=token_id, session_id=session_id,
                    issued_at=issued_at)


def test_token_login_and_not_before_each_refuse() -> None:
    redis = FakeRevocations()
    reader = RevocationList(redis, PREFIX, cache_seconds=0)
    assert not reader.is_revoked(ident())
    redis.write([(revocations.token_key(PREFIX, "t1"), "1", 60)])
    assert reader.is_revoked(ident()) and not reader.is_revoked(ident(token_id="t2"))
    redis.write([(revocations.session_key(PREFIX, "s2"), "1", 60)])
    assert reader.is_revoked(ident(token_id="t3", session_id="s2"))
    assert not reader.is_revoked(ident(token_id="t3", session_id=None))
    # "Not valid before" 1000.5 s: a token issued at 1000.0 is refused, one issued at 1000.6 is not.
    redis.write([(revocations.user_key(PREFIX, "u1"), "1000500", 60)])
    assert reader.is_revoked(ident(token_id="t4", session_id="s4", issued_at=1000.0))
    assert not reader.is_revoked(ident(token_id="t4", session_id="s4", issued_at=1000.6))
    assert reader.is_revoked(ident(token_id="t4", session_id="s4", issued_at=None))  # unknown age: refused


def test_a_mapping_such_as_the_validate_answer_is_taken() -> None:
    redis = FakeRevocations()
    redis.write([(revocations.session_key(PREFIX, "s9"), "1", 60)])
    reader = RevocationList(redis, PREFIX)
    assert reader.is_revoked({"user_id": "u1", "token_id": "t", "session_id": "s9", "issued_at": 5.0})
    assert not reader.is_revoked({"user_id": "u1", "token_id": "t", "session_id": "s8", "issued_at": 5.0})


def test_answers_are_cached_at_most_a_second() -> None:
    redis, clock = CountingRedis(), Clock()
    reader = RevocationList(redis, PREFIX, clock=clock)
    assert not reader.is_revoked(ident())
    redis.write([(revocations.token_key(PREFIX, "t1"), "1", 60)])
    clock.now += 0.5
    assert not reader.is_revoked(ident()) and redis.calls == 1  # from the cache
    clock.now += 0.6
    assert reader.is_revoked(ident()) and redis.calls == 2  # 1.1 s later: read again, seen


def test_the_cache_is_bounded() -> None:
    reader = RevocationList(FakeRevocations(), PREFIX, max_entries=10)
    for i in range(50):
        reader.is_revoked(ident(token_id=f"t{i}", session_id=f"s{i}"))
    assert len(reader._cache) == 10


def test_an_unreadable_list_raises_instead_of_serving() -> None:
    redis = FakeRevocations(down=True)
    with pytest.raises(RevocationsUnavailable):
        RevocationList(redis, PREFIX).is_revoked(ident())


def test_a_cache_longer_than_a_second_is_refused() -> None:
    with pytest.raises(ValueError):
        RevocationList(FakeRevocations(), PREFIX, cache_seconds=5)


def test_after_a_failed_read_it_fails_fast_for_the_backoff_then_reads_again() -> None:
    redis, clock = CountingRedis(down=True), Clock()
    reader = RevocationList(redis, PREFIX, clock=clock, backoff_seconds=1.0)
    with pytest.raises(RevocationsUnavailable):
        reader.is_revoked(ident())
    redis.down = False
    clock.now += 0.5
    with pytest.raises(RevocationsUnavailable):
        reader.is_revoked(ident())  # not asked again yet
    assert redis.calls == 1
    clock.now += 0.6
    assert not reader.is_revoked(ident()) and redis.calls == 2
