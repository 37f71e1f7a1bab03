"""Issue 12, SPEC "Staging" on a real fleet: a result delivered to a filesystem target, an S3 target
and webhook receivers started here; a receiver failing 3 times is done after 4 attempts, one always
failing is failed after STAGING_MAX_ATTEMPTS; a file name with '..' stays inside its directory."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from cryptography.fernet import Fernet

from services.common import mongo
from tests.receiver import Receiver, signed

from .helpers import RawSocket, bearer
from .pools import Admin, Processor, window_timestamp

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_ATTEMPTS = 4
SECRETS = ("hook-secret-flaky-0123", "hook-secret-down-4567")


def _wait_staged(processor: Processor, rid: str, count: int, timeout: float = 90) -> list[dict]:
    """The staging status once every target is done or failed (bounded wait)."""
    deadline = time.monotonic() + timeout
    targets: list[dict] = []
    while time.monotonic() < deadline:
        r = requests.get(f"{processor.base}/results/{rid}/staging", headers=processor.headers, timeout=10)
        assert r.status_code == 200, r.text
        targets = r.json()["targets"]
        if len(targets) == count and all(t["status"] != "pending" for t in targets):
            return targets
        time.sleep(0.3)
    raise AssertionError(f"staging not finished within {timeout}s: {targets}")


def test_a_result_is_staged_to_every_target_with_retries(make_fleet, s3_bucket, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    flaky, down = Receiver(fail_first=3).start(), Receiver(always_fail=True).start()
    try:
        fleet = make_fleet(STORAGE_SECRETS_KEY=Fernet.generate_key().decode(), STAGING_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
                           STAGING_RETRY_DELAY_SECONDS="1", STAGING_RETRY_FACTOR="2",
                           STAGING_WEBHOOK_ALLOW_PRIVATE="true", STAGING_WEBHOOK_TIMEOUT_SECONDS="5")
        admin = Admin(fleet)
        staging = [
            {"kind": "filesystem", "path": f"{stage}/{{pool_id}}/{{window_start}}/{{seq}}-{{file_name}}"},
            {"kind": "s3", "endpoint_url": s3_bucket["endpoint_url"], "bucket": s3_bucket["bucket"],
             "prefix": "results/{pool_id}/", "access_key_id": s3_bucket["access_key_id"],
             "secret_access_key": s3_bucket["secret_access_key"]},
            {"kind": "webhook", "url": flaky.url, "secret": SECRETS[0]},
            {"kind": "webhook", "url": down.url, "secret": SECRETS[1]},
        ]
        pool = admin.create_pool(f"stage-{uuid.uuid4().hex[:6]}", window_seconds=2, staging=staging)
        pool_id = pool["pool_id"]
        assert not any(s in json.dumps(pool) for s in (*SECRETS, s3_bucket["secret_access_key"]))
        processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
        sock = RawSocket(fleet.gateway, admin.member(pool_id)["access_token"])
        try:
            sock.upload_bytes(os.urandom(100_000), "u.bin", pool_id=pool_id, timestamp=window_timestamp(2))
            gid = processor.wait_ready(timeout=60)["group_id"]
            assert processor.files(gid).status_code == 200
        finally:
            sock.close()
        data = os.urandom(300_000)
        # A hostile name: the result must still land inside the target's directory.
        posted = processor.post_result(gid, data, "../../escape..bin")
        assert posted.status_code == 201, posted.text
        rid, seq = posted.json()["result_id"], posted.json()["seq"]

        targets = _wait_staged(processor, rid, len(staging))
        assert [(t["kind"], t["status"], t["attempts"]) for t in targets] == [
            ("filesystem", "done", 1), ("s3", "done", 1), ("webhook", "done", 4), ("webhook", "failed", MAX_ATTEMPTS)]
        assert "answered 500" in targets[3]["error"]

        # Filesystem: inside the target directory, read-only, the exact bytes; nothing else anywhere.
        placed = Path(targets[0]["location"])
        assert placed.resolve().is_relative_to(stage.resolve()) and placed.parent.parent == stage / pool_id
        assert placed.name.startswith(f"{seq}-") and ".." not in placed.relative_to(stage).parts
        assert placed.read_bytes() == data and not placed.stat().st_mode & 0o222
        assert [p for p in tmp_path.rglob("*") if p.is_file()] == [placed]

        # S3: the object in the bucket.
        client = boto3.client("s3", endpoint_url=s3_bucket["endpoint_url"], region_name="us-east-1",
                              aws_access_key_id=s3_bucket["access_key_id"],
                              aws_secret_access_key=s3_bucket["secret_access_key"])
        key = targets[1]["location"].split(f"s3://{s3_bucket['bucket']}/", 1)[1]
        assert key.startswith(f"results/{pool_id}/")
        assert client.get_object(Bucket=s3_bucket["bucket"], Key=key)["Body"].read() == data

        # Webhooks: signed SPEC payloads, 4 calls to the flaky one, MAX_ATTEMPTS to the dead one.
        assert len(flaky.seen()) == 4 and len(down.seen()) == MAX_ATTEMPTS
        assert all(signed(SECRETS[0], r) for r in flaky.seen()) and all(signed(SECRETS[1], r) for r in down.seen())
        payload = json.loads(flaky.seen()[-1].body)
        assert payload == {"pool_id": pool_id, "group_id": gid, "result_id": rid, "seq": seq,
                           "sha256": hashlib.sha256(data).hexdigest(), "download_url": payload["download_url"]}
        assert payload["download_url"].endswith(f"/file/{rid}")
        gaps = [b.at - a.at for a, b in zip(down.seen(), down.seen()[1:], strict=False)]
        # Growing delays, 1, 2, 4 s (margins for a loaded machine: a delivery may start late, never early).
        assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 3.9 and gaps[2] > gaps[0] + 1.5, gaps

        # The route: admin too; members and strangers not; no secret in any answer.
        admin_view = requests.get(f"{processor.base}/results/{rid}/staging", headers=bearer(admin.token), timeout=10)
        assert admin_view.status_code == 200 and admin_view.json()["targets"] == targets
        member = admin.member(pool_id)
        refused = requests.get(f"{processor.base}/results/{rid}/staging", headers=bearer(member["access_token"]),
                               timeout=10)
        assert refused.status_code == 403
        assert not any(s in admin_view.text for s in (*SECRETS, s3_bucket["secret_access_key"]))

        # Audited: each outcome in file_service_manager's audit trail (appended by its consumer: waited for).
        deadline = time.monotonic() + 30
        actions: list[str] = []
        while time.monotonic() < deadline:
            audit = requests.get(f"{fleet.urls['file_service_manager']}/audit", params={"file_id": rid, "limit": 100},
                                 headers=bearer(admin.token), timeout=10)
            assert audit.status_code == 200, audit.text
            actions = [e["action"] for e in audit.json()["events"]]
            if actions.count("staging_done") == 3 and actions.count("staging_failed") == 1:
                break
            time.sleep(0.3)
        assert actions.count("staging_done") == 3 and actions.count("staging_failed") == 1, actions
        assert actions.count("staging_attempt_failed") == 3 + MAX_ATTEMPTS - 1, actions
        assert not any(s in audit.text for s in (*SECRETS, s3_bucket["secret_access_key"]))

        # No secret in any log line of the fleet, nor in any MongoDB document (staging statuses included).
        secrets = (*SECRETS, s3_bucket["secret_access_key"])
        logs = "".join(p.read_text(errors="replace") for p in fleet.fleet.log_dir.glob("*.log"))
        assert "staging attempt failed; retrying" in logs, "file_service_manager's log lines are in the scan"
        assert not any(s in logs for s in secrets)
        db = mongo.connect(fleet.env["MONGODB_URI"], fleet.env["MONGODB_DB"])
        try:
            assert db["staging"].count_documents({}) == len(staging)
            for name in db.list_collection_names():
                assert not any(s in json.dumps(d, default=str) for d in db[name].find({}) for s in secrets), name
        finally:
            db.client.close()
    finally:
        flaky.stop()
        down.stop()


def test_link_puts_a_hard_link_when_the_result_lives_on_the_same_filesystem(make_fleet, tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    store.mkdir()
    out.mkdir()
    fleet = make_fleet()
    admin = Admin(fleet)
    # The pool's results are stored on the filesystem backend (its own storage), so link can link.
    staging = [{"kind": "filesystem", "path": f"{out}/{{group_id}}", "link": True}]
    pool_id = admin.create_pool(f"link-{uuid.uuid4().hex[:6]}", window_seconds=2,
                                storage={"backend": "filesystem", "root": str(store)}, staging=staging)["pool_id"]
    processor = Processor(fleet, pool_id, admin.processor_key(pool_id))
    sock = RawSocket(fleet.gateway, admin.member(pool_id)["access_token"])
    try:
        sock.upload_bytes(os.urandom(100_000), "u.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        gid = processor.wait_ready(timeout=60)["group_id"]
        assert processor.files(gid).status_code == 200
    finally:
        sock.close()
    data = os.urandom(200_000)
    posted = processor.post_result(gid, data, "linked.bin")
    assert posted.status_code == 201, posted.text
    rid = posted.json()["result_id"]
    [target] = _wait_staged(processor, rid, 1)
    assert (target["status"], target["attempts"]) == ("done", 1), target
    placed = Path(target["location"])
    stored = [p for p in store.rglob(rid) if p.is_file()]
    assert placed.parent.parent == out and placed.read_bytes() == data
    assert len(stored) == 1 and placed.samefile(stored[0])  # one inode: linked, not copied
