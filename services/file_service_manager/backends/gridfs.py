"""The GridFS backend: today's storage (bucket ``fs`` unless the spec names another).

The GridFS id is the file_id. The unique ``files_id+n`` index refuses a second
file under an id that a crashed attempt left chunks for: ``write`` reports that
as ``LeftoverAttempt`` and the store deletes and writes again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import gridfs
import pymongo
from bson import Binary, Int64, ObjectId
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common import mongo

from ..ports import BackendError, LeftoverAttempt, Written
from . import streams

CHUNK = 255 * 1024  # GridFS's default chunk size (services.common.mongo.bucket's)
BATCH_CHUNKS = 16  # chunks per insert: ~4 MB held (and sent) at a time
MAX_LEFTOVERS = 10_000  # half-written files looked at per sweep pass


class GridFsBackend:
    kind = "gridfs"

    def __init__(self, db: Database[Any], bucket: str = "fs", descriptor: dict[str, Any] | None = None) -> None:
        self.db = db
        self.name = bucket
        self.bucket = mongo.bucket(db, bucket)
        self.descriptor = descriptor or {"backend": "gridfs", "bucket": bucket}
        self._indexed = False

    def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        # GridFS's own indexes (the ones GridIn would otherwise check for on every file).
        self.db[f"{self.name}.files"].create_index([("filename", pymongo.ASCENDING),
                                                    ("uploadDate", pymongo.ASCENDING)])
        self.db[f"{self.name}.chunks"].create_index([("files_id", pymongo.ASCENDING), ("n", pymongo.ASCENDING)],
                                                    unique=True)
        self._indexed = True

    def write(self, key: str, pieces: Iterable[bytes], *, content_type: str,
              name: str | None = None) -> Written:
        return self._write(key, pieces, content_type=content_type, name=name, clean_up=True)

    def write_keeping_partial(self, key: str, pieces: Iterable[bytes], *, content_type: str,
                              name: str | None = None) -> Written:
        """``write``, but a failure deletes nothing: a prestore (``prestoring``) that lost its lease
        must not delete chunks another writer may meanwhile be writing under ``key``; the caller
        deletes the leftovers itself while it still holds the lease (or the sweeper, or the
        StoreUpload's own write, ``LeftoverAttempt``, later)."""
        return self._write(key, pieces, content_type=content_type, name=name, clean_up=False)

    def _write(self, key: str, pieces: Iterable[bytes], *, content_type: str, name: str | None,
               clean_up: bool) -> Written:
        """Stream ``pieces`` into GridFS under ``key``; a failure deletes every chunk written.

        The chunk and file documents are GridFS's own format (pymongo's GridOut reads
        them), but written here in batches of ``BATCH_CHUNKS``: pymongo's GridIn buffers
        up to 48 MB of chunks before its first insert, which made a 50 MB store hold
        ~90 MB; this holds about 2 x BATCH_BYTES. Chunks go in before the file document,
        so a reader never sees a file that is not complete.
        """
        self._ensure_indexes()
        digest = hashlib.sha256()
        size = 0
        number = 0
        buffer = bytearray()  # less than one chunk between pieces
        batch: list[dict[str, Any]] = []  # at most BATCH_CHUNKS chunks (BATCH_BYTES)
        chunks = self.db[f"{self.name}.chunks"]
        try:
            for piece in pieces:
                digest.update(piece)
                size += len(piece)
                buffer += piece
                while len(buffer) >= CHUNK:
                    batch.append({"files_id": key, "n": number, "data": Binary(bytes(buffer[:CHUNK]))})
                    del buffer[:CHUNK]
                    number += 1
                    if len(batch) >= BATCH_CHUNKS:
                        chunks.insert_many(batch, ordered=True)
                        batch = []
            if buffer:
                batch.append({"files_id": key, "n": number, "data": Binary(bytes(buffer))})
            if batch:
                chunks.insert_many(batch, ordered=True)
            self.db[f"{self.name}.files"].insert_one({
                "_id": key, "length": Int64(size), "chunkSize": CHUNK, "uploadDate": datetime.now(UTC),
                "filename": name or key, "metadata": {"content_type": content_type}})
        except (DuplicateKeyError, BulkWriteError) as exc:
            # A crashed earlier attempt's chunks or file document are under this key.
            if clean_up:
                chunks.delete_many({"files_id": key})
            if isinstance(exc, BulkWriteError) and not all(
                    e.get("code") == 11000 for e in exc.details.get("writeErrors", [])):
                raise
            raise LeftoverAttempt(key) from exc
        except BaseException:
            if clean_up:
                chunks.delete_many({"files_id": key})  # nothing half-written stays
            raise
        return Written(size, digest.hexdigest())

    # --- prestores (``ports.Prestorable``) ---------------------------------------------
    # GridFS has no rename: a prestore writes under ``key`` itself. That is invisible all the same
    # (a file is read only through its index record, which only the StoreUpload writes).
    def prestore_write(self, key: str, pieces: Iterable[bytes], *, content_type: str, name: str | None,
                       tag: str) -> tuple[Written, str]:
        # A crashed prestore's leftovers first: the caller holds the upload's lease, and nothing
        # else writes this key while the upload still arrives.
        self.delete(key)
        return self.write_keeping_partial(key, pieces, content_type=content_type, name=name), ""

    def prestore_clear(self, key: str, ref: str, *, owned: bool) -> None:
        if owned:  # else another writer may be writing this key's chunks by now: touch nothing
            self.delete(key)

    def prestore_adopt(self, key: str, ref: str, size: int) -> bool:
        found = self.db[f"{self.name}.files"].find_one({"_id": key}, {"length": 1})
        return found is not None and int(found.get("length", -1)) == size

    def open(self, key: str) -> gridfs.GridOut | None:
        try:
            return self.bucket.open_download_stream(key)
        except gridfs.errors.NoFile:
            return None

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        return streams.read_range(self.open(key), start, length)

    def exists(self, key: str) -> bool:
        return self.db[f"{self.name}.files"].find_one({"_id": key}, {"_id": 1}) is not None

    def delete(self, key: str) -> bool:
        """Delete the file document and every chunk (also a crashed attempt's chunks alone)."""
        found = self.db[f"{self.name}.files"].delete_one({"_id": key}).deleted_count
        chunks = self.db[f"{self.name}.chunks"].delete_many({"files_id": key}).deleted_count
        return bool(found or chunks)

    def leftovers(self, older_than: datetime, *, remove: bool) -> list[str]:
        """Bucket ``fs`` has the index-aware pass in sweep.py; another bucket's chunks without a file
        document (a writer killed before its file document) are found here."""
        if self.name == "fs":
            return []
        found: list[str] = []
        chunks, files = self.db[f"{self.name}.chunks"], self.db[f"{self.name}.files"]
        for files_id in chunks.distinct("files_id")[:MAX_LEFTOVERS]:
            if files.find_one({"_id": files_id}, {"_id": 1}) is not None:
                continue
            newest = chunks.find_one({"files_id": files_id}, {"_id": 1}, sort=[("_id", pymongo.DESCENDING)])
            if newest is not None and isinstance(newest["_id"], ObjectId) \
                    and newest["_id"].generation_time < older_than:
                found.append(str(files_id))
                if remove:
                    chunks.delete_many({"files_id": files_id})
        return found

    def probe(self) -> bool:
        key = f".probe-{uuid.uuid4().hex}"
        payload = b"file-dropbox storage probe"
        try:
            self.write(key, [payload], content_type="application/octet-stream")
            found = self.open(key)
            data = found.read() if found is not None else b""
            if data != payload:
                raise BackendError(f"gridfs bucket {self.name!r}: the probe object read back wrong")
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is the probe's answer
            raise BackendError(f"gridfs bucket {self.name!r}: {type(exc).__name__}: {exc}") from exc
        finally:
            try:
                self.delete(key)
            except Exception:  # noqa: BLE001 - the sweeper removes an unindexed leftover later
                pass
        return True
