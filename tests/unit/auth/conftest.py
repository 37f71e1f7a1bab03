"""auth's deps built from in-memory stand-ins: no PostgreSQL, no RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from argon2 import PasswordHasher

from services.auth import accounts, core
from services.auth.accounts import Caller
from services.auth.config import Settings
from services.auth.deps import AuthMetrics, Deps
from services.common.audit import AuditTrail
from services.common.httpkit import ServiceMetrics
from services.common.revocations import RevocationList
from services.common.testing import FakeClock, InMemoryBroker
from services.common.testing.auth import FakeAuthStore, FakeRateCounters, FakeRevocations, FakeStorageProbe

# Real argon2id with small costs: each test hashes a handful of passwords.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
ENV = {"JWT_SECRET": "unit-jwt-secret-0123456789abcdef0123", "INTERNAL_API_KEY": "unit-internal-key",
       "ADMIN_USER": "admin", "ADMIN_PASSWORD": "admin-password", "ACCESS_TOKEN_TTL_SECONDS": "600",
       "STORAGE_SECRETS_KEY": "QWxsIHRoZSB1bml0IHRlc3RzIHNoYXJlIHRoaXMga2U="}


def make_deps(**env: str) -> Deps:
    settings = Settings.from_env({**ENV, **env})
    listed = FakeRevocations()
    clock = FakeClock()
    broker = InMemoryBroker()
    metrics = AuthMetrics(ServiceMetrics("auth"))
    return Deps(settings=settings, store=FakeAuthStore(), broker=broker,
                audit=AuditTrail(broker, "auth", metrics.audit_lost),
                passwords=core.Passwords(FAST_HASHER, slots=2), metrics=metrics,
                clock=clock, counters=FakeRateCounters(), revocations=listed,
                # cache 0: a unit test reads what it just wrote (the cache has tests of its own)
                revocation_list=RevocationList(listed, settings.common.redis_prefix, cache_seconds=0),
                storage_probe=FakeStorageProbe())


@pytest.fixture
def deps() -> Deps:
    made = make_deps()
    accounts.bootstrap_admin(made.store, made.passwords, "admin", "admin-password")
    return made


def metric(deps: Deps, name: str, labels: dict[str, str] | None = None) -> float:
    value = deps.metrics.registry.get_sample_value(name, labels or {})
    return float(value or 0.0)


@pytest.fixture
def login_as(deps: Deps) -> Callable[[str, str], Caller]:
    """Log in and authenticate the token, as a route would: the Caller behind it."""

    def login(user_name: str, password: str = "password-123") -> Caller:
        session = accounts.login(deps, user_name, {"password": password})
        return accounts.authenticate(deps, session["access_token"])

    return login
