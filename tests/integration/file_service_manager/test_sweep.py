"""The GridFS sweeper removes what a crashed store left behind, and nothing else."""

from __future__ import annotations

from datetime import timedelta

from bson import ObjectId

from services.common import timeutil
from services.file_service_manager.store import FileIndex
from services.file_service_manager.sweep import sweep


class _Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def record(self, action: str, **fields) -> None:
        self.records.append((action, fields))


def test_leftovers_older_than_the_grace_are_removed(mongo_db) -> None:
    index = FileIndex(mongo_db)
    index.ensure_indexes()
    old = timeutil.now() - timedelta(hours=2)
    chunks, files = mongo_db["fs.chunks"], mongo_db["fs.files"]
    # chunks of a crashed write, two hours old, no file document
    chunks.insert_many([{"_id": ObjectId.from_datetime(old + timedelta(seconds=n)), "files_id": "crashed",
                         "n": n, "data": b"x"} for n in range(3)])
    # a write in progress right now: chunks, no file document yet
    chunks.insert_one({"files_id": "in-progress", "n": 0, "data": b"y"})
    # a complete GridFS file without an index record (crash between the two writes)
    files.insert_one({"_id": "unindexed", "length": 1, "chunkSize": 261120, "uploadDate": old})
    chunks.insert_one({"files_id": "unindexed", "n": 0, "data": b"z"})
    # a stored, indexed file
    files.insert_one({"_id": "kept", "length": 1, "chunkSize": 261120, "uploadDate": old})
    chunks.insert_one({"files_id": "kept", "n": 0, "data": b"k"})
    mongo_db["files"].insert_one({"_id": "kept", "file_id": "kept", "status": "uploaded_successfully"})

    audit = _Audit()
    planned = sweep(index, grace_seconds=3600, dry_run=True, audit=audit)
    assert planned["chunks_without_file"] == ["crashed"]
    assert planned["files_without_record"] == ["unindexed"]
    assert chunks.count_documents({}) == 6 and audit.records == [], "a dry run removes nothing"

    done = sweep(index, grace_seconds=3600, audit=audit)
    assert done["chunks_without_file"] == ["crashed"] and done["files_without_record"] == ["unindexed"]
    assert sorted(chunks.distinct("files_id")) == ["in-progress", "kept"]
    assert [f["_id"] for f in files.find()] == ["kept"]
    assert sorted(r[1]["file_id"] for r in audit.records if r[0] == "deleted") == ["crashed", "unindexed"]


def test_two_replicas_sweeping_at_once_remove_and_record_each_leftover_once(mongo_db) -> None:
    """Every file_service_manager replica runs the sweeper: two passes at once over the same
    leftovers remove them all, keep what is stored, and audit each removal once."""
    import threading

    index, other = FileIndex(mongo_db), FileIndex(mongo_db)
    index.ensure_indexes()
    old = timeutil.now() - timedelta(hours=2)
    chunks, files = mongo_db["fs.chunks"], mongo_db["fs.files"]
    leftovers = [f"crashed-{n}" for n in range(20)]
    for n, files_id in enumerate(leftovers):
        if n % 2:  # an unindexed GridFS file
            files.insert_one({"_id": files_id, "length": 1, "chunkSize": 261120, "uploadDate": old})
            chunks.insert_one({"files_id": files_id, "n": 0, "data": b"z"})
        else:  # chunks without a file document
            chunks.insert_one({"_id": ObjectId.from_datetime(old + timedelta(seconds=n)), "files_id": files_id,
                               "n": 0, "data": b"x"})
    files.insert_one({"_id": "kept", "length": 1, "chunkSize": 261120, "uploadDate": old})
    chunks.insert_one({"files_id": "kept", "n": 0, "data": b"k"})
    mongo_db["files"].insert_one({"_id": "kept", "file_id": "kept", "status": "uploaded_successfully"})
    audit = _Audit()  # one trail: what both replicas record
    barrier = threading.Barrier(2)

    def one(idx: FileIndex) -> None:
        barrier.wait(timeout=10)
        sweep(idx, grace_seconds=3600, audit=audit)

    threads = [threading.Thread(target=one, args=(idx,)) for idx in (index, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert chunks.distinct("files_id") == ["kept"]
    assert [f["_id"] for f in files.find()] == ["kept"]
    deleted = [r[1]["file_id"] for r in audit.records if r[0] == "deleted"]
    assert sorted(deleted) == sorted(leftovers), "each leftover recorded once, by the pass that removed it"


def test_the_pass_also_sweeps_each_backends_half_written_objects(mongo_db, tmp_path) -> None:
    import os

    from services.file_service_manager import backends

    root = tmp_path / "root"
    (root / "ab").mkdir(parents=True)
    old = root / "ab" / ".abcdef.1234.tmp"
    old.write_bytes(b"half")
    past = (timeutil.now() - timedelta(hours=2)).timestamp()
    os.utime(old, (past, past))
    spec = backends.parse_spec({"backend": "filesystem", "root": str(root)})
    storages = backends.Storages(spec, lambda s: backends.build(s, db=mongo_db))
    audit = _Audit()
    planned = sweep(FileIndex(mongo_db), grace_seconds=3600, dry_run=True, audit=audit, storages=storages)
    assert planned["half_written"] == {spec.id: ["ab/.abcdef.1234.tmp"]} and old.exists()
    done = sweep(FileIndex(mongo_db), grace_seconds=3600, audit=audit, storages=storages)
    assert done["half_written"] == {spec.id: ["ab/.abcdef.1234.tmp"]} and not old.exists()
    assert [(a, f["reason"], f["storage"]) for a, f in audit.records] == [("deleted", "half_written", spec.id)]


def test_a_pools_own_gridfs_bucket_is_swept_by_every_replica(mongo_db) -> None:
    """A half-written file (chunks, no file document) in a pool's bucket, not ``fs`` and not the
    default: a replica that never wrote there finds the bucket in the storage catalog and sweeps it."""
    from services.file_service_manager import backends
    from services.file_service_manager.store import StorageCatalog

    default = backends.parse_spec({"backend": "gridfs"})
    pool = backends.parse_spec({"backend": "gridfs", "bucket": "pool_bucket"})
    writer = backends.storages_for(default, db=mongo_db, catalog=StorageCatalog(mongo_db))
    writer.for_spec(pool).write("complete", [b"stored bytes"], content_type="text/plain")
    chunks = mongo_db["pool_bucket.chunks"]
    old = timeutil.now() - timedelta(hours=2)
    chunks.insert_one({"_id": ObjectId.from_datetime(old), "files_id": "half-written", "n": 0, "data": b"x"})
    chunks.insert_one({"files_id": "being-written", "n": 0, "data": b"y"})  # newer than the grace: kept

    other = backends.storages_for(default, db=mongo_db, catalog=StorageCatalog(mongo_db))
    audit = _Audit()
    done = sweep(FileIndex(mongo_db), grace_seconds=3600, audit=audit, storages=other)
    assert done["half_written"] == {pool.id: ["half-written"]}
    assert sorted(chunks.distinct("files_id")) == ["being-written", "complete"]
    assert [(a, f["storage"], f["object"]) for a, f in audit.records] == [("deleted", pool.id, "half-written")]
    assert sweep(FileIndex(mongo_db), grace_seconds=3600, storages=other)["half_written"] == {}


def test_a_complete_file_without_a_record_in_a_pools_bucket_is_swept_once(mongo_db) -> None:
    """A prestore (or a store) that wrote a whole file into a pool's bucket but whose upload was never
    indexed: removed after the grace like one in ``fs``; a recorded file is kept; two replicas at once
    remove and record it once."""
    import threading

    from services.file_service_manager import backends
    from services.file_service_manager.store import StorageCatalog

    default = backends.parse_spec({"backend": "gridfs"})
    pool = backends.parse_spec({"backend": "gridfs", "bucket": "pool_bucket"})
    writer = backends.storages_for(default, db=mongo_db, catalog=StorageCatalog(mongo_db))
    for key in ("prestored-never-stored", "indexed"):
        writer.for_spec(pool).write(key, [b"whole file"], content_type="text/plain")
    FileIndex(mongo_db).files.insert_one({"_id": "indexed", "file_id": "indexed", "status": "uploaded_successfully"})
    files = mongo_db["pool_bucket.files"]
    files.update_many({}, {"$set": {"uploadDate": timeutil.now() - timedelta(hours=2)}})
    writer.for_spec(pool).write("just-written", [b"in progress"], content_type="text/plain")  # within the grace

    audit, passes, barrier = _Audit(), [], threading.Barrier(2)

    def one() -> None:
        storages = backends.storages_for(default, db=mongo_db, catalog=StorageCatalog(mongo_db))
        barrier.wait(timeout=10)
        passes.append(sweep(FileIndex(mongo_db), grace_seconds=3600, audit=audit, storages=storages))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(passes) == 2
    assert sorted(f["_id"] for f in files.find()) == ["indexed", "just-written"]
    assert sorted(mongo_db["pool_bucket.chunks"].distinct("files_id")) == ["indexed", "just-written"]
    assert [(a, f["file_id"], f["storage"], f["reason"]) for a, f in audit.records] == [
        ("deleted", "prestored-never-stored", pool.id, "file_without_record")]


def test_a_file_whose_upload_is_still_cached_is_kept_until_its_session_is_gone(mongo_db, redis_prefix) -> None:
    """A prestored file (complete in GridFS, no index record yet) whose completed upload still waits
    in Redis to be stored (a StoreUpload retried for hours): the sweeper keeps it while the
    upload's session exists -- its StoreUpload will index it -- and removes it only once the
    session is gone without a record. Batch items (``{upload_id}-0001``) follow their upload's
    session. Without the check, the file was removed after the 1 h grace and the upload lost
    when its StoreUpload later indexed a file that was no longer there."""
    import redis

    from services.common import uploadkeys
    from services.file_service_manager.store import UploadCache

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    cache = UploadCache(client, redis_prefix)
    index = FileIndex(mongo_db)
    index.ensure_indexes()
    old = timeutil.now() - timedelta(hours=2)
    files, chunks = mongo_db["fs.files"], mongo_db["fs.chunks"]
    for file_id in ("u" * 32, "b" * 32 + "-0001"):
        files.insert_one({"_id": file_id, "length": 1, "chunkSize": 261120, "uploadDate": old})
        chunks.insert_one({"files_id": file_id, "n": 0, "data": b"z"})
    sessions = [uploadkeys.session_key(redis_prefix, "u" * 32), uploadkeys.session_key(redis_prefix, "b" * 32)]
    for key in sessions:
        client.hset(key, mapping={"status": "cached"})
    try:
        kept = sweep(index, grace_seconds=3600, waiting=cache.upload_waiting)
        assert kept["files_without_record"] == [] and files.count_documents({}) == 2
        client.delete(sessions[1])  # the batch's session dropped without a record: garbage now
        swept = sweep(index, grace_seconds=3600, waiting=cache.upload_waiting)
        assert swept["files_without_record"] == ["b" * 32 + "-0001"]
        assert [f["_id"] for f in files.find()] == ["u" * 32]
    finally:
        client.delete(*sessions)


def test_the_unindexed_scan_is_bounded_and_resumes_where_it_stopped(mongo_db, monkeypatch) -> None:
    """At most SWEEP_SCAN files looked at per pass, from where the last pass stopped; after the
    newest, the next pass starts over: every leftover is found within a few passes."""
    from services.file_service_manager import store

    monkeypatch.setattr(store, "SWEEP_SCAN", 3)
    index = FileIndex(mongo_db)
    index.ensure_indexes()
    old = timeutil.now() - timedelta(hours=2)
    files = mongo_db["fs.files"]
    for n in range(8):
        files.insert_one({"_id": f"f{n}", "length": 1, "chunkSize": 261120, "uploadDate": old + timedelta(seconds=n)})
    for n in (0, 1, 2, 4, 5):
        mongo_db["files"].insert_one({"_id": f"f{n}", "file_id": f"f{n}", "status": "uploaded_successfully"})
    seen = [index.unindexed_files(timeutil.now() - timedelta(hours=1)) for _ in range(4)]
    assert seen == [[], ["f3"], ["f6", "f7"], []]  # f0-f2, f3-f5, f6-f7 (end: start over), f0-f2
