"""Prestores: a big upload is written to GridFS while its chunks arrive; the StoreUpload only checks it.

Real Redis, RabbitMQ and MongoDB-wire server; the prestore consumer's handler runs in a
thread of the test (as the consumer thread would) while the test writes the chunks.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from services.common import messaging, mongo
from services.common.contracts import PrestoreUpload, StoreUpload
from services.file_service_manager import prestoring
from tests.integration.file_uploader.helpers import Collector, complete, put_chunk, start

from .conftest import CHUNK


def _started(p, data: bytes, name: str) -> tuple[str, PrestoreUpload]:
    with Collector(p.amqp_url, messaging.PRESTORE_QUEUE) as prestores:
        response = start(p.uploader, size=len(data), file_name=name)
        assert response.status_code == 201, response.get_json()
        message = prestores.wait_for(lambda m: len(m) >= 1)[0]
    file_id = response.get_json()["file_id"]
    assert isinstance(message, PrestoreUpload) and message.upload_id == file_id
    assert message.chunk_count == -(-len(data) // CHUNK)
    return file_id, message


def _in_background(fn, *args) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


def _gridfs_bytes(p, file_id: str) -> bytes:
    return mongo.bucket(p.index.db).open_download_stream(file_id).read()


def test_the_bytes_are_written_while_they_arrive_and_the_store_only_indexes_them(make_pipeline) -> None:
    p = make_pipeline()
    data = b"DATA" + os.urandom(6 * CHUNK + 1000)
    file_id, message = _started(p, data, "big.bin")
    prestore = _in_background(p.worker.handle_prestore, message)
    chunks = p.index.db["fs.chunks"]
    for i in range(message.chunk_count):
        assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
        if i == 4:
            # The prestore follows the upload: the first GridFS batch (16 chunks of 255 KiB, from the
            # first 5 MiB) is in GridFS before the upload ends.
            deadline = time.monotonic() + 20  # bounded: a loaded machine
            while chunks.count_documents({"files_id": file_id}) < 16 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert chunks.count_documents({"files_id": file_id}) >= 16
    prestore.join(timeout=30)
    assert not prestore.is_alive()
    # Written but not visible: no record until the StoreUpload checked the bytes.
    assert p.index.record(file_id) is None
    with Collector(p.amqp_url, messaging.STORE_QUEUE) as stores:
        assert complete(p.uploader, file_id).status_code == 200
        command = stores.wait_for(lambda m: len(m) >= 1)[0]
    assert isinstance(command, StoreUpload)
    written_before = chunks.find_one({"files_id": file_id, "n": 0})["_id"]
    p.worker.handle_store(command)
    record = p.index.record(file_id)
    assert record["status"] == "uploaded_successfully"
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert _gridfs_bytes(p, file_id) == data
    # The store used the prestored chunks (same documents), it did not write them again.
    assert chunks.find_one({"files_id": file_id, "n": 0})["_id"] == written_before
    assert not list(p.redis.scan_iter(f"{command.cache_key}:prestore*"))


def test_a_cancelled_upload_leaves_nothing_behind(make_pipeline) -> None:
    p = make_pipeline()
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id, message = _started(p, data, "gone.bin")
    prestore = _in_background(p.worker.handle_prestore, message)
    assert put_chunk(p.uploader, file_id, 0, data[:CHUNK]).status_code == 200
    deadline = time.monotonic() + 20
    while p.index.db["fs.chunks"].count_documents({"files_id": file_id}) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    p.upload_service.cancel(file_id, owner_id="u1")
    prestore.join(timeout=30)
    assert not prestore.is_alive()
    assert p.index.db["fs.chunks"].count_documents({"files_id": file_id}) == 0
    assert p.index.db["fs.files"].count_documents({"_id": file_id}) == 0


def test_a_prestore_after_completion_does_nothing_and_the_store_writes_it(make_pipeline) -> None:
    p = make_pipeline()
    data = b"DATA" + os.urandom(CHUNK + 10)
    file_id, message = _started(p, data, "late.bin")
    for i in range(message.chunk_count):
        assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
    with Collector(p.amqp_url, messaging.STORE_QUEUE) as stores:
        assert complete(p.uploader, file_id).status_code == 200
        command = stores.wait_for(lambda m: len(m) >= 1)[0]
    p.worker.handle_prestore(message)  # delivered late: the upload is no longer arriving
    assert p.index.db["fs.chunks"].count_documents({"files_id": file_id}) == 0
    p.worker.handle_store(command)
    assert _gridfs_bytes(p, file_id) == data
    assert p.index.record(file_id)["status"] == "uploaded_successfully"


def test_a_paused_upload_is_given_up_and_stored_whole_later(make_pipeline, monkeypatch) -> None:
    monkeypatch.setattr(prestoring, "IDLE_SECONDS", 0.3)
    p = make_pipeline()
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id, message = _started(p, data, "paused.bin")
    assert put_chunk(p.uploader, file_id, 0, data[:CHUNK]).status_code == 200
    p.worker.handle_prestore(message)  # waits 0.3 s for chunk 1, then gives up and cleans up
    assert p.index.db["fs.chunks"].count_documents({"files_id": file_id}) == 0
    for i in range(1, message.chunk_count):
        assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
    with Collector(p.amqp_url, messaging.STORE_QUEUE) as stores:
        assert complete(p.uploader, file_id).status_code == 200
        command = stores.wait_for(lambda m: len(m) >= 1)[0]
    p.worker.handle_store(command)
    assert _gridfs_bytes(p, file_id) == data


def test_the_store_waits_for_a_running_prestore(make_pipeline) -> None:
    """The StoreUpload arrives while the prestore still writes the last chunk: it waits, then indexes."""
    p = make_pipeline()
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id, message = _started(p, data, "race.bin")
    prestore = _in_background(p.worker.handle_prestore, message)
    with Collector(p.amqp_url, messaging.STORE_QUEUE) as stores:
        for i in range(message.chunk_count):
            assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
        assert complete(p.uploader, file_id).status_code == 200
        command = stores.wait_for(lambda m: len(m) >= 1)[0]
    p.worker.handle_store(command)  # at once: the prestore may still run
    prestore.join(timeout=30)
    assert _gridfs_bytes(p, file_id) == data
    assert p.index.db["fs.files"].count_documents({"_id": file_id}) == 1
    assert p.index.record(file_id)["sha256"] == hashlib.sha256(data).hexdigest()
