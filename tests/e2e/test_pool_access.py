"""Issue 3 access rules, end to end over HTTP and Socket.IO."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import pytest
import requests

from .helpers import RawSocket, assert_error, bearer, signup
from .pools import Admin, Processor, window_timestamp

pytestmark = pytest.mark.e2e


@pytest.fixture
def admin(fleet) -> Admin:
    return Admin(fleet)


def test_non_members_and_listeners_cannot_upload_or_read(fleet, admin):
    pool = admin.create_pool(f"access-{uuid.uuid4().hex[:6]}", window_seconds=60)
    pool_id = pool["pool_id"]
    outsider = signup(fleet.urls["auth"])
    listener = admin.member(pool_id, "listener")
    contributor = admin.member(pool_id, "contributor")

    for user in (outsider, listener):
        sock = RawSocket(fleet.gateway, user["access_token"])
        try:
            ack = sock.call("start-transfer", {"file_name": "u.bin", "size": 200_000, "pool_id": pool_id})
            assert ack["error"]["code"] == "forbidden", ack
        finally:
            sock.close()
        r = requests.post(f"{fleet.urls['file_uploader']}/file/upload", headers=bearer(user["access_token"]),
                          data={"pool_id": pool_id}, files={"file": ("u.bin", os.urandom(1000))}, timeout=10)
        assert_error(r, 403, "forbidden")

    sock = RawSocket(fleet.gateway, outsider["access_token"])
    try:
        assert sock.call("get-results", {"pool_id": pool_id})["error"]["code"] == "forbidden"
    finally:
        sock.close()
    r = requests.get(f"{fleet.urls['pool_aggregator']}/pools/{pool_id}/results",
                     headers=bearer(outsider["access_token"]), timeout=10)
    assert r.status_code == 403

    # a contributor can, and a listener may read results
    sock = RawSocket(fleet.gateway, contributor["access_token"])
    try:
        sock.upload_bytes(os.urandom(120_000), "update.bin", pool_id=pool_id, timestamp=window_timestamp(60))
    finally:
        sock.close()
    sock = RawSocket(fleet.gateway, listener["access_token"])
    try:
        assert sock.call("get-results", {"pool_id": pool_id}) == {"results": [], "next_seq": 0, "more": False}
    finally:
        sock.close()


def test_processor_keys_are_scoped_to_one_pool_and_tokens_cannot_process(fleet, admin):
    pool_a = admin.create_pool(f"a-{uuid.uuid4().hex[:6]}", window_seconds=2)["pool_id"]
    pool_b = admin.create_pool(f"b-{uuid.uuid4().hex[:6]}", window_seconds=2)["pool_id"]
    key_a, key_b = admin.processor_key(pool_a), admin.processor_key(pool_b)
    member_b = admin.member(pool_b)
    sock = RawSocket(fleet.gateway, member_b["access_token"])
    try:
        sock.upload_bytes(os.urandom(110_000), "b.bin", pool_id=pool_b, timestamp=window_timestamp(2))
    finally:
        sock.close()
    group = Processor(fleet, pool_b, key_b).wait_ready(timeout=30)

    agg = fleet.urls["pool_aggregator"]
    a_on_b = {"X-API-Key": key_a}
    for path in ("groups", f"groups/{group['group_id']}/files", f"groups/{group['group_id']}/archive", "results"):
        r = requests.get(f"{agg}/pools/{pool_b}/{path}", headers=a_on_b, timeout=10)
        assert r.status_code == 403, (path, r.status_code, r.text)
    r = requests.post(f"{agg}/pools/{pool_b}/groups/{group['group_id']}/result", data=b"x" * 10,
                      headers={**a_on_b, "X-File-Name": "r.bin"}, timeout=10)
    assert r.status_code == 403
    r = requests.get(f"{agg}/pools/{pool_b}/groups", headers={"X-API-Key": "pk_forged_key"}, timeout=10)
    assert r.status_code == 401

    # a user token (even a member's) cannot act as the processor
    token = bearer(member_b["access_token"])
    r = requests.get(f"{agg}/pools/{pool_b}/groups/{group['group_id']}/files", headers=token, timeout=10)
    assert r.status_code in (401, 403)
    r = requests.post(f"{agg}/pools/{pool_b}/groups/{group['group_id']}/result", data=b"x",
                      headers={**token, "X-File-Name": "r.bin"}, timeout=10)
    assert r.status_code in (401, 403)
    assert Processor(fleet, pool_b, key_b).groups("ready")[0]["group_id"] == group["group_id"], \
        "refused calls must not have leased the group"


def test_removed_member_stops_receiving_and_double_result_is_refused(fleet, admin):
    pool_id = admin.create_pool(f"rm-{uuid.uuid4().hex[:6]}", window_seconds=2)["pool_id"]
    key = admin.processor_key(pool_id)
    stays, leaves = admin.member(pool_id), admin.member(pool_id, "listener")
    s_stays = RawSocket(fleet.gateway, stays["access_token"])
    s_leaves = RawSocket(fleet.gateway, leaves["access_token"])
    try:
        s_stays.upload_bytes(os.urandom(100_500), "u.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        admin.remove_member(pool_id, leaves["user_name"])
        processor = Processor(fleet, pool_id, key)
        group = processor.wait_ready(timeout=30)
        files = processor.files(group["group_id"])
        assert files.status_code == 200 and len(files.json()["files"]) == 1
        result = os.urandom(50_000)
        first = processor.post_result(group["group_id"], result, "mean.bin",
                                      **{"X-Sha256": hashlib.sha256(result).hexdigest()})
        assert first.status_code == 201, first.text
        second = processor.post_result(group["group_id"], os.urandom(10), "again.bin")
        assert_error(second, 409, "conflict")

        got = s_stays.wait_event("pool-result", lambda d: d["group_id"] == group["group_id"], timeout=30)
        assert got["result_id"] == first.json()["result_id"]
        assert got["sha256"] == hashlib.sha256(result).hexdigest()
        time.sleep(2)
        results = [e for e in s_stays.events.queue if e[0] == "pool-result"]
        assert len(results) == 0, "exactly one pool-result per group (the waited one was taken)"
        assert not any(e[0] == "pool-result" for e in s_leaves.events.queue), "removed member got a result"
        assert s_leaves.call("get-results", {"pool_id": pool_id})["error"]["code"] == "forbidden"

        r = requests.get(got["download_url"], headers=bearer(stays["access_token"]), timeout=30)
        assert r.status_code == 200 and r.content == result
        r = requests.get(got["download_url"], headers=bearer(leaves["access_token"]), timeout=30)
        assert r.status_code in (403, 404)
    finally:
        s_stays.close()
        s_leaves.close()
