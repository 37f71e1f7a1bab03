"""argon2 work cannot starve token validation: bounded slots, a bounded short wait, then 429."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from argon2 import PasswordHasher

from services.auth import accounts, core
from services.auth.config import Settings
from services.common.errors import ApiError
from services.common.settings import ConfigError

from .conftest import ENV, make_deps, metric


class GatedHasher(PasswordHasher):
    """FAST_HASHER's argon2, but ``hash`` of the password "block-me" waits until released."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8 * 1024, parallelism=1)
        self.entered = threading.Event()
        self.release = threading.Event()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        if password == "block-me":
            self.entered.set()
            assert self.release.wait(10), "test never released the hasher"
        return super().hash(password, salt=salt)


def test_busy_slots_answer_429_quickly_and_validate_does_not_wait() -> None:
    hasher = GatedHasher()
    passwords = core.Passwords(hasher, slots=1, queue=1, wait=0.2)
    deps = dataclasses.replace(make_deps(), passwords=passwords)
    token = accounts.signup(deps, {"user_name": "alice", "password": "password-123"})["access_token"]
    holder = threading.Thread(target=passwords.hash, args=("block-me",), daemon=True)
    holder.start()
    assert hasher.entered.wait(5)
    try:
        started = time.monotonic()
        with pytest.raises(ApiError) as busy:  # the one queue place: waits 0.2 s, then 429
            accounts.login(deps, "alice", {"password": "password-123"})
        assert time.monotonic() - started < 2
        assert (busy.value.status, busy.value.code, busy.value.extra["retry_after"]) == (429, "overloaded", 1)
        with pytest.raises(ApiError):
            accounts.signup(deps, {"user_name": "bob", "password": "password-123"})
        assert metric(deps, "auth_hash_busy_total") == 2
        started = time.monotonic()
        assert accounts.authenticate(deps, token).identity["user_name"] == "alice"
        assert time.monotonic() - started < 0.5
    finally:
        hasher.release.set()
        holder.join(5)
    assert accounts.login(deps, "alice", {"password": "password-123"})["user_name"] == "alice"


def test_a_full_queue_is_refused_without_waiting() -> None:
    hasher = GatedHasher()
    passwords = core.Passwords(hasher, slots=1, queue=0, wait=5.0)
    holder = threading.Thread(target=passwords.hash, args=("block-me",), daemon=True)
    holder.start()
    assert hasher.entered.wait(5)
    try:
        started = time.monotonic()
        with pytest.raises(core.Busy):
            passwords.verify(None, "anything")
        assert time.monotonic() - started < 1  # no queue place: refused at once, not after 5 s
    finally:
        hasher.release.set()
        holder.join(5)
    assert passwords.verify(passwords.hash("x" * 8), "x" * 8)


def test_threads_must_leave_room_for_validate() -> None:
    with pytest.raises(ConfigError, match="AUTH_THREADS"):
        Settings.from_env({**ENV, "AUTH_THREADS": "8", "AUTH_HASH_SLOTS": "4", "AUTH_HASH_QUEUE": "4"})
    settings = Settings.from_env({**ENV, "AUTH_THREADS": "12", "AUTH_HASH_SLOTS": "4", "AUTH_HASH_QUEUE": "4"})
    assert settings.threads - settings.hash_slots - settings.hash_queue >= 4
