"""services.common.poolstorage: shapes checked; secrets masked, sealed, unsealed and kept by place."""

from __future__ import annotations

import pytest

from services.common import poolstorage
from services.common.poolstorage import MASK, StorageInvalid

S3 = {"backend": "s3", "endpoint_url": "http://s3.example", "bucket": "b", "access_key_id": "AK",
      "secret_access_key": "top-secret"}
HOOK = {"kind": "webhook", "url": "http://hook.example/x", "secret": "hook-secret"}
DISK = {"kind": "filesystem", "path": "/srv/{pool_id}/{seq}", "link": True}


def test_mask_hides_only_the_secret_fields_and_copies() -> None:
    storage, staging = poolstorage.mask(S3, [HOOK, DISK])
    assert storage == {**S3, "secret_access_key": MASK} and staging == [{**HOOK, "secret": MASK}, DISK]
    assert S3["secret_access_key"] == "top-secret" and HOOK["secret"] == "hook-secret"  # inputs untouched


def test_seal_then_unseal_round_trips_and_a_mask_cannot_be_sealed() -> None:
    sealed_storage, sealed_staging = poolstorage.seal(S3, [HOOK, DISK], lambda v: "enc:" + v[::-1])
    assert sealed_storage["secret_access_key"] == "enc:terces-pot" and sealed_staging[1] == DISK
    opened = poolstorage.unseal(sealed_storage, sealed_staging, lambda v: v[4:][::-1])
    assert opened == (S3, [HOOK, DISK])
    with pytest.raises(StorageInvalid):
        poolstorage.seal({**S3, "secret_access_key": MASK}, None, str.upper)


def test_keep_masked_only_for_the_same_place() -> None:
    masked = {**S3, "secret_access_key": MASK, "prefix": "new/"}
    assert poolstorage.keep_masked(masked, S3)["secret_access_key"] == "top-secret"
    for stored in (None, {**S3, "endpoint_url": "http://other.example"}, {**S3, "bucket": "other"},
                   {k: v for k, v in S3.items() if k != "secret_access_key"}):
        with pytest.raises(StorageInvalid):
            poolstorage.keep_masked(masked, stored)
    assert poolstorage.keep_masked(S3, None) == S3  # nothing masked: nothing needed


def test_templates_allow_only_specs_placeholders() -> None:
    assert poolstorage.check_staging([{"kind": "filesystem", "path": "/o/{pool_id}/{group_id}/{window_start}/"
                                                                     "{seq}-{file_name}"}])
    assert poolstorage.check_staging([{"kind": "filesystem", "path": "/o/{{literal}}"}])
    for bad in ("/o/{0}", "/o/{}", "/o/{seq!r}", "/o/{file_name[0]}", "/o/}"):
        with pytest.raises(StorageInvalid):
            poolstorage.check_staging([{"kind": "filesystem", "path": bad}])


def test_a_huge_value_is_refused_before_anything_else() -> None:
    with pytest.raises(StorageInvalid, match="longer than"):
        poolstorage.check_storage({"backend": "gridfs", "x": ["y" * 1000] * 20})

