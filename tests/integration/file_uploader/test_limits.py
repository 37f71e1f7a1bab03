"""Per-user limits against real Redis: they hold for as long as the uploads they count live."""

from __future__ import annotations

import time

import redis

from services.file_uploader import core
from services.file_uploader.store import UploadStore

from .helpers import INTERNAL_KEY, start, upload_all


def plan(upload_id: str, owner: str = "7", size: int = 8) -> core.UploadPlan:
    return core.plan_upload({"file_name": "a.bin", "size": size}, upload_id=upload_id, owner_id=owner,
                            owner_name="alice", limits=core.Limits(chunk_size=4), now="2026-01-01T00:00:00.000Z")


def test_an_upload_kept_alive_by_its_writes_keeps_its_slot(redis_prefix) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    store = UploadStore(client, redis_prefix, upload_ttl=2, lock_seconds=30)
    first = plan("a" * 32)
    assert store.open_slot("7", first.upload_id, 1)
    store.create(first, "w1")
    # The upload lives on past its first TTL: every write gives it upload_ttl more seconds.
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        store.touch(first.upload_id, first.chunk_count, 2)
        time.sleep(0.5)
    assert store.session(first.upload_id) is not None
    assert store.open_slot("7", "b" * 32, 1) is False, "the live upload's slot expired under it"
    store.drop(first.upload_id)
    assert store.open_slot("7", "b" * 32, 1) is True
    client.close()


def test_a_slot_is_released_when_its_session_expires(redis_prefix) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    store = UploadStore(client, redis_prefix, upload_ttl=1, lock_seconds=30, start_grace=0)
    first = plan("a" * 32)
    assert store.open_slot("7", first.upload_id, 1)
    store.create(first, "w1")
    assert store.open_slot("7", "b" * 32, 1) is False
    time.sleep(1.5)  # abandoned: no write for longer than the upload TTL
    assert store.session(first.upload_id) is None
    assert store.open_slot("7", "b" * 32, 1) is True
    client.close()


def test_user_quota_bytes_through_the_service(make_uploader) -> None:
    _, client, service = make_uploader(USER_QUOTA_BYTES="15", CHUNK_SIZE=str(64 * 1024))
    upload_all(client, b"x" * 10, 64 * 1024, file_name="a.txt")
    r = start(client, file_name="b.txt", size=6)
    assert r.status_code == 413
    assert r.get_json()["error"]["code"] == "quota_exceeded" and r.get_json()["error"]["quota"] == 15
    assert start(client, file_name="b.txt", size=6, owner_id="u2").status_code == 201  # another user
    five = start(client, file_name="c.txt", size=5)
    assert five.status_code == 201
    # the quota counts reservations too: nothing more fits until the 5 bytes are given back
    assert start(client, file_name="d.txt", size=1).status_code == 413
    r = client.post(f"/uploads/{five.get_json()['file_id']}/cancel", json={"owner_id": "u1"},
                    headers={"X-Internal-Key": INTERNAL_KEY})
    assert r.get_json()["status"] == "cancelled"
    assert start(client, file_name="d.txt", size=5).status_code == 201
    # the completed upload counts as stored (nobody consumes the store queue here) plus the new reservation
    assert service.store.committed_bytes("u1") == 15
