"""An in-memory ``file_uploader.ports.UploadCache``: the Redis upload cache's semantics, no Redis.

What the use cases rely on is kept: the writer lock (free -> take, ours ->
refresh, someone else's -> refuse; a refresh never takes a free lock), chunks
immutable once written (and refused once the session is gone), the per-owner
budget of cached bytes, the quota ledger (reserved at start, counted as stored
once at completion, given back once by a drop), ``uploading -> cached`` exactly once, claimed retry
attempts (compare-and-set), a status tombstone that outlives the bytes, and the
per-owner slot limit (a slot lives as long as its upload's session; one opened
less than ``start_grace`` seconds ago is kept without one). Expiry is not
modelled: a test that needs a lapsed lock calls ``expire_writer``, a lapsed
session ``expire_session``. Plans are read by shape (this package imports no service).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

UPLOADING = "uploading"
CACHED = "cached"


@dataclass
class _Upload:
    session: dict[str, Any]
    chunks: dict[int, bytes] = field(default_factory=dict)
    received: set[int] = field(default_factory=set)
    tails: dict[int, bytes] = field(default_factory=dict)  # the tus door's partial chunks


class FakeUploadCache:
    def __init__(self, prefix: str = "test") -> None:
        self.prefix = prefix
        self.uploads: dict[str, _Upload] = {}
        self.tombs: dict[str, dict[str, str]] = {}
        self.writers: dict[str, str] = {}
        self.slots: dict[str, set[str]] = {}
        self.opened: dict[str, float] = {}  # upload id -> when its slot was opened (time.time())
        self.start_grace = 10.0
        self.upload_ttl = 3600  # what tus_begin's renewal is recorded with in ``touched`` (UPLOAD_TTL_SECONDS)
        self.pending: dict[str, int] = {}
        self.memory = 0  # what used_memory() answers: tests set it to simulate a full cache
        self.touched: list[tuple[str, int]] = []  # (file_id, ttl) per touch, newest last
        self.now = time.time  # the clock of attempt claims (Redis's TIME in the real cache); tests replace it
        self.owner_bytes: dict[str, dict[str, int]] = {}  # owner -> upload id -> chunk bytes cached
        self.ledgers: dict[str, dict[str, int]] = {}  # owner -> {"stored": n, upload id: reserved size}
        self.republish_claims: set[str] = set()  # uploads whose StoreUpload a second complete re-published

    def cache_key(self, file_id: str) -> str:
        return f"{self.prefix}:upload:{file_id}"

    def ping(self) -> bool:
        return True

    # --- sessions ---------------------------------------------------------
    def open_slot(self, owner_id: str, upload_id: str, limit: int) -> bool:
        slots = self.slots.setdefault(owner_id, set())
        self.prune_slots(owner_id)
        if upload_id in slots:
            return True
        if len(slots) >= limit:
            return False
        slots.add(upload_id)
        self.opened[upload_id] = time.time()
        return True

    def prune_slots(self, owner_id: str) -> int:
        """Forget slots whose session is gone (and is not just being created)."""
        slots = self.slots.get(owner_id, set())
        dead = {u for u in slots
                if u not in self.uploads and self.opened.get(u, 0.0) < time.time() - self.start_grace}
        slots -= dead
        return len(dead)

    def free_slot(self, owner_id: str, upload_id: str) -> None:
        self.slots.get(owner_id, set()).discard(upload_id)
        self.ledgers.get(owner_id, {}).pop(upload_id, None)

    def create(self, plan: Any, writer: str) -> None:
        # The same round trip as the Redis hash: items and metadata go through JSON.
        session = {
            "upload_id": plan.upload_id, "owner_id": plan.owner_id, "owner_name": plan.owner_name,
            "file_name": plan.file_name, "size": plan.size, "content_type": plan.content_type,
            "sha256": plan.sha256, "pool_id": plan.pool_id, "timestamp": plan.timestamp,
            "items": json.loads(json.dumps([i.__dict__ for i in plan.items])),
            "metadata": json.loads(json.dumps(plan.metadata)), "kind": plan.kind, "group_id": plan.group_id,
            "chunk_size": plan.chunk_size, "chunk_count": plan.chunk_count, "created": plan.created,
            "status": UPLOADING, "updated": time.time(),
        }
        self.uploads[plan.upload_id] = _Upload(session)
        self.writers[plan.upload_id] = writer
        self.tombs[plan.upload_id] = {"owner_id": plan.owner_id, "status": UPLOADING,
                                      "pool_id": plan.pool_id or "", "file_name": plan.file_name}

    def start_upload(self, plan: Any, writer: str | None, *, limit: int, quota: int,
                     tomb: dict[str, Any] | None = None) -> str:
        if not self.open_slot(plan.owner_id, plan.upload_id, limit):
            return "slots"
        if not self.reserve(plan.owner_id, plan.upload_id, plan.size, quota):
            self.free_slot(plan.owner_id, plan.upload_id)
            return "quota"
        self.create(plan, writer or "")
        if writer is None:
            self.writers.pop(plan.upload_id, None)
        self.tombs[plan.upload_id].update({k: str(v) for k, v in (tomb or {}).items()})
        return "ok"

    def session(self, file_id: str) -> dict[str, Any] | None:
        upload = self.uploads.get(file_id)
        return dict(upload.session) if upload else None

    def status(self, file_id: str) -> dict[str, str] | None:
        tomb = self.tombs.get(file_id)
        return dict(tomb) if tomb else None

    def set_status(self, file_id: str, status: str, **fields: Any) -> None:
        tomb = self.tombs.setdefault(file_id, {})
        tomb.update({"status": status, **{k: str(v) for k, v in fields.items() if v is not None}})

    def received_count(self, file_id: str) -> int:
        upload = self.uploads.get(file_id)
        return len(upload.received) if upload else 0

    # --- the writer lock ----------------------------------------------------
    def acquire_writer(self, file_id: str, writer: str) -> bool:
        current = self.writers.get(file_id)
        if current is None or current == writer:
            self.writers[file_id] = writer
            return True
        return False

    def refresh_writer(self, file_id: str, writer: str) -> bool:
        return self.writers.get(file_id) == writer

    def release_writer(self, file_id: str, writer: str) -> bool:
        if self.writers.get(file_id) == writer:
            del self.writers[file_id]
            return True
        return False

    def writer(self, file_id: str) -> str | None:
        return self.writers.get(file_id)

    def expire_writer(self, file_id: str) -> None:
        """What the lock's expiry does in Redis (tests only)."""
        self.writers.pop(file_id, None)

    # --- chunks -------------------------------------------------------------
    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, max_owner_bytes: int = 0) -> str:
        upload = self.uploads.get(file_id)
        if upload is None:
            return "gone"
        existing = upload.chunks.get(index)
        if existing is not None and existing != data:
            return "different"
        outcome = "same" if existing is not None else "new"
        if outcome == "new":
            budget = self.owner_bytes.setdefault(owner_id, {})
            if max_owner_bytes and sum(budget.values()) + len(data) > max_owner_bytes:
                for gone in [u for u in budget if u not in self.uploads]:  # stored, dropped or expired
                    del budget[gone]
                if sum(budget.values()) + len(data) > max_owner_bytes:
                    return "full"
            budget[file_id] = budget.get(file_id, 0) + len(data)
        upload.chunks[index] = bytes(data)
        upload.received.add(index)
        upload.session["updated"] = time.time()
        return outcome

    def cached_bytes(self, owner_id: str) -> int:
        return sum(self.owner_bytes.get(owner_id, {}).values())

    def read_chunk(self, file_id: str, index: int) -> bytes | None:
        upload = self.uploads.get(file_id)
        return upload.chunks.get(index) if upload else None

    def read_range(self, file_id: str, index: int, start: int, end: int) -> bytes | None:
        chunk = self.read_chunk(file_id, index)
        return chunk[start:end] if chunk is not None and start < len(chunk) else None

    def existing_chunks(self, file_id: str, count: int) -> set[int]:
        upload = self.uploads.get(file_id)
        return {i for i in upload.chunks if i < count} if upload else set()

    # --- the tus door's partial tail -------------------------------------------
    def tail_length(self, file_id: str, index: int) -> int:
        upload = self.uploads.get(file_id)
        return len(upload.tails.get(index, b"")) if upload else 0

    def read_tail(self, file_id: str, index: int) -> bytes | None:
        upload = self.uploads.get(file_id)
        return upload.tails.get(index) if upload else None

    def append_tail(self, file_id: str, index: int, data: bytes, writer: str, at: int) -> str:
        upload = self.uploads.get(file_id)
        if upload is None:
            return "gone"
        if self.writers.get(file_id) != writer:
            return "locked"
        if index in upload.chunks:
            return "written"
        if len(upload.tails.get(index, b"")) != at:
            return "moved"
        upload.tails[index] = upload.tails.get(index, b"") + bytes(data)
        upload.session["updated"] = time.time()
        return "ok"

    def seal_tail(self, file_id: str, index: int, data: bytes, writer: str, at: int, *, owner_id: str,
                  max_owner_bytes: int = 0) -> str:
        upload = self.uploads.get(file_id)
        if upload is None:
            return "gone"
        if upload.session["status"] != UPLOADING:
            return "complete"
        if self.writers.get(file_id) != writer:
            return "locked"
        if index in upload.chunks:
            return "written"
        if len(upload.tails.get(index, b"")) != at:
            return "moved"
        whole = upload.tails.get(index, b"") + bytes(data)
        budget = self.owner_bytes.setdefault(owner_id, {})
        if max_owner_bytes and sum(budget.values()) + len(whole) > max_owner_bytes:
            for gone in [u for u in budget if u not in self.uploads]:  # stored, dropped or expired
                del budget[gone]
            if sum(budget.values()) + len(whole) > max_owner_bytes:
                return "full"
        budget[file_id] = budget.get(file_id, 0) + len(whole)
        upload.tails.pop(index, None)
        upload.chunks[index] = whole
        upload.received.add(index)
        upload.session["updated"] = time.time()
        return "ok"

    def tus_begin(self, file_id: str, owner_id: str, writer: str) -> tuple[str, dict[str, Any] | None, int, int]:
        upload = self.uploads.get(file_id)
        if upload is None or upload.session["owner_id"] != owner_id or upload.session["status"] != UPLOADING:
            return "slow", None, 0, 0
        holder = self.writers.get(file_id)
        if holder is not None and holder != writer:
            return "locked", dict(upload.session), 0, 0
        if file_id not in self.slots.get(owner_id, set()) or file_id not in self.ledgers.get(owner_id, {}):
            return "slow", None, 0, 0
        self.writers[file_id] = writer
        self.touched.append((file_id, self.upload_ttl))
        count = upload.session["chunk_count"]
        done = next((i for i in range(count) if i not in upload.chunks), count)
        tail = len(upload.tails.get(done, b"")) if done < count else 0
        return "ok", dict(upload.session), done, tail

    def drop_tail(self, file_id: str, index: int) -> None:
        upload = self.uploads.get(file_id)
        if upload is not None:
            upload.tails.pop(index, None)

    def expire_session(self, file_id: str) -> None:
        """What the session's expiry does in Redis: bytes and session gone, the tombstone stays (tests only)."""
        self.uploads.pop(file_id, None)
        self.writers.pop(file_id, None)

    def lose_chunk(self, file_id: str, index: int) -> None:
        """A chunk key expired while its index stays in the received set (tests only)."""
        self.uploads[file_id].chunks.pop(index, None)

    def touch(self, file_id: str, chunk_count: int, ttl: int) -> None:
        self.touched.append((file_id, ttl))

    # --- completion and removal ----------------------------------------------
    def mark_cancelled(self, file_id: str) -> bool:
        upload = self.uploads.get(file_id)
        if upload is None or upload.session["status"] != UPLOADING:
            return False
        upload.session["status"] = "cancelled"
        return True

    def mark_cached(self, file_id: str, size: int, *, owner_id: str, sha256: str = "", now: float = 0.0) -> bool:
        upload = self.uploads.get(file_id)
        if upload is None or upload.session["status"] != UPLOADING:
            return False
        upload.session.update(status=CACHED, published="0", cached_at=str(now), cached_sha256=sha256)
        self.pending[file_id] = size
        self.writers.pop(file_id, None)
        ledger = self.ledgers.setdefault(owner_id, {})
        ledger.pop(file_id, None)
        tomb = self.tombs.setdefault(file_id, {})
        tomb["status"] = CACHED  # as the store's _MARK_CACHED: the tombstone says cached at once
        if "quota" not in tomb:
            tomb["quota"] = str(size)
            ledger["stored"] = ledger.get("stored", 0) + size
        return True

    def published(self, file_id: str, *, owner_id: str, sha256: str) -> None:
        self.mark_published(file_id)
        if (self.status(file_id) or {}).get("status") in (None, "uploading", CACHED):  # never over a final one
            self.set_status(file_id, CACHED, sha256=sha256)
        self.free_slot(owner_id, file_id)

    def mark_published(self, file_id: str) -> None:
        upload = self.uploads.get(file_id)
        if upload is not None:
            upload.session["published"] = "1"

    def claim_republish(self, file_id: str, seconds: int) -> bool:
        if file_id in self.republish_claims:
            return False
        self.republish_claims.add(file_id)
        return True

    def unmark_cached(self, file_id: str, *, owner_id: str) -> None:
        counted = self.give_back(owner_id, file_id)
        upload = self.uploads.get(file_id)
        if upload is not None:
            upload.session["status"] = UPLOADING
        self.tombs.setdefault(file_id, {})["status"] = UPLOADING
        self.pending.pop(file_id, None)
        if counted:
            self.ledgers.setdefault(owner_id, {})[file_id] = counted

    # --- the quota ledger -----------------------------------------------------------
    def reserve(self, owner_id: str, upload_id: str, size: int, quota: int) -> bool:
        ledger = self.ledgers.setdefault(owner_id, {})
        slots = self.slots.get(owner_id, set())
        for gone in [u for u in ledger if u != "stored" and u not in slots]:
            del ledger[gone]
        if upload_id in ledger:
            return True
        if quota and sum(ledger.values()) + size > quota:
            return False
        ledger[upload_id] = size
        return True

    def give_back(self, owner_id: str, upload_id: str) -> int:
        ledger = self.ledgers.setdefault(owner_id, {})
        ledger.pop(upload_id, None)
        counted = int(self.tombs.get(upload_id, {}).pop("quota", "0"))
        if counted:
            ledger["stored"] = ledger.get("stored", 0) - counted
        return counted

    def committed_bytes(self, owner_id: str) -> int:
        return sum(self.ledgers.get(owner_id, {}).values())

    def drop(self, file_id: str, chunk_count: int | None = None, owner_id: str | None = None) -> int:
        upload = self.uploads.pop(file_id, None)
        self.writers.pop(file_id, None)
        self.pending.pop(file_id, None)
        owner = owner_id or (upload.session["owner_id"] if upload else None)
        if owner:
            self.free_slot(owner, file_id)
            self.owner_bytes.get(owner, {}).pop(file_id, None)
            self.give_back(owner, file_id)
        return 0 if upload is None else 1 + len(upload.chunks)

    # --- retries ----------------------------------------------------------------
    def claim_attempt(self, file_id: str, attempt: int, lease_seconds: float = 2.0) -> str:
        tomb = self.tombs.setdefault(file_id, {})
        current = int(tomb.get("failed_attempt", "0"))
        if current > attempt:
            return "done"
        now = self.now()
        if current == attempt:
            if "claim_until" not in tomb:
                return "done"
            if float(tomb["claim_until"]) > now:
                return "busy"
        tomb["failed_attempt"] = str(attempt)
        tomb["claim_until"] = str(now + lease_seconds)
        return "claimed"

    def finish_attempt(self, file_id: str, attempt: int) -> None:
        tomb = self.tombs.get(file_id, {})
        if int(tomb.get("failed_attempt", "0")) == attempt:
            tomb.pop("claim_until", None)

    def unclaim_attempt(self, file_id: str, attempt: int) -> None:
        tomb = self.tombs.get(file_id, {})
        if int(tomb.get("failed_attempt", "0")) == attempt:
            tomb["failed_attempt"] = str(attempt - 1)
            tomb.pop("claim_until", None)

    # --- load -------------------------------------------------------------------
    def pending_bytes(self) -> int:
        return sum(size for file_id, size in self.pending.items() if file_id in self.uploads)

    def used_memory(self) -> int:
        return self.memory
