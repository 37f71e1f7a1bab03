"""Issue 2 failure path: a storage that fails is tried three times in all,
with `retrying` notices, then `upload_failed`; nothing is left in Redis."""

from __future__ import annotations

import os
import time

import pytest
import redis

from .helpers import RawSocket, signup

pytestmark = pytest.mark.e2e


def test_failed_store_is_retried_then_reported(fleet):
    user = signup(fleet.urls["auth"])
    sock = RawSocket(fleet.gateway, user["access_token"])
    try:
        # The e2e fleet runs with STORE_FAIL_PATTERN=^fail-store-.* (test-only setting).
        file_id = sock.upload_bytes(os.urandom(250_000), "fail-store-me.bin")
        final = sock.wait_event("file-status", lambda d: d["file_id"] == file_id
                                and d["status"] == "upload_failed", timeout=60)
        assert final.get("reason")
        seen = sock.statuses(file_id)
        retrying = [s for s in seen if s == "retrying"]
        assert seen[0] == "cached"
        assert len(retrying) == 2, seen  # attempts 2 and 3
        assert "uploaded_successfully" not in seen
        time.sleep(0.5)
        client = redis.Redis.from_url(fleet.env["REDIS_URL"])
        try:
            left = [k for k in client.scan_iter(f"{fleet.env['REDIS_PREFIX']}:upload:{file_id}*")
                    if not k.endswith(b":status")]  # the status tombstone expires by itself
            assert left == []
        finally:
            client.close()
        record = next(f for f in sock.call("get-history", {})["files"] if f["file_id"] == file_id)
        assert record["status"] == "upload_failed"
    finally:
        sock.close()
