"""Prestores with in-memory stores: a prestore writes where no read finds it, the StoreUpload
checks it and adopts it (not written again); a wrong one is removed and written again from the
cache; without one (or with one swept meanwhile) the StoreUpload writes it; a prestore that lost
its lease leaves nothing behind; a backend that cannot be prestored is left to the StoreUpload."""

from __future__ import annotations

import dataclasses
import hashlib

from services.common import contracts
from services.common.contracts import FileStatusChanged, PrestoreUpload, StoreUpload, UploadStoreFailed
from services.common.testing.file_service_manager import FakeBackend
from services.file_service_manager import backends, handlers, prestoring

from .conftest import command


def _deliver(deps, message):
    deps.broker.publish(message)
    deps.broker.deliver(handlers.consumers(deps))
    return deps.broker


def _prestored(deps, msg, data: bytes, sha256: str | None = None) -> str:
    """What a finished prestore leaves: the bytes under a temporary name, the outcome beside the cache."""
    ref = f".{msg.upload_id}.{'0' * 32}.tmp"
    deps.storage.default.temps[ref] = data
    deps.cache.prestores[msg.cache_key] = {"size": str(len(data)),
                                           "sha256": sha256 or hashlib.sha256(data).hexdigest(),
                                           "backend": prestoring._label(deps.storage.default), "ref": ref}
    return ref


def _prestore_of(msg: StoreUpload) -> PrestoreUpload:
    return PrestoreUpload(upload_id=msg.upload_id, cache_key=msg.cache_key, size=msg.size,
                          chunk_size=msg.chunk_size, chunk_count=msg.chunk_count, content_type=msg.content_type,
                          file_name=msg.file_name)


def test_a_prestore_writes_out_of_sight_and_the_store_adopts_it_without_reading_the_cache(deps) -> None:
    data = b"0123456789"
    msg = command(deps, data)
    deps.cache.uploading.add(msg.cache_key)  # the upload is still arriving
    prestoring.prestore(deps, _prestore_of(msg))
    backend = deps.storage.default
    assert list(backend.temps.values()) == [data]
    assert "u1" not in deps.index.files, "nothing is visible before the StoreUpload"
    assert deps.cache.prestores[msg.cache_key]["ref"] == next(iter(backend.temps))
    deps.cache.uploading.discard(msg.cache_key)  # complete
    deps.cache.chunks.clear()  # a second write would fail: its chunks are not there
    broker = _deliver(deps, msg)
    assert deps.index.record("u1")["status"] == contracts.UPLOADED
    assert deps.index.record("u1")["sha256"] == hashlib.sha256(data).hexdigest()
    assert deps.index.files["u1"] == data and backend.adopted == ["u1"] and not backend.temps
    assert [m.status for m in broker.of_type(FileStatusChanged)] == [contracts.UPLOADED]
    assert msg.cache_key not in deps.cache.prestores  # dropped with the cache


def test_prestored_bytes_that_do_not_match_the_upload_are_removed_and_written_again(deps) -> None:
    data = b"0123456789"
    msg = command(deps, data)
    _prestored(deps, msg, b"01234XXXXX", sha256=hashlib.sha256(b"01234XXXXX").hexdigest())
    broker = _deliver(deps, msg)
    assert deps.index.files["u1"] == data  # the StoreUpload's own write, from the cache
    assert deps.index.record("u1")["status"] == contracts.UPLOADED
    assert not deps.storage.default.temps and deps.storage.default.adopted == []
    assert broker.of_type(UploadStoreFailed) == []


def test_prestored_bytes_gone_meanwhile_are_written_by_the_store(deps) -> None:
    """The sweeper removed the temporary file (a StoreUpload later than the grace), and an earlier
    attempt's own write left other bytes at the key: the outcome describes the temporary file, not
    what is at the key, so the StoreUpload writes the file itself."""
    data = b"0123456789"
    msg = command(deps, data)
    ref = _prestored(deps, msg, data)
    del deps.storage.default.temps[ref]
    deps.index.files["u1"] = b"an earlier attempt's"
    broker = _deliver(deps, msg)
    assert deps.index.files["u1"] == data and deps.storage.default.adopted == []
    assert deps.index.record("u1")["status"] == contracts.UPLOADED and broker.of_type(UploadStoreFailed) == []


def test_a_prestore_that_lost_its_lease_half_way_leaves_nothing(deps) -> None:
    data = b"0123456789"
    msg = command(deps, data)
    deps.cache.uploading.add(msg.cache_key)
    cache, real = deps.cache, deps.cache.next_prestore_chunk

    def stalled_after_the_first_chunk(m, index, token, lease_seconds):
        if index == 1:
            cache.leases[m.cache_key] = "another-prestore"  # this one stalled past its lease
        return real(m, index, token, lease_seconds)

    cache.next_prestore_chunk = stalled_after_the_first_chunk
    prestoring.prestore(deps, _prestore_of(msg))
    assert not deps.storage.default.temps, "its own temporary file is removed even without the lease"
    assert msg.cache_key not in cache.prestores and cache.leases[msg.cache_key] == "another-prestore"


def test_a_prestore_that_lost_its_lease_before_recording_removes_its_file(deps) -> None:
    """Written whole, but the lease lapsed before the outcome was recorded: no StoreUpload will ever
    adopt that temporary file, so the prestore removes it (a name nobody else knows)."""
    data = b"0123456789"
    msg = command(deps, data)
    deps.cache.uploading.add(msg.cache_key)
    cache, recorded = deps.cache, []
    cache.prestore_done = lambda *args: recorded.append(args[2:]) or False  # the lease was lost meanwhile
    prestoring.prestore(deps, _prestore_of(msg))
    [(size, sha256, _label, ref)] = recorded  # it wrote the whole file and tried to record it
    assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest()) and ref.startswith(".u1.")
    assert not deps.storage.default.temps and "u1" not in deps.index.files


def test_a_prestore_whose_outcome_redis_failed_to_record_removes_its_file(deps) -> None:
    """Redis failed as the outcome was recorded (review): the temporary file would otherwise wait an
    hour for the sweeper; the StoreUpload, finding no outcome (or one whose bytes are gone), writes
    the file from the cache."""
    data = b"0123456789"
    msg = command(deps, data)
    deps.cache.uploading.add(msg.cache_key)

    def redis_down(*args):
        raise ConnectionError("Redis went away")

    deps.cache.prestore_done = redis_down
    prestoring.prestore(deps, _prestore_of(msg))
    assert not deps.storage.default.temps, "its temporary file is removed"
    deps.cache.uploading.discard(msg.cache_key)
    _deliver(deps, msg)
    assert deps.index.files["u1"] == data and deps.index.record("u1")["status"] == contracts.UPLOADED


def test_a_paused_upload_is_given_up_and_its_file_removed(deps, monkeypatch) -> None:
    monkeypatch.setattr(prestoring, "IDLE_SECONDS", 0.05)
    data = b"0123456789"
    msg = command(deps, data)
    del deps.cache.chunks[msg.chunk_key(2)]  # the last chunk has not arrived
    deps.cache.uploading.add(msg.cache_key)
    cache, real, asked = deps.cache, deps.cache.next_prestore_chunk, set()

    def counted(m, index, token, lease_seconds):
        asked.add(index)
        return real(m, index, token, lease_seconds)

    cache.next_prestore_chunk = counted
    prestoring.prestore(deps, _prestore_of(msg))
    assert {0, 1, 2} <= asked, "it wrote what had arrived and waited for the rest"
    assert not deps.storage.default.temps and msg.cache_key not in deps.cache.prestores
    assert not deps.cache.leases, "the lease is released: the StoreUpload does not wait for it"


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


def test_a_backend_that_cannot_be_prestored_is_left_to_the_store(deps) -> None:
    plain = FakeBackend("s3", deps.index.files)  # no prestore_* methods (ports.Prestorable)
    deps = dataclasses.replace(deps, storage=backends.Storages(deps.settings.default_storage, lambda spec: plain))
    deps.cache.uploading.add("p:upload:u1")
    deps.cache.put("p:upload:u1", b"0123456789", 4)
    prestoring.prestore(deps, PrestoreUpload(upload_id="u1", cache_key="p:upload:u1", size=10, chunk_size=4,
                                             chunk_count=3, content_type="application/octet-stream",
                                             file_name="a.bin"))
    assert not deps.cache.leases and not deps.cache.prestores and "u1" not in deps.index.files
