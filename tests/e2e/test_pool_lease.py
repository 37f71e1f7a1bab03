"""Issue 3 lease: a processor that takes a group and never answers loses it."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from .helpers import RawSocket
from .pools import Admin, Processor, window_timestamp

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_abandoned_group_returns_to_ready_and_a_second_processor_completes_it(fleet):
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"lease-{uuid.uuid4().hex[:6]}", window_seconds=2,
                                processing_timeout_seconds=3)["pool_id"]
    key = admin.processor_key(pool_id)
    member = admin.member(pool_id)
    sock = RawSocket(fleet.gateway, member["access_token"])
    try:
        sock.upload_bytes(os.urandom(100_000), "u.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        first = Processor(fleet, pool_id, key)
        group = first.wait_ready(timeout=30)
        assert first.files(group["group_id"]).status_code == 200
        assert [g["status"] for g in first.groups() if g["group_id"] == group["group_id"]] == ["processing"]

        started = time.monotonic()
        second = Processor(fleet, pool_id, admin.processor_key(pool_id))
        again = second.wait_ready(timeout=30, group_id=group["group_id"])
        assert time.monotonic() - started >= 1.5, "the lease must hold until the processing timeout"
        assert second.files(again["group_id"]).status_code == 200
        posted = second.post_result(again["group_id"], b"final result bytes" * 100, "final.bin")
        assert posted.status_code == 201, posted.text
        event = sock.wait_event("pool-result", lambda d: d["group_id"] == group["group_id"], timeout=30)
        assert event["result_id"] == posted.json()["result_id"]
        assert [g["status"] for g in second.groups() if g["group_id"] == group["group_id"]] == ["done"]
    finally:
        sock.close()
