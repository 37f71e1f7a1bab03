"""Storage specs (SPEC "Storage backends") and choosing a record's backend: no servers."""

from __future__ import annotations

import pytest

from services.common.testing.file_service_manager import FakeBackend
from services.file_service_manager import backends
from services.file_service_manager.backends import BackendError, Storages, StorageSpec, parse_spec

S3 = {"backend": "s3", "endpoint_url": "http://127.0.0.1:9000", "bucket": "b", "prefix": "p/",
      "access_key_id": "AKIDEXAMPLE", "secret_access_key": "very-secret-value"}


def test_descriptors_hold_no_secret_and_ids_name_the_location() -> None:
    spec = parse_spec(S3)
    descriptor = spec.descriptor()
    assert "very-secret-value" not in str(descriptor) and "AKIDEXAMPLE" not in str(descriptor)
    assert descriptor["bucket"] == "b" and descriptor["id"].startswith("s3-")
    # new credentials for the same place: the same backend; another bucket: another one
    assert parse_spec({**S3, "secret_access_key": "rotated"}).id == spec.id
    assert parse_spec({**S3, "bucket": "c"}).id != spec.id
    assert parse_spec({"backend": "gridfs"}).descriptor() == {"id": backends.LEGACY.id, "backend": "gridfs",
                                                              "bucket": "fs"}


@pytest.mark.parametrize("raw, reason", [
    ("gridfs", "JSON object"),
    ({"backend": "ftp"}, "one of"),
    ({"backend": "filesystem"}, "root"),
    ({"backend": "filesystem", "root": "relative/dir"}, "absolute"),
    ({"backend": "filesystem", "root": "/x", "rooot": "/y"}, "unknown"),
    ({"backend": "gridfs", "bucket": "a.b$"}, "bucket"),
    ({**S3, "endpoint_url": "file:///etc"}, "http"),
    ({**S3, "secret_access_key": None}, "secret_access_key"),
    ({**S3, "bucket": ["b"]}, "string"),
    ({**S3, "prefix": "x" * 5000}, "at most"),
])
def test_bad_specs_are_refused_with_the_reason(raw: object, reason: str) -> None:
    with pytest.raises(BackendError, match=reason):
        parse_spec(raw)


def test_records_are_read_from_their_own_backend() -> None:
    made: dict[str, FakeBackend] = {}

    def make(spec: StorageSpec) -> FakeBackend:
        made[spec.id] = FakeBackend(spec.backend, descriptor=spec.descriptor())
        return made[spec.id]

    default = parse_spec({"backend": "filesystem", "root": "/srv/files"})
    storages = Storages(default, make)
    assert storages.default.descriptor["root"] == "/srv/files"
    assert storages.for_record({"storage": default.descriptor()}) is storages.default
    # a record from before backends existed: GridFS fs
    assert storages.for_record({"file_id": "old"}).descriptor == backends.LEGACY.descriptor()
    other = parse_spec({"backend": "gridfs", "bucket": "archive"}).descriptor()
    assert storages.for_record({"storage": other}).descriptor == other
    # an S3 place this service has no credentials for cannot be guessed from a record
    with pytest.raises(BackendError, match="not known here"):
        storages.for_record({"storage": parse_spec(S3).descriptor()})
    assert set(storages.in_use()) >= {default.id}


def test_default_storage_setting() -> None:
    import json

    from services.common.secretbox import SecretBox
    from services.common.settings import ConfigError
    from services.file_service_manager.config import Settings

    base = {"INTERNAL_API_KEY": "k" * 32, "STORAGE_SECRETS_KEY": SecretBox.generate_key()}
    assert Settings.from_env(base).default_storage == backends.LEGACY
    chosen = Settings.from_env({**base, "DEFAULT_STORAGE": json.dumps(S3)}).default_storage
    assert chosen.backend == "s3" and chosen.secret_access_key == "very-secret-value"
    for bad in ("{not json", json.dumps({**S3, "endpoint_url": "ftp://x"}), json.dumps({"backend": "nfs"}),
                json.dumps({**S3, "bucket": 7}), "[" * 9000):
        with pytest.raises(ConfigError) as info:
            Settings.from_env({**base, "DEFAULT_STORAGE": bad})
        assert "very-secret-value" not in str(info.value) and "AKIDEXAMPLE" not in str(info.value)


def test_a_stored_record_names_its_backend(deps) -> None:
    from services.file_service_manager import handlers

    from .conftest import command

    deps.broker.publish(command(deps, b"0123456789"))
    deps.broker.deliver(handlers.consumers(deps))
    assert deps.index.record("u1")["storage"] == deps.storage.default.descriptor
