"""DEFAULT_STORAGE: uploads land in the configured backend and nowhere else; every record remembers its
backend, so downloads (with Range) still come from it after the default changes."""

from __future__ import annotations

import json
import os

import boto3

from services.common import mongo
from services.common.secretbox import SecretBox
from services.file_service_manager.backends import parse_spec

from .test_http import bearer, stored


def gridfs_ids(p) -> set[str]:
    return {d["_id"] for d in p.index.db["fs.files"].find({}, {"_id": 1})} | \
        set(p.index.db["fs.chunks"].distinct("files_id"))


def test_filesystem_default_then_gridfs_default(make_pipeline, tmp_path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    spec = {"backend": "filesystem", "root": str(root)}
    p = make_pipeline(fsm_env={"DEFAULT_STORAGE": json.dumps(spec)})
    data = os.urandom(1_500_000)  # two cache chunks
    file_id = stored(p, data, file_name="on-disk.bin")
    on_disk = [f for f in root.rglob("*") if f.is_file()]
    assert [f.name for f in on_disk] == [file_id] and on_disk[0].read_bytes() == data
    assert gridfs_ids(p) == set()  # nowhere else
    record = p.index.record(file_id)
    assert record["storage"] == parse_spec(spec).descriptor()
    assert "storage" not in p.fsm.get("/client/history/u1", headers=bearer("alice")).get_json()["files"][0]

    # The default moves to GridFS: the new file goes there, the old one is still served from disk.
    q = make_pipeline()
    newer = stored(q, b"in gridfs", file_name="new.txt")
    assert gridfs_ids(q) == {newer}
    r = q.fsm.get(f"/file/{file_id}", headers={**bearer("alice"), "Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.data == data[1000:2000]
    assert q.fsm.get(f"/file/{newer}", headers=bearer("alice")).data == b"in gridfs"


def no_plaintext_anywhere(db, *secrets: str) -> None:
    """Every document of every collection of the service's database, searched for the secrets."""
    for name in db.list_collection_names():
        for doc in db[name].find({}):
            text = json.dumps(doc, default=str)
            for secret in secrets:
                assert secret not in text, f"{secret!r} in plaintext in {name}"


def test_s3_default(make_pipeline, s3_bucket) -> None:
    p = make_pipeline(fsm_env={"DEFAULT_STORAGE": json.dumps({**s3_bucket, "prefix": "dropbox/"}),
                               "STORAGE_SECRETS_KEY": SecretBox.generate_key()})
    data = os.urandom(2_200_000)
    file_id = stored(p, data, file_name="in-s3.bin", pool_id="p1")
    s3 = boto3.client("s3", endpoint_url=s3_bucket["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket["bucket"]).get("Contents", [])]
    assert keys == [f"dropbox/{file_id}"]
    assert s3.get_object(Bucket=s3_bucket["bucket"], Key=keys[0])["Body"].read() == data
    assert gridfs_ids(p) == set()
    record = p.index.record(file_id)
    assert record["storage"]["backend"] == "s3"
    assert s3_bucket["secret_access_key"] not in json.dumps(record, default=str)
    assert s3_bucket["access_key_id"] not in json.dumps(record, default=str)
    r = p.fsm.get(f"/file/{file_id}", headers={**bearer("alice"), "Range": "bytes=-100"})
    assert r.status_code == 206 and r.data == data[-100:]
    assert p.fsm.get(f"/file/{file_id}", headers={"X-API-Key": "key-p1"}).data == data
    # The credentials are in the storages catalog, encrypted; no collection holds them in plaintext.
    assert p.index.db["storages"].count_documents({}) == 1
    no_plaintext_anywhere(p.index.db, s3_bucket["secret_access_key"], s3_bucket["access_key_id"])


def test_s3_files_stay_readable_after_the_default_moves_to_gridfs(make_pipeline, s3_bucket) -> None:
    key = SecretBox.generate_key()
    p = make_pipeline(fsm_env={"DEFAULT_STORAGE": json.dumps(s3_bucket), "STORAGE_SECRETS_KEY": key})
    data = os.urandom(300_000)
    file_id = stored(p, data, file_name="s3-then-gridfs.bin")
    # A restart with GridFS as the default (the S3 spec is gone from the environment): the record's
    # backend comes back from the catalog, its credentials decrypted with the key.
    q = make_pipeline(fsm_env={"STORAGE_SECRETS_KEY": key})
    r = q.fsm.get(f"/file/{file_id}", headers={**bearer("alice"), "Range": "bytes=10-19"})
    assert r.status_code == 206 and r.data == data[10:20]


def test_records_from_before_backends_are_read_from_gridfs_fs(make_pipeline, tmp_path) -> None:
    p = make_pipeline()
    file_id = stored(p, b"legacy bytes", file_name="old.txt")
    p.index.files.update_one({"_id": file_id}, {"$unset": {"storage": ""}})  # as written before this change
    root = tmp_path / "r"
    root.mkdir()
    q = make_pipeline(fsm_env={"DEFAULT_STORAGE": json.dumps({"backend": "filesystem", "root": str(root)})})
    assert q.fsm.get(f"/file/{file_id}", headers=bearer("alice")).data == b"legacy bytes"
    assert mongo.bucket(q.index.db).open_download_stream(file_id).read() == b"legacy bytes"
