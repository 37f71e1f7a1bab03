"""The upload use cases (start, resume, chunks, complete, release, HTTP stream) on the in-memory cache."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from datetime import timedelta

import pytest

from services.common import contracts, timeutil, topology
from services.common.contracts import AuditRecorded, FileStatusChanged, StoreUpload
from services.common.errors import ApiError
from services.common.httpkit import ServiceMetrics
from services.common.testing import InMemoryBroker
from services.common.testing.file_uploader import FakeUploadCache
from services.file_uploader import uploads as uploads_mod
from services.file_uploader.uploads import UploaderMetrics, UploadService

from .conftest import CHUNK, OWNER, WRITER, send_all, start

# Update times relative to now: a fixed date ages past a pool's max_late_seconds (SPEC default
# 7 days) and would be refused. An hour ago is well inside it and not in the future.
T0 = timeutil.iso(timeutil.now() - timedelta(hours=1))
T1 = timeutil.iso(timeutil.now() - timedelta(hours=1) + timedelta(seconds=1))


def refused(call, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def write(uploads: UploadService, file_id: str, index: object, data: bytes, writer: str = WRITER, **kw):
    return uploads.write_chunk(file_id, index, data, owner_id=OWNER, writer=writer, **kw)


def complete(uploads: UploadService, file_id: str, writer: str | None = WRITER) -> dict:
    return uploads.complete(file_id, owner_id=OWNER, writer=writer)


def actions(broker: InMemoryBroker) -> list[str]:
    return [a.action for a in broker.of_type(AuditRecorded)]


# --- start -----------------------------------------------------------------------------------


def test_start_opens_a_session_held_by_its_writer(uploads, cache: FakeUploadCache, broker) -> None:
    body, status = uploads.start({"file_name": "a.bin", "size": 20, "pool_id": "p1"}, owner_id=OWNER,
                                 owner_name="alice", writer=WRITER)
    assert status == 201 and body["chunk_size"] == CHUNK
    file_id = body["file_id"]
    session = cache.session(file_id)
    assert session is not None
    assert (session["owner_id"], session["size"], session["chunk_count"], session["status"]) == (OWNER, 20, 3,
                                                                                                  "uploading")
    assert cache.writer(file_id) == WRITER
    assert cache.slots[OWNER] == {file_id}
    assert cache.status(file_id)["status"] == "uploading"
    assert actions(broker) == ["upload_started"]
    assert not broker.of_type(StoreUpload)


@pytest.mark.parametrize(("payload", "status", "code"), [
    ({"file_name": "tool.exe", "size": 5}, 415, "forbidden_type"),
    ({"file_name": "run.SH. ", "size": 5}, 415, "forbidden_type"),
    ({"file_name": "a.bin", "size": 5, "content_type": "application/x-msdownload"}, 415, "forbidden_type"),
    ({"file_name": "a.bin", "size": 0}, 400, "empty_file"),
    ({"file_name": "a.bin", "size": 1025}, 413, "too_large"),
    ({"file_name": "a.bin", "size": -3}, 400, "bad_request"),
    ({"file_name": "a.bin", "size": "5"}, 400, "bad_request"),
    ({"file_name": "a.bin", "size": True}, 400, "bad_request"),
    ({"file_name": "a.bin", "size": 5, "sha256": "xyz"}, 400, "bad_request"),
    ({"file_name": "a.bin", "size": 5, "kind": "virus"}, 400, "bad_request"),
    ({"file_name": "a.bin", "size": 5, "metadata": "[1]"}, 400, "bad_request"),
    ({"file_name": "a.bin", "size": 5, "metadata": {"k": "v" * 20_000}}, 413, "too_large"),
    ({"size": 5}, 400, "bad_request"),
])
def test_start_refuses_bad_input_and_keeps_nothing(uploads, cache, payload, status, code) -> None:
    error = refused(uploads.start, payload, owner_id=OWNER, owner_name="alice", writer=WRITER)
    assert (error.status, error.code) == (status, code)
    assert not cache.uploads and not cache.slots.get(OWNER)


def test_start_needs_an_owner_and_a_writer(uploads, cache) -> None:
    for owner, writer in (("", WRITER), (OWNER, "")):
        error = refused(uploads.start, {"file_name": "a.bin", "size": 5}, owner_id=owner, owner_name="",
                        writer=writer)
        assert error.status == 400
    assert not cache.uploads


def test_the_per_user_limit_is_overloaded_with_retry_after(uploads, cache, settings) -> None:
    first = start(uploads, 5)
    start(uploads, 5)
    error = refused(uploads.start, {"file_name": "a.bin", "size": 5}, owner_id=OWNER, owner_name="alice",
                    writer=WRITER)
    assert (error.status, error.code) == (429, "overloaded")
    assert error.extra["retry_after"] == settings.overload_retry_after
    # another user is not held back, and a finished upload gives its slot back
    uploads.start({"file_name": "a.bin", "size": 5}, owner_id="8", owner_name="bob", writer="w8")
    send_all(uploads, first, b"12345")
    complete(uploads, first)
    assert start(uploads, 5)


def test_a_slot_lives_as_long_as_its_upload(uploads, cache) -> None:
    cache.start_grace = 0
    first = start(uploads, 16)
    second = start(uploads, 16)
    for _ in range(3):  # writes and resumes keep both uploads, and so their slots, alive
        assert refused(uploads.start, {"file_name": "a.bin", "size": 5}, owner_id=OWNER, owner_name="alice",
                       writer=WRITER).code == "overloaded"
    uploads.resume(first, owner_id=OWNER, writer=WRITER)
    assert cache.slots[OWNER] == {first, second}
    cache.expire_session(second)  # abandoned: its session expired
    third = start(uploads, 5)
    assert cache.slots[OWNER] == {first, third}


def test_cancel_drops_the_bytes_and_frees_the_slot(uploads, cache, broker) -> None:
    file_id = start(uploads, 16)
    write(uploads, file_id, 0, b"a" * 8)
    start(uploads, 5)
    assert uploads.cancel(file_id, owner_id=OWNER) == {"file_id": file_id, "status": "cancelled"}
    assert file_id not in cache.uploads and file_id not in cache.slots[OWNER]
    assert cache.status(file_id)["status"] == "cancelled"
    assert "upload_cancelled" in actions(broker)
    assert start(uploads, 5)  # the freed slot is usable at once
    assert refused(uploads.cancel, file_id, owner_id=OWNER).status == 404
    error = refused(complete, uploads, file_id)  # a late complete of the cancelled upload
    assert (error.status, error.code) == (409, "conflict") and "cancelled" in error.message
    assert not broker.of_type(StoreUpload)
    assert refused(write, uploads, file_id, 1, b"b" * 8).status == 404


def test_only_the_owner_cancels_and_not_after_completion(uploads, cache) -> None:
    file_id = start(uploads, 5)
    assert refused(uploads.cancel, file_id, owner_id="8").status == 404
    send_all(uploads, file_id, b"12345")
    complete(uploads, file_id)
    assert refused(uploads.cancel, file_id, owner_id=OWNER).status == 409
    assert cache.session(file_id)["status"] == "cached"


@pytest.mark.parametrize("overload", ["memory", "queue", "pending"])
def test_overload_refuses_new_uploads_with_retry_after(uploads, cache, broker, settings, overload) -> None:
    uploads.load.interval = 0  # measure on every call in a test
    first = start(uploads, 5)
    if overload == "memory":
        cache.memory = settings.max_redis_memory_bytes
    elif overload == "queue":
        broker.depths[topology.STORE_QUEUE.name] = settings.max_store_queue_depth
    else:
        cache.pending[first] = settings.max_pending_bytes  # bytes cached and waiting for the store
    error = refused(uploads.start, {"file_name": "a.bin", "size": 5}, owner_id=OWNER, owner_name="alice",
                    writer=WRITER)
    assert (error.status, error.code) == (429, "overloaded")
    assert error.extra["retry_after"] == settings.overload_retry_after
    assert len(cache.slots[OWNER]) == 1  # the refused start took no slot


def test_the_overload_check_runs_on_every_chunk(uploads, cache, settings) -> None:
    uploads.load.interval = 0
    file_id = start(uploads, 16)
    write(uploads, file_id, 0, b"a" * 8)
    cache.memory = settings.max_redis_memory_bytes  # the cache filled up after the start
    error = refused(write, uploads, file_id, 1, b"b" * 8)
    assert (error.status, error.code) == (429, "overloaded")
    assert error.extra["retry_after"] == settings.overload_retry_after
    assert cache.read_chunk(file_id, 1) is None
    cache.memory = 0
    assert write(uploads, file_id, 1, b"b" * 8)["received"] == 2


def test_the_overload_answer_is_cached_for_the_interval(uploads, cache, settings) -> None:
    uploads.load.interval = 3600
    file_id = start(uploads, 16)  # measured once here
    calls = []
    cache.used_memory = lambda: calls.append(1) or 0  # type: ignore[method-assign]
    write(uploads, file_id, 0, b"a" * 8)
    write(uploads, file_id, 1, b"b" * 8)
    assert calls == []  # no Redis INFO per chunk
    uploads.load.interval = 0
    write(uploads, file_id, 1, b"b" * 8)
    assert calls == [1]


def test_cached_bytes_per_user_are_bounded_on_every_chunk(uploads, cache, settings) -> None:
    uploads.settings = dataclasses.replace(settings, max_cached_bytes_per_user=24)
    first = start(uploads, 16)
    second = start(uploads, 16)
    send_all(uploads, first, b"a" * 16)
    write(uploads, second, 0, b"b" * 8)
    error = refused(write, uploads, second, 1, b"c" * 8)
    assert (error.status, error.code) == (429, "overloaded")
    assert error.extra["retry_after"] == settings.overload_retry_after
    assert cache.read_chunk(second, 1) is None
    complete(uploads, first)  # cached, still waiting for its store: still counted
    assert refused(write, uploads, second, 1, b"c" * 8).code == "overloaded"
    cache.drop(first)  # stored: file_service_manager deleted the bytes
    assert write(uploads, second, 1, b"c" * 8)["received"] == 2


def test_a_write_racing_a_drop_is_not_found(uploads, cache, monkeypatch) -> None:
    file_id = start(uploads, 16)
    stale = cache.session(file_id)
    cache.drop(file_id)
    monkeypatch.setattr(cache, "session", lambda _id: dict(stale))  # read before the drop
    monkeypatch.setattr(cache, "refresh_writer", lambda _id, _w: True)
    assert refused(write, uploads, file_id, 0, b"a" * 8).status == 404
    assert file_id not in cache.uploads


@pytest.fixture
def quota(uploads, settings) -> int:
    uploads.settings = dataclasses.replace(settings, user_quota_bytes=20)
    return 20


def test_the_quota_is_checked_at_start(uploads, cache, quota) -> None:
    error = refused(uploads.start, {"file_name": "a.bin", "size": 21}, owner_id=OWNER, owner_name="alice",
                    writer=WRITER)
    assert (error.status, error.code) == (413, "quota_exceeded") and error.extra["quota"] == quota
    assert not cache.uploads and not cache.slots[OWNER]
    first = start(uploads, 12)  # reserved at start: a concurrent start sees it
    assert refused(uploads.start, {"file_name": "a.bin", "size": 9}, owner_id=OWNER, owner_name="alice",
                   writer=WRITER).code == "quota_exceeded"
    assert start(uploads, 8)
    send_all(uploads, first, b"q" * 12)
    complete(uploads, first)  # stored bytes from now on
    assert cache.committed_bytes(OWNER) == 20
    uploads.start({"file_name": "a.bin", "size": 20}, owner_id="8", owner_name="bob", writer="w8")  # another user


def test_stored_bytes_keep_counting_after_the_cache_is_gone(uploads, cache, quota) -> None:
    first = start(uploads, 16)
    send_all(uploads, first, b"q" * 16)
    complete(uploads, first)
    cache.expire_session(first)  # stored: file_service_manager deleted the bytes
    assert refused(uploads.start, {"file_name": "a.bin", "size": 5}, owner_id=OWNER, owner_name="alice",
                   writer=WRITER).status == 413
    assert start(uploads, 4)


@pytest.mark.parametrize("how", ["cancel", "refused_content", "store_failed", "marked_failed"])
def test_an_upload_that_will_not_be_stored_gives_its_quota_back(uploads, cache, broker, quota, how) -> None:
    from services.file_uploader import retries

    first = start(uploads, 16)
    if how == "cancel":
        uploads.cancel(first, owner_id=OWNER)
    elif how == "refused_content":
        refused(write, uploads, first, 0, b"MZ" + b"\0" * 6)
    else:
        send_all(uploads, first, b"q" * 16)
        complete(uploads, first)
        if how == "store_failed":
            command = broker.of_type(StoreUpload)[0]
            for attempt in (1, 2, 3):
                retries.store_failed(uploads, first, attempt, "boom", command)
        else:
            uploads.update_status(first, contracts.FAILED)
            uploads.update_status(first, contracts.FAILED)  # told twice: given back once
    assert cache.committed_bytes(OWNER) == 0
    assert start(uploads, 20)


def test_no_quota_by_default(uploads, cache) -> None:
    assert uploads.settings.user_quota_bytes == 0
    for _ in range(2):
        file_id = start(uploads, 1024)
        send_all(uploads, file_id, b"z" * 1024)
        complete(uploads, file_id)
    assert cache.committed_bytes(OWNER) == 2048  # counted all the same, so a quota set later applies


# --- resume and the writer lock ----------------------------------------------------------------


def test_resume_answers_the_missing_chunks_to_the_next_writer(uploads, cache, settings) -> None:
    data = bytes(range(20))
    file_id = start(uploads, len(data))
    write(uploads, file_id, 0, data[:8])
    write(uploads, file_id, 2, data[16:])
    assert uploads.release(file_id, WRITER) is True
    body, status = uploads.start({"file_id": file_id}, owner_id=OWNER, owner_name="alice", writer="sid-2")
    assert status == 200 and body == {"file_id": file_id, "chunk_size": CHUNK, "pool_id": "p1", "missing": [1]}
    assert cache.writer(file_id) == "sid-2"
    assert cache.touched[-1] == (file_id, settings.upload_ttl_seconds)


def test_resume_is_refused_while_another_writer_holds_the_lock(uploads, cache) -> None:
    file_id = start(uploads, 20)
    error = refused(uploads.start, {"file_id": file_id}, owner_id=OWNER, owner_name="alice", writer="sid-2")
    assert (error.status, error.code) == (409, "conflict")
    assert cache.writer(file_id) == WRITER
    # the holder itself may resume (a reconnect that kept its writer id)
    assert uploads.resume(file_id, owner_id=OWNER, writer=WRITER)["missing"] == [0, 1, 2]


def test_resume_of_someone_elses_or_unknown_upload_is_not_found(uploads) -> None:
    file_id = start(uploads, 20)
    for owner, fid in (("8", file_id), (OWNER, "0" * 32)):
        error = refused(uploads.resume, fid, owner_id=owner, writer=WRITER)
        assert (error.status, error.code) == (404, "not_found")


def test_resume_of_a_completed_upload_is_a_conflict(uploads) -> None:
    file_id = start(uploads, 5)
    send_all(uploads, file_id, b"12345")
    complete(uploads, file_id)
    assert refused(uploads.resume, file_id, owner_id=OWNER, writer=WRITER).status == 409


def test_a_chunk_write_refreshes_the_lock_but_never_takes_a_free_one(uploads, cache) -> None:
    file_id = start(uploads, 16)
    cache.expire_writer(file_id)
    error = refused(write, uploads, file_id, 0, b"a" * 8)
    assert (error.status, error.code) == (409, "conflict")
    assert cache.writer(file_id) is None and cache.read_chunk(file_id, 0) is None
    uploads.resume(file_id, owner_id=OWNER, writer=WRITER)
    assert write(uploads, file_id, 0, b"a" * 8)["received"] == 1
    assert cache.writer(file_id) == WRITER


def test_another_writer_is_refused_and_stores_nothing(uploads, cache) -> None:
    file_id = start(uploads, 16)
    error = refused(write, uploads, file_id, 0, b"a" * 8, writer="sid-2")
    assert (error.status, error.code) == (409, "conflict")
    assert cache.read_chunk(file_id, 0) is None and cache.writer(file_id) == WRITER
    assert refused(write, uploads, file_id, 0, b"a" * 8, writer="").status == 409


def test_release_on_disconnect_frees_the_lock_and_a_late_write_is_refused(uploads, cache) -> None:
    file_id = start(uploads, 16)
    assert uploads.release(file_id, "sid-2") is False  # not the holder: nothing happens
    assert cache.writer(file_id) == WRITER
    assert uploads.release(file_id, WRITER) is True
    assert cache.writer(file_id) is None
    # a write of the dropped connection that arrives late cannot lock the reconnecting client out
    assert refused(write, uploads, file_id, 0, b"a" * 8).status == 409
    assert cache.writer(file_id) is None
    uploads.resume(file_id, owner_id=OWNER, writer="sid-2")
    assert write(uploads, file_id, 0, b"a" * 8, writer="sid-2")["received"] == 1


def test_complete_by_another_writer_is_refused(uploads, cache, broker) -> None:
    file_id = start(uploads, 5)
    send_all(uploads, file_id, b"12345")
    assert refused(complete, uploads, file_id, writer="sid-2").status == 409
    assert not broker.of_type(StoreUpload) and cache.session(file_id)["status"] == "uploading"


class KilledBroker(InMemoryBroker):
    """A replica SIGKILLed while publishing: the StoreUpload never reaches the broker."""

    def publish(self, message, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(message, StoreUpload):
            raise KeyboardInterrupt("killed")  # not an Exception: nothing in complete catches it
        return super().publish(message, **kwargs)


def test_a_complete_killed_before_its_publish_is_published_by_the_next_complete(settings, cache, broker) -> None:
    """Replica A turns the session cached and dies before publishing; the client's complete
    reaches replica B, which must not answer cached for an upload nobody will store."""
    dying = UploadService(settings, cache, KilledBroker(), UploaderMetrics(ServiceMetrics("file_uploader")))
    other = UploadService(settings, cache, broker, UploaderMetrics(ServiceMetrics("file_uploader")))
    file_id = start(dying, 5)
    send_all(dying, file_id, b"12345")
    with pytest.raises(KeyboardInterrupt):
        complete(dying, file_id)
    assert cache.session(file_id)["status"] == "cached" and cache.session(file_id)["published"] == "0"
    # Straight away: A may only be slow, so B asks the client to come back.
    early = refused(complete, other, file_id)
    assert (early.status, early.code) == (429, "overloaded")
    assert not broker.of_type(StoreUpload)
    cache.uploads[file_id].session["cached_at"] = str(time.time() - uploads_mod.REPUBLISH_AFTER_SECONDS - 1)
    assert complete(other, file_id) == {"file_id": file_id, "status": "cached"}
    (command,) = broker.of_type(StoreUpload)
    assert command.upload_id == file_id and command.sha256 == hashlib.sha256(b"12345").hexdigest()
    assert cache.session(file_id)["published"] == "1"
    assert complete(other, file_id) == {"file_id": file_id, "status": "cached"}  # published: plain idempotent
    assert len(broker.of_type(StoreUpload)) == 1


class KilledAfterPublish(InMemoryBroker):
    """A replica SIGKILLed right after the broker confirmed its StoreUpload, and
    file_service_manager fast enough to store the upload and drop its session first."""

    def __init__(self, cache) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.cache = cache

    def publish(self, message, **kwargs):  # type: ignore[no-untyped-def]
        super().publish(message, **kwargs)
        if isinstance(message, StoreUpload):
            self.cache.drop(message.upload_id)  # stored: the session and chunks are gone
            raise KeyboardInterrupt("killed")


def test_a_complete_killed_after_its_publish_answers_cached_when_retried(settings, cache, broker) -> None:
    """The retried complete-upload finds no session (stored and dropped already): the tombstone,
    written with the transition, answers cached, not "no such upload" (seen in the replica kill
    test: the client gave up on an upload that was stored and grouped)."""
    dying = UploadService(settings, cache, KilledAfterPublish(cache), UploaderMetrics(ServiceMetrics("file_uploader")))
    other = UploadService(settings, cache, broker, UploaderMetrics(ServiceMetrics("file_uploader")))
    file_id = start(dying, 5)
    send_all(dying, file_id, b"12345")
    with pytest.raises(KeyboardInterrupt):
        complete(dying, file_id)
    assert cache.session(file_id) is None
    assert complete(other, file_id) == {"file_id": file_id, "status": "cached"}
    assert not broker.of_type(StoreUpload)  # nothing published twice


def test_a_normal_complete_is_marked_published(uploads, cache, broker) -> None:
    file_id = start(uploads, 5)
    send_all(uploads, file_id, b"12345")
    assert complete(uploads, file_id)["status"] == "cached"
    assert cache.session(file_id)["published"] == "1"
    assert complete(uploads, file_id)["status"] == "cached"
    assert len(broker.of_type(StoreUpload)) == 1


# --- chunks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "data", "status"), [
    (0, b"a" * 9, 413),   # longer than chunk_size
    (0, b"a" * 7, 400),   # a middle chunk must be exactly chunk_size
    (2, b"a" * 5, 413),   # the last chunk is exactly the remainder (4)
    (2, b"a" * 3, 400),
    (3, b"a" * 4, 400),   # outside 0..2
    (-1, b"a" * 8, 400),
    ("x", b"a" * 8, 400),
    (None, b"a" * 8, 400),
    (True, b"a" * 8, 400),
])
def test_chunk_size_and_index_rules(uploads, cache, index, data, status) -> None:
    file_id = start(uploads, 20)
    error = refused(write, uploads, file_id, index, data)
    assert error.status == status
    assert not cache.uploads[file_id].chunks


def test_chunk_sha256_is_checked_before_storing(uploads, cache) -> None:
    file_id = start(uploads, 16)
    error = refused(write, uploads, file_id, 0, b"a" * 8, chunk_sha256="0" * 64)
    assert error.status == 400 and "sha256" in error.message
    assert cache.read_chunk(file_id, 0) is None
    assert refused(write, uploads, file_id, 0, b"a" * 8, chunk_sha256="not-hex").status == 400
    good = hashlib.sha256(b"a" * 8).hexdigest()
    assert write(uploads, file_id, 0, b"a" * 8, chunk_sha256=good) == {"file_id": file_id, "index": 0,
                                                                        "received": 1}


def test_chunks_are_immutable_an_identical_rewrite_is_harmless(uploads, cache) -> None:
    file_id = start(uploads, 16)
    write(uploads, file_id, 0, b"a" * 8)
    assert write(uploads, file_id, 0, b"a" * 8)["received"] == 1
    error = refused(write, uploads, file_id, 0, b"b" * 8)
    assert (error.status, error.code) == (409, "conflict")
    assert cache.read_chunk(file_id, 0) == b"a" * 8


def test_chunks_of_someone_elses_upload_are_not_found(uploads, cache) -> None:
    file_id = start(uploads, 16)
    error = refused(uploads.write_chunk, file_id, 0, b"a" * 8, owner_id="8", writer=WRITER)
    assert (error.status, error.code) == (404, "not_found")
    assert refused(uploads.write_chunk, "../etc", 0, b"a" * 8, owner_id=OWNER, writer=WRITER).status in (400, 404)


@pytest.mark.parametrize("head", [b"MZ\x90\x00", b"\x7fELF", b"#!/b", b"\xca\xfe\xba\xbe"])
def test_an_executable_first_chunk_is_refused_and_dropped(uploads, cache, broker, head) -> None:
    file_id = start(uploads, 16)
    error = refused(write, uploads, file_id, 0, head + b"\0" * 4)
    assert (error.status, error.code) == (415, "forbidden_type")
    assert file_id not in cache.uploads and file_id not in cache.slots[OWNER]
    assert "upload_refused" in actions(broker)
    assert refused(write, uploads, file_id, 1, b"b" * 8).status == 404


def test_a_chunk_after_the_upload_is_complete_is_a_conflict(uploads) -> None:
    file_id = start(uploads, 5)
    send_all(uploads, file_id, b"12345")
    complete(uploads, file_id)
    assert refused(write, uploads, file_id, 0, b"12345").status == 409


# --- complete ----------------------------------------------------------------------------


def test_complete_with_missing_chunks_names_them(uploads, broker) -> None:
    file_id = start(uploads, 20)
    write(uploads, file_id, 1, b"b" * 8)
    error = refused(complete, uploads, file_id)
    assert error.status == 409 and error.extra["missing"] == [0, 2]
    assert not broker.of_type(StoreUpload)


def test_complete_sees_a_chunk_whose_key_expired(uploads, cache) -> None:
    file_id = start(uploads, 16)
    send_all(uploads, file_id, b"c" * 16)
    cache.lose_chunk(file_id, 1)
    assert refused(complete, uploads, file_id).extra["missing"] == [1]


def test_complete_caches_exactly_once_and_publishes_one_store_command(uploads, cache, broker, settings) -> None:
    data = bytes(range(50, 70))
    file_id = start(uploads, len(data), sha256=hashlib.sha256(data).hexdigest())
    send_all(uploads, file_id, data)
    assert complete(uploads, file_id) == {"file_id": file_id, "status": "cached"}
    assert complete(uploads, file_id) == {"file_id": file_id, "status": "cached"}
    [command] = broker.of_type(StoreUpload)
    assert command.upload_id == file_id and command.owner_id == OWNER and command.pool_id == "p1"
    assert command.sha256 == hashlib.sha256(data).hexdigest() and command.attempt == 1
    assert (command.size, command.chunk_size, command.chunk_count) == (20, CHUNK, 3)
    assert command.cache_key == cache.cache_key(file_id)
    assert [i.file_id for i in command.items] == [file_id]
    assert broker.routed_to(topology.STORE_QUEUE) == [command]
    [notice] = broker.of_type(FileStatusChanged)
    assert (notice.file_id, notice.status, notice.owner_id) == (file_id, contracts.CACHED, OWNER)
    assert cache.status(file_id)["status"] == "cached" and cache.pending == {file_id: 20}
    assert cache.writer(file_id) is None and file_id not in cache.slots[OWNER]
    assert cache.touched[-1] == (file_id, settings.cached_ttl_seconds)
    assert actions(broker).count("upload_completed") == 1


def test_a_racing_complete_that_read_a_stale_session_publishes_nothing(uploads, cache, broker,
                                                                     monkeypatch) -> None:
    file_id = start(uploads, 5)
    send_all(uploads, file_id, b"12345")
    stale = cache.session(file_id)  # read by a second complete before the first one's transition
    complete(uploads, file_id)
    monkeypatch.setattr(cache, "session", lambda _id: dict(stale))
    assert complete(uploads, file_id) == {"file_id": file_id, "status": "cached"}
    assert len(broker.of_type(StoreUpload)) == 1 and len(broker.of_type(FileStatusChanged)) == 1


def test_out_of_order_chunks_hash_the_whole_file(uploads, broker) -> None:
    data = bytes(range(100, 127))
    file_id = start(uploads, len(data))
    for index in (3, 1, 0, 2):
        write(uploads, file_id, index, data[index * CHUNK:(index + 1) * CHUNK])
    complete(uploads, file_id)
    assert broker.of_type(StoreUpload)[0].sha256 == hashlib.sha256(data).hexdigest()


def test_a_sha256_mismatch_at_complete_drops_the_bytes(uploads, cache, broker) -> None:
    file_id = start(uploads, 16, sha256="1" * 64)
    send_all(uploads, file_id, b"d" * 16)
    error = refused(complete, uploads, file_id)
    assert error.status == 400 and "sha256 mismatch" in error.message
    assert file_id not in cache.uploads and file_id in cache.tombs
    assert not broker.of_type(StoreUpload) and file_id not in cache.slots[OWNER]


def test_a_refused_publish_leaves_the_upload_completable(uploads, cache, broker) -> None:
    file_id = start(uploads, 5)
    send_all(uploads, file_id, b"12345")
    broker.fail_publishes(1)
    error = refused(complete, uploads, file_id)
    assert (error.status, error.code) == (503, "unavailable")
    assert cache.session(file_id)["status"] == "uploading" and not cache.pending
    assert complete(uploads, file_id)["status"] == "cached"
    assert len(broker.of_type(StoreUpload)) == 1


def test_complete_of_a_dropped_upload_answers_from_the_tombstone(uploads, cache) -> None:
    file_id = start(uploads, 5)
    send_all(uploads, file_id, b"12345")
    complete(uploads, file_id)
    cache.drop(file_id)  # stored: file_service_manager dropped the bytes
    assert complete(uploads, file_id) == {"file_id": file_id, "status": "cached"}
    cache.set_status(file_id, contracts.FAILED)
    assert refused(complete, uploads, file_id).status == 409
    assert refused(uploads.complete, file_id, owner_id="8", writer=WRITER).status == 404


# --- items (a batch of updates in one upload) ----------------------------------------------


def test_items_become_file_records_of_the_store_command(uploads, broker) -> None:
    data = b"A" * 10 + b"B" * 6
    items = [{"offset": 0, "length": 10, "timestamp": T0, "name": "one.txt"},
             {"offset": 10, "length": 6, "timestamp": T1}]
    file_id = start(uploads, len(data), items=items)
    send_all(uploads, file_id, data)
    complete(uploads, file_id)
    command = broker.of_type(StoreUpload)[0]
    assert [(i.file_id, i.offset, i.length, i.name) for i in command.items] == [
        (f"{file_id}-0000", 0, 10, "one.txt"), (f"{file_id}-0001", 10, 6, "a.bin.0001")]
    assert command.items[1].timestamp == T1


@pytest.mark.parametrize("items", [
    "not a list",
    [{"offset": 0, "length": 5}],  # no timestamp
    [{"offset": 0, "length": 20, "timestamp": T0}],  # outside the file
    [{"offset": 0, "length": 0, "timestamp": T0}],
    [{"offset": 0, "length": 6, "timestamp": T0},
     {"offset": 5, "length": 5, "timestamp": T0}],  # overlap
    [{"offset": 0, "length": 6, "timestamp": T0, "name": "x.exe"}],
    [1],
])
def test_bad_items_are_refused_at_start(uploads, cache, items) -> None:
    error = refused(uploads.start, {"file_name": "a.bin", "size": 16, "items": items}, owner_id=OWNER,
                    owner_name="alice", writer=WRITER)
    assert error.status in (400, 415)
    assert not cache.uploads


def test_an_executable_item_inside_a_chunk_is_refused(uploads, cache) -> None:
    items = [{"offset": 0, "length": 11, "timestamp": T0},
             {"offset": 11, "length": 5, "timestamp": T0}]
    file_id = start(uploads, 16, items=items)
    write(uploads, file_id, 0, b"a" * 8)
    error = refused(write, uploads, file_id, 1, b"aaa" + b"MZ\x90\x00\x00")
    assert error.code == "forbidden_type" and file_id not in cache.uploads


def batch_with_head_at(uploads, offset: int, size: int = 24) -> tuple[str, bytearray]:
    """A two-item batch whose second item starts at ``offset`` with an executable's magic."""
    items = [{"offset": 0, "length": offset, "timestamp": T0},
             {"offset": offset, "length": size - offset, "timestamp": T0}]
    data = bytearray(b"a" * size)
    data[offset:offset + 4] = b"\x7fELF"
    return start(uploads, size, items=items), data


@pytest.mark.parametrize("offset", [5, 6, 7, 8, 13, 14, 15, 16])
@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0)])
def test_an_item_head_across_a_chunk_boundary_is_sniffed(uploads, cache, offset, order) -> None:
    file_id, data = batch_with_head_at(uploads, offset)
    with pytest.raises(ApiError) as info:
        for index in order:
            write(uploads, file_id, index, bytes(data[index * CHUNK:(index + 1) * CHUNK]))
        complete(uploads, file_id)
    assert info.value.code == "forbidden_type"
    assert file_id not in cache.uploads


def test_a_straddling_head_written_concurrently_is_caught_at_complete(uploads, cache, broker,
                                                                       monkeypatch) -> None:
    file_id, data = batch_with_head_at(uploads, 7)
    # Both halves written at once: neither write sees the other's bytes yet.
    monkeypatch.setattr(cache, "read_range", lambda *_args: None)
    for index in range(3):
        write(uploads, file_id, index, bytes(data[index * CHUNK:(index + 1) * CHUNK]))
    monkeypatch.undo()
    error = refused(complete, uploads, file_id)
    assert error.code == "forbidden_type" and file_id not in cache.uploads
    assert not broker.of_type(StoreUpload)


def test_harmless_bytes_across_a_boundary_pass(uploads, broker) -> None:
    file_id, data = batch_with_head_at(uploads, 7)
    data[7:11] = b"ELF\x7f"
    for index in range(3):
        write(uploads, file_id, index, bytes(data[index * CHUNK:(index + 1) * CHUNK]))
    assert complete(uploads, file_id)["status"] == "cached"


# --- plain HTTP uploads ------------------------------------------------------------------


def test_an_http_upload_goes_through_the_chunk_pipeline(uploads, cache, broker) -> None:
    data = bytes(range(30))
    file_id = uploads.upload_stream(io.BytesIO(data), len(data), {"file_name": "h.bin", "pool_id": "p1"},
                                    owner_id=OWNER, owner_name="alice")
    command = broker.of_type(StoreUpload)[0]
    assert command.upload_id == file_id and command.sha256 == hashlib.sha256(data).hexdigest()
    assert command.chunk_count == 4 and cache.session(file_id)["status"] == "cached"


def test_a_short_or_executable_http_upload_leaves_nothing(uploads, cache, broker) -> None:
    error = refused(uploads.upload_stream, io.BytesIO(b"x" * 10), 20, {"file_name": "h.bin"},
                    owner_id=OWNER, owner_name="alice")
    assert error.status == 400
    error = refused(uploads.upload_stream, io.BytesIO(b"\x7fELF" + b"x" * 12), 16, {"file_name": "h.bin"},
                    owner_id=OWNER, owner_name="alice")
    assert error.code == "forbidden_type"
    assert not cache.uploads and not cache.slots[OWNER] and not broker.of_type(StoreUpload)


# --- PUT /file/update/status ---------------------------------------------------------------


def test_update_status_tells_the_owner_and_a_failure_drops_the_bytes(uploads, cache, broker) -> None:
    file_id = start(uploads, 5)
    send_all(uploads, file_id, b"12345")
    complete(uploads, file_id)
    assert uploads.update_status(file_id, contracts.FAILED) == {"file_id": file_id, "status": contracts.FAILED}
    assert file_id not in cache.uploads and cache.status(file_id)["status"] == contracts.FAILED
    notice = broker.of_type(FileStatusChanged)[-1]
    assert (notice.status, notice.owner_id, notice.file_name) == (contracts.FAILED, OWNER, "a.bin")
    for file_id_, status_ in ((file_id, "cached"), (None, contracts.UPLOADED), ("0" * 32, contracts.UPLOADED)):
        assert refused(uploads.update_status, file_id_, status_).status in (400, 404)


def test_items_are_bounded_by_max_items_with_a_clear_400(uploads, cache, settings) -> None:
    assert settings.limits.max_items == 1000  # SPEC's default
    items = [{"offset": n, "length": 1, "timestamp": T0} for n in range(1001)]
    error = refused(uploads.start, {"file_name": "a.bin", "size": 1001, "items": items}, owner_id=OWNER,
                    owner_name="alice", writer=WRITER)
    assert (error.status, error.code) == (400, "bad_request")
    assert "at most 1000 items" in error.message and error.extra["max_items"] == 1000
    assert not cache.uploads
    assert start(uploads, 1000, items=items[:1000])


def test_the_overloaded_message_names_no_internals(uploads, cache, broker, settings, caplog) -> None:
    uploads.load.interval = 0
    broker.depths[topology.STORE_QUEUE.name] = settings.max_store_queue_depth + 7
    with caplog.at_level("WARNING"):
        error = refused(uploads.start, {"file_name": "a.bin", "size": 5}, owner_id=OWNER, owner_name="alice",
                        writer=WRITER)
    assert error.code == "overloaded" and "queue" not in error.message
    assert str(settings.max_store_queue_depth + 7) not in error.message
    assert any("store queue" in str(getattr(r, "reasons", "")) for r in caplog.records)
