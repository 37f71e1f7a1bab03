"""Prestore: write a big upload to storage while its chunks still arrive (``PrestoreUpload``).

Without it the permanent write starts only when the ``StoreUpload`` arrives, after
the last chunk: a 50 MB file is then read back from Redis and written to the
backend while its owner waits (1-2 s here). file_uploader publishes a ``PrestoreUpload``
when an upload of several chunks starts; a prestore consumer then follows the
upload chunk by chunk (each is in Redis once written, immutable) and streams it
into the upload's backend (``ports.Prestorable``), so the ``StoreUpload`` finds the
bytes written and only checks them (size, the uploader's sha256), makes them the
file's object and indexes them:

- GridFS: written under the file's key itself (chunks, then the file document);
  adopting them is finding that file document;
- filesystem: written to a temporary name beside the final one
  (``.<key>.<lease token>.tmp``), fsynced (and flushed every 8 MiB meanwhile, so the
  fsync after the last chunk is short); adopting it is the atomic rename to the final
  name and the directory's fsync;
- S3: written as a multipart upload (8 MiB parts; a small file is one part) that the
  prestore never completes; adopting it is ``CompleteMultipartUpload`` (the object
  appears whole, at once).

The outcome (size, sha256, backend id, ``ref``: the temporary name, the multipart upload id)
is kept in Redis
beside the upload's cache (``{cache_key}:prestore``), where the ``StoreUpload`` finds it.

Guarantees kept:

- nothing is visible early: a file is visible once its index record says
  ``uploaded_successfully``, which only the ``StoreUpload`` writes, after comparing
  the prestored size and sha256 with the upload's (on the filesystem nothing is at
  the final name, nor an S3 object, before that either);
- one writer: a prestore starts only while the upload is ``uploading`` and holds a
  lease (``{cache_key}:prestore-lease``, ``LEASE_SECONDS``, renewed on every read);
  the ``StoreUpload`` waits while the lease lives and otherwise writes the bytes
  itself. A prestore that stalled past its lease stops and deletes nothing another
  writer may own (GridFS chunks under the key); it removes only its own temporary
  file or multipart upload, which nobody else knows of (also when the lease lapsed
  after the write, before the outcome was recorded: no ``StoreUpload`` would ever
  adopt it, or when Redis failed as it was recorded). While it holds
  the lease it deletes what it wrote when it gives up;
- falls back: prestored bytes whose size or sha256 are not the upload's, or that are
  gone (swept, adopted by an earlier attempt), are removed and written again from the
  cache by the ``StoreUpload``, as without prestores;
- bounded: a prestore waits at most ``IDLE_SECONDS`` for the next chunk (a paused
  client: the ``StoreUpload`` writes the file later, as without prestores), runs in
  ``PRESTORE_CONSUMERS`` threads with prefetch 1 (each with one reader thread that
  fetches the next chunk meanwhile), and holds two cached chunks plus one GridFS
  batch (about 3 x 4 MiB) at a time (the filesystem: the two chunks; S3: the two
  chunks and one 8 MiB part);
- a crash leaves GridFS chunks without a file document (never readable) that the
  ``StoreUpload``'s write replaces (``LeftoverAttempt``) or the sweeper removes, or a
  filesystem ``.tmp`` file the sweeper removes once older than its grace (the
  backend's ``leftovers``: every write moves the file's modification time), or an S3
  multipart upload never completed, which the sweeper aborts once initiated longer ago
  than its grace. Whatever the sweeper removed before its ``StoreUpload`` came is
  written by that ``StoreUpload`` from the cache.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator

from services.common import logs
from services.common.contracts import PrestoreUpload, StoreUpload, UploadItem

from .core import StoreFailure
from .deps import Deps
from .ports import Prestorable, StorageBackend, Written

log = logging.getLogger(__name__)

LEASE_SECONDS = 30  # a dead prestore holds up its upload's StoreUpload at most this long
POLL_SECONDS = 0.02  # between looks for a chunk not there yet: one Redis round trip each
IDLE_SECONDS = 30.0  # no next chunk for this long: give up (the StoreUpload writes it all)
WAIT_SECONDS = 120.0  # a StoreUpload waits at most this long for a running prestore, then retries
PRESTORE_CONSUMERS = 2  # threads; a third big upload meanwhile is written by its StoreUpload


class _LeaseLost(Exception):
    """This prestore stalled past its lease: stop, touch nothing."""


class _Abandoned(Exception):
    """Give up (upload dropped, client paused, wrong chunk): delete what was written."""


def _prestorable(backend: StorageBackend) -> Prestorable | None:
    inner = getattr(backend, "inner", backend)  # backends.metered.Metered wraps the real one
    return inner if isinstance(inner, Prestorable) else None


def _label(backend: StorageBackend) -> str:
    return str(backend.descriptor.get("id", backend.kind))


def prestore(deps: Deps, msg: PrestoreUpload) -> None:
    """The prestore consumer's job (see the module's docstring); never raises for the upload's sake."""
    # Where the StoreUpload will look for it: the pool's own backend, else DEFAULT_STORAGE.
    backend = deps.storage.for_spec(deps.pool_storage.spec_for(msg.pool_id))
    target = _prestorable(backend)
    if target is None:
        return
    token = uuid.uuid4().hex
    if not deps.cache.claim_prestore(msg, token, LEASE_SECONDS):
        return  # complete already (its StoreUpload writes it), or another prestore runs
    with logs.bound(file_id=msg.upload_id):
        try:
            # The index's collections and indexes first, in this thread before any GridFS insert:
            # secantusdb (the tests' MongoDB-wire server) was seen to deadlock when a collection
            # was created (the StoreUpload's ensure_indexes) while this thread's inserts ran.
            deps.index.ensure_indexes()
            written, ref = target.prestore_write(msg.upload_id, _arriving(deps, msg, token),
                                                 content_type=msg.content_type, name=msg.file_name, tag=token)
        except _LeaseLost:
            # What only this write knew of (a temporary file) is gone already; what is under the
            # key (GridFS's chunks) stays: another writer may own the key by now.
            log.warning("prestore lost its lease; it stops without cleaning up")
        except Exception as exc:  # noqa: BLE001 - an optimisation failed: the StoreUpload writes the file
            log.info("prestore given up", extra={"reason": f"{type(exc).__name__}: {exc}"})
            if deps.cache.next_prestore_chunk(msg, 0, token, LEASE_SECONDS)[0] != "lost":
                # still ours (for LEASE_SECONDS more): nobody else writes
                target.prestore_clear(msg.upload_id, "", owned=True)
        else:
            size, sha256 = written
            try:
                recorded = deps.cache.prestore_done(msg, token, size, sha256, _label(backend), ref)
            except Exception as exc:  # noqa: BLE001 - Redis failed: handled as a lease lost below
                # Whether the outcome was kept is unknown. Removing ``ref`` is safe either way: a
                # StoreUpload that finds an outcome whose bytes are gone writes the file from the
                # cache; kept, ``ref`` would wait for the sweeper's grace (an hour), uncounted.
                log.warning("prestore outcome not recorded", extra={"reason": f"{type(exc).__name__}: {exc}"})
                recorded = False
            if recorded:
                deps.metrics.storage_bytes.labels(_label(backend)).inc(size)
            else:
                # Stalled past the lease after writing: no StoreUpload will learn of ``ref``, so
                # remove it (a temporary name is this prestore's alone); the key is not ours.
                log.warning("prestore lost its lease before recording its outcome")
                target.prestore_clear(msg.upload_id, ref, owned=False)
        finally:
            deps.cache.release_prestore(msg, token)


def _arriving(deps: Deps, msg: PrestoreUpload, token: str) -> Iterator[bytes]:
    """The upload's chunks in order, each as soon as it is cached.

    Read one ahead by a helper thread: chunk k+1 comes from Redis while chunk k is
    inserted into GridFS (when the last chunks arrive together, that halves the wait
    behind them). Bounded: the hand-over queue holds one chunk, so at most two are
    in memory (the one being inserted and the next).
    """
    ahead: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(item: bytes | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for data in _read_chunks(deps, msg, token, stop):
                if not hand_over(data):
                    return
            hand_over(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer, which raises it
            hand_over(exc)

    reader = threading.Thread(target=read, name=f"prestore-read-{msg.upload_id[:8]}", daemon=True)
    reader.start()
    try:
        while True:
            item = ahead.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the writer is done (or failed): the reader stops within one poll
        reader.join(timeout=LEASE_SECONDS)


def _read_chunks(deps: Deps, msg: PrestoreUpload, token: str, stop: threading.Event) -> Iterator[bytes]:
    for index in range(msg.chunk_count):
        idle_until = time.monotonic() + IDLE_SECONDS
        while True:
            if stop.is_set():
                return
            outcome, data = deps.cache.next_prestore_chunk(msg, index, token, LEASE_SECONDS)
            if outcome == "ok" and data is not None:
                break
            if outcome == "lost":
                raise _LeaseLost()
            if outcome == "gone":
                raise _Abandoned("the upload was dropped")
            if time.monotonic() > idle_until:
                raise _Abandoned(f"chunk {index} did not arrive within {IDLE_SECONDS:.0f} s")
            time.sleep(POLL_SECONDS)
        expected = min(msg.chunk_size, msg.size - index * msg.chunk_size)
        if len(data) != expected:
            raise _Abandoned(f"chunk {index} has {len(data)} bytes, expected {expected}")
        yield data


def eligible(msg: StoreUpload, item: UploadItem) -> bool:
    """What file_uploader prestores: one item that is the whole upload, several chunks."""
    return msg.chunk_count >= 2 and len(msg.items) == 1 and item.file_id == msg.upload_id \
        and item.offset == 0 and item.length == msg.size


def prestored(deps: Deps, msg: StoreUpload, item: UploadItem, backend: StorageBackend) -> Written | None:
    """What a prestore wrote for this upload, checked and made ``item``'s object (waiting for a
    running prestore first), or None: write it yourself.

    Used only when its size and sha256 are the upload's (``eligible``: the item is the whole
    upload); bytes that differ are removed and written again from the cache, whose own write
    is checked as always.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        running, state = deps.cache.prestore_state(msg.cache_key)
        if not running:
            break
        if time.monotonic() > deadline:
            raise StoreFailure("the upload is still being written to storage; it is retried")
        time.sleep(POLL_SECONDS)
    target = _prestorable(backend)
    if not state or target is None or state.get("backend") != _label(backend):
        return None
    # No prestore runs now (its lease is gone) and none can start (the upload is complete): what
    # it left under the key is this StoreUpload's to keep or remove.
    ref = state.get("ref", "")
    written = Written(int(state["size"]), state["sha256"])
    if written != (item.length, msg.sha256):
        log.warning("prestored bytes do not match the upload; written again from the cache",
                    extra={"size": written.size, "expected": item.length})
        target.prestore_clear(item.file_id, ref, owned=True)
        return None
    return written if target.prestore_adopt(item.file_id, ref, written.size) else None
