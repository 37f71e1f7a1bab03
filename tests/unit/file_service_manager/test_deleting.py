"""DELETE /file/<id>: owner or admin; bytes leave the backend, the record says deleted, audited once."""

from __future__ import annotations

import pytest

from services.common import contracts
from services.common.authclient import Identity
from services.common.contracts import AuditRecorded, StoreUpload
from services.common.errors import ApiError
from services.file_service_manager import core, deleting, downloads, handlers

from .conftest import alice, command

ADMIN = Identity("0", "admin", "admin", {})
BOB = Identity("8", "bob", "user", {"p1": "contributor"})


@pytest.fixture
def stored(deps):
    deps.broker.publish(command(deps, b"0123456789"))
    deps.broker.deliver(handlers.consumers(deps))
    return deps


def deletions(deps) -> list[AuditRecorded]:
    return [m for m in deps.broker.of_type(AuditRecorded) if m.action == "deleted"]


def test_the_owner_deletes(stored) -> None:
    assert deleting.delete_file(stored, alice(), "u1") == {"file_id": "u1", "status": "deleted"}
    assert "u1" not in stored.index.files and stored.storage.default.deleted == ["u1"]
    record = stored.index.record("u1")
    assert record["status"] == core.DELETED and record["deleted_by"] == "7"
    [audit] = deletions(stored)
    assert (audit.actor, audit.file_id, audit.bytes) == ("7", "u1", 10)
    with pytest.raises(ApiError) as info:
        downloads.plan_download(stored, "u1", core.Caller(user_id="7"), None, None)
    assert info.value.status == 404


def test_a_second_delete_is_200_and_audits_nothing_more(stored) -> None:
    deleting.delete_file(stored, alice(), "u1")
    assert deleting.delete_file(stored, ADMIN, "u1") == {"file_id": "u1", "status": "deleted"}
    assert len(deletions(stored)) == 1


def test_others_get_404_and_an_admin_may(stored) -> None:
    for who, file_id in ((BOB, "u1"), (alice(), "nope")):
        with pytest.raises(ApiError) as info:
            deleting.delete_file(stored, who, file_id)
        assert info.value.status == 404
    assert "u1" in stored.index.files  # nothing was deleted
    deleting.delete_file(stored, ADMIN, "u1")
    assert deletions(stored)[0].actor == "0"


def test_a_file_still_being_stored_is_a_conflict(deps) -> None:
    deps.index.apply_status("u5", "7", contracts.CACHED, attempt=None, reason=None, pool_id=None, file_name="x")
    with pytest.raises(ApiError) as info:
        deleting.delete_file(deps, alice(), "u5")
    assert info.value.status == 409


def test_a_backend_failure_is_503_and_changes_nothing(stored) -> None:
    def broken(key: str) -> bool:
        raise ConnectionError("the backend went away")

    stored.storage.default.delete = broken
    with pytest.raises(ApiError) as info:
        deleting.delete_file(stored, alice(), "u1")
    assert info.value.status == 503 and stored.index.record("u1")["status"] == contracts.UPLOADED
    assert deletions(stored) == []


def test_a_redelivered_store_never_brings_a_deleted_file_back(deps) -> None:
    msg = command(deps, b"0123456789")
    deps.broker.publish(msg)
    deps.broker.deliver(handlers.consumers(deps))
    deleting.delete_file(deps, alice(), "u1")
    deps.cache.put(msg.cache_key, b"0123456789", 4)  # as if the chunks were still cached
    store: StoreUpload = msg
    deps.broker.publish(store)
    deps.broker.deliver(handlers.consumers(deps))
    assert "u1" not in deps.index.files and deps.index.record("u1")["status"] == core.DELETED


def test_a_deleted_result_leaves_the_hot_cache(deps) -> None:
    deps.broker.publish(command(deps, b"0123456789", kind="result"))
    deps.broker.deliver(handlers.consumers(deps))
    plan = downloads.plan_download(deps, "u1", core.Caller(user_id="7"), None, None)
    assert plan.memory == b"0123456789" and deps.hot.size == 10
    deleting.delete_file(deps, alice(), "u1")
    assert deps.hot.size == 0


def test_a_store_racing_a_delete_leaves_the_file_deleted(deps) -> None:
    """The delete lands between the store's check and its record write: the store's bytes go
    too, and the record stays deleted (a reviewer's race)."""
    msg = command(deps, b"0123456789")
    deps.broker.publish(msg)
    deps.broker.deliver(handlers.consumers(deps))
    deps.index.files.pop("u1")  # the bytes gone (as if a backend delete ran), the record still uploaded
    real_write = deps.storage.default.write

    def write_then_delete_meanwhile(key, pieces, **kw):
        written = real_write(key, pieces, **kw)
        deleting.delete_file(deps, alice(), "u1")  # the DELETE arrives while this store runs
        return written

    deps.storage.default.write = write_then_delete_meanwhile
    deps.cache.put(msg.cache_key, b"0123456789", 4)
    deps.broker.publish(msg)
    deps.broker.deliver(handlers.consumers(deps))
    assert deps.index.record("u1")["status"] == core.DELETED
    assert "u1" not in deps.index.files
