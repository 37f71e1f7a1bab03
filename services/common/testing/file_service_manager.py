"""In-memory stand-ins for file_service_manager's stores (its ``ports.Index`` and ``ports.Cache``).

Dicts of records, files and audit events; the cache holds chunks under the
same ``uploadkeys`` layout file_uploader writes. Queries support the plain
equality filters the use cases send. Only tests import this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from .. import contracts, uploadkeys
from ..contracts import StoreUpload, UploadItem
from ..errors import ShownToUsers

__all__ = ["FakeCache", "FakeDownload", "FakeIndex"]


class FakeDownload:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)
        self.pos = 0
        self.closed = False

    def seek(self, pos: int) -> int:
        self.pos = pos
        return pos

    def read(self, size: int = -1) -> bytes:
        end = self.length if size < 0 else min(self.length, self.pos + size)
        piece, self.pos = self.data[self.pos:end], end
        return piece

    def close(self) -> None:
        self.closed = True


class FakeIndex:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.audit: dict[str, dict[str, Any]] = {}
        self.opened: list[FakeDownload] = []
        self.fail_writes = 0  # the next N write_file calls raise (a database that went away)

    def ping(self) -> bool:
        return True

    def ensure_indexes(self) -> None:
        return None

    def is_stored(self, file_id: str) -> bool:
        record = self.records.get(file_id)
        return record is not None and record.get("status") == contracts.UPLOADED and file_id in self.files

    def remove_partial(self, file_id: str) -> None:
        self.files.pop(file_id, None)

    def write_file(self, file_id: str, name: str, pieces: Iterator[bytes], content_type: str) -> tuple[int, str]:
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("FakeIndex.fail_writes")
        data = b"".join(pieces)
        self.files[file_id] = data
        return len(data), hashlib.sha256(data).hexdigest()

    def open_download(self, file_id: str) -> FakeDownload | None:
        if file_id not in self.files:
            return None
        download = FakeDownload(self.files[file_id])
        self.opened.append(download)
        return download

    def upsert_stored(self, doc: dict[str, Any]) -> None:
        record = self.records.setdefault(doc["file_id"], {"late": False})
        for key in ("provisional", "reason", "attempt"):
            record.pop(key, None)
        record.update(doc)

    def drop_provisional(self, upload_id: str, keep: list[str]) -> None:
        for file_id in [k for k, r in self.records.items()
                        if r.get("upload_id") == upload_id and r.get("provisional") and k not in keep]:
            del self.records[file_id]

    def record(self, file_id: str) -> dict[str, Any] | None:
        record = self.records.get(file_id)
        return dict(record) if record is not None else None

    def apply_status(self, upload_id: str, owner_id: str, status: str, *, attempt: int | None,
                     reason: str | None, pool_id: str | None, file_name: str | None) -> int:
        matching = [r for r in self.records.values() if r.get("upload_id") == upload_id]
        fields = {"status": status, **({"attempt": attempt} if attempt is not None else {}),
                  **({"reason": reason} if reason is not None else {})}
        for record in matching:
            if record.get("status") != contracts.UPLOADED:  # never backwards from stored
                record.update(fields)
        if not matching and status in (contracts.CACHED, contracts.FAILED):
            self.records[upload_id] = {"file_id": upload_id, "upload_id": upload_id, "owner_id": owner_id,
                                       "file_name": file_name, "pool_id": pool_id, "provisional": True,
                                       "late": False, **fields}
            return 1
        return len(matching)

    def set_group(self, file_id: str, group_id: str, late: bool) -> int:
        if file_id not in self.records:
            return 0
        self.records[file_id].update(group_id=group_id, late=late)
        return 1

    def find_files(self, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        found = [r for r in self.records.values() if all(r.get(k) == v for k, v in query.items())]
        return sorted(found, key=lambda r: (str(r.get("created")), r["file_id"]), reverse=True)[:limit]

    def add_audit(self, doc: dict[str, Any]) -> bool:
        if doc["_id"] in self.audit:
            return False
        self.audit[doc["_id"]] = dict(doc)
        return True

    def find_audit(self, query: dict[str, Any], after: tuple[str, str] | None,
                   limit: int) -> list[dict[str, Any]]:
        found = [d for d in self.audit.values() if all(d.get(k) == v for k, v in query.items())]
        found.sort(key=lambda d: (d["time"], d["_id"]))
        if after is not None:
            found = [d for d in found if (d["time"], d["_id"]) > after]
        return found[:limit]

    def orphan_chunk_files(self, older_than: datetime) -> list[Any]:
        return []

    def unindexed_files(self, older_than: datetime) -> list[Any]:
        return [f for f in self.files if f not in self.records]


class FakeCache:
    """Chunks by key, as file_uploader leaves them in Redis (``uploadkeys.chunk_key``)."""

    def __init__(self) -> None:
        self.chunks: dict[str, bytes] = {}
        self.dropped: list[str] = []

    def ping(self) -> bool:
        return True

    def put(self, cache_key: str, data: bytes, chunk_size: int) -> int:
        """Cache ``data`` as file_uploader would; returns the chunk count."""
        count = max(1, -(-len(data) // chunk_size))
        for i in range(count):
            self.chunks[uploadkeys.chunk_key(cache_key, i)] = data[i * chunk_size:(i + 1) * chunk_size]
        return count

    def item_pieces(self, msg: StoreUpload, item: UploadItem) -> Iterator[bytes]:
        position, stop = item.offset, item.offset + item.length
        while position < stop:
            index, start = divmod(position, msg.chunk_size)
            chunk = self.chunks.get(msg.chunk_key(index))
            end = min(msg.chunk_size, stop - index * msg.chunk_size)
            if chunk is None or len(chunk) < end:
                raise ShownToUsers(f"chunk {index} of upload {msg.upload_id} is missing from the cache")
            yield chunk[start:end]
            position = index * msg.chunk_size + end

    def drop(self, msg: StoreUpload) -> None:
        for key in uploadkeys.cached_keys(msg.cache_key, msg.chunk_count):
            self.chunks.pop(key, None)
        self.dropped.append(msg.upload_id)
