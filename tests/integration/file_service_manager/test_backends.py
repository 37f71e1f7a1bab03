"""The storage backend contract, one suite for all three, each against a real server of its kind:
GridFS on secantusdb, the filesystem on a temporary directory, S3 on moto's S3 server."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC

import boto3
import pytest

from services.common import mongo
from services.file_service_manager import backends
from services.file_service_manager.backends.filesystem import FilesystemBackend
from services.file_service_manager.ports import BackendError, StorageBackend

KINDS = ["gridfs", "filesystem", "s3"]
MiB = 1024 * 1024


@pytest.fixture(params=KINDS)
def backend(request, tmp_path) -> StorageBackend:
    kind = request.param
    if kind == "gridfs":
        db = request.getfixturevalue("mongo_db")
        return backends.build(backends.parse_spec({"backend": "gridfs", "bucket": "contract"}), db=db)
    if kind == "filesystem":
        root = tmp_path / "root"
        root.mkdir()
        return backends.build(backends.parse_spec({"backend": "filesystem", "root": str(root)}))
    return backends.build(backends.parse_spec(request.getfixturevalue("s3_bucket")))


def key() -> str:
    return uuid.uuid4().hex


def visible_leftovers(backend: StorageBackend, name: str) -> list[str]:
    """What the backend's own store holds for ``name`` (or, for the filesystem, at all)."""
    if backend.kind == "gridfs":
        db = backend.db  # type: ignore[attr-defined]
        return [str(d["_id"]) for d in db["contract.chunks"].find({"files_id": name})] + \
            [str(d["_id"]) for d in db["contract.files"].find({"_id": name})]
    if backend.kind == "filesystem":
        return [str(p) for p in backend.root.rglob("*")  # type: ignore[attr-defined]
                if p.is_file()]
    client, bucket = backend.client, backend.bucket  # type: ignore[attr-defined]
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads]


def test_write_then_read_whole(backend: StorageBackend) -> None:
    data = os.urandom(300_000)
    name = key()
    written = backend.write(name, [data[:1000], data[1000:]], content_type="application/octet-stream")
    assert written == (len(data), hashlib.sha256(data).hexdigest())
    assert backend.exists(name)
    opened = backend.open(name)
    assert opened is not None and opened.length == len(data)
    assert opened.read() == data
    opened.close()


def test_read_a_range(backend: StorageBackend) -> None:
    data = os.urandom(700_000)
    name = key()
    backend.write(name, [data], content_type="application/octet-stream")
    assert b"".join(backend.read_range(name, 300_001, 350_000)) == data[300_001:650_001]
    assert b"".join(backend.read_range(name, len(data) - 7, 7)) == data[-7:]
    opened = backend.open(name)
    assert opened is not None
    opened.seek(5)
    assert opened.read(10) == data[5:15]
    opened.seek(600_000)  # backwards and forwards again on one open object
    assert opened.read(3) == data[600_000:600_003]
    opened.close()


def test_missing_and_delete(backend: StorageBackend) -> None:
    name = key()
    assert backend.open(name) is None and not backend.exists(name)
    assert backend.delete(name) is False
    backend.write(name, [b"bytes to delete"], content_type="text/plain")
    assert backend.delete(name) is True
    assert backend.open(name) is None and not backend.exists(name)
    assert backend.delete(name) is False  # a second delete is harmless
    assert visible_leftovers(backend, name) == []


def test_health_probe_leaves_nothing(backend: StorageBackend) -> None:
    assert backend.probe() is True
    assert visible_leftovers(backend, "none") == []


def test_a_writer_that_fails_half_way_leaves_nothing(backend: StorageBackend) -> None:
    name = key()

    def pieces() -> Iterator[bytes]:
        for _ in range(12):  # 12 MiB: past the first S3 part, so a multipart upload is open
            yield os.urandom(MiB)
        raise ConnectionError("the cache went away mid-way")

    with pytest.raises(ConnectionError):
        backend.write(name, pieces(), content_type="application/octet-stream")
    assert not backend.exists(name) and backend.open(name) is None
    assert visible_leftovers(backend, name) == []
    # and the key can be written afresh afterwards
    assert backend.write(name, [b"second try"], content_type="text/plain").size == 10


@pytest.mark.slow
def test_a_50mb_stream_in_bounded_memory(backend: StorageBackend) -> None:
    name = key()
    digest = hashlib.sha256()
    seed = os.urandom(MiB)

    def pieces() -> Iterator[bytes]:
        for n in range(50):
            piece = bytes([n]) + seed[1:]  # 50 distinct MiB without holding them
            digest.update(piece)
            yield piece

    tracemalloc.start()
    try:
        written = backend.write(name, pieces(), content_type="application/octet-stream")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == (50 * MiB, digest.hexdigest())
    assert peak < 24 * MiB, f"writing 50 MiB held {peak / MiB:.1f} MiB at once"
    back = hashlib.sha256()
    total = 0
    for piece in backend.read_range(name, 0, 50 * MiB):
        back.update(piece)
        total += len(piece)
    assert (total, back.hexdigest()) == (50 * MiB, digest.hexdigest())
    tail = b"".join(backend.read_range(name, 49 * MiB + 10, 100))
    assert tail == (bytes([49]) + seed[1:])[10:110]


# --- refusals -----------------------------------------------------------------------------------


def test_filesystem_refuses_paths_that_escape_the_root(tmp_path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    fs = FilesystemBackend(str(root))
    for bad in ("../escape", "a/../../b", "/etc/passwd", ".hidden", "a\x00b", "x" * 300, ""):
        with pytest.raises(BackendError):
            fs.write(bad, [b"no"], content_type="text/plain")
        with pytest.raises(BackendError):
            fs.delete(bad)
    # a symlink planted under the root does not lead out of it either
    (root / "ev").symlink_to(outside, target_is_directory=True)
    with pytest.raises(BackendError):
        fs.write("evil-file", [b"no"], content_type="text/plain")
    assert list(outside.iterdir()) == []


def test_broken_backends_fail_their_probe_with_a_reason(tmp_path, s3_endpoint) -> None:
    with pytest.raises(BackendError, match="not a directory"):
        FilesystemBackend(str(tmp_path / "missing")).probe()
    s3 = backends.build(backends.parse_spec({"backend": "s3", "endpoint_url": s3_endpoint, "bucket": "no-such-bucket",
                                             "access_key_id": "k", "secret_access_key": "s"}))
    with pytest.raises(BackendError, match="NoSuchBucket"):
        s3.probe()
    dead = mongo.connect(f"mongodb://127.0.0.1:{_closed_port()}", "x", timeout_ms=300)
    with pytest.raises(BackendError, match="gridfs"):
        backends.build(backends.LEGACY, db=dead).probe()


def _closed_port() -> int:
    from devtools import infra

    return infra.free_port()


def test_s3_large_writes_are_multipart(s3_bucket) -> None:
    s3 = backends.build(backends.parse_spec(s3_bucket))
    calls: list[str] = []
    s3.client.meta.events.register("before-call.s3.*",  # type: ignore[attr-defined]
                                   lambda model, **_: calls.append(model.name))
    s3.write("big", (os.urandom(MiB) for _ in range(17)), content_type="application/octet-stream")
    assert calls.count("UploadPart") == 3 and "PutObject" not in calls  # 8 + 8 + 1 MiB
    raw = boto3.client("s3", endpoint_url=s3_bucket["endpoint_url"], region_name="us-east-1",
                       aws_access_key_id="k", aws_secret_access_key="s")
    assert raw.head_object(Bucket=s3_bucket["bucket"], Key="big")["ContentLength"] == 17 * MiB


def test_half_written_leftovers_are_swept_after_the_grace(backend: StorageBackend) -> None:
    """What a writer killed outright (no chance to clean up) leaves: invisible, then swept."""
    from datetime import datetime, timedelta

    from bson import ObjectId

    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    kept = key()
    backend.write(kept, [b"complete"], content_type="text/plain")
    if backend.kind == "gridfs":
        chunks = backend.db["contract.chunks"]  # type: ignore[attr-defined]
        chunks.insert_one({"_id": ObjectId.from_datetime(now - timedelta(hours=2)), "files_id": "killed", "n": 0,
                           "data": b"x"})
        chunks.insert_one({"files_id": "writing-now", "n": 0, "data": b"y"})
        expected, cutoff = ["killed"], hour_ago
    elif backend.kind == "filesystem":
        fan = backend.root / "ki"  # type: ignore[attr-defined]
        fan.mkdir()
        old, fresh = fan / ".killed.0a.tmp", fan / ".writing.0b.tmp"
        old.write_bytes(b"x")
        fresh.write_bytes(b"y")
        past = (now - timedelta(hours=2)).timestamp()
        os.utime(old, (past, past))
        expected, cutoff = ["ki/.killed.0a.tmp"], hour_ago
    else:
        killed = key()  # named as the service names objects (a file id)
        backend.client.create_multipart_upload(Bucket=backend.bucket, Key=killed)  # type: ignore[attr-defined]
        # Another tool's upload in the same bucket (a pool's bucket may be shared): never aborted.
        foreign = backend.client.create_multipart_upload(  # type: ignore[attr-defined]
            Bucket=backend.bucket, Key="backups/nightly.tar")
        # moto stamps uploads with its own clock: a cutoff a minute ahead makes this one "old"
        expected, cutoff = [killed], now + timedelta(minutes=1)
    assert backend.leftovers(cutoff, remove=False) == expected
    assert backend.leftovers(cutoff, remove=True) == expected
    assert backend.leftovers(cutoff, remove=True) == []
    assert b"".join(backend.read_range(kept, 0, 8)) == b"complete"  # the complete object is untouched
    if backend.kind == "filesystem":
        assert fresh.exists() and not old.exists()
    if backend.kind == "s3":
        uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket)  # type: ignore[attr-defined]
        assert [(u["Key"], u["UploadId"]) for u in uploads.get("Uploads", [])] == [
            ("backups/nightly.tar", foreign["UploadId"])]
