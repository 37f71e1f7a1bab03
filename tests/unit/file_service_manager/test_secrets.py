"""Storage credentials: encrypted in the catalog, found again for a record's backend, rotated,
never in a log line or a repr."""

from __future__ import annotations

import io
import json
import logging

import pytest

from services.common import logs
from services.common.secretbox import SecretBox
from services.common.settings import ConfigError
from services.common.testing.file_service_manager import FakeBackend, FakeCatalog
from services.file_service_manager import rotate_storage_key
from services.file_service_manager.backends import BackendError, Storages, StorageSpec, parse_spec
from services.file_service_manager.config import Settings

KEY_ID, SECRET = "AKIDSECRETKEYID", "s3-secret-value-never-shown"
S3 = {"backend": "s3", "endpoint_url": "http://127.0.0.1:9", "bucket": "b", "access_key_id": KEY_ID,
      "secret_access_key": SECRET}


def storages(default: dict, catalog: FakeCatalog, box: SecretBox | None, made: list[StorageSpec]) -> Storages:
    def make(spec: StorageSpec) -> FakeBackend:
        made.append(spec)
        return FakeBackend(spec.backend, descriptor=spec.descriptor())

    return Storages(parse_spec(default), make, catalog, box)


def test_credentials_are_kept_encrypted_and_found_again_for_old_records() -> None:
    catalog, box, made = FakeCatalog(), SecretBox([SecretBox.generate_key()]), []
    first = storages(S3, catalog, box, made)
    descriptor = first.default.descriptor  # first use saves it
    stored = json.dumps(catalog.docs)
    assert SECRET not in stored and KEY_ID not in stored and descriptor["id"] in catalog.docs
    # Later the default is GridFS; a record stored in S3 still gets its backend, with its credentials.
    later_made: list[StorageSpec] = []
    later = storages({"backend": "gridfs"}, catalog, box, later_made)
    backend = later.for_record({"storage": descriptor})
    assert backend.descriptor == descriptor
    assert later_made[-1].secret_access_key == SECRET and later_made[-1].access_key_id == KEY_ID
    # Without the key (or with another one) it cannot be opened, and the reason names no secret.
    for wrong in (None, SecretBox([SecretBox.generate_key()])):
        with pytest.raises(BackendError) as info:
            storages({"backend": "gridfs"}, catalog, wrong, []).for_record({"storage": descriptor})
        assert SECRET not in str(info.value)


def test_credentials_without_a_key_are_refused() -> None:
    with pytest.raises(BackendError, match="STORAGE_SECRETS_KEY"):
        storages(S3, FakeCatalog(), None, []).default  # noqa: B018 - the property saves before the first write
    with pytest.raises(ConfigError, match="STORAGE_SECRETS_KEY"):
        Settings.from_env({"DEFAULT_STORAGE": json.dumps(S3)})


def test_settings_and_specs_never_show_credentials() -> None:
    settings = Settings.from_env({"DEFAULT_STORAGE": json.dumps(S3), "STORAGE_SECRETS_KEY": SecretBox.generate_key()})
    assert SECRET not in repr(settings) and KEY_ID not in repr(settings)
    assert SECRET not in repr(parse_spec(S3))


def test_rotation_re_encrypts_every_entry_once() -> None:
    old_key, new_key = SecretBox.generate_key(), SecretBox.generate_key()
    catalog = FakeCatalog()
    storages(S3, catalog, SecretBox([old_key]), []).default  # noqa: B018
    storages({**S3, "bucket": "c"}, catalog, SecretBox([old_key]), []).default  # noqa: B018
    before = json.dumps(catalog.docs)
    box = SecretBox([new_key, old_key])
    assert rotate_storage_key.rotate(catalog, box, dry_run=True)["rotated"] and json.dumps(catalog.docs) == before
    outcome = rotate_storage_key.rotate(catalog, box)
    assert len(outcome["rotated"]) == 2 and outcome["unreadable"] == []
    assert SECRET not in json.dumps(outcome) and SECRET not in json.dumps(catalog.docs)
    only_new = SecretBox([new_key])
    for doc in catalog.docs.values():
        assert only_new.decrypt(doc["secrets"]["secret_access_key"]) == SECRET
    assert rotate_storage_key.rotate(catalog, box)["rotated"] == []  # nothing left to do
    assert rotate_storage_key.rotate(catalog, SecretBox([SecretBox.generate_key()]))["unreadable"]


def test_rotate_command_generates_keys_and_refuses_without_one(capsys) -> None:
    assert rotate_storage_key.main(["--generate-key"]) == 0
    SecretBox([capsys.readouterr().out.strip()])  # a valid key
    assert rotate_storage_key.main([], env={}) == 2


def test_log_lines_redact_credential_fields() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter("test"))
    logger = logging.getLogger("test.secrets")
    logger.addHandler(handler)
    try:
        logger.warning("storage", extra={"access_key_id": KEY_ID, "secret_access_key": SECRET,
                                         "aws_credentials": SECRET})
    finally:
        logger.removeHandler(handler)
    line = out.getvalue()
    assert SECRET not in line and KEY_ID not in line and json.loads(line)["access_key_id"] == "[redacted]"
