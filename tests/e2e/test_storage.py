"""The fleet with an S3 DEFAULT_STORAGE (moto's S3 server): uploads land in the bucket and nowhere else,
downloads with Range come from it, DELETE removes the object; the credentials appear in no log line, no
answer and no database document (only encrypted in ``storages``)."""

from __future__ import annotations

import hashlib
import json
import os

import boto3
import pytest
import requests

from client.api import DropboxClient
from services.common import mongo
from services.common.secretbox import SecretBox

from .helpers import bearer

pytestmark = pytest.mark.e2e

SECRET = f"e2e-secret-{os.urandom(8).hex()}"
KEY_ID = f"E2EKEYID{os.urandom(4).hex().upper()}"


def test_s3_default_storage_end_to_end(make_fleet, s3_endpoint, tmp_path) -> None:
    bucket = f"e2e-{os.urandom(5).hex()}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                      aws_secret_access_key=SECRET)
    s3.create_bucket(Bucket=bucket)
    spec = {"backend": "s3", "endpoint_url": s3_endpoint, "bucket": bucket, "prefix": "files/",
            "access_key_id": KEY_ID, "secret_access_key": SECRET}
    running = make_fleet(DEFAULT_STORAGE=json.dumps(spec), STORAGE_SECRETS_KEY=SecretBox.generate_key(),
                         STORAGE_PROBE_SECONDS="2")
    answers: list[str] = []

    source = tmp_path / "to-s3.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(data)
    client = DropboxClient(running.gateway)
    client.signup(f"s3user_{os.urandom(4).hex()}", "correct-horse-battery")
    client.connect()
    try:
        file_id = client.upload(source)
        client.wait_status(file_id, "uploaded_successfully", timeout=60)
        answers.append(json.dumps(client.history()))
    finally:
        client.disconnect()

    def objects() -> list[str]:
        # The periodic health probe writes and deletes files/.probe-* objects meanwhile: not files.
        return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
                if not o["Key"].startswith("files/.probe-")]

    assert objects() == [f"files/{file_id}"]
    assert hashlib.sha256(s3.get_object(Bucket=bucket, Key=f"files/{file_id}")["Body"].read()).hexdigest() == \
        hashlib.sha256(data).hexdigest()
    db = mongo.connect(running.env["MONGODB_URI"], running.env["MONGODB_DB"])
    assert [d["_id"] for d in db["fs.files"].find({}) if not str(d["_id"]).startswith(".probe-")] == []

    fsm = running.urls["file_service_manager"]
    r = requests.get(f"{fsm}/file/{file_id}", headers={**bearer(client.token), "Range": "bytes=1000-1999"},
                     timeout=30)
    assert r.status_code == 206 and r.content == data[1000:2000]
    ready = requests.get(f"{fsm}/ready", timeout=30)
    assert ready.status_code == 200 and any(k.startswith("storage:s3-") and v
                                            for k, v in ready.json()["checks"].items())
    answers += [ready.text, requests.get(f"{fsm}/metrics", timeout=30).text]
    r = requests.delete(f"{fsm}/file/{file_id}", headers=bearer(client.token), timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "deleted"
    answers.append(r.text)
    assert objects() == []
    assert requests.get(f"{fsm}/file/{file_id}", headers=bearer(client.token), timeout=30).status_code == 404

    # Nowhere in plaintext: every log line of every service, every answer, every database document.
    logs = "".join(p.read_text(errors="replace") for p in running.fleet.log_dir.glob("*.log"))
    assert "storage backend healthy" in logs, "file_service_manager's storage log lines are not in the scan"
    for secret in (SECRET, KEY_ID):
        assert secret not in logs
        assert not any(secret in a for a in answers)
        for name in db.list_collection_names():
            assert not any(secret in json.dumps(d, default=str) for d in db[name].find({})), name
    assert db["storages"].count_documents({}) == 1
