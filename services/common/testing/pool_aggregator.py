"""In-memory stand-in for pool_aggregator's store (its ``ports.GroupStore``), by shape.

Dicts of groups, their file entries and results; every transition checks the
state it leaves, like the real conditional updates, and answers copies (as a
database would). ``fail`` makes the next calls of a named method raise, to
test undo paths. Only tests import this; it imports no service.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["FakeFiles", "FakeGroupStore", "FakeStagingReader", "FakeUploader", "RecordingAnnouncer", "StoreDown"]

ADDED, CLOSED = "added", "closed"
OPEN, READY, PROCESSING, DONE, FAILED = "open", "ready", "processing", "done", "failed"
STATUSES = (OPEN, READY, PROCESSING, DONE, FAILED)
ACCEPTING = (OPEN, READY)
RESULT_ACCEPTING = (PROCESSING, READY)

Doc = dict[str, Any]


class StoreDown(RuntimeError):
    """What a failing fake call raises (a database that went away)."""


class FakeGroupStore:
    def __init__(self) -> None:
        self.groups: dict[str, Doc] = {}
        self.entries: dict[str, list[Doc]] = {}  # group id -> its file entries
        self.member_of: dict[str, str] = {}  # file id -> its group id (the unique membership)
        self.add_calls = 0  # add_files calls: bulk grouping makes one per window, not one per file
        self.results: dict[str, Doc] = {}
        self.counters: dict[str, int] = {}  # pool id -> the last seq given
        self.acks: dict[tuple[str, str], int] = {}  # (pool id, user id) -> acknowledged seq
        self.fenced_off = 0  # leader writes refused because a newer term wrote the group (or not adopted)
        self.fence_term = 0  # the ticker's term new groups are adopted with (the store's ``fences``)
        # True: creations and leases leave their group pending, as a writer that died between
        # its write and the adoption would (the leader's ``adopt_pending`` adopts it).
        self.hold_adoption = False
        self._failures: dict[str, int] = {}

    def fail(self, method: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise StoreDown."""
        self._failures[method] = times

    def _check(self, method: str) -> None:
        if self._failures.get(method):
            self._failures[method] -= 1
            raise StoreDown(f"FakeGroupStore.{method} failed (fail())")

    def ping(self) -> bool:
        return True

    def ensure_indexes(self) -> None:
        return None

    # --- files into groups
    def memberships(self, pool_id: str, file_ids: list[str], now: float) -> dict[str, Doc]:
        self._check("memberships")
        found: dict[str, Doc] = {}
        for file_id in file_ids:
            gid = self.member_of.get(file_id)
            if gid is not None and self.groups[gid]["pool_id"] == pool_id:
                entry = next(e for e in self.entries[gid] if e["file_id"] == file_id)
                found[file_id] = {"group_id": gid, "late": bool(entry.get("late"))}
        return found

    def add_files(self, *, pool_id: str, window: Any, close_grace_seconds: float, min_contributors: int | None,
                  entries: list[Doc], now: float) -> tuple[str, Doc | None, dict[str, Doc]]:
        self._check("add_files")
        self.add_calls += 1
        gid = f"{pool_id}-{int(window.start)}"
        group = self.groups.get(gid)
        if group is None:
            group = self.groups[gid] = {
                "_id": gid, "pool_id": pool_id, "window_start": window.start, "window_end": window.end,
                "status": OPEN, "close_at": window.end + float(close_grace_seconds or 0),
                "min_contributors": min_contributors or None, "created": now, "lease_expiries": 0,
                "contributors": [], "file_count": 0, "bytes": 0, "late_count": 0,
                "fence_pending": uuid.uuid4().hex}
            self.entries[gid] = []
            self._adopt_now(gid)
        elif group["status"] not in ACCEPTING:
            return CLOSED, copy.deepcopy(group), {}
        present = self.memberships(pool_id, [e["file_id"] for e in entries], now)
        for entry in entries:
            if entry["file_id"] in present:
                continue  # one membership per file: a file counts once
            self.member_of[entry["file_id"]] = gid
            self.entries[gid].append(dict(entry))
            if entry["owner_id"] not in group["contributors"]:
                group["contributors"].append(entry["owner_id"])
            group["file_count"] += 1
            group["bytes"] += int(entry["size"])
            group["late_count"] += 1 if entry.get("late") else 0
        group["updated"] = now
        return ADDED, copy.deepcopy(group), present

    # --- reading
    def get(self, gid: str) -> Doc | None:
        group = self.groups.get(gid)
        return copy.deepcopy(group) if group is not None else None

    def files_of(self, gid: str) -> list[Doc]:
        return sorted((dict(e) for e in self.entries.get(gid, ())), key=lambda e: (e.get("ts", 0), e["file_id"]))

    def list_groups(self, pool_id: str, status: str | None = None, limit: int = 1000,
                    after: int | None = None) -> list[Doc]:
        found = [g for g in self.groups.values() if g["pool_id"] == pool_id and (not status or g["status"] == status)
                 and (after is None or g["window_start"] > after)]
        return copy.deepcopy(sorted(found, key=lambda g: g["window_start"])[:limit])

    def open_groups(self, limit: int = 10000) -> list[Doc]:
        return copy.deepcopy([g for g in self.groups.values() if g["status"] == OPEN][:limit])

    def expired_leases(self, now: float, limit: int = 10000) -> list[Doc]:
        return copy.deepcopy([g for g in self.groups.values()
                              if g["status"] == PROCESSING and g.get("lease_expires_at", now + 1) <= now][:limit])

    def count_by_status(self) -> dict[str, int]:
        return {s: sum(g["status"] == s for g in self.groups.values()) for s in STATUSES}

    # --- transitions
    def _move(self, gid: str, allowed: tuple[str, ...], changes: Doc, *, before: bool = False,
              fence: int | None = None, **match: Any) -> Doc | None:
        group = self.groups.get(gid)
        if group is None or group["status"] not in allowed or any(group.get(k) != v for k, v in match.items()):
            return None
        if fence is not None:
            if "fence" not in group or group["fence"] > fence or "fence_pending" in group:
                self.fenced_off += 1
                return None  # a newer leader wrote (or stamped) it, or it is not adopted yet
            changes = {**changes, "fence": fence}
        old = copy.deepcopy(group)
        group.update(changes)
        return old if before else copy.deepcopy(group)

    def mark_ready(self, gid: str, now: float, short: bool = False, fence: int | None = None) -> Doc | None:
        return self._move(gid, (OPEN,), {"status": READY, "ready_at": now, "updated": now,
                                         **({"short": True} if short else {})}, fence=fence)

    def mark_failed(self, gid: str, now: float, reason: str, from_statuses: tuple[str, ...] = (OPEN,),
                    fence: int | None = None) -> Doc | None:
        return self._move(gid, from_statuses, {"status": FAILED, "reason": reason, "failed_at": now, "updated": now},
                          fence=fence)

    def fence_live(self, term: int) -> int:
        self.fence_term = max(self.fence_term, term)
        stamped = 0
        for group in self.groups.values():
            if group["status"] in (OPEN, PROCESSING) and ("fence" not in group or group["fence"] < term):
                group["fence"] = term
                stamped += 1
        return stamped

    def _adopt(self, gid: str) -> bool:
        group = self.groups[gid]
        if "fence_pending" not in group and "fence" in group:
            return False
        group.pop("fence_pending", None)
        group["fence"] = max(int(group.get("fence", 0)), self.fence_term)
        return True

    def _adopt_now(self, gid: str) -> None:
        if not self.hold_adoption:
            self._adopt(gid)

    def adopt_pending(self) -> int:
        return sum(self._adopt(gid) for gid, g in self.groups.items()
                   if "fence_pending" in g or ("fence" not in g and g["status"] in (OPEN, PROCESSING)))

    def retry(self, gid: str, now: float) -> Doc | None:
        moved = self._move(gid, (FAILED,), {"status": READY, "ready_at": now, "updated": now, "lease_expiries": 0,
                                            "retries": int(self.groups.get(gid, {}).get("retries") or 0) + 1})
        if moved is not None:
            for key in ("reason", "failed_at"):
                self.groups[gid].pop(key, None)
                moved.pop(key, None)
        return moved

    def extend_lease(self, gid: str, now: float, timeout_seconds: float) -> Doc | None:
        return self._move(gid, (PROCESSING,), {"lease_expires_at": now + timeout_seconds, "updated": now})

    def lease(self, gid: str, now: float, timeout_seconds: float) -> Doc | None:
        moved = self._move(gid, (READY,), {"status": PROCESSING, "leased_at": now,
                                           "lease_expires_at": now + timeout_seconds,
                                           "lease_id": uuid.uuid4().hex, "updated": now,
                                           "fence_pending": uuid.uuid4().hex})
        if moved is not None:
            self._adopt_now(gid)
            moved = copy.deepcopy(self.groups[gid])
        return moved

    def expire_lease(self, gid: str, lease_id: str | None, target: str, expiries: int, now: float,
                     fence: int | None = None) -> Doc | None:
        changes: Doc = {"status": target, "lease_expiries": expiries, "updated": now,
                        "leased_at": None, "lease_expires_at": None, "lease_id": None,
                        "result_claim": None, "claimed_at": None}
        if target == FAILED:
            changes["failed_at"] = now
            changes["reason"] = "lease_expired"
        moved = self._move(gid, (PROCESSING,), changes, fence=fence, lease_id=lease_id)
        if moved is not None:
            for key in ("leased_at", "lease_expires_at", "lease_id", "result_claim", "claimed_at"):
                self.groups[gid].pop(key, None)
                moved.pop(key, None)
        return moved

    def claim_result(self, gid: str, claim: str, now: float) -> Doc | None:
        self._check("claim_result")
        return self._move(gid, (PROCESSING,), {"result_claim": claim, "claimed_at": now, "updated": now},
                          before=True, result_claim=None, result_id=None)

    def revert_claim(self, gid: str, claim: str, now: float) -> bool:
        group = self.groups.get(gid)
        if group is None or group["status"] != PROCESSING or group.get("result_claim") != claim:
            return False
        group["updated"] = now
        for key in ("result_claim", "claimed_at"):
            group.pop(key, None)
        return True

    def finish_group(self, gid: str, result_id: str, now: float) -> Doc | None:
        self._check("finish_group")
        moved = self._move(gid, RESULT_ACCEPTING, {"status": DONE, "result_id": result_id, "done_at": now,
                                                   "updated": now}, result_id=None)
        if moved is not None:
            for key in ("result_claim", "claimed_at", "leased_at", "lease_expires_at", "lease_id"):
                self.groups[gid].pop(key, None)
                moved.pop(key, None)
        return moved

    # --- results
    def insert_result(self, doc: Doc) -> None:
        self._check("insert_result")
        if doc["result_id"] in self.results:
            raise StoreDown(f"duplicate result {doc['result_id']}")
        self.results[doc["result_id"]] = {"_id": doc["result_id"], **doc}

    def delete_result(self, result_id: str) -> bool:
        if not self.results.get(result_id, {}).get("stored", True):
            del self.results[result_id]
            return True
        return False

    def get_result(self, result_id: str) -> Doc | None:
        found = self.results.get(result_id)
        return dict(found) if found is not None else None

    def mark_result_stored(self, result_id: str, now: float, size: int, sha256: str) -> Doc | None:
        found = self.results.get(result_id)
        if found is None:
            return None
        found.update({"stored": True, "stored_at": now, "size": size, "sha256": sha256})
        return dict(found)

    def mark_result_published(self, result_id: str) -> None:
        if result_id in self.results:
            self.results[result_id]["published"] = True

    def assign_seq(self, result_id: str, known: Doc | None = None) -> Doc | None:
        """One counter per pool; a result keeps the seq it got (no burn, no duplicate)."""
        self._check("assign_seq")
        found = self.results.get(result_id)
        if found is None:
            return None
        if found.get("seq") is None:
            pool_id = found["pool_id"]
            self.counters[pool_id] = found["seq"] = seq = self.counters.get(pool_id, 0) + 1
            high = self._created_max(pool_id, found, seq)
            if high is not None:
                found["created_max"] = high
        return dict(found)

    def _created_max(self, pool_id: str, found: Doc, seq: int) -> float | None:
        """As the real store: the highest created_ts of seqs 1..seq, when seq - 1 has its own."""
        own = found.get("created_ts")
        if not isinstance(own, int | float):
            return None
        if seq <= 1:
            return float(own)
        before = self.result_at(pool_id, seq - 1) or {}
        high = before.get("created_max")
        return max(float(high), float(own)) if isinstance(high, int | float) else None

    def result_at(self, pool_id: str, seq: int) -> Doc | None:
        """The pool's result numbered ``seq`` (a copy), or None."""
        for r in self.results.values():
            if r["pool_id"] == pool_id and r.get("seq") == seq:
                return dict(r)
        return None

    def result_pools(self, limit: int = 100000) -> list[str]:
        return list(self.counters)[:limit]

    def backfill_created_max(self, pool_id: str, limit: int = 1000000) -> int:
        written, high = 0, None
        for seq in range(1, min(self.counters.get(pool_id, 0), limit) + 1):
            doc = next((r for r in self.results.values() if r["pool_id"] == pool_id and r.get("seq") == seq), None)
            if doc is None:
                break  # a gap: nothing above is provable (as the real store)
            if isinstance(doc.get("created_ts"), int | float):  # without one: never matches ``since``
                high = float(doc["created_ts"]) if high is None else max(high, float(doc["created_ts"]))
            if high is not None and doc.get("created_max") != high:
                doc["created_max"] = high
                written += 1
        return written

    def unnumbered_results(self, limit: int = 100000) -> list[Doc]:
        found = [dict(r) for r in self.results.values() if r.get("stored") and r.get("seq") is None]
        return sorted(found, key=lambda r: r["created_ts"])[:limit]

    def list_results(self, pool_id: str, *, since: float | None = None, after_seq: int = 0,
                     limit: int = 100) -> list[Doc]:
        found = [dict(r) for r in self.results.values() if r["pool_id"] == pool_id and r.get("stored")
                 and r.get("seq") is not None and r["seq"] > after_seq
                 and (since is None or r["created_ts"] > since)]
        return sorted(found, key=lambda r: r["seq"])[:limit]

    def last_seq(self, pool_id: str) -> int:
        return max((int(r["seq"]) for r in self.results.values() if r["pool_id"] == pool_id and r.get("stored")
                    and r.get("seq") is not None), default=0)

    def ack(self, pool_id: str, user_id: str, seq: int, now: float) -> int:
        self._check("ack")
        key = (pool_id, user_id)
        self.acks[key] = max(seq, self.acks.get(key, 0))  # $max: an ack never moves back
        return self.acks[key]

    def acked(self, pool_id: str, user_id: str) -> int | None:
        self._check("acked")
        return self.acks.get((pool_id, user_id))


class FakeUploader:
    """file_uploader's internal upload routes in memory (pool_aggregator's ``ports.ResultUploader``)."""

    def __init__(self, chunk_size: int = 4) -> None:
        self.chunk_size = chunk_size
        self.uploads: dict[str, Doc] = {}
        self.fail_complete = 0  # the next N complete() calls raise (file_uploader refused)
        # Called with the file id after a complete (the pipeline storing it: a test delivers its
        # FileStored here); None: nothing gets stored, as when the storage is down.
        self.on_complete: Callable[[str], None] | None = None

    def start(self, body: Doc) -> Doc:
        file_id = uuid.uuid4().hex
        self.uploads[file_id] = {"body": dict(body), "chunks": {}, "completed": False, "released": False}
        return {"file_id": file_id, "chunk_size": self.chunk_size}

    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, writer: str) -> Doc:
        upload = self.uploads[file_id]
        if (owner_id, writer) != (upload["body"]["owner_id"], upload["body"]["writer"]):
            raise StoreDown("chunk from another writer")
        upload["chunks"][index] = bytes(data)
        return {"file_id": file_id, "index": index}

    def complete(self, file_id: str, *, owner_id: str, writer: str) -> Doc:
        if self.fail_complete:
            self.fail_complete -= 1
            raise StoreDown("complete refused (fail_complete)")
        self.uploads[file_id]["completed"] = True
        if self.on_complete is not None:
            self.on_complete(file_id)
        return {"file_id": file_id, "status": "cached"}

    def release(self, file_id: str, *, writer: str) -> None:
        if file_id in self.uploads:
            self.uploads[file_id]["released"] = True

    def data(self, file_id: str) -> bytes:
        chunks = self.uploads[file_id]["chunks"]
        return b"".join(chunks[i] for i in sorted(chunks))


class FakeFiles:
    """Stored files' bytes by id (pool_aggregator's ``ports.FileReader``); records who read with which key."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.reads: list[tuple[str, str]] = []

    def chunks(self, file_id: str, api_key: str) -> Iterator[bytes]:
        self.reads.append((file_id, api_key))
        data = self.files[file_id]
        yield from (data[i:i + 3] for i in range(0, len(data), 3))


class RecordingAnnouncer:
    """``ports.Announcer`` that only records (pool, group id) pairs."""

    def __init__(self) -> None:
        self.announced: list[tuple[str | None, str]] = []

    def announce(self, pool: Doc | None, group: Doc) -> None:
        self.announced.append(((pool or {}).get("processor_url"), group["_id"]))


class FakeStagingReader:
    """pool_aggregator's ``ports.StagingReader``: statuses set by the test, per result id."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any]] = {}
        self.asked: list[str] = []

    def status(self, result_id: str) -> dict[str, Any]:
        self.asked.append(result_id)
        return self.statuses.get(result_id, {"targets": []})
