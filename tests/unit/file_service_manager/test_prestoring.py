"""The StoreUpload's side of prestores, with in-memory stores: a prestored file is checked and
indexed, not written again; a wrong one is refused; without one the StoreUpload writes it."""

from __future__ import annotations

import hashlib

from services.common import contracts
from services.common.contracts import FileStatusChanged, PrestoreUpload, UploadStoreFailed
from services.file_service_manager import handlers, prestoring

from .conftest import command


def _deliver(deps, message):
    deps.broker.publish(message)
    deps.broker.deliver(handlers.consumers(deps))
    return deps.broker


def _prestored(deps, msg, data: bytes, sha256: str | None = None) -> None:
    """What a finished prestore leaves: the bytes in the backend, the outcome beside the cache."""
    deps.index.files[msg.upload_id] = data
    deps.cache.prestores[msg.cache_key] = {"size": str(len(data)),
                                           "sha256": sha256 or hashlib.sha256(data).hexdigest(),
                                           "backend": prestoring._label(deps.storage.default)}


def test_a_prestored_file_is_indexed_without_reading_the_cache(deps) -> None:
    data = b"0123456789"
    msg = command(deps, data)
    _prestored(deps, msg, data)
    deps.cache.chunks.clear()  # a second write would fail: its chunks are not there
    broker = _deliver(deps, msg)
    assert deps.index.record("u1")["status"] == contracts.UPLOADED
    assert deps.index.record("u1")["sha256"] == hashlib.sha256(data).hexdigest()
    assert [m.status for m in broker.of_type(FileStatusChanged)] == [contracts.UPLOADED]
    assert msg.cache_key not in deps.cache.prestores  # dropped with the cache


def test_prestored_bytes_that_do_not_match_the_upload_are_refused_and_deleted(deps) -> None:
    data = b"0123456789"
    msg = command(deps, data)
    _prestored(deps, msg, b"01234XXXXX", sha256=hashlib.sha256(b"01234XXXXX").hexdigest())
    broker = _deliver(deps, msg)
    assert deps.index.record("u1") is None or deps.index.record("u1")["status"] != contracts.UPLOADED
    assert "u1" not in deps.index.files
    assert len(broker.of_type(UploadStoreFailed)) == 1


def test_without_a_prestore_the_store_writes_the_file(deps) -> None:
    data = b"0123456789"
    msg = command(deps, data)
    _deliver(deps, msg)
    assert deps.index.files["u1"] == data


def test_a_store_waits_no_longer_than_its_bound_for_a_running_prestore(deps, monkeypatch) -> None:
    monkeypatch.setattr(prestoring, "WAIT_SECONDS", 0.05)
    msg = command(deps, b"0123456789")
    deps.cache.leases[msg.cache_key] = "a-prestore-that-never-ends"
    broker = _deliver(deps, msg)
    assert "u1" not in deps.index.files  # nothing written beside the running prestore
    assert len(broker.of_type(UploadStoreFailed)) == 1  # retried later instead


def test_only_the_gridfs_backend_is_prestored(deps) -> None:
    deps.cache.uploading.add("p:upload:u1")
    deps.cache.put("p:upload:u1", b"0123456789", 4)
    prestoring.prestore(deps, PrestoreUpload(upload_id="u1", cache_key="p:upload:u1", size=10, chunk_size=4,
                                             chunk_count=3, content_type="application/octet-stream",
                                             file_name="a.bin"))
    assert not deps.cache.leases and not deps.cache.prestores and "u1" not in deps.index.files
