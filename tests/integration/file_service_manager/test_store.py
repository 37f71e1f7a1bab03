"""Storing uploads: Redis chunks -> GridFS + index, redelivery, forced failures and retries."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time

from services.common import messaging, mongo
from services.common.contracts import (
    FileGrouped,
    FilesGrouped,
    FileStatusChanged,
    FileStored,
    GroupedFiles,
    StoreUpload,
    UploadStored,
)
from services.common.runtime import runtime_of
from services.common.topology import stored_shard
from services.file_uploader import retries
from tests.integration.file_uploader.helpers import Collector, upload_all

from .conftest import CHUNK

# Pool updates must be younger than the pool's max_late_seconds (SPEC: 7 days by default):
# an hour ago, whole seconds, and the same five minutes later, as written and as stored.
_HOUR_AGO = int(time.time()) // 60 * 60 - 3600
T0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_HOUR_AGO))
T1 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_HOUR_AGO + 300))
T0_STORED, T1_STORED = T0.replace("Z", ".000Z"), T1.replace("Z", ".000Z")


def upload_and_command(p, data: bytes, **body) -> StoreUpload:
    with Collector(p.amqp_url, messaging.STORE_QUEUE) as stores:
        file_id = upload_all(p.uploader, data, CHUNK, **body)
        command = stores.wait_for(lambda m: len(m) >= 1)[0]
    assert command.upload_id == file_id
    return command


def redis_keys(p, file_id: str) -> set[str]:
    return {k.decode() for k in p.redis.scan_iter(f"{p.prefix}:upload:{file_id}*")}


def test_full_store_of_5mb(make_pipeline) -> None:
    p = make_pipeline()
    data = os.urandom(5 * 1024 * 1024 + 123)
    command = upload_and_command(
        p, data, file_name="five.bin", pool_id="p1", timestamp=T0
    )
    assert command.chunk_count == 6
    with (
        # The pool's shard queue (issue 10): the key carries stored_shard(pool_id).
        Collector(p.amqp_url, messaging.AGGREGATOR_SHARD_QUEUES[stored_shard("p1")]) as stored,
        Collector(p.amqp_url, messaging.GATEWAY_QUEUE) as notices,
    ):
        p.worker.handle_store(command)
        fs = stored.wait_for(lambda m: len(m) >= 1)
        notices.wait_for(lambda m: any(n.status == "uploaded_successfully" for n in m))
    assert isinstance(fs[0], FileStored) and fs[0].file_id == command.upload_id and fs[0].size == len(data)
    grid = mongo.bucket(p.index.db).open_download_stream(command.upload_id)
    digest, total = hashlib.sha256(), 0
    while piece := grid.read(256 * 1024):
        digest.update(piece)
        total += len(piece)
    assert total == len(data) and digest.hexdigest() == hashlib.sha256(data).hexdigest()
    record = p.index.record(command.upload_id)
    assert record["status"] == "uploaded_successfully" and record["sha256"] == digest.hexdigest()
    assert record["timestamp"] == T0_STORED and record["pool_id"] == "p1"
    # The cache is gone; only file_uploader's small status tombstone stays until it expires.
    assert redis_keys(p, command.upload_id) == {f"{p.prefix}:upload:{command.upload_id}:status"}


def test_redelivery_stores_one_file(make_pipeline) -> None:
    p = make_pipeline()
    data = os.urandom(CHUNK + 10)
    command = upload_and_command(p, data, file_name="twice.bin")
    p.worker.handle_store(command)
    p.worker.handle_store(command)  # redelivered after the cache was dropped: skipped, not failed
    db = p.index.db
    assert db["fs.files"].count_documents({"_id": command.upload_id}) == 1
    assert db["files"].count_documents({"upload_id": command.upload_id}) == 1
    assert db["fs.chunks"].count_documents({"files_id": command.upload_id}) == -(-len(data) // (255 * 1024))


def test_half_written_attempt_is_replaced(make_pipeline) -> None:
    p = make_pipeline()
    data = os.urandom(300_000)
    command = upload_and_command(p, data, file_name="half.bin")
    p.index.db["fs.chunks"].insert_one({"files_id": command.upload_id, "n": 0, "data": b"junk"})
    p.worker.handle_store(command)
    grid = mongo.bucket(p.index.db).open_download_stream(command.upload_id)
    assert grid.read() == data


def test_batch_items_become_records(make_pipeline) -> None:
    p = make_pipeline()
    data = os.urandom(CHUNK + 500)
    items = [
        {"timestamp": T0, "offset": 0, "length": 1000, "name": "a.csv"},
        {"timestamp": T1, "offset": CHUNK - 10, "length": 510},
    ]
    command = upload_and_command(p, data, file_name="batch.bin", items=items)
    p.worker.handle_index(FileStatusChanged(file_id=command.upload_id, owner_id="u1", status="cached"))
    assert p.index.record(command.upload_id)["provisional"] is True
    # No pool: the shard of its upload id (nothing to group; spread over the shards).
    with Collector(p.amqp_url, messaging.AGGREGATOR_SHARD_QUEUES[stored_shard(command.upload_id)]) as stored:
        p.worker.handle_store(command)
        [announced] = stored.wait_for(lambda m: len(m) >= 1)
        time.sleep(0.3)
        assert len(stored.wait_for(lambda m: len(m) >= 1)) == 1  # one message for the whole batch
    assert isinstance(announced, UploadStored) and announced.upload_id == command.upload_id
    assert [(i.file_id, i.file_name, i.size) for i in announced.items] == [
        (f"{command.upload_id}-0000", "a.csv", 1000), (f"{command.upload_id}-0001", "batch.bin.0001", 510)]
    assert p.index.record(command.upload_id) is None  # the provisional record gave way to the items
    second = mongo.bucket(p.index.db).open_download_stream(f"{command.upload_id}-0001").read()
    assert second == data[CHUNK - 10 : CHUNK + 500]
    rec = p.index.record(f"{command.upload_id}-0001")
    assert (
        rec["sha256"] == hashlib.sha256(second).hexdigest() and rec["timestamp"] == T1_STORED
    )
    # A late "cached" notice never moves a stored record back; FileGrouped sets the group.
    p.worker.handle_index(FileStatusChanged(file_id=command.upload_id, owner_id="u1", status="cached"))
    p.worker.handle_index(FileStatusChanged(file_id=command.upload_id, owner_id="u1", status="retrying"))
    p.worker.handle_index(
        FileGrouped(file_id=f"{command.upload_id}-0000", pool_id="p1", group_id="g1", late=True)
    )
    assert p.index.record(f"{command.upload_id}-0001")["status"] == "uploaded_successfully"
    first = p.index.record(f"{command.upload_id}-0000")
    assert (first["group_id"], first["late"], first["file_name"]) == ("g1", True, "a.csv")
    # A batch's FilesGrouped: one update per (group, late) part.
    p.worker.handle_index(FilesGrouped(pool_id="p1", upload_id=command.upload_id, groups=(
        GroupedFiles(group_id="g2", late=False, file_ids=(f"{command.upload_id}-0000", f"{command.upload_id}-0001")),)))
    assert [(r["group_id"], r["late"]) for r in (p.index.record(f"{command.upload_id}-000{n}") for n in (0, 1))] == [
        ("g2", False), ("g2", False)]


def test_missing_chunk_reports_a_failure(make_pipeline) -> None:
    p = make_pipeline()
    command = upload_and_command(p, os.urandom(CHUNK + 1), file_name="lost.bin")
    p.redis.delete(command.chunk_key(1))
    with Collector(p.amqp_url, messaging.STORE_FAILED_QUEUE) as failed:
        p.worker.handle_store(command)
        msg = failed.wait_for(lambda m: len(m) >= 1)[0]
    assert msg.upload_id == command.upload_id and msg.attempt == 1 and "missing" in msg.reason
    assert msg.command == command  # the very command, typed, ready to publish again
    assert (
        p.index.db["fs.files"].count_documents({}) == 0 and p.index.db["fs.chunks"].count_documents({}) == 0
    )


def test_sha_mismatch_is_a_failure(make_pipeline) -> None:
    p = make_pipeline()
    command = upload_and_command(p, os.urandom(1000), file_name="sha.bin")
    with Collector(p.amqp_url, messaging.STORE_FAILED_QUEUE) as failed:
        p.worker.handle_store(dataclasses.replace(command, sha256="0" * 64))
        msg = failed.wait_for(lambda m: len(m) >= 1)[0]
    assert "sha256" in msg.reason and p.index.record(command.upload_id) is None


def test_forced_failure_retries_three_times_then_fails(make_pipeline) -> None:
    p = make_pipeline(fail_pattern=r"^fail-", STORE_RETRY_DELAY_SECONDS="0.2")
    data = os.urandom(CHUNK + 7)
    store_consumer = messaging.Consumer(
        p.amqp_url, messaging.STORE_QUEUE, p.worker.handle_store, prefetch=2, name="t-store", retry_pause=0.1
    )
    failed_consumer = messaging.Consumer(
        p.amqp_url,
        messaging.STORE_FAILED_QUEUE,
        runtime_of(p.uploader.application).consumers[0].dispatch,
        name="t-failed",
        retry_pause=0.1,
    )
    index_consumer = messaging.Consumer(
        p.amqp_url, messaging.INDEX_QUEUE, p.worker.handle_index, name="t-index", retry_pause=0.1
    )
    for c in (store_consumer, failed_consumer, index_consumer):
        c.start()
    try:
        with Collector(p.amqp_url, messaging.GATEWAY_QUEUE) as notices:
            file_id = upload_all(p.uploader, data, CHUNK, file_name="fail-me.bin")
            got = notices.wait_for(lambda m: any(n.status == "upload_failed" for n in m), timeout=20)
            time.sleep(0.5)  # nothing more may follow
            got = list(notices.messages)
        deadline = time.monotonic() + 5
        while (
            time.monotonic() < deadline and (p.index.record(file_id) or {}).get("status") != "upload_failed"
        ):
            time.sleep(0.05)
    finally:
        for c in (store_consumer, failed_consumer, index_consumer):
            c.stop()
    assert [(n.status, n.attempt) for n in got] == [
        ("cached", None),
        ("retrying", 2),
        ("retrying", 3),
        ("upload_failed", 3),
    ]
    assert all(n.file_id == file_id and n.owner_id == "u1" for n in got)
    assert redis_keys(p, file_id) == {f"{p.prefix}:upload:{file_id}:status"}
    assert p.index.record(file_id)["status"] == "upload_failed"
    assert p.index.db["fs.files"].count_documents({}) == 0
    # A redelivered final failure changes nothing (the attempt is claimed before the command is read).
    command = StoreUpload(upload_id=file_id, owner_id="u1", owner_name="u", file_name="fail-me.bin", size=1,
                          sha256="ab" * 32, content_type="t", chunk_size=CHUNK, chunk_count=1,
                          cache_key=f"{p.prefix}:upload:{file_id}", items=(), created="t")
    assert retries.store_failed(p.upload_service, file_id, 3, "again", command) == "duplicate"
