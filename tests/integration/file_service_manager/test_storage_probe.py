"""POST /internal/storage/probe: auth's check of a pool's storage before it saves it (SPEC "Storage
backends": 400 bad_storage with the backend's reason), against real backends; never a secret in the answer."""

from __future__ import annotations

import json

import boto3

from tests.integration.file_uploader.helpers import INTERNAL_KEY

PROBE = "/internal/storage/probe"
KEY = {"X-Internal-Key": INTERNAL_KEY}


def objects(spec: dict[str, str]) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=spec["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s")
    return [o["Key"] for o in s3.list_objects_v2(Bucket=spec["bucket"]).get("Contents", [])]


def test_probe_needs_the_internal_key(make_pipeline, tmp_path) -> None:
    p = make_pipeline()
    body = {"storage": {"backend": "filesystem", "root": str(tmp_path)}}
    assert p.fsm.post(PROBE, json=body).status_code == 401
    assert p.fsm.post(PROBE, json=body, headers={"X-Internal-Key": "wrong"}).status_code == 401


def test_working_backends_pass_and_leave_nothing_behind(make_pipeline, tmp_path, s3_bucket) -> None:
    p = make_pipeline()
    for storage in ({"backend": "filesystem", "root": str(tmp_path)}, {"backend": "gridfs", "bucket": "probe"},
                    s3_bucket):
        r = p.fsm.post(PROBE, json={"storage": storage}, headers=KEY)
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["ok"] is True and "secret_access_key" not in json.dumps(r.get_json())
    assert [f for f in tmp_path.rglob("*") if f.is_file()] == []
    assert objects(s3_bucket) == []
    assert p.index.db["probe.files"].count_documents({}) == 0


def test_broken_backends_are_bad_storage_with_the_reason_and_no_secret(make_pipeline, tmp_path,
                                                                        s3_bucket) -> None:
    p = make_pipeline()
    cases = [
        ({"backend": "filesystem", "root": str(tmp_path / "missing")}, "not a directory"),
        ({"backend": "filesystem", "root": "relative"}, "absolute"),
        ({**s3_bucket, "bucket": "no-such-bucket-here"}, "s3"),
        ({"backend": "nfs"}, "backend must be one of"),
    ]
    for storage, says in cases:
        r = p.fsm.post(PROBE, json={"storage": storage}, headers=KEY)
        body = r.get_json()
        assert (r.status_code, body["error"]["code"]) == (400, "bad_storage"), body
        assert says in body["error"]["message"], body
        assert s3_bucket["secret_access_key"] not in json.dumps(body)
    # No storage created as a side effect of a failed probe.
    assert not (tmp_path / "missing").exists()
    assert p.index.db["storages"].count_documents({}) == 0
