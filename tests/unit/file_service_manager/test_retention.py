"""The retention sweeper (SPEC "Retention") and the choice of a pool's backend, on in-memory stand-ins."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.authclient import AuthUnavailable
from services.common.contracts import AuditRecorded
from services.common.testing.file_service_manager import FakeBackend
from services.file_service_manager import backends, core, handlers, retention
from services.file_service_manager.backends import parse_spec
from services.file_service_manager.pools import PoolStorage, PoolStorageInvalid
from services.file_service_manager.probing import scrubbed

from .conftest import command

STORED = datetime(2026, 1, 1, tzinfo=UTC)  # command()'s created


def store(deps, data: bytes = b"0123456789", **fields) -> None:
    msg = command(deps, data)
    deps.broker.publish(dataclasses.replace(msg, **fields) if fields else msg)
    deps.broker.deliver(handlers.consumers(deps))


def deletions(deps) -> list[AuditRecorded]:
    return [m for m in deps.broker.of_type(AuditRecorded) if m.action == "deleted"]


def test_a_pool_rule_deletes_expired_files_once_with_an_audit_record(deps) -> None:
    store(deps)
    deps.auth.pools["p1"] = {"pool_id": "p1", "retention_days": 3}
    early = retention.sweep(deps, deps.auth, now=datetime(2026, 1, 3, tzinfo=UTC))
    assert early == {"deleted": [], "failed": []} and deps.index.record("u1")["status"] != core.DELETED
    done = retention.sweep(deps, deps.auth, now=datetime(2026, 1, 4, 0, 0, 1, tzinfo=UTC))
    assert done == {"deleted": ["u1"], "failed": []}
    assert deps.index.record("u1")["status"] == core.DELETED and "u1" not in deps.index.files
    [audit] = deletions(deps)
    assert (audit.actor, audit.file_id, audit.pool_id) == (retention.ACTOR, "u1", "p1")
    # A second replica's pass (or the next one) finds nothing and audits nothing more.
    assert retention.sweep(deps, deps.auth, now=datetime(2027, 1, 1, tzinfo=UTC))["deleted"] == []
    assert len(deletions(deps)) == 1


def test_two_replicas_racing_delete_once_and_audit_once(deps) -> None:
    store(deps)
    deps.auth.pools["p1"] = {"pool_id": "p1", "retention_days": 0}
    record = deps.index.record("u1")
    # Both replicas read the record before either marked it: both delete the bytes, one marks and audits.
    assert retention.expire(deps, dict(record), 0) and retention.expire(deps, dict(record), 0)
    assert deps.storage.default.deleted == ["u1", "u1"] and len(deletions(deps)) == 1


def test_files_without_a_pool_follow_retention_days_and_pools_without_a_rule_are_kept(deps) -> None:
    store(deps, pool_id=None)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retention.sweep(deps, deps.auth, now=now)["deleted"] == []  # RETENTION_DAYS unset: kept forever
    deps = dataclasses.replace(deps, settings=dataclasses.replace(deps.settings, retention_days=30))
    assert retention.sweep(deps, deps.auth, now=now)["deleted"] == ["u1"]


def test_a_deleted_pool_follows_its_rule_and_auth_down_skips_only_pools(deps) -> None:
    store(deps)
    deps.auth.pools["p1"] = {"retention_days": 1, "deleted": True}
    deps.auth.down = True
    assert retention.sweep(deps, deps.auth, now=datetime(2027, 1, 1, tzinfo=UTC))["deleted"] == []
    deps.auth.down = False
    assert retention.sweep(deps, deps.auth, now=datetime(2027, 1, 1, tzinfo=UTC))["deleted"] == ["u1"]


def test_a_failing_backend_leaves_the_file_for_the_next_pass(deps) -> None:
    store(deps)
    deps.auth.pools["p1"] = {"retention_days": 0}
    broken = deps.storage.default

    def refuse(key: str) -> bool:
        raise ConnectionError("backend down")
    broken.delete = refuse
    assert retention.sweep(deps, deps.auth)["failed"] == ["u1"]
    assert deps.index.record("u1")["status"] != core.DELETED and deletions(deps) == []


def test_bad_rules_from_auth_are_skipped(deps) -> None:
    store(deps)
    for days in (-1, "0", True, None, 10**9):
        deps.auth.pools["p1"] = {"retention_days": days}
        assert retention.rules(deps, deps.auth) == [], days


def test_uploads_of_a_pool_go_to_its_backend_and_stay_there_after_it_moves(deps, tmp_path) -> None:
    made: dict[str, FakeBackend] = {}
    default = deps.storage.default

    def make(spec):
        if spec.id == deps.settings.default_storage.id:
            return default
        return made.setdefault(spec.id, FakeBackend(spec.backend, descriptor=spec.descriptor()))
    deps = dataclasses.replace(deps, storage=backends.Storages(deps.settings.default_storage, make),
                               pool_storage=PoolStorage(deps.auth, ttl=0))
    disk = {"backend": "filesystem", "root": str(tmp_path)}
    deps.auth.pools["p1"] = {"pool_id": "p1", "storage": disk}
    store(deps, b"on disk")
    fs = made[parse_spec(disk).id]
    assert fs.files == {"u1": b"on disk"} and "u1" not in default.files
    assert deps.index.record("u1")["storage"] == parse_spec(disk).descriptor()
    # The pool moves to GridFS: the next file goes there; the first is still read from disk.
    deps.auth.pools["p1"] = {"pool_id": "p1", "storage": {"backend": "gridfs"}}
    msg = dataclasses.replace(command(deps, b"in gridfs"), upload_id="u2",
                              items=(dataclasses.replace(command(deps, b"in gridfs").items[0], file_id="u2"),))
    deps.broker.publish(msg)
    deps.broker.deliver(handlers.consumers(deps))
    assert default.files.get("u2") == b"in gridfs" and "u2" not in fs.files
    assert deps.storage.for_record(deps.index.record("u1")) is fs


def test_the_pool_storage_cache_is_bounded_in_time_and_unknown_pools_use_the_default() -> None:
    class Auth:
        calls = 0
        down = False

        def pool(self, pool_id):
            Auth.calls += 1
            if Auth.down:
                raise AuthUnavailable("down")
            return None if pool_id == "gone" else {"storage": {"backend": "gridfs", "bucket": "b"}}

        def retention_rules(self):
            return []
    clock = [0.0]
    cache = PoolStorage(Auth(), ttl=10, clock=lambda: clock[0])
    assert cache.spec_for(None) is None and cache.spec_for("gone") is None
    assert cache.spec_for("p").bucket == "b" and cache.spec_for("p").bucket == "b" and Auth.calls == 2
    clock[0] = 11
    Auth.down = True
    assert cache.spec_for("p").bucket == "b" and Auth.calls == 3  # auth away: the last known storage
    with pytest.raises(AuthUnavailable):  # never a guessed backend: the store fails and is retried
        cache.spec_for("never-seen")


def test_an_unusable_pool_storage_fails_the_store_with_a_reason_shown_to_users() -> None:
    class Auth:
        def pool(self, pool_id):
            return {"storage": {"backend": "s3", "endpoint_url": "http://x", "bucket": "b",
                                "access_key_id": "AK", "secret_access_key": "very-secret-value"}, "x": 1} \
                if pool_id == "s3" else {"storage": {"backend": "tape"}}

        def retention_rules(self):
            return []
    with pytest.raises(PoolStorageInvalid) as info:
        PoolStorage(Auth()).spec_for("tape")
    assert "backend must be one of" in str(info.value)
    assert "very-secret-value" not in repr(PoolStorage(Auth()).spec_for("s3"))


def test_the_probe_reason_never_quotes_a_secret() -> None:
    assert scrubbed("denied for top-secret at b", {"secret_access_key": "top-secret"}) == "denied for *** at b"
    assert len(scrubbed("x" * 5000, {})) == 300


def test_a_filesystem_root_outside_filesystem_roots_is_refused_before_any_write() -> None:
    class Auth:
        def pool(self, pool_id: str) -> dict[str, object]:
            return {"storage": {"backend": "filesystem", "root": f"/srv/{pool_id}"}}

        def retention_rules(self) -> list[object]:
            return []
    roots = ("/srv/ok",)
    assert PoolStorage(Auth(), roots=roots).spec_for("ok/p1").root == "/srv/ok/p1"  # type: ignore[union-attr]
    with pytest.raises(PoolStorageInvalid) as info:
        PoolStorage(Auth(), roots=roots).spec_for("elsewhere")
    assert "FILESYSTEM_ROOTS" in str(info.value)
    assert PoolStorage(Auth()).spec_for("elsewhere").root == "/srv/elsewhere"  # type: ignore[union-attr]  # unset: any


def test_the_storage_probe_refuses_a_filesystem_root_outside_filesystem_roots(deps: Any, tmp_path: Any) -> None:
    from services.common.errors import ApiError
    from services.common.settings import CommonSettings
    from services.file_service_manager.probing import probe_storage

    common = dataclasses.replace(deps.settings.common, filesystem_roots=(str(tmp_path / "ok"),))
    assert isinstance(common, CommonSettings)
    limited = dataclasses.replace(deps, settings=dataclasses.replace(deps.settings, common=common))
    with pytest.raises(ApiError) as info:
        probe_storage(limited, {"storage": {"backend": "filesystem", "root": str(tmp_path / "elsewhere")}})
    assert (info.value.code, "FILESYSTEM_ROOTS" in info.value.message) == ("bad_storage", True)
    assert not (tmp_path / "elsewhere").exists()  # nothing was written
