"""Prestores on the S3 backend: a big upload is written as a multipart upload while its chunks
arrive; the StoreUpload checks it and completes it (the object appears only then).

Real Redis, RabbitMQ, MongoDB-wire server and moto's S3 server (``s3_bucket``). The StoreUpload's
own write of a file smaller than one 8 MiB part is a single PUT (an ETag without ``-``); a
completed multipart upload's ETag ends in ``-<parts>``: that tells who wrote the object.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3

from services.common.secretbox import SecretBox
from services.file_service_manager import backends
from services.file_service_manager.store import FileIndex, prestore_key
from services.file_service_manager.sweep import sweep
from tests.integration.file_uploader.helpers import put_chunk

from .conftest import CHUNK
from .test_prestore import _in_background, _started
from .test_prestore_filesystem import _store_command


def _in_s3(make_pipeline, s3_bucket):
    p = make_pipeline(fsm_env={"DEFAULT_STORAGE": json.dumps(s3_bucket),
                               "STORAGE_SECRETS_KEY": SecretBox.generate_key()})
    s3 = boto3.client("s3", endpoint_url=s3_bucket["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id=s3_bucket["access_key_id"],
                      aws_secret_access_key=s3_bucket["secret_access_key"])
    return p, s3


def _uploads(s3, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _object(s3, bucket: str, key: str) -> dict | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        return None


def _prestored(p, data: bytes, name: str) -> str:
    file_id, message = _started(p, data, name)
    prestore = _in_background(p.worker.handle_prestore, message)
    for i in range(message.chunk_count):
        assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
    prestore.join(timeout=60)
    assert not prestore.is_alive()
    return file_id


def test_the_upload_is_a_multipart_upload_completed_by_the_store(make_pipeline, s3_bucket) -> None:
    p, s3 = _in_s3(make_pipeline, s3_bucket)
    bucket = s3_bucket["bucket"]
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id = _prestored(p, data, "big.bin")
    # Written but not visible: an incomplete multipart upload, no object, no record.
    assert _uploads(s3, bucket) == [file_id]
    assert _object(s3, bucket, file_id) is None and p.index.record(file_id) is None
    command = _store_command(p, file_id)
    p.worker.handle_store(command)
    record = p.index.record(file_id)
    assert record["status"] == "uploaded_successfully" and record["sha256"] == hashlib.sha256(data).hexdigest()
    found = _object(s3, bucket, file_id)
    assert found is not None and found["Body"].read() == data
    assert found["ETag"].strip('"').endswith("-1"), "the prestore's upload was completed, not written again"
    assert _uploads(s3, bucket) == []
    assert not list(p.redis.scan_iter(f"{command.cache_key}:prestore*"))


def test_a_prestore_that_does_not_match_the_upload_is_written_again_by_the_store(make_pipeline,
                                                                               s3_bucket) -> None:
    p, s3 = _in_s3(make_pipeline, s3_bucket)
    bucket = s3_bucket["bucket"]
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id = _prestored(p, data, "wrong.bin")
    assert _uploads(s3, bucket) == [file_id]
    command = _store_command(p, file_id)
    p.redis.hset(prestore_key(command.cache_key), "sha256", "0" * 64)  # not the upload's bytes
    p.worker.handle_store(command)
    assert p.index.record(file_id)["status"] == "uploaded_successfully"
    found = _object(s3, bucket, file_id)
    assert found is not None and found["Body"].read() == data
    assert "-" not in found["ETag"], "the StoreUpload's own single PUT"
    assert _uploads(s3, bucket) == [], "the refused multipart upload is aborted"


_CRASHING_PRESTORE = """
import json, sys, time
from services.file_service_manager.backends import build, parse_spec

def arriving():
    yield b"x" * (9 * 1024 * 1024)  # one whole part sent
    print("half-way", flush=True)
    time.sleep(600)  # killed here, half-way through the upload

build(parse_spec(json.loads(sys.argv[1]))).prestore_write(sys.argv[2], arriving(), name=None, tag="ab" * 16,
                                                          content_type="application/octet-stream")
"""


def test_a_crashed_prestore_is_stored_by_the_store_and_its_upload_swept(make_pipeline, s3_bucket,
                                                                      mongo_db) -> None:
    p, s3 = _in_s3(make_pipeline, s3_bucket)
    bucket = s3_bucket["bucket"]
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id, _message = _started(p, data, "crashed.bin")
    for i in range(3):
        assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
    child = subprocess.Popen([sys.executable, "-c", _CRASHING_PRESTORE, json.dumps(s3_bucket), file_id],
                             stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[3])
    try:
        assert child.stdout is not None and child.stdout.readline() == b"half-way\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert _uploads(s3, bucket) == [file_id]  # no abort ran

    p.worker.handle_store(_store_command(p, file_id))
    found = _object(s3, bucket, file_id)
    assert found is not None and found["Body"].read() == data

    spec = backends.parse_spec(s3_bucket)
    storages = backends.Storages(spec, lambda s: backends.build(s, db=mongo_db))
    # moto lists every multipart upload as initiated in 2010 (a fixed date), so it is past any grace
    # here; the grace itself is the backend's contract test's (test_backends.py).
    swept = sweep(FileIndex(mongo_db), grace_seconds=3600, storages=storages)
    assert swept["half_written"] == {spec.id: [file_id]}
    assert _uploads(s3, bucket) == [] and _object(s3, bucket, file_id)["Body"].read() == data
