"""Issue 11, pool_aggregator: no silent loss of a result, lease renewal, close and retry, on a real fleet."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest
import requests

from .helpers import RawSocket
from .pools import Admin, Processor, window_timestamp

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_result_whose_store_fails_is_503_then_a_second_post_is_delivered_once(make_fleet):
    # The fleet's STORE_FAIL_PATTERN makes a result named fail-store-* fail to store.
    fleet = make_fleet(RESULT_STORE_WAIT_SECONDS="6", LEASE_MAX_EXPIRIES="1")
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"ctl-{uuid.uuid4().hex[:6]}", window_seconds=2,
                                processing_timeout_seconds=60)["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    member = admin.member(pool_id)
    sock = RawSocket(fleet.gateway, member["access_token"])
    try:
        sock.upload_bytes(os.urandom(100_000), "u.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        group = processor.wait_ready(timeout=30)
        gid = group["group_id"]
        assert processor.files(gid).status_code == 200

        renewed = requests.post(f"{processor.base}/groups/{gid}/lease", headers=processor.headers, timeout=10)
        assert renewed.status_code == 200 and renewed.json()["lease_expires"]

        failed = processor.post_result(gid, b"lost bytes" * 100, "fail-store-result.bin")
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"]["code"] == "unavailable"
        assert [g["status"] for g in processor.groups() if g["group_id"] == gid] == ["processing"]

        posted = processor.post_result(gid, b"kept bytes" * 100, "result.bin")
        assert posted.status_code == 201, posted.text
        assert posted.json()["seq"] == 1
        event = sock.wait_event("pool-result", lambda d: d["group_id"] == gid, timeout=30)
        assert event["result_id"] == posted.json()["result_id"]
        # seq in pool-result is the gateway's to pass on (ResultPublished carries it).
        assert event["seq"] == 1
        with pytest.raises(AssertionError):  # once: no second pool-result for the group
            sock.wait_event("pool-result", lambda d: d["group_id"] == gid, timeout=3)
        page = requests.get(f"{processor.base}/results", params={"after_seq": 0}, headers=processor.headers,
                            timeout=10).json()
        assert [(r["seq"], r["result_id"]) for r in page["results"]] == [(1, posted.json()["result_id"])]
        assert [g["status"] for g in processor.groups() if g["group_id"] == gid] == ["done"]
    finally:
        sock.close()

    # close: an open group turns ready at once; retry: a failed one (its single lease ran out) ready again.
    other = admin.create_pool(f"ctl2-{uuid.uuid4().hex[:6]}", window_seconds=3600,
                              processing_timeout_seconds=1)["pool_id"]
    proc2 = Processor(fleet, other, admin.processor_key(other))
    sock2 = RawSocket(fleet.gateway, admin.member(other)["access_token"])
    try:
        sock2.upload_bytes(os.urandom(100_000), "u.bin", pool_id=other)
        deadline = time.monotonic() + 30
        while not proc2.groups("open") and time.monotonic() < deadline:
            time.sleep(0.3)
        [open_group] = proc2.groups("open")
        gid2 = open_group["group_id"]
        closed = requests.post(f"{proc2.base}/groups/{gid2}/close", headers=proc2.headers, timeout=10)
        assert closed.status_code == 200 and closed.json()["status"] == "ready"
        assert proc2.files(gid2).status_code == 200
        deadline = time.monotonic() + 30
        while not proc2.groups("failed") and time.monotonic() < deadline:
            time.sleep(0.3)
        [failed_group] = proc2.groups("failed")
        assert failed_group["reason"] == "lease_expired"
        retried = requests.post(f"{proc2.base}/groups/{gid2}/retry", headers=proc2.headers, timeout=10)
        assert retried.status_code == 200 and retried.json()["status"] == "ready"
    finally:
        sock2.close()


def test_pool_aggregator_killed_mid_post_brings_the_group_back_and_a_new_post_is_delivered(make_fleet):
    # The first result never gets stored (STORE_FAIL_PATTERN), so its post is surely still
    # waiting for the store when pool_aggregator is SIGKILLed: a crash in the middle of a post.
    fleet = make_fleet(RESULT_STORE_WAIT_SECONDS="60")
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"kill-{uuid.uuid4().hex[:6]}", window_seconds=2,
                                processing_timeout_seconds=4)["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    sock = RawSocket(fleet.gateway, admin.member(pool_id)["access_token"])
    try:
        sock.upload_bytes(os.urandom(100_000), "u.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        gid = processor.wait_ready(timeout=30)["group_id"]
        assert processor.files(gid).status_code == 200
        outcome: list[object] = []
        poster = threading.Thread(target=lambda: outcome.append(_post_quietly(processor, gid)), daemon=True)
        poster.start()
        time.sleep(3)  # relayed and completed; waiting for a store that never comes
        assert not outcome, outcome
        fleet.fleet.stop_service("pool_aggregator", signal.SIGKILL)
        poster.join(10)
        fleet.fleet.start_service("pool_aggregator")
        fleet.fleet.wait_ready(("pool_aggregator",))
        back = processor.wait_ready(timeout=30, group_id=gid)  # the lease ran out: ready again
        assert back["status"] == "ready" and not back.get("result_id")
        assert processor.files(gid).status_code == 200
        posted = processor.post_result(gid, b"after the crash" * 50, "result.bin")
        assert posted.status_code == 201, posted.text
        assert posted.json()["seq"] == 1
        event = sock.wait_event("pool-result", lambda d: d["group_id"] == gid, timeout=30)
        assert event["result_id"] == posted.json()["result_id"]
        with pytest.raises(AssertionError):  # once, and never the crashed post's result
            sock.wait_event("pool-result", lambda d: d["group_id"] == gid, timeout=3)
    finally:
        sock.close()


def _post_quietly(processor: Processor, gid: str) -> object:
    try:
        return processor.post_result(gid, b"doomed" * 100, "fail-store-doomed.bin").status_code
    except requests.RequestException as exc:
        return exc
