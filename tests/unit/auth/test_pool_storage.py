"""A pool's storage, staging and retention_days (SPEC "Storage backends", "Staging", "Retention"):
checked, probed, secrets encrypted at rest and shown as "***", in clear only on the internal route."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from services.auth import accounts, pools
from services.auth.accounts import Caller
from services.auth.deps import Deps
from services.common.errors import ApiError
from services.common.testing.auth import FakeAuthStore, FakeStorageProbe

from .conftest import ENV, make_deps

ENV_KEY = ENV["STORAGE_SECRETS_KEY"]

SECRET = "s3-secret-value-0123456789-unit"
HOOK_SECRET = "webhook-secret-value-unit-98765"
S3 = {"backend": "s3", "endpoint_url": "http://127.0.0.1:9000", "bucket": "pool-bucket", "prefix": "p/",
      "access_key_id": "AKIAUNIT", "secret_access_key": SECRET}
STAGING = [{"kind": "filesystem", "path": "/srv/out/{pool_id}/{window_start}"},
           {"kind": "webhook", "url": "http://hooks.example/in", "secret": HOOK_SECRET}]


def refused(fn: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fn()
    return caught.value


@pytest.fixture
def admin(login_as: Callable[..., Caller]) -> Caller:
    return login_as("admin", "admin-password")


def probe_of(deps: Deps) -> FakeStorageProbe:
    assert isinstance(deps.storage_probe, FakeStorageProbe)
    return deps.storage_probe


def stored(deps: Deps, pool_id: str) -> dict[str, Any]:
    assert isinstance(deps.store, FakeAuthStore)
    return deps.store.pools[pool_id]


def new_pool(deps: Deps, admin: Caller, **fields: Any) -> dict[str, Any]:
    return pools.create_pool(deps, admin, {"name": "P", "window_seconds": 60, **fields})


def test_defaults_are_gridfs_no_staging_keep_forever_and_need_no_probe(deps: Deps, admin: Caller) -> None:
    pool = new_pool(deps, admin)
    assert pool["storage"] == {"backend": "gridfs"} and pool["staging"] == [] and pool["retention_days"] is None
    assert probe_of(deps).probed == []


def test_secrets_are_encrypted_at_rest_masked_in_answers_clear_on_the_internal_route(deps: Deps,
                                                                                    admin: Caller) -> None:
    pool = new_pool(deps, admin, storage=S3, staging=STAGING, retention_days=7)
    pid = pool["pool_id"]
    assert pool["storage"]["secret_access_key"] == "***" and pool["staging"][1]["secret"] == "***"
    assert pool["storage"]["access_key_id"] == "AKIAUNIT" and pool["retention_days"] == 7
    row = json.dumps(stored(deps, pid))
    assert SECRET not in row and HOOK_SECRET not in row and row.count("fernet:") == 2
    for shown in (pools.get_pool(deps, admin, pid), pools.list_pools(deps, admin)[0]):
        text = json.dumps(shown)
        assert SECRET not in text and HOOK_SECRET not in text and "fernet:" not in text
    internal = pools.internal_pool(deps, pid)
    assert internal["storage"]["secret_access_key"] == SECRET and internal["staging"][1]["secret"] == HOOK_SECRET
    assert probe_of(deps).probed == [S3]  # probed with the secret in clear (it must connect)


def test_audit_and_broker_never_carry_a_secret(deps: Deps, admin: Caller) -> None:
    pid = new_pool(deps, admin, storage=S3, staging=STAGING)["pool_id"]
    pools.patch_pool(deps, admin, pid, {"storage": {**S3, "secret_access_key": "another-secret-xyz-123"}})
    published = repr(deps.broker.published)  # type: ignore[attr-defined]
    assert "pool_changed" in published  # the audit records went out ...
    assert SECRET not in published and HOOK_SECRET not in published and "another-secret-xyz-123" not in published
    assert "fernet:" not in published  # ... without the secrets, not even encrypted


def test_patch_sending_the_mask_back_keeps_the_stored_secret(deps: Deps, admin: Caller) -> None:
    pool = new_pool(deps, admin, storage=S3, staging=STAGING)
    pid = pool["pool_id"]
    shown = pools.get_pool(deps, admin, pid)
    pools.patch_pool(deps, admin, pid, {"storage": {**shown["storage"], "prefix": "q/"},
                                        "staging": shown["staging"]})
    internal = pools.internal_pool(deps, pid)
    assert internal["storage"]["secret_access_key"] == SECRET and internal["storage"]["prefix"] == "q/"
    assert internal["staging"][1]["secret"] == HOOK_SECRET
    assert probe_of(deps).probed[-1]["secret_access_key"] == SECRET  # the kept secret was probed


def test_the_mask_cannot_carry_a_secret_to_another_place(deps: Deps, admin: Caller) -> None:
    pid = new_pool(deps, admin, storage=S3, staging=STAGING)["pool_id"]
    moved = {**S3, "endpoint_url": "http://attacker.example", "secret_access_key": "***"}
    err = refused(lambda: pools.patch_pool(deps, admin, pid, {"storage": moved}))
    assert (err.status, err.code) == (400, "bad_storage")
    hook = [STAGING[0], {**STAGING[1], "url": "http://elsewhere.example/x", "secret": "***"}]
    err = refused(lambda: pools.patch_pool(deps, admin, pid, {"staging": hook}))
    assert (err.status, err.code) == (400, "bad_request")
    err = refused(lambda: new_pool(deps, admin, storage={**S3, "secret_access_key": "***"}))
    assert err.code == "bad_storage"
    assert pools.internal_pool(deps, pid)["storage"]["secret_access_key"] == SECRET


def test_a_patch_of_other_fields_keeps_storage_and_staging_untouched(deps: Deps, admin: Caller) -> None:
    pid = new_pool(deps, admin, storage=S3, staging=STAGING)["pool_id"]
    before = dict(stored(deps, pid))
    probes = len(probe_of(deps).probed)
    pools.patch_pool(deps, admin, pid, {"retention_days": 0})
    after = stored(deps, pid)
    assert after["storage"] == before["storage"] and after["staging"] == before["staging"]
    assert after["retention_days"] == 0 and len(probe_of(deps).probed) == probes


def test_a_failed_probe_is_bad_storage_and_nothing_is_saved(deps: Deps, admin: Caller) -> None:
    pid = new_pool(deps, admin)["pool_id"]
    probe_of(deps).reason = "s3: bucket 'pool-bucket' does not exist"
    err = refused(lambda: pools.patch_pool(deps, admin, pid, {"storage": S3}))
    assert (err.status, err.code) == (400, "bad_storage") and "does not exist" in err.message
    assert stored(deps, pid)["storage"] == {"backend": "gridfs"}
    err = refused(lambda: new_pool(deps, admin, storage={"backend": "filesystem", "root": "/srv/x"}))
    assert err.code == "bad_storage"
    probe_of(deps).reason, probe_of(deps).down = None, True
    assert refused(lambda: pools.patch_pool(deps, admin, pid, {"storage": S3})).status == 503


@pytest.mark.parametrize(("storage", "says"), [
    ("gridfs", "JSON object"),
    ({"backend": "ftp"}, "backend must be one of"),
    ({"backend": "filesystem", "root": "relative/dir"}, "absolute"),
    ({"backend": "filesystem"}, "root required"),
    ({"backend": "s3", "endpoint_url": "ftp://x", "bucket": "b", "access_key_id": "a", "secret_access_key": "s"},
     "http or https"),
    ({"backend": "s3", "endpoint_url": "http://x", "bucket": "b", "access_key_id": "a"}, "secret_access_key"),
    ({"backend": "gridfs", "bucket": "a/b"}, "bucket"),
    ({"backend": "gridfs", "colour": "blue"}, "unknown fields colour"),
    ({"backend": "filesystem", "root": "/x" * 600}, "at most"),
])
def test_bad_storage_shapes_are_refused_before_any_probe(deps: Deps, admin: Caller, storage: Any,
                                                         says: str) -> None:
    err = refused(lambda: new_pool(deps, admin, storage=storage))
    assert (err.status, err.code) == (400, "bad_storage") and says in err.message
    assert probe_of(deps).probed == []


@pytest.mark.parametrize(("staging", "says"), [
    ({"kind": "filesystem"}, "list"),
    ([{"kind": "filesystem", "path": "relative/{seq}"}], "absolute"),
    ([{"kind": "filesystem", "path": "/srv/{user_id}"}], "placeholders are only"),
    ([{"kind": "filesystem", "path": "/srv/{pool_id.__class__}"}], "placeholders are only"),
    ([{"kind": "filesystem", "path": "/srv/{seq:>10}"}], "placeholders are only"),
    ([{"kind": "filesystem", "path": "/srv/{seq"}], "braces"),
    ([{"kind": "filesystem", "path": "/srv/../etc/{seq}"}], "'..'"),
    ([{"kind": "filesystem", "path": "/{pool_id}/x"}], "fixed directory"),
    ([{"kind": "filesystem", "path": "/srv", "link": "yes"}], "link"),
    ([{"kind": "webhook", "url": "http://h.example"}], "secret required"),
    ([{"kind": "webhook", "url": "javascript:alert(1)", "secret": "s"}], "http or https"),
    ([{"kind": "ftp", "path": "/x"}], "kind must be one of"),
    ([{"kind": "filesystem", "path": f"/srv/{i}"} for i in range(9)], "at most 8 targets"),
])
def test_bad_staging_is_refused(deps: Deps, admin: Caller, staging: Any, says: str) -> None:
    err = refused(lambda: new_pool(deps, admin, staging=staging))
    assert (err.status, err.code) == (400, "bad_request") and says in err.message


def test_retention_days_is_bounded_and_nullable(deps: Deps, admin: Caller) -> None:
    for bad in (-1, "7", True, 10**9):
        assert refused(lambda bad=bad: new_pool(deps, admin, retention_days=bad)).code == "bad_request"
    pid = new_pool(deps, admin, retention_days=3)["pool_id"]
    assert pools.patch_pool(deps, admin, pid, {"retention_days": None})["retention_days"] is None


def test_members_see_neither_storage_nor_staging(deps: Deps, admin: Caller,
                                                 login_as: Callable[..., Caller]) -> None:
    pid = new_pool(deps, admin, storage=S3, staging=STAGING)["pool_id"]
    accounts.signup(deps, {"user_name": "bob", "password": "password-123"})
    pools.add_member(deps, admin, pid, {"user_name": "bob", "role": "listener"})
    bob = login_as("bob")
    seen = pools.get_pool(deps, bob, pid)
    assert "staging" not in seen and "storage" not in seen and seen["pool_id"] == pid
    assert [("storage" in p, "staging" in p) for p in pools.list_pools(deps, bob)] == [(False, False)]
    shown = pools.get_pool(deps, admin, pid)  # admins still see it, secrets masked
    assert shown["storage"]["secret_access_key"] == "***" and shown["storage"]["bucket"] == S3["bucket"]


def test_deleted_pools_keep_their_retention_rule(deps: Deps, admin: Caller) -> None:
    kept = new_pool(deps, admin, retention_days=5)["pool_id"]
    gone = new_pool(deps, admin, retention_days=0)["pool_id"]
    new_pool(deps, admin)  # keep forever: no rule to report
    pools.delete_pool(deps, admin, gone)
    rules = pools.internal_retention(deps)
    assert rules == {"pools": [{"pool_id": kept, "retention_days": 5, "deleted": False},
                               {"pool_id": gone, "retention_days": 0, "deleted": True}], "truncated": False}


def test_without_storage_secrets_key_secrets_are_refused_but_pools_work() -> None:
    deps = make_deps(STORAGE_SECRETS_KEY="")
    accounts.bootstrap_admin(deps.store, deps.passwords, "admin", "admin-password")
    who = accounts.authenticate(deps, accounts.login(deps, "admin", {"password": "admin-password"})["access_token"])
    assert new_pool(deps, who, storage={"backend": "filesystem", "root": "/srv/data"})["storage"]["root"] == "/srv/data"
    err = refused(lambda: new_pool(deps, who, storage=S3))
    assert err.code == "bad_storage" and "STORAGE_SECRETS_KEY" in err.message and SECRET not in err.message


def test_key_rotation_re_encrypts_every_pool_secret(deps: Deps, admin: Caller) -> None:
    from services.auth import rotate_storage_key
    from services.common.secretbox import SecretBox

    pid = new_pool(deps, admin, storage=S3, staging=STAGING)["pool_id"]
    plain = new_pool(deps, admin)["pool_id"]
    old_box = deps.settings.secrets
    assert old_box is not None
    new_key = SecretBox.generate_key()
    rotated_box = SecretBox([new_key])
    both = SecretBox([new_key, ENV_KEY])
    before = json.dumps(stored(deps, pid))
    assert rotate_storage_key.rotate(deps.store, both, dry_run=True)["rotated"] == [pid]
    assert json.dumps(stored(deps, pid)) == before  # a dry run writes nothing
    outcome = rotate_storage_key.rotate(deps.store, both)
    assert outcome["rotated"] == [pid] and plain in outcome["already_current"] and outcome["unreadable"] == []
    after = stored(deps, pid)
    assert json.dumps(after) != before and SECRET not in json.dumps(after)
    assert rotated_box.decrypt(after["storage"]["secret_access_key"]) == SECRET  # the new key alone opens it
    assert rotated_box.decrypt(after["staging"][1]["secret"]) == HOOK_SECRET
    assert rotate_storage_key.rotate(deps.store, both)["rotated"] == []  # nothing left to do
    assert rotate_storage_key.rotate(deps.store, SecretBox([SecretBox.generate_key()]))["unreadable"] == [pid]


def test_the_probe_client_maps_answers_for_the_admin() -> None:
    from services.common.serviceclient import StorageProbeClient

    refused = StorageProbeClient._policy(400, {"error": {"code": "bad_storage", "message": "no bucket"}})
    assert (refused.status, refused.code, refused.message) == (400, "bad_storage", "no bucket")
    for status, body in ((401, {"error": {"code": "unauthorized", "message": "bad key"}}), (503, None),
                         (400, {"error": {"code": "bad_request", "message": "x"}})):
        assert (StorageProbeClient._policy(status, body).status, StorageProbeClient._policy(status, body).code) \
            == (503, "unavailable")


def test_filesystem_roots_bound_storage_roots_and_staging_paths_on_create_and_patch() -> None:
    deps = make_deps(FILESYSTEM_ROOTS="/srv/store:/srv/stage")
    accounts.bootstrap_admin(deps.store, deps.passwords, "admin", "admin-password")
    who = accounts.authenticate(deps, accounts.login(deps, "admin", {"password": "admin-password"})["access_token"])
    ok = new_pool(deps, who, storage={"backend": "filesystem", "root": "/srv/store/a"},
                  staging=[{"kind": "filesystem", "path": "/srv/stage/{pool_id}"}])
    for bad in ("/etc", "/srv/storefront", "/srv"):
        err = refused(lambda bad=bad: new_pool(deps, who, storage={"backend": "filesystem", "root": bad}))
        assert (err.code, "FILESYSTEM_ROOTS" in err.message) == ("bad_storage", True)
        err = refused(lambda bad=bad: pools.patch_pool(deps, who, ok["pool_id"],
                                                       {"storage": {"backend": "filesystem", "root": bad}}))
        assert err.code == "bad_storage"
    err = refused(lambda: new_pool(deps, who, staging=[{"kind": "filesystem", "path": "/etc/{pool_id}"}]))
    assert (err.code, "FILESYSTEM_ROOTS" in err.message) == ("bad_request", True)
    err = refused(lambda: pools.patch_pool(deps, who, ok["pool_id"],
                                           {"staging": [{"kind": "filesystem", "path": "/home/x/{seq}"}]}))
    assert err.code == "bad_request"
    assert pools.get_pool(deps, who, ok["pool_id"])["storage"]["root"] == "/srv/store/a"  # unchanged
