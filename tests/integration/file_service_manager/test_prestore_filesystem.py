"""Prestores on the filesystem backend: a big upload is written to a temporary file under the root
while its chunks arrive; the StoreUpload checks it and renames it to the final name.

Real Redis, RabbitMQ, MongoDB-wire server and a temporary directory; the prestore consumer's
handler runs in a thread of the test (as the consumer thread would) while the test writes the
chunks. A crashed prestore is a child process killed with SIGKILL half-way through its write.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from services.common import messaging
from services.common.contracts import StoreUpload
from services.file_service_manager import backends
from services.file_service_manager.store import FileIndex, prestore_key
from services.file_service_manager.sweep import sweep
from tests.integration.file_uploader.helpers import Collector, complete, put_chunk

from .conftest import CHUNK
from .test_prestore import _in_background, _started


def _on_disk(make_pipeline, tmp_path: Path):
    root = tmp_path / "files"
    root.mkdir()
    p = make_pipeline(fsm_env={"DEFAULT_STORAGE": json.dumps({"backend": "filesystem", "root": str(root)})})
    return p, root


def _temps(root: Path, file_id: str) -> list[Path]:
    return sorted((root / file_id[:2]).glob(f".{file_id}.*.tmp"))


def _store_command(p, file_id: str) -> StoreUpload:
    with Collector(p.amqp_url, messaging.STORE_QUEUE) as stores:
        assert complete(p.uploader, file_id).status_code == 200
        command = stores.wait_for(lambda m: len(m) >= 1)[0]
    assert isinstance(command, StoreUpload)
    return command


def _wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds  # bounded: a loaded machine
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_the_file_is_written_out_of_sight_while_it_arrives_and_renamed_by_the_store(make_pipeline,
                                                                                    tmp_path) -> None:
    p, root = _on_disk(make_pipeline, tmp_path)
    data = b"DATA" + os.urandom(6 * CHUNK + 1000)
    file_id, message = _started(p, data, "big.bin")
    final = root / file_id[:2] / file_id
    prestore = _in_background(p.worker.handle_prestore, message)
    for i in range(message.chunk_count):
        assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
        if i == 4:
            # The prestore follows the upload: the first 5 MiB are in its temporary file before the
            # upload ends, and nothing is at the final name.
            assert _wait_for(lambda: sum(t.stat().st_size for t in _temps(root, file_id)) >= 5 * CHUNK)
            assert not final.exists()
    prestore.join(timeout=30)
    assert not prestore.is_alive()
    [temp] = _temps(root, file_id)
    assert temp.read_bytes() == data
    # Written but not visible: no file at the final name, no record, until the StoreUpload checked it.
    assert not final.exists() and p.index.record(file_id) is None
    command = _store_command(p, file_id)
    assert p.redis.hget(prestore_key(command.cache_key), "ref") == temp.name.encode()
    with open(temp, "rb") as held:  # held open: its inode cannot be reused by another write
        p.worker.handle_store(command)
        record = p.index.record(file_id)
        assert record["status"] == "uploaded_successfully"
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
        assert final.read_bytes() == data
        # The store renamed the prestored file (same inode), it did not write it again.
        assert final.stat().st_ino == os.fstat(held.fileno()).st_ino and _temps(root, file_id) == []
    assert not list(p.redis.scan_iter(f"{command.cache_key}:prestore*"))


def test_a_prestore_that_does_not_match_the_upload_is_written_again_by_the_store(make_pipeline,
                                                                               tmp_path) -> None:
    p, root = _on_disk(make_pipeline, tmp_path)
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id, message = _started(p, data, "wrong.bin")
    prestore = _in_background(p.worker.handle_prestore, message)
    for i in range(message.chunk_count):
        assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
    prestore.join(timeout=30)
    [temp] = _temps(root, file_id)
    command = _store_command(p, file_id)
    # What the prestore recorded is not the upload's (bytes that differ from what was uploaded).
    p.redis.hset(prestore_key(command.cache_key), "sha256", "0" * 64)
    with open(temp, "rb") as held:  # held open: its inode cannot be reused by the store's own write
        p.worker.handle_store(command)
        final = root / file_id[:2] / file_id
        assert p.index.record(file_id)["status"] == "uploaded_successfully"
        assert final.read_bytes() == data
        assert final.stat().st_ino != os.fstat(held.fileno()).st_ino, \
            "the StoreUpload wrote the file itself, from the cache"
        assert os.fstat(held.fileno()).st_nlink == 0, "the refused temporary file is removed"
    assert _temps(root, file_id) == []


def test_a_cancelled_upload_leaves_no_temporary_file(make_pipeline, tmp_path) -> None:
    p, root = _on_disk(make_pipeline, tmp_path)
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id, message = _started(p, data, "gone.bin")
    prestore = _in_background(p.worker.handle_prestore, message)
    assert put_chunk(p.uploader, file_id, 0, data[:CHUNK]).status_code == 200
    assert _wait_for(lambda: bool(_temps(root, file_id)))
    p.upload_service.cancel(file_id, owner_id="u1")
    prestore.join(timeout=30)
    assert not prestore.is_alive()
    assert _temps(root, file_id) == [] and not (root / file_id[:2] / file_id).exists()


_CRASHING_PRESTORE = """
import sys, time
from services.file_service_manager.backends.filesystem import FilesystemBackend

def arriving():
    yield b"x" * 100_000
    print("half-way", flush=True)
    time.sleep(600)  # killed here, half-way through the upload

FilesystemBackend(sys.argv[1]).prestore_write(sys.argv[2], arriving(), content_type="application/octet-stream",
                                              name=None, tag=sys.argv[3])
"""


def test_a_crashed_prestore_is_stored_by_the_store_and_its_file_swept(make_pipeline, tmp_path, mongo_db) -> None:
    p, root = _on_disk(make_pipeline, tmp_path)
    data = b"DATA" + os.urandom(2 * CHUNK + 10)
    file_id, _message = _started(p, data, "crashed.bin")
    for i in range(3):
        assert put_chunk(p.uploader, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
    # A prestore process killed half-way: its temporary file stays (no cleanup ran), no outcome recorded.
    child = subprocess.Popen([sys.executable, "-c", _CRASHING_PRESTORE, str(root), file_id, "ab" * 16],
                             stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[3])
    try:
        assert child.stdout is not None and child.stdout.readline() == b"half-way\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    [leftover] = _temps(root, file_id)
    assert leftover.name == f".{file_id}.{'ab' * 16}.tmp"

    p.worker.handle_store(_store_command(p, file_id))
    final = root / file_id[:2] / file_id
    assert final.read_bytes() == data and p.index.record(file_id)["status"] == "uploaded_successfully"

    spec = backends.parse_spec({"backend": "filesystem", "root": str(root)})
    storages = backends.Storages(spec, lambda s: backends.build(s, db=mongo_db))
    assert sweep(FileIndex(mongo_db), grace_seconds=3600, storages=storages)["half_written"] == {}, \
        "younger than the grace: it may still be written"
    assert leftover.exists()
    now = time.time()
    os.utime(leftover, (now, now - timedelta(hours=2).total_seconds()))  # a crash two hours ago
    swept = sweep(FileIndex(mongo_db), grace_seconds=3600, storages=storages)
    assert swept["half_written"] == {spec.id: [str(leftover.relative_to(root))]}
    assert not leftover.exists() and final.read_bytes() == data


def test_only_a_prestore_s_own_temporary_file_of_the_recorded_size_is_adopted(tmp_path) -> None:
    """What Redis names is checked: another shape of name, a file of another length or a symlink
    planted at the name is never renamed to the final name (the StoreUpload writes it instead)."""
    from services.file_service_manager.backends.filesystem import FilesystemBackend

    root = tmp_path / "files"
    root.mkdir()
    backend = FilesystemBackend(str(root))
    key, outside = "abc123", tmp_path / "secret"
    outside.write_bytes(b"not under the root")
    written, ref = backend.prestore_write(key, [b"0123", b"456789"], content_type="x", name=None, tag="cd" * 16)
    assert written.size == 10 and ref == f".{key}.{'cd' * 16}.tmp" and not backend.exists(key)
    for wrong in ("../../secret", f".other.{'cd' * 16}.tmp", f".{key}.nothex.tmp", "abc123"):
        assert backend.prestore_adopt(key, wrong, 10) is False
        backend.prestore_clear(key, wrong, owned=True)
    assert outside.exists() and (root / "ab" / ref).exists() and not backend.exists(key)
    assert backend.prestore_adopt(key, ref, 11) is False, "not the recorded length"
    assert not (root / "ab" / ref).exists() and not backend.exists(key)

    link = root / "ab" / f".{key}.{'ef' * 16}.tmp"
    link.symlink_to(outside)
    assert backend.prestore_adopt(key, link.name, outside.stat().st_size) is False
    assert outside.read_bytes() == b"not under the root" and not backend.exists(key)

    written, ref = backend.prestore_write(key, [b"whole"], content_type="x", name=None, tag="01" * 16)
    assert backend.prestore_adopt(key, ref, 5) is True
    assert backend.open(key).read() == b"whole" and not (root / "ab" / ref).exists()
    assert backend.prestore_adopt(key, ref, 5) is False, "adopted once: a second attempt writes it itself"
