"""SPEC's timestamp rule at an upload's start: at most MAX_CLOCK_SKEW_SECONDS in the future
(configurable), at most the pool's max_late_seconds old (learned from auth, cached)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from services.common import timeutil, validation
from services.common.authclient import AuthUnavailable
from services.common.errors import ApiError
from services.common.httpkit import ServiceMetrics
from services.common.settings import CommonSettings
from services.common.testing import FakeAuth, InMemoryBroker
from services.common.testing.file_uploader import FakeUploadCache
from services.file_uploader import core
from services.file_uploader.config import Settings
from services.file_uploader.pools import PoolPolicies
from services.file_uploader.uploads import UploaderMetrics, UploadService
from services.socket_gateway import core as gateway_core

from .conftest import OWNER, WRITER


def ago(seconds: float) -> str:
    return timeutil.iso(timeutil.now() - timedelta(seconds=seconds))


class CountingAuth(FakeAuth):
    calls: int = 0

    def pool(self, pool_id: str):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().pool(pool_id)


@pytest.fixture
def auth() -> CountingAuth:
    return CountingAuth(pools={"p1": {"pool_id": "p1", "max_late_seconds": 60},
                               "p2": {"pool_id": "p2", "max_late_seconds": 3600}})


@pytest.fixture
def ruled(settings: Settings, cache: FakeUploadCache, broker: InMemoryBroker, auth: CountingAuth) -> UploadService:
    return UploadService(settings, cache, broker, UploaderMetrics(ServiceMetrics("file_uploader")),
                         pools=PoolPolicies(auth))


def begin(uploads: UploadService, **payload: object) -> tuple[dict, int]:
    return uploads.start({"file_name": "a.bin", "size": 16, **payload}, owner_id=OWNER, owner_name="alice",
                         writer=WRITER)


def refused(uploads: UploadService, **payload: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        begin(uploads, **payload)
    assert (info.value.status, info.value.code) == (400, "bad_request")
    return info.value


def test_an_update_older_than_its_pools_max_late_is_refused_with_400(ruled, cache) -> None:
    error = refused(ruled, pool_id="p1", timestamp=ago(61))
    assert "max_late_seconds" in error.message and not cache.uploads
    assert begin(ruled, pool_id="p1", timestamp=ago(50))[1] == 201
    # Another pool's rule is its own: an hour is fine in p2, not 2 hours.
    assert begin(ruled, pool_id="p2", timestamp=ago(61))[1] == 201
    refused(ruled, pool_id="p2", timestamp=ago(7200))


def test_one_late_item_refuses_the_whole_batch_and_names_it(ruled, cache) -> None:
    items = [{"offset": 0, "length": 8, "timestamp": ago(10)}, {"offset": 8, "length": 8, "timestamp": ago(120)}]
    error = refused(ruled, pool_id="p1", items=items)
    assert "items[1].timestamp" in error.message and not cache.uploads
    items[1]["timestamp"] = ago(5)
    assert begin(ruled, pool_id="p1", items=items)[1] == 201


def test_without_a_pool_or_for_a_result_there_is_no_max_late(ruled, auth) -> None:
    old = "2020-01-01T00:00:00Z"
    assert begin(ruled, timestamp=old)[1] == 201
    assert begin(ruled, pool_id="p1", timestamp=ago(3600), kind="result", group_id="g1")[1] == 201
    assert auth.calls == 0  # neither asked auth


def test_an_unknown_pool_gets_specs_default_of_seven_days(ruled) -> None:
    assert begin(ruled, pool_id="p9", timestamp=ago(6 * 86400))[1] == 201
    refused(ruled, pool_id="p9", timestamp=ago(7 * 86400 + 60))


def test_the_default_service_applies_specs_seven_days_to_every_pool(uploads) -> None:
    assert begin(uploads, pool_id="p1", timestamp=ago(86400))[1] == 201
    refused(uploads, pool_id="p1", timestamp="2020-01-01T00:00:00Z")


def test_the_pools_rule_is_cached_and_refreshed(auth) -> None:
    clock = [0.0]
    policies = PoolPolicies(auth, ttl=5.0, capacity=2, clock=lambda: clock[0])
    assert policies.max_late_seconds("p1") == 60
    assert policies.max_late_seconds("p1") == 60
    assert auth.calls == 1  # the second start did not ask auth
    auth.pools["p1"]["max_late_seconds"] = 120  # an admin's PATCH
    clock[0] = 5.1
    assert policies.max_late_seconds("p1") == 120 and auth.calls == 2
    policies.max_late_seconds("p2")
    policies.max_late_seconds("p9")
    assert len(policies._seen) == 2  # bounded: the least recently used pool went


def test_auth_down_is_a_503_not_a_guess(ruled, auth) -> None:
    auth.down = True
    with pytest.raises(AuthUnavailable):
        begin(ruled, pool_id="p1", timestamp=ago(10))


def test_max_clock_skew_is_read_once_from_the_environment_and_used_everywhere() -> None:
    env = {"INTERNAL_API_KEY": "k" * 32, "MAX_CLOCK_SKEW_SECONDS": "600"}
    assert CommonSettings.from_env(env).max_clock_skew_seconds == 600
    assert CommonSettings.from_env({}).max_clock_skew_seconds == validation.MAX_CLOCK_SKEW_SECONDS == 300
    limits = Settings.from_env(env).limits
    assert limits.max_clock_skew_seconds == 600
    ahead = timeutil.iso(timeutil.now() + timedelta(seconds=450))
    payload = {"file_name": "a", "size": 1, "timestamp": ahead}
    plan = core.plan_upload(payload, upload_id="u", owner_id="1", owner_name="a", limits=limits,
                            now=timeutil.now_iso())
    assert plan.timestamp == ahead
    with pytest.raises(ApiError) as info:
        core.plan_upload(payload, upload_id="u", owner_id="1", owner_name="a",
                         limits=dataclasses.replace(limits, max_clock_skew_seconds=300), now=timeutil.now_iso())
    assert "future" in info.value.message
    items = [{"offset": 0, "length": 1, "timestamp": ahead}]
    with pytest.raises(ApiError):
        core.plan_upload({**payload, "items": items}, upload_id="u", owner_id="1", owner_name="a",
                         limits=dataclasses.replace(limits, max_clock_skew_seconds=300), now=timeutil.now_iso())


def test_the_gateway_prechecks_with_the_configured_skew() -> None:
    from services.common.authclient import Identity
    who = Identity(user_id="1", user_name="a", role="user")
    ahead = timeutil.iso(timeutil.now() + timedelta(seconds=450))
    body = gateway_core.start_transfer_request({"file_name": "a", "size": 1, "timestamp": ahead}, who, "w",
                                               max_skew=600)
    assert body["timestamp"] == ahead
    with pytest.raises(ApiError):
        gateway_core.start_transfer_request({"file_name": "a", "size": 1, "timestamp": ahead}, who, "w")


@pytest.mark.parametrize("max_late", [0, 30])
def test_validation_max_late(max_late: int) -> None:
    now = timeutil.now()
    fresh = timeutil.iso(now)
    assert validation.check_event_time(fresh, max_late=max_late, now=now) == fresh
    stale = timeutil.iso(now - timedelta(seconds=max_late + 1))
    with pytest.raises(ApiError):
        validation.check_event_time(stale, max_late=max_late, now=now)
    assert validation.check_event_time(stale, now=now) == stale  # no pool: no max_late
