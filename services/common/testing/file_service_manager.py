"""In-memory stand-ins for file_service_manager's stores (its ``ports.Index``, ``ports.Cache`` and
``ports.StorageBackend``).

Dicts of records, files and audit events; the cache holds chunks under the
same ``uploadkeys`` layout file_uploader writes. Queries support the plain
equality filters the use cases send. Only tests import this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from .. import contracts, uploadkeys
from ..contracts import PrestoreUpload, StoreUpload, UploadItem
from ..errors import ShownToUsers

__all__ = ["FakeBackend", "FakeCache", "FakeCatalog", "FakeDownload", "FakeIndex", "FakePrestorable",
           "FakeStaging"]


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
        # The bytes and open downloads of a FakeBackend built over this index (FakeBackend.over):
        # tests look at stored bytes here, beside the records.
        self.files: dict[str, bytes] = {}
        self.opened: list[FakeDownload] = []
        self.audit: dict[str, dict[str, Any]] = {}
        self.group_writes = 0  # set_groups calls: a batch's FilesGrouped is one write, not one per file

    def ping(self) -> bool:
        return True

    def ensure_indexes(self) -> None:
        return None

    def remove_partial(self, file_id: str, bucket: str = "fs") -> bool:
        return bucket == "fs" and self.files.pop(file_id, None) is not None

    def upsert_stored(self, doc: dict[str, Any]) -> bool:
        if self.records.get(doc["file_id"], {}).get("status") == "deleted":
            return False
        record = self.records.setdefault(doc["file_id"], {"late": False})
        for key in ("provisional", "reason", "attempt"):
            record.pop(key, None)
        record.update(doc)
        return True

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
        self.records[file_id].pop("regroup_at", None)
        return 1

    def set_groups(self, file_ids: list[str], group_id: str, late: bool) -> int:
        self.group_writes += 1
        return sum(self.set_group(file_id, group_id, late) for file_id in file_ids)

    def mark_deleted(self, file_id: str, actor: str) -> bool:
        record = self.records.get(file_id)
        if record is None or record.get("status") == "deleted":
            return False
        record.update(status="deleted", deleted="2026-01-01T00:00:00.000Z", deleted_by=actor)
        record.pop("regroup_at", None)
        return True

    def due_for_regroup(self, now: float, limit: int) -> list[dict[str, Any]]:
        due = [dict(r) for r in self.records.values()
               if r.get("regroup_at") is not None and r["regroup_at"] <= now and r.get("status") == contracts.UPLOADED]
        return sorted(due, key=lambda r: r["regroup_at"])[:limit]

    def reschedule_regroup(self, file_id: str, seen: float, next_at: float | None) -> bool:
        record = self.records.get(file_id)
        if record is None or record.get("regroup_at") != seen:
            return False
        if next_at is None:
            record.pop("regroup_at")
            record["never_grouped"] = True
        else:
            record.update(regroup_at=next_at, regroups=int(record.get("regroups") or 0) + 1)
        return True

    def expired(self, pool_id: str | None, created_before: str, limit: int) -> list[dict[str, Any]]:
        found = [r for r in self.records.values() if r.get("pool_id") == pool_id
                 and str(r.get("created")) < created_before and r.get("status") in ("uploaded_successfully",
                                                                                     "upload_failed")]
        return sorted(found, key=lambda r: (str(r.get("created")), r["file_id"]))[:limit]

    def find_files(self, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        found = [r for r in self.records.values() if all(r.get(k) == v for k, v in query.items())]
        return sorted(found, key=lambda r: (str(r.get("created")), r["file_id"]), reverse=True)[:limit]

    def add_audit(self, doc: dict[str, Any]) -> bool:
        if doc["_id"] in self.audit:
            return False
        self.audit[doc["_id"]] = dict(doc)
        return True

    def add_audits(self, docs: list[dict[str, Any]]) -> int:
        return sum(self.add_audit(doc) for doc in docs)

    def find_audit(self, query: dict[str, Any], after: tuple[str, str] | None,
                   limit: int) -> list[dict[str, Any]]:
        found = [d for d in self.audit.values() if all(d.get(k) == v for k, v in query.items())]
        found.sort(key=lambda d: (d["time"], d["_id"]))
        if after is not None:
            found = [d for d in found if (d["time"], d["_id"]) > after]
        return found[:limit]

    def orphan_chunk_files(self, older_than: datetime) -> list[Any]:
        return []

    def unindexed_files(self, older_than: datetime, bucket: str = "fs") -> list[Any]:
        return [f for f in self.files if f not in self.records] if bucket == "fs" else []


class FakeBackend:
    """A storage backend in a dict (``ports.StorageBackend`` by shape); all or nothing like the real ones."""

    def __init__(self, kind: str = "gridfs", files: dict[str, bytes] | None = None,
                 opened: list[FakeDownload] | None = None, descriptor: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.descriptor = descriptor or {"id": f"{kind}-fake", "backend": kind}
        self.files: dict[str, bytes] = files if files is not None else {}
        self.opened: list[FakeDownload] = opened if opened is not None else []
        self.fail_writes = 0  # the next N writes raise (a backend that went away)
        self.healthy = True  # False: probe() raises
        self.deleted: list[str] = []

    @classmethod
    def over(cls, index: FakeIndex, kind: str = "gridfs") -> FakeBackend:
        """A backend whose bytes are ``index.files`` (and open downloads ``index.opened``)."""
        return cls(kind, index.files, index.opened)

    def write(self, key: str, pieces: Iterable[bytes], *, content_type: str,
              name: str | None = None) -> tuple[int, str]:
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("FakeBackend.fail_writes")
        data = b"".join(pieces)  # a failing iterator raises here: nothing is kept
        self.files[key] = data
        return len(data), hashlib.sha256(data).hexdigest()

    def open(self, key: str) -> FakeDownload | None:
        if key not in self.files:
            return None
        download = FakeDownload(self.files[key])
        self.opened.append(download)
        return download

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        if key not in self.files:
            raise FileNotFoundError(key)
        yield self.files[key][start:start + length]

    def exists(self, key: str) -> bool:
        return key in self.files

    def delete(self, key: str) -> bool:
        self.deleted.append(key)
        return self.files.pop(key, None) is not None

    def leftovers(self, older_than: datetime, *, remove: bool) -> list[str]:
        return []  # writes are all or nothing: nothing is ever half-written here

    def probe(self) -> bool:
        if not self.healthy:
            raise RuntimeError(f"{self.kind}: FakeBackend.healthy is False")
        return True


class FakePrestorable(FakeBackend):
    """A ``FakeBackend`` a prestore can write into (``ports.Prestorable``), as the filesystem does:
    the bytes wait under a temporary name (``temps``, never read) until ``prestore_adopt`` moves
    them to the key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temps: dict[str, bytes] = {}
        self.adopted: list[str] = []  # keys whose prestored bytes became the object

    def prestore_write(self, key: str, pieces: Iterable[bytes], *, content_type: str, name: str | None,
                       tag: str) -> tuple[tuple[int, str], str]:
        ref = f".{key}.{tag}.tmp"
        self.temps[ref] = b""
        try:
            for piece in pieces:  # piece by piece: a test sees a prestore half-way in ``temps``
                self.temps[ref] += piece
        except BaseException:
            del self.temps[ref]
            raise
        data = self.temps[ref]
        return (len(data), hashlib.sha256(data).hexdigest()), ref

    def prestore_clear(self, key: str, ref: str, *, owned: bool) -> None:
        self.temps.pop(ref, None)

    def prestore_adopt(self, key: str, ref: str, size: int) -> bool:
        data = self.temps.pop(ref, None)
        if data is None or len(data) != size:
            return False
        self.files[key] = data
        self.adopted.append(key)
        return True


class FakeCatalog:
    """The storages catalog in a dict (``ports.Catalog`` by shape)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def save(self, spec_id: str, descriptor: dict[str, Any], secrets: dict[str, str]) -> None:
        self.docs.pop(spec_id, None)  # the newest save goes last (``recent``)
        self.docs[spec_id] = {"_id": spec_id, "descriptor": dict(descriptor), "secrets": dict(secrets)}

    def load(self, spec_id: str) -> dict[str, Any] | None:
        doc = self.docs.get(spec_id)
        return {**doc, "secrets": dict(doc["secrets"])} if doc is not None else None

    def all(self) -> list[dict[str, Any]]:
        return [self.load(k) or {} for k in sorted(self.docs)]

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """Newest saved first (the order of ``save`` calls; a save again moves an entry to the front)."""
        return [self.load(k) or {} for k in reversed(self.docs)][:limit]

    def replace_secrets(self, spec_id: str, old: dict[str, str], new: dict[str, str]) -> bool:
        doc = self.docs.get(spec_id)
        if doc is None or doc["secrets"] != old:
            return False
        doc["secrets"] = dict(new)
        return True


class FakeCache:
    """Chunks by key, as file_uploader leaves them in Redis (``uploadkeys.chunk_key``)."""

    def __init__(self) -> None:
        self.chunks: dict[str, bytes] = {}
        self.dropped: list[str] = []
        # Prestores: cache keys of uploads still arriving (a test adds them), leases, outcomes.
        self.uploading: set[str] = set()
        self.leases: dict[str, str] = {}
        self.prestores: dict[str, dict[str, str]] = {}
        self.waiting: set[str] = set()  # file ids whose upload a test says is still cached

    def ping(self) -> bool:
        return True

    def upload_waiting(self, file_id: str) -> bool:
        return file_id in self.waiting

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
        self.prestores.pop(msg.cache_key, None)
        self.uploading.discard(msg.cache_key)
        self.dropped.append(msg.upload_id)

    # Leases never expire here: a test releases one itself (``leases.pop``).
    def claim_prestore(self, msg: PrestoreUpload, token: str, lease_seconds: int) -> bool:
        if msg.cache_key not in self.uploading or msg.cache_key in self.leases:
            return False
        self.leases[msg.cache_key] = token
        self.prestores.pop(msg.cache_key, None)
        return True

    def next_prestore_chunk(self, msg: PrestoreUpload, index: int, token: str,
                            lease_seconds: int) -> tuple[str, bytes | None]:
        if self.leases.get(msg.cache_key) != token:
            return "lost", None
        if msg.cache_key not in self.uploading:
            return "gone", None
        data = self.chunks.get(msg.chunk_key(index))
        return ("ok", data) if data is not None else ("wait", None)

    def prestore_done(self, msg: PrestoreUpload, token: str, size: int, sha256: str, backend: str,
                      ref: str) -> bool:
        if self.leases.get(msg.cache_key) != token:
            return False
        self.prestores[msg.cache_key] = {"size": str(size), "sha256": sha256, "backend": backend, "ref": ref}
        return True

    def release_prestore(self, msg: PrestoreUpload, token: str) -> None:
        if self.leases.get(msg.cache_key) == token:
            del self.leases[msg.cache_key]

    def prestore_state(self, cache_key: str) -> tuple[bool, dict[str, str]]:
        return cache_key in self.leases, dict(self.prestores.get(cache_key, {}))

class FakeStaging:
    """In-memory ``ports.StagingStore``: the same conditional transitions as MongoDB's."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def ensure_indexes(self) -> None:
        return None

    def plan(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for doc in docs:
            self.docs.setdefault(doc["_id"], dict(doc))
        return self.for_result(docs[0]["result_id"]) if docs else []

    def get(self, result_id: str, target: int) -> dict[str, Any] | None:
        doc = self.docs.get(f"{result_id}:{target}")
        return dict(doc) if doc else None

    def claim(self, result_id: str, target: int, attempt: int, running_until: float,
              updated: str) -> dict[str, Any] | None:
        doc = self.docs.get(f"{result_id}:{target}")
        if doc is None or doc["status"] != "pending" or doc["attempts"] != attempt - 1:
            return None
        doc.update(attempts=attempt, running_until=running_until, updated=updated)
        return dict(doc)

    def take_over(self, result_id: str, target: int, attempt: int, now: float, running_until: float,
                  updated: str) -> dict[str, Any] | None:
        doc = self.docs.get(f"{result_id}:{target}")
        if (doc is None or doc["status"] != "pending" or doc["attempts"] != attempt
                or doc.get("running_until") is None or doc["running_until"] >= now):
            return None
        doc.update(running_until=running_until, updated=updated)
        return dict(doc)

    def finish(self, result_id: str, target: int, attempt: int, *, status: str, location: str | None,
               error: str | None, updated: str) -> bool:
        doc = self.docs.get(f"{result_id}:{target}")
        if doc is None or doc["status"] != "pending" or doc["attempts"] != attempt:
            return False
        doc.update(status=status, updated=updated)
        doc.pop("running_until", None)
        if location is not None:
            doc["location"] = location
        if error is not None:
            doc["error"] = error
        else:
            doc.pop("error", None)
        return True

    def for_result(self, result_id: str) -> list[dict[str, Any]]:
        return sorted((dict(d) for d in self.docs.values() if d["result_id"] == result_id),
                      key=lambda d: d["target"])
