"""One contract, two caches: the Redis ``UploadStore`` and the in-memory ``FakeUploadCache``.

The fast unit tests trust the fake; these assertions run against both, so the
fake cannot drift from Redis unnoticed (writer lock, immutable chunks,
exactly-once completion, claimed attempts, the tombstone, owner slots).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from services.common.testing.file_uploader import FakeUploadCache
from services.file_uploader import core
from services.file_uploader.store import UploadStore

CHUNK = 4


@pytest.fixture(params=["fake", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        yield FakeUploadCache()
        return
    prefix = request.getfixturevalue("redis_prefix")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    yield UploadStore(client, prefix, upload_ttl=600, cached_ttl=600, status_ttl=600, lock_seconds=30)
    client.close()


def plan(upload_id: str = "u" * 32, owner: str = "7", size: int = 10, **payload: Any) -> core.UploadPlan:
    return core.plan_upload({"file_name": "a.bin", "size": size, "pool_id": "p1", "metadata": {"k": [1, "x"]},
                             **payload}, upload_id=upload_id, owner_id=owner, owner_name="alice",
                            limits=core.Limits(chunk_size=CHUNK), now="2026-01-01T00:00:00.000Z")


def test_a_session_round_trips(cache) -> None:
    p = plan(items=[{"offset": 0, "length": 3, "timestamp": "2026-01-01T00:00:00Z"},
                    {"offset": 3, "length": 7, "timestamp": "2026-01-01T00:00:00Z"}])
    cache.create(p, "w1")
    s = cache.session(p.upload_id)
    assert (s["owner_id"], s["size"], s["chunk_size"], s["chunk_count"], s["status"]) == ("7", 10, CHUNK, 3,
                                                                                          "uploading")
    assert s["sha256"] is None and s["group_id"] is None and s["pool_id"] == "p1"
    assert s["metadata"] == {"k": [1, "x"]}
    assert [i["offset"] for i in s["items"]] == [0, 3] and s["items"][1]["file_id"] == f"{p.upload_id}-0001"
    assert cache.status(p.upload_id) == {"owner_id": "7", "status": "uploading", "pool_id": "p1",
                                         "file_name": "a.bin"}
    assert cache.writer(p.upload_id) == "w1"
    assert cache.session("v" * 32) is None and cache.status("v" * 32) is None


def test_the_writer_lock(cache) -> None:
    p = plan()
    cache.create(p, "w1")
    fid = p.upload_id
    assert cache.acquire_writer(fid, "w2") is False and cache.refresh_writer(fid, "w2") is False
    assert cache.refresh_writer(fid, "w1") is True and cache.acquire_writer(fid, "w1") is True
    assert cache.release_writer(fid, "w2") is False and cache.writer(fid) == "w1"
    assert cache.release_writer(fid, "w1") is True and cache.writer(fid) is None
    assert cache.refresh_writer(fid, "w1") is False and cache.writer(fid) is None  # never takes a free lock
    assert cache.acquire_writer(fid, "w2") is True and cache.writer(fid) == "w2"


def test_chunks_are_written_once(cache) -> None:
    p = plan()
    cache.create(p, "w1")
    fid = p.upload_id
    assert cache.put_chunk(fid, 0, b"abcd", owner_id="7") == "new"
    assert cache.put_chunk(fid, 0, b"abcd", owner_id="7") == "same"
    assert cache.put_chunk(fid, 0, b"abce", owner_id="7") == "different"
    assert cache.put_chunk(fid, 2, b"ij", owner_id="7") == "new"
    assert cache.read_chunk(fid, 0) == b"abcd" and cache.read_chunk(fid, 1) is None
    assert cache.received_count(fid) == 2 and cache.existing_chunks(fid, 3) == {0, 2}
    assert cache.read_range(fid, 0, 1, 3) == b"bc" and cache.read_range(fid, 2, 1, 4) == b"j"
    assert cache.read_range(fid, 1, 0, 2) is None


def test_the_owner_budget_of_cached_bytes(cache) -> None:
    a, b = plan("a" * 32, size=8), plan("b" * 32, size=8)
    cache.create(a, "w1")
    cache.create(b, "w1")
    assert cache.put_chunk(a.upload_id, 0, b"abcd", owner_id="7", max_owner_bytes=10) == "new"
    assert cache.put_chunk(a.upload_id, 1, b"efgh", owner_id="7", max_owner_bytes=10) == "new"
    assert cache.put_chunk(b.upload_id, 0, b"ijkl", owner_id="7", max_owner_bytes=10) == "full"
    assert cache.read_chunk(b.upload_id, 0) is None and cache.received_count(b.upload_id) == 0
    assert cache.put_chunk(a.upload_id, 0, b"abcd", owner_id="7", max_owner_bytes=10) == "same"
    assert cache.put_chunk(b.upload_id, 0, b"ijkl", owner_id="8", max_owner_bytes=10) == "new"  # another budget
    assert cache.cached_bytes("7") == 8
    cache.drop(a.upload_id)
    assert cache.cached_bytes("7") == 0
    assert cache.put_chunk(b.upload_id, 1, b"mnop", owner_id="7", max_owner_bytes=10) == "new"


def test_a_stored_or_expired_upload_leaves_the_budget(cache) -> None:
    a, b = plan("a" * 32, size=8), plan("b" * 32, size=8)
    cache.create(a, "w1")
    cache.create(b, "w1")
    cache.put_chunk(a.upload_id, 0, b"abcd", owner_id="7", max_owner_bytes=8)
    cache.put_chunk(a.upload_id, 1, b"efgh", owner_id="7", max_owner_bytes=8)
    expire_session(cache, a.upload_id)  # file_service_manager stored it and deleted the cache
    assert cache.put_chunk(b.upload_id, 0, b"ijkl", owner_id="7", max_owner_bytes=8) == "new"
    assert cache.cached_bytes("7") == 4


def test_a_write_after_the_drop_leaves_nothing(cache) -> None:
    p = plan()
    cache.create(p, "w1")
    cache.drop(p.upload_id)
    assert cache.put_chunk(p.upload_id, 0, b"abcd", owner_id="7") == "gone"
    assert cache.read_chunk(p.upload_id, 0) is None and cache.session(p.upload_id) is None


def test_cached_exactly_once_and_undone(cache) -> None:
    p = plan()
    cache.create(p, "w1")
    fid = p.upload_id
    assert cache.mark_cached(fid, 10, owner_id="7") is True
    assert cache.mark_cached(fid, 10, owner_id="7") is False
    assert cache.session(fid)["status"] == "cached" and cache.writer(fid) is None
    assert cache.status(fid)["status"] == "cached"  # the tombstone, at once (outlives the session)
    if hasattr(cache, "r"):  # real Redis: until the publish is confirmed, no longer than the session
        # Both read in one MULTI: read one after the other, a millisecond between the two reads
        # made equal lifetimes look unequal (a flaky failure).
        status_ttl, session_ttl = cache.r.pipeline(transaction=True).pttl(cache._status(fid)) \
            .pttl(cache.cache_key(fid)).execute()
        assert 0 < status_ttl <= session_ttl
    assert cache.pending_bytes() == 10
    cache.unmark_cached(fid, owner_id="7")
    assert cache.session(fid)["status"] == "uploading" and cache.pending_bytes() == 0
    assert cache.status(fid)["status"] == "uploading"
    assert cache.mark_cached(fid, 10, owner_id="7") is True
    assert cache.mark_cached("v" * 32, 5, owner_id="7") is False


def test_drop_keeps_the_tombstone_and_frees_the_slot(cache) -> None:
    p = plan()
    assert cache.open_slot("7", p.upload_id, 5) is True
    cache.create(p, "w1")
    cache.put_chunk(p.upload_id, 0, b"abcd", owner_id="7")
    cache.mark_cached(p.upload_id, 10, owner_id="7")
    cache.set_status(p.upload_id, "retrying", attempt=2, reason=None)
    assert cache.drop(p.upload_id) > 0
    assert cache.session(p.upload_id) is None and cache.read_chunk(p.upload_id, 0) is None
    assert cache.writer(p.upload_id) is None and cache.pending_bytes() == 0
    assert cache.status(p.upload_id) == {"owner_id": "7", "status": "retrying", "pool_id": "p1",
                                         "file_name": "a.bin", "attempt": "2"}
    for n in range(5):  # the dropped upload's slot is free again: five new ones fit
        assert cache.open_slot("7", f"{n}" * 32, 5) is True


def test_owner_slots(cache) -> None:
    assert cache.open_slot("7", "a" * 32, 2) and cache.open_slot("7", "b" * 32, 2)
    assert cache.open_slot("7", "a" * 32, 2) is True  # the same upload again takes no new slot
    assert cache.open_slot("7", "c" * 32, 2) is False
    assert cache.open_slot("8", "c" * 32, 2) is True
    cache.free_slot("7", "a" * 32)
    assert cache.open_slot("7", "c" * 32, 2) is True


def expire_session(cache, file_id: str) -> None:
    if isinstance(cache, FakeUploadCache):
        cache.expire_session(file_id)
    else:
        cache.r.delete(cache.cache_key(file_id))


def test_a_slot_lives_as_long_as_its_session(cache) -> None:
    cache.start_grace = 0
    p = plan("a" * 32)
    assert cache.open_slot("7", p.upload_id, 1) is True
    cache.create(p, "w1")
    assert cache.open_slot("7", "b" * 32, 1) is False
    expire_session(cache, p.upload_id)
    assert cache.open_slot("7", "b" * 32, 1) is True


def test_the_quota_ledger(cache) -> None:
    a, b, c = plan("a" * 32, size=8), plan("b" * 32, size=8), plan("c" * 32, size=8)
    for p in (a, b):
        assert cache.open_slot("7", p.upload_id, 5) and cache.reserve("7", p.upload_id, 8, 20)
        cache.create(p, "w1")
    assert cache.reserve("7", a.upload_id, 8, 20) is True  # idempotent
    assert cache.open_slot("7", c.upload_id, 5) and cache.reserve("7", c.upload_id, 8, 20) is False
    assert cache.reserve("7", c.upload_id, 8, 0) is True and cache.committed_bytes("7") == 24  # 0: unlimited
    cache.free_slot("7", c.upload_id)  # no longer unfinished: its reservation goes with the slot
    assert cache.committed_bytes("7") == 16
    assert cache.mark_cached(a.upload_id, 8, owner_id="7") and cache.committed_bytes("7") == 16
    cache.unmark_cached(a.upload_id, owner_id="7")
    assert cache.committed_bytes("7") == 16  # reserved again
    assert cache.mark_cached(a.upload_id, 8, owner_id="7") and cache.committed_bytes("7") == 16
    cache.free_slot("7", a.upload_id)  # completed: its bytes stay counted as stored
    assert cache.committed_bytes("7") == 16
    assert cache.give_back("7", a.upload_id) == 8 and cache.give_back("7", a.upload_id) == 0
    assert cache.committed_bytes("7") == 8
    cache.drop(b.upload_id)
    assert cache.committed_bytes("7") == 0 and cache.committed_bytes("8") == 0


def test_a_stored_upload_stays_counted_after_its_cache_is_gone(cache) -> None:
    a = plan("a" * 32, size=8)
    cache.open_slot("7", a.upload_id, 5)
    cache.reserve("7", a.upload_id, 8, 10)
    cache.create(a, "w1")
    cache.mark_cached(a.upload_id, 8, owner_id="7")
    cache.free_slot("7", a.upload_id)
    expire_session(cache, a.upload_id)  # stored: file_service_manager deleted the cache
    assert cache.open_slot("7", "b" * 32, 5) and cache.reserve("7", "b" * 32, 3, 10) is False
    assert cache.reserve("7", "b" * 32, 2, 10) is True


def test_attempts_are_claimed_once(cache) -> None:
    p = plan()
    cache.create(p, "w1")
    fid = p.upload_id
    assert cache.claim_attempt(fid, 1) == "claimed" and cache.claim_attempt(fid, 1) == "busy"
    cache.finish_attempt(fid, 1)
    assert cache.claim_attempt(fid, 1) == "done"
    assert cache.claim_attempt(fid, 3) == "claimed" and cache.claim_attempt(fid, 2) == "done"
    cache.unclaim_attempt(fid, 2)  # not the last claimed one: no effect
    assert cache.claim_attempt(fid, 3) == "busy"
    cache.unclaim_attempt(fid, 3)
    assert cache.claim_attempt(fid, 3) == "claimed"
    cache.finish_attempt(fid, 3)
    assert cache.claim_attempt(fid, 3) == "done"


def test_a_claim_whose_handler_died_is_taken_over_once_it_lapses(cache) -> None:
    """A handler SIGKILLed between its claim and its finish: the redelivery is told ``busy`` while
    the lease holds (Redis's clock), then claims the attempt itself (the old code answered
    ``duplicate`` for ever, and the upload stayed ``retrying``)."""
    p = plan()
    cache.create(p, "w1")
    fid = p.upload_id
    assert cache.claim_attempt(fid, 1, lease_seconds=0.3) == "claimed"  # ... and the handler dies
    assert cache.claim_attempt(fid, 1, lease_seconds=0.3) == "busy"
    time.sleep(0.4)
    assert cache.claim_attempt(fid, 1, lease_seconds=0.3) == "claimed"
    cache.finish_attempt(fid, 1)
    time.sleep(0.4)
    assert cache.claim_attempt(fid, 1, lease_seconds=0.3) == "done"  # finished claims never lapse


def test_cancelled_and_cached_exclude_each_other(cache) -> None:
    """A cancel racing the completion: exactly one of the two switches wins, whichever comes first."""
    first, second = plan("c" * 32), plan("d" * 32)
    for p in (first, second):
        cache.create(p, "w1")
    assert cache.mark_cancelled(first.upload_id) is True
    assert cache.mark_cached(first.upload_id, 10, owner_id="7") is False  # cancelled: never stored
    assert cache.mark_cancelled(first.upload_id) is False  # once
    assert cache.mark_cached(second.upload_id, 10, owner_id="7") is True
    assert cache.mark_cancelled(second.upload_id) is False  # completing: no longer cancellable
    assert cache.mark_cancelled("e" * 32) is False  # unknown


def test_tus_begin_takes_the_lock_and_says_where_the_tail_is(cache) -> None:
    p = plan(size=10)
    cache.create(p, "creator")
    fid = p.upload_id
    assert cache.open_slot("7", fid, 5) and cache.reserve("7", fid, 10, 0)
    assert cache.tus_begin(fid, "7", "w1")[0] == "locked"  # the creation's lock is still held
    assert cache.release_writer(fid, "creator")
    outcome, session, done, tail = cache.tus_begin(fid, "7", "w1")
    assert (outcome, session["owner_id"], session["chunk_count"], done, tail) == ("ok", "7", 3, 0, 0)
    assert cache.writer(fid) == "w1"
    assert cache.put_chunk(fid, 0, b"abcd", owner_id="7") == "new"
    assert cache.append_tail(fid, 1, b"ef", "w1", 0) == "ok"
    assert cache.tus_begin(fid, "7", "w1")[2:] == (1, 2)  # ours again: chunk 0 written, 2 bytes of chunk 1
    locked = cache.tus_begin(fid, "7", "w2")
    assert locked[0] == "locked" and locked[1]["upload_id"] == fid and cache.writer(fid) == "w1"
    assert cache.tus_begin(fid, "8", "w1")[0] == "slow"  # another owner's upload: nothing said
    assert cache.tus_begin("v" * 32, "7", "w1")[0] == "slow"


def test_tus_begin_leaves_a_lost_slot_or_reservation_to_the_general_path(cache) -> None:
    p = plan(size=10)
    cache.create(p, "w1")
    fid = p.upload_id
    assert cache.tus_begin(fid, "7", "w1")[0] == "slow"  # neither slot nor reservation
    assert cache.open_slot("7", fid, 5)
    assert cache.tus_begin(fid, "7", "w1")[0] == "slow"  # no reservation
    assert cache.reserve("7", fid, 10, 0)
    assert cache.tus_begin(fid, "7", "w1")[0] == "ok"
    assert cache.mark_cancelled(fid)
    assert cache.tus_begin(fid, "7", "w1")[0] == "slow"  # no longer uploading


def test_sealing_a_tail_makes_the_chunk(cache) -> None:
    p = plan(size=10)
    cache.create(p, "w1")
    fid = p.upload_id
    assert cache.append_tail(fid, 0, b"ab", "w1", 0) == "ok"
    assert cache.seal_tail(fid, 0, b"cd", "w1", 1, owner_id="7") == "moved"  # the tail is 2 bytes, not 1
    assert cache.seal_tail(fid, 0, b"cd", "w2", 2, owner_id="7") == "locked"
    assert cache.seal_tail(fid, 0, b"cd", "w1", 2, owner_id="7", max_owner_bytes=3) == "full"
    assert cache.read_tail(fid, 0) == b"ab" and cache.read_chunk(fid, 0) is None  # a refusal keeps nothing
    assert cache.seal_tail(fid, 0, b"cd", "w1", 2, owner_id="7", max_owner_bytes=4) == "ok"
    assert cache.read_chunk(fid, 0) == b"abcd" and cache.read_tail(fid, 0) is None
    assert cache.existing_chunks(fid, 3) == {0} and cache.received_count(fid) == 1
    assert cache.cached_bytes("7") == 4
    assert cache.seal_tail(fid, 0, b"abcd", "w1", 0, owner_id="7") == "written"  # a chunk is written once
    assert cache.seal_tail(fid, 1, b"efgh", "w1", 0, owner_id="7") == "ok"  # no tail: the bytes are the chunk
    assert cache.read_chunk(fid, 1) == b"efgh"
    assert cache.mark_cancelled(fid)
    assert cache.seal_tail(fid, 2, b"ij", "w1", 0, owner_id="7") == "complete"
    cache.drop(fid, 3, "7")
    assert cache.seal_tail(fid, 2, b"ij", "w1", 0, owner_id="7") == "gone"



def test_start_upload_opens_the_slot_reserves_and_creates_at_once(cache) -> None:
    a, b, c = (plan(upload_id=n * 32, size=8) for n in "abc")
    assert cache.start_upload(a, "w1", limit=2, quota=20) == "ok"
    assert cache.writer(a.upload_id) == "w1" and cache.session(a.upload_id)["size"] == 8
    assert cache.status(a.upload_id) == {"owner_id": "7", "status": "uploading", "pool_id": "p1",
                                         "file_name": "a.bin"}
    assert cache.start_upload(b, None, limit=2, quota=20, tomb={"size": 8}) == "ok"
    assert cache.writer(b.upload_id) is None and cache.status(b.upload_id)["size"] == "8"
    assert cache.committed_bytes("7") == 16
    assert cache.start_upload(c, "w1", limit=2, quota=20) == "slots"
    assert cache.start_upload(c, "w1", limit=3, quota=20) == "quota"  # 24 > 20: the slot given back
    assert cache.session(c.upload_id) is None and cache.writer(c.upload_id) is None
    assert cache.start_upload(plan(upload_id="d" * 32, size=8), "w1", limit=3, quota=0) == "ok"  # the slot was free
