"""Pool policy end to end (issue 11), against the running fleet over HTTP and Socket.IO.

Quorum met; quorum short with ``on_short`` "process" (ready, ``short: true``) and "fail"
(failed, ``quorum_not_met``); close; retry; lease renewal; timestamp bounds (SPEC
MAX_CLOCK_SKEW_SECONDS and the pool's ``max_late_seconds``, at every upload door); pool
edit (PATCH) and delete (DELETE ends members, keys and open groups); a member removed
while its socket is open loses the pool at once. Small windows and timeouts; every wait
is bounded (generous: the machine is shared).
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import requests
import socketio

from .helpers import RawSocket, assert_error, bearer
from .pools import Admin, Processor, window_timestamp

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT = 45.0  # seconds any one state change may take on a loaded 2-core machine


@pytest.fixture
def admin(fleet) -> Admin:
    return Admin(fleet)


def iso_at(offset_seconds: float) -> str:
    """Now plus ``offset_seconds`` (negative: in the past), ISO 8601 UTC."""
    return datetime.fromtimestamp(time.time() + offset_seconds, UTC).isoformat().replace("+00:00", "Z")


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Watcher(RawSocket):
    """A RawSocket that also records ``group-status`` (registered before it connects: none is missed)."""

    def __init__(self, gateway_url: str, token: str) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        for name in ("file-status", "pool-result", "group-status"):
            self.sio.on(name, lambda data, name=name: self.events.put((name, data)))
        self.sio.connect(gateway_url, auth={"token": token}, transports=["websocket"], wait_timeout=10)


def wait_group(processor: Processor, predicate: Callable[[dict], bool], timeout: float = WAIT,
               what: str = "group") -> tuple[dict, float]:
    """The first group matching ``predicate`` (polled), and when it was first seen (epoch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for group in processor.groups():
            if predicate(group):
                return group, time.time()
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout}s: {processor.groups()}")


def admin_post(fleet, admin: Admin, pool_id: str, gid: str, action: str) -> requests.Response:
    return requests.post(f"{fleet.urls['pool_aggregator']}/pools/{pool_id}/groups/{gid}/{action}",
                         headers=bearer(admin.token), timeout=30)


def key_post(processor: Processor, gid: str, action: str) -> requests.Response:
    return requests.post(f"{processor.base}/groups/{gid}/{action}", headers=processor.headers, timeout=30)


def patch_pool(admin: Admin, pool_id: str, body: dict, token: str | None = None) -> requests.Response:
    return requests.patch(f"{admin.auth}/auth/pools/{pool_id}", headers=bearer(token or admin.token), json=body,
                          timeout=30)


# --- quorum ---------------------------------------------------------------------------------------


def test_quorum_met_makes_the_group_ready_before_its_window_ends(fleet, admin):
    pool_id = admin.create_pool(f"quorum-{uuid.uuid4().hex[:6]}", window_seconds=3600, min_contributors=2,
                                quorum_wait_seconds=60, on_short="fail")["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    one, two = admin.member(pool_id), admin.member(pool_id)
    s_one, s_two = Watcher(fleet.gateway, one["access_token"]), Watcher(fleet.gateway, two["access_token"])
    try:
        stamp = window_timestamp(3600, offset=1)
        s_one.upload_bytes(os.urandom(20_000), "a.bin", pool_id=pool_id, timestamp=stamp)
        group, _ = wait_group(processor, lambda g: g["file_count"] == 1, what="the first file grouped")
        assert group["status"] == "open", "one contributor of two: the quorum is not met"
        s_two.upload_bytes(os.urandom(20_000), "b.bin", pool_id=pool_id, timestamp=stamp)
        ready, seen = wait_group(processor, lambda g: g["status"] == "ready", what="a ready group")
        assert ready["group_id"] == group["group_id"] and ready["file_count"] == 2
        assert not ready.get("short"), ready
        assert seen < epoch(ready["window_end"]), "ready by its quorum, long before its window ends"
        event = s_one.wait_event("group-status", lambda d: d["group_id"] == group["group_id"]
                                 and d["status"] == "ready", timeout=WAIT)
        assert not event.get("short") and event["pool_id"] == pool_id
    finally:
        s_one.close()
        s_two.close()


def test_quorum_short_with_on_short_process_turns_ready_short_after_the_wait(fleet, admin):
    pool_id = admin.create_pool(f"short-p-{uuid.uuid4().hex[:6]}", window_seconds=2, min_contributors=3,
                                quorum_wait_seconds=3, on_short="process")["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    member = admin.member(pool_id)
    sock = Watcher(fleet.gateway, member["access_token"])
    try:
        sock.upload_bytes(os.urandom(20_000), "a.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        ready, seen = wait_group(processor, lambda g: g["status"] == "ready", what="a short ready group")
        assert ready["short"] is True and ready["file_count"] == 1, ready
        # Not before its window closed and the quorum wait ran out (0.5 s: clock granularity).
        assert seen >= epoch(ready["window_end"]) + 3 - 0.5, (seen, ready)
        event = sock.wait_event("group-status", lambda d: d["group_id"] == ready["group_id"]
                                and d["status"] == "ready", timeout=WAIT)
        assert event["short"] is True
        # A short group is processed like any other.
        assert processor.files(ready["group_id"]).status_code == 200
        posted = processor.post_result(ready["group_id"], b"short but processed", "r.bin")
        assert posted.status_code == 201, posted.text
        sock.wait_event("pool-result", lambda d: d["group_id"] == ready["group_id"], timeout=WAIT)
    finally:
        sock.close()


def test_quorum_short_with_on_short_fail_fails_and_retry_makes_it_ready(fleet, admin):
    pool_id = admin.create_pool(f"short-f-{uuid.uuid4().hex[:6]}", window_seconds=2, min_contributors=2,
                                quorum_wait_seconds=1, on_short="fail")["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    member = admin.member(pool_id)
    sock = Watcher(fleet.gateway, member["access_token"])
    try:
        sock.upload_bytes(os.urandom(20_000), "a.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        failed, _ = wait_group(processor, lambda g: g["status"] == "failed", what="a failed group")
        assert failed["reason"] == "quorum_not_met" and failed["file_count"] == 1, failed
        event = sock.wait_event("group-status", lambda d: d["group_id"] == failed["group_id"]
                                and d["status"] == "failed", timeout=WAIT)
        assert event["reason"] == "quorum_not_met"
        gid = failed["group_id"]
        # A failed group has no files to hand out; only retry moves it.
        assert_error(key_post(processor, gid, "close"), 409, "conflict")
        assert_error(key_post(processor, gid, "lease"), 409, "conflict")

        # retry: failed -> ready (by the pool's key), announced to members.
        retried = key_post(processor, gid, "retry")
        assert retried.status_code == 200, retried.text
        assert [g["status"] for g in processor.groups() if g["group_id"] == gid] == ["ready"]
        sock.wait_event("group-status", lambda d: d["group_id"] == gid and d["status"] == "ready", timeout=WAIT)
        assert_error(key_post(processor, gid, "retry"), 409, "conflict")  # only a failed group
        assert processor.files(gid).status_code == 200
        posted = processor.post_result(gid, b"after a retry", "r.bin")
        assert posted.status_code == 201, posted.text
        got = sock.wait_event("pool-result", lambda d: d["group_id"] == gid, timeout=WAIT)
        assert got["result_id"] == posted.json()["result_id"]
    finally:
        sock.close()


# --- close, retry by an admin, lease renewal ------------------------------------------------------


def test_close_turns_an_open_group_ready_now(fleet, admin):
    pool_id = admin.create_pool(f"close-{uuid.uuid4().hex[:6]}", window_seconds=3600)["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    member = admin.member(pool_id)
    sock = Watcher(fleet.gateway, member["access_token"])
    try:
        sock.upload_bytes(os.urandom(20_000), "a.bin", pool_id=pool_id, timestamp=window_timestamp(3600, offset=1))
        group, _ = wait_group(processor, lambda g: g["file_count"] == 1, what="the file grouped")
        assert group["status"] == "open"
        gid = group["group_id"]
        # Neither a member's token nor another pool's key may close it.
        r = requests.post(f"{processor.base}/groups/{gid}/close", headers=bearer(member["access_token"]), timeout=30)
        assert r.status_code == 403, r.text
        other_pool = admin.create_pool(f"close-o-{uuid.uuid4().hex[:6]}", window_seconds=60)["pool_id"]
        other_key = {"X-API-Key": admin.processor_key(other_pool)}
        r = requests.post(f"{processor.base}/groups/{gid}/close", headers=other_key, timeout=30)
        assert r.status_code == 403, r.text
        assert [g["status"] for g in processor.groups() if g["group_id"] == gid] == ["open"]

        closed = admin_post(fleet, admin, pool_id, gid, "close")  # an admin's Bearer
        assert closed.status_code == 200, closed.text
        assert [g["status"] for g in processor.groups() if g["group_id"] == gid] == ["ready"]
        sock.wait_event("group-status", lambda d: d["group_id"] == gid and d["status"] == "ready", timeout=WAIT)
        assert_error(key_post(processor, gid, "close"), 409, "conflict")  # only an open group
        assert_error(key_post(processor, "nosuchgroup", "close"), 404)
    finally:
        sock.close()


def test_lease_renewal_keeps_a_group_processing_past_its_timeout(fleet, admin):
    timeout = 3
    pool_id = admin.create_pool(f"renew-{uuid.uuid4().hex[:6]}", window_seconds=2,
                                processing_timeout_seconds=timeout)["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    member = admin.member(pool_id)
    sock = Watcher(fleet.gateway, member["access_token"])
    try:
        sock.upload_bytes(os.urandom(20_000), "a.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        group = processor.wait_ready(timeout=WAIT)
        gid = group["group_id"]
        assert_error(key_post(processor, gid, "lease"), 409, "conflict")  # ready: nothing leased yet
        assert processor.files(gid).status_code == 200  # ready -> processing, a lease of `timeout` s
        held_until = time.monotonic() + 3 * timeout  # three times its timeout
        while time.monotonic() < held_until:
            renewed = key_post(processor, gid, "lease")
            assert renewed.status_code == 200, renewed.text
            expires = epoch(renewed.json()["lease_expires"])
            assert time.time() + timeout - 2 <= expires <= time.time() + timeout + 2, renewed.json()
            assert [g["status"] for g in processor.groups() if g["group_id"] == gid] == ["processing"]
            time.sleep(1)
        # Renewed all along: still processing, and a result is accepted.
        posted = processor.post_result(gid, b"took longer than the timeout", "r.bin")
        assert posted.status_code == 201, posted.text
        sock.wait_event("pool-result", lambda d: d["group_id"] == gid, timeout=WAIT)
        assert_error(key_post(processor, gid, "lease"), 409, "conflict")  # done: no lease to renew
    finally:
        sock.close()


def test_without_renewal_the_lease_runs_out(fleet, admin):
    """The control for the renewal test: the same pool shape, no renewal, back to ready."""
    pool_id = admin.create_pool(f"norenew-{uuid.uuid4().hex[:6]}", window_seconds=2,
                                processing_timeout_seconds=3)["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    member = admin.member(pool_id)
    sock = RawSocket(fleet.gateway, member["access_token"])
    try:
        sock.upload_bytes(os.urandom(20_000), "a.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        gid = processor.wait_ready(timeout=WAIT)["group_id"]
        assert processor.files(gid).status_code == 200
        taken = time.monotonic()
        processor.wait_ready(timeout=WAIT, group_id=gid)
        assert time.monotonic() - taken >= 2.5, "the lease holds for its timeout"
    finally:
        sock.close()


# --- timestamp bounds -----------------------------------------------------------------------------


def tus_create(fleet, token: str, length: int, **metadata: str) -> requests.Response:
    header = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
    return requests.post(f"{fleet.urls['file_uploader']}/files/", timeout=30,
                         headers={**bearer(token), "Tus-Resumable": "1.0.0", "Upload-Length": str(length),
                                  "Upload-Metadata": header})


def http_upload(fleet, token: str, **form: str) -> requests.Response:
    return requests.post(f"{fleet.urls['file_uploader']}/file/upload", headers=bearer(token),
                         files={"file": ("u.bin", os.urandom(5000))}, data=form, timeout=60)


def refused_start(sock: RawSocket, **payload) -> dict:
    ack = sock.call("start-transfer", {"file_name": "u.bin", "size": 5000, **payload})
    assert ack.get("error", {}).get("code") == "bad_request", ack
    return ack["error"]


def test_timestamps_beyond_the_clock_skew_or_older_than_max_late_are_refused_at_every_door(fleet, admin):
    max_late = 120
    pool_id = admin.create_pool(f"bounds-{uuid.uuid4().hex[:6]}", window_seconds=60,
                                max_late_seconds=max_late)["pool_id"]
    member = admin.member(pool_id)
    token = member["access_token"]
    sock = RawSocket(fleet.gateway, token)
    try:
        future, old, fresh = iso_at(300 + 120), iso_at(-(max_late + 120)), iso_at(-30)
        # Socket start-transfer: too far ahead (MAX_CLOCK_SKEW_SECONDS, 300 by default); too old.
        assert "future" in refused_start(sock, pool_id=pool_id, timestamp=future)["message"]
        assert "max_late_seconds" in refused_start(sock, pool_id=pool_id, timestamp=old)["message"]
        # One late item refuses the whole batch, and says which.
        items = [{"timestamp": fresh, "offset": 0, "length": 2500}, {"timestamp": old, "offset": 2500, "length": 2500}]
        assert "items[1]" in refused_start(sock, pool_id=pool_id, items=items)["message"]
        items[1]["timestamp"] = future
        refused_start(sock, pool_id=pool_id, items=items)
        # POST /file/upload and tus: the same rule, 400 bad_request.
        assert_error(http_upload(fleet, token, pool_id=pool_id, timestamp=old), 400, "bad_request")
        assert_error(http_upload(fleet, token, pool_id=pool_id, timestamp=future), 400, "bad_request")
        assert_error(tus_create(fleet, token, 5000, filename="t.bin", pool_id=pool_id, timestamp=old),
                     400, "bad_request")
        assert_error(tus_create(fleet, token, 5000, filename="t.bin", pool_id=pool_id, timestamp=future),
                     400, "bad_request")
        # Nothing refused was kept.
        assert sock.call("get-history", {})["files"] == []

        # Inside both bounds: accepted at every door (a little ahead of now is a drifting clock).
        sock.upload_bytes(os.urandom(5000), "ok.bin", pool_id=pool_id, timestamp=fresh)
        ahead = sock.call("start-transfer", {"file_name": "a.bin", "size": 10, "pool_id": pool_id,
                                             "timestamp": iso_at(200)})
        assert "error" not in ahead, ahead
        sock.call("cancel-upload", {"file_id": ahead["file_id"]})
        items = [{"timestamp": fresh, "offset": 0, "length": 2500},
                 {"timestamp": iso_at(-(max_late - 30)), "offset": 2500, "length": 2500}]
        sock.upload_bytes(os.urandom(5000), "batch.bin", pool_id=pool_id, items=items)
        r = http_upload(fleet, token, pool_id=pool_id, timestamp=fresh)
        assert r.status_code == 201, r.text
        r = tus_create(fleet, token, 5000, filename="t.bin", pool_id=pool_id, timestamp=fresh)
        assert r.status_code == 201, r.text
        # Without a pool there is no max_late (only the skew).
        r = http_upload(fleet, token, timestamp=old)
        assert r.status_code == 201, r.text
    finally:
        sock.close()


# --- pool edit and delete -------------------------------------------------------------------------


def test_pool_edit_changes_its_rules_for_the_next_upload(fleet, admin):
    pool_id = admin.create_pool(f"edit-{uuid.uuid4().hex[:6]}", window_seconds=60, max_late_seconds=60)["pool_id"]
    member = admin.member(pool_id)
    sock = RawSocket(fleet.gateway, member["access_token"])
    try:
        old = iso_at(-600)
        refused_start(sock, pool_id=pool_id, timestamp=old)
        # Only an admin edits; a bad value is refused with SPEC's 400 and changes nothing.
        assert_error(patch_pool(admin, pool_id, {"max_late_seconds": 3600}, token=member["access_token"]), 403)
        assert_error(patch_pool(admin, pool_id, {"max_late_seconds": -1}), 400, "bad_request")
        assert_error(patch_pool(admin, pool_id, {"window_seconds": "soon"}), 400, "bad_request")
        assert_error(patch_pool(admin, "nosuchpool", {"max_late_seconds": 5}), 404)
        r = patch_pool(admin, pool_id, {"max_late_seconds": 3600, "min_contributors": 2, "on_short": "fail"})
        assert r.status_code == 200, r.text
        assert (r.json()["max_late_seconds"], r.json()["min_contributors"], r.json()["on_short"]) == (3600, 2, "fail")
        shown = requests.get(f"{admin.auth}/auth/pools/{pool_id}", headers=bearer(admin.token), timeout=30).json()
        assert shown["max_late_seconds"] == 3600 and shown["window_seconds"] == 60
        # file_uploader caches a pool's rule a few seconds: the new one holds within that.
        deadline = time.monotonic() + 20
        while True:
            ack = sock.call("start-transfer", {"file_name": "u.bin", "size": 10, "pool_id": pool_id,
                                               "timestamp": old})
            if "error" not in ack:
                break
            assert ack["error"]["code"] == "bad_request" and time.monotonic() < deadline, ack
            time.sleep(0.5)
        sock.call("cancel-upload", {"file_id": ack["file_id"]})
    finally:
        sock.close()


def test_pool_delete_ends_members_keys_and_open_groups(fleet, admin):
    pool_id = admin.create_pool(f"del-{uuid.uuid4().hex[:6]}", window_seconds=3600)["pool_id"]
    key = admin.processor_key(pool_id)
    processor = Processor(fleet, pool_id, key)
    member = admin.member(pool_id)
    sock = RawSocket(fleet.gateway, member["access_token"])
    watcher = Watcher(fleet.gateway, admin.token)  # admins get every pool's group-status
    try:
        sock.upload_bytes(os.urandom(20_000), "a.bin", pool_id=pool_id, timestamp=window_timestamp(3600, offset=1))
        group, _ = wait_group(processor, lambda g: g["file_count"] == 1, what="the file grouped")
        assert group["status"] == "open"
        r = requests.delete(f"{admin.auth}/auth/pools/{pool_id}", headers=bearer(member["access_token"]), timeout=30)
        assert r.status_code == 403, r.text
        r = requests.delete(f"{admin.auth}/auth/pools/{pool_id}", headers=bearer(admin.token), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["members_removed"] == 1 and r.json()["keys_revoked"] == 1, r.json()
        assert_error(requests.delete(f"{admin.auth}/auth/pools/{pool_id}", headers=bearer(admin.token),
                                     timeout=30), 404)
        assert requests.get(f"{admin.auth}/auth/pools/{pool_id}", headers=bearer(admin.token),
                            timeout=30).status_code == 404

        # The open group ends (failed, pool_deleted), told to connected admins.
        event = watcher.wait_event("group-status", lambda d: d["group_id"] == group["group_id"]
                                   and d["status"] == "failed", timeout=WAIT)
        assert event["reason"] == "pool_deleted"
        listed = requests.get(f"{fleet.urls['pool_aggregator']}/pools/{pool_id}/groups", headers=bearer(admin.token),
                              timeout=30)
        assert listed.status_code == 200, listed.text
        assert [(g["status"], g.get("reason")) for g in listed.json()["groups"]] == [("failed", "pool_deleted")]
        # Its key is gone (auth answers at once; pool_aggregator asks auth per request).
        r = requests.get(f"{processor.base}/groups", headers=processor.headers, timeout=30)
        assert r.status_code == 401, r.text
        # Its member is no member any more: no upload, no results, even on the open socket.
        ack = sock.call("start-transfer", {"file_name": "u.bin", "size": 10, "pool_id": pool_id})
        assert ack["error"]["code"] == "forbidden", ack
        assert sock.call("get-results", {"pool_id": pool_id})["error"]["code"] == "forbidden"
        pools = requests.get(f"{admin.auth}/auth/pools", headers=bearer(member["access_token"]), timeout=30).json()
        assert pool_id not in str(pools)
    finally:
        sock.close()
        watcher.close()


# --- membership changes on open sockets ---------------------------------------------------------


def test_member_removal_cuts_an_open_sockets_pool_access_at_once(fleet, admin):
    pool_id = admin.create_pool(f"cut-{uuid.uuid4().hex[:6]}", window_seconds=3600)["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    stays, leaves = admin.member(pool_id), admin.member(pool_id)
    s_stays = RawSocket(fleet.gateway, stays["access_token"])
    s_leaves = RawSocket(fleet.gateway, leaves["access_token"])
    try:
        # The leaving member is in the middle of a pool upload when it is removed.
        probe = s_leaves.call("start-transfer", {"file_name": "probe.bin", "size": 10})
        chunk = probe["chunk_size"]
        s_leaves.call("cancel-upload", {"file_id": probe["file_id"]})
        data = os.urandom(chunk + 1000)
        ack = s_leaves.call("start-transfer", {"file_name": "big.bin", "size": len(data), "pool_id": pool_id,
                                               "sha256": hashlib.sha256(data).hexdigest()})
        assert "error" not in ack, ack
        first = s_leaves.call("write-chunk", {"file_id": ack["file_id"], "index": 0, "data": data[:chunk]})
        assert "error" not in first, first

        admin.remove_member(pool_id, leaves["user_name"])
        # Its next chunk of that pool upload is refused at once (no reconnect, no wait).
        second = s_leaves.call("write-chunk", {"file_id": ack["file_id"], "index": 1, "data": data[chunk:]})
        assert second.get("error", {}).get("code") == "forbidden", second
        done = s_leaves.call("complete-upload", {"file_id": ack["file_id"]})
        assert "error" in done, done
        assert s_leaves.call("start-transfer", {"file_name": "u.bin", "size": 10,
                                                "pool_id": pool_id})["error"]["code"] == "forbidden"

        # A result of the pool reaches the member who stays, not the removed one.
        s_stays.upload_bytes(os.urandom(20_000), "a.bin", pool_id=pool_id, timestamp=window_timestamp(3600, offset=1))
        group, _ = wait_group(processor, lambda g: g["file_count"] == 1, what="the file grouped")
        assert group["file_count"] == 1, "the cut upload never reached a group"
        assert key_post(processor, group["group_id"], "close").status_code == 200
        assert processor.files(group["group_id"]).status_code == 200
        posted = processor.post_result(group["group_id"], b"for members only", "r.bin")
        assert posted.status_code == 201, posted.text
        s_stays.wait_event("pool-result", lambda d: d["group_id"] == group["group_id"], timeout=WAIT)
        time.sleep(2)  # the removed socket would have had it by now
        assert not [e for e in list(s_leaves.events.queue) if e[0] == "pool-result"], "a removed member got a result"
        assert s_leaves.call("get-results", {"pool_id": pool_id})["error"]["code"] == "forbidden"
    finally:
        s_stays.close()
        s_leaves.close()
