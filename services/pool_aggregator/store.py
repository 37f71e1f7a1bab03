"""The one module owning pool_aggregator's MongoDB collections ``groups`` and ``results``.

Several aggregator processes share these collections, so every state change is
one conditional update whose filter names the state it leaves: of two
processes racing for the same transition exactly one matches, the other sees
``modified_count == 0`` and does nothing. Times are stored as epoch seconds
(floats) so filters are plain number comparisons.

Group document::

    {_id: group_id, pool_id, window_start, window_end (epoch ints), status,
     close_at (window_end + grace), min_contributors, files: [{file_id, owner_id,
     timestamp, ts, size, sha256, file_name, late}], contributors: [owner_id],
     file_count, bytes, late_count, created, updated, ready_at, leased_at, lease_expires_at,
     lease_id, lease_expiries, result_claim, result_id, done_at, failed_at}
"""

from __future__ import annotations

import uuid
from typing import Any

import pymongo
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from . import core
from .ports import ADDED, CLOSED, PRESENT


class MongoGroupStore:
    """``ports.GroupStore`` on MongoDB."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.groups = db["groups"]
        self.results = db["results"]

    def ensure_indexes(self) -> None:
        self.groups.create_index([("pool_id", pymongo.ASCENDING), ("status", pymongo.ASCENDING)])
        self.groups.create_index([("status", pymongo.ASCENDING)])
        self.groups.create_index([("files.file_id", pymongo.ASCENDING)])
        self.results.create_index([("result_id", pymongo.ASCENDING)], unique=True)
        self.results.create_index([("pool_id", pymongo.ASCENDING), ("created_ts", pymongo.ASCENDING)])

    def ping(self) -> bool:
        self.db.command("ping")
        return True

    # --- files into groups -------------------------------------------------

    def membership(self, pool_id: str, file_id: str) -> dict | None:
        """``{group_id, late}`` of the group already holding ``file_id`` (a redelivered FileStored)."""
        found = self.groups.find_one({"pool_id": pool_id, "files.file_id": file_id},
                                     {"files": {"$elemMatch": {"file_id": file_id}}, "status": 1})
        if found is None:
            return None
        entries = found.get("files") or [{}]
        return {"group_id": found["_id"], "late": bool(entries[0].get("late"))}

    def add_file(self, *, pool_id: str, window: core.Window, close_grace_seconds: float,
                 min_contributors: int | None, entry: dict[str, Any], now: float) -> tuple[str, dict | None]:
        """Put ``entry`` into the group of ``window`` if that group accepts files.

        One upsert whose filter requires an accepting status and the file's
        absence: it either creates the group with the file, adds the file, or
        matches nothing. Matching nothing on an existing ``_id`` makes the
        upsert collide (DuplicateKeyError); we then read the group to tell
        "already there" (a redelivery) from "no longer accepting" (late).
        """
        gid = core.group_id(pool_id, window.start)
        file_id = entry["file_id"]
        for _ in range(5):
            try:
                doc = self.groups.find_one_and_update(
                    {"_id": gid, "status": {"$in": list(core.ACCEPTING)}, "files.file_id": {"$ne": file_id}},
                    {
                        "$setOnInsert": {
                            "pool_id": pool_id, "window_start": window.start, "window_end": window.end,
                            "status": core.OPEN, "close_at": window.end + float(close_grace_seconds or 0),
                            "min_contributors": min_contributors or None, "created": now,
                            "lease_expiries": 0,
                        },
                        "$push": {"files": entry},
                        "$addToSet": {"contributors": entry["owner_id"]},
                        "$inc": {"file_count": 1, "bytes": int(entry["size"]),
                                 "late_count": 1 if entry.get("late") else 0},
                        "$set": {"updated": now},
                    },
                    upsert=True, return_document=ReturnDocument.AFTER,
                    projection={"files": 0},
                )
                if doc is None:
                    # Seen on secantusdb with ten consumers creating one group at once: the
                    # upsert answered no document. Whether it applied is read back, not guessed.
                    existing = self.groups.find_one({"_id": gid}, {"files": 0})
                    if existing is not None and self.groups.count_documents(
                            {"_id": gid, "files.file_id": file_id}, limit=1):
                        return ADDED, existing
                    continue
                return ADDED, doc
            except DuplicateKeyError:
                existing = self.groups.find_one({"_id": gid}, {"files": 0})
                if existing is None:
                    continue  # deleted in between (tests only); try again
                if self.groups.count_documents({"_id": gid, "files.file_id": file_id}, limit=1):
                    return PRESENT, existing
                if existing["status"] not in core.ACCEPTING:
                    return CLOSED, existing
                # Accepting and without the file: a concurrent insert of the same group won; retry.
        raise RuntimeError(f"could not add {file_id} to {gid}")

    def mark_ready(self, gid: str, now: float) -> dict | None:
        """open -> ready; the group as it is now, or None if another process (or nothing) moved it."""
        return self.groups.find_one_and_update(
            {"_id": gid, "status": core.OPEN},
            {"$set": {"status": core.READY, "ready_at": now, "updated": now}},
            return_document=ReturnDocument.AFTER, projection={"files": 0})

    # --- reading -----------------------------------------------------------

    def get(self, gid: str) -> dict | None:
        return self.groups.find_one({"_id": gid}, {"files": 0})

    def files_of(self, gid: str) -> list[dict]:
        found = self.groups.find_one({"_id": gid}, {"files": 1})
        entries = list((found or {}).get("files") or ())
        return sorted(entries, key=lambda e: (e.get("ts", 0), e["file_id"]))

    def list_groups(self, pool_id: str, status: str | None = None, limit: int = 1000) -> list[dict]:
        query: dict[str, Any] = {"pool_id": pool_id}
        if status:
            query["status"] = status
        cursor = self.groups.find(query, {"files": 0}).sort("window_start", pymongo.ASCENDING)
        return list(cursor.limit(limit))

    def open_groups(self, limit: int = 10000) -> list[dict]:
        return list(self.groups.find({"status": core.OPEN}, {"files": 0}).limit(limit))

    def expired_leases(self, now: float, limit: int = 10000) -> list[dict]:
        return list(self.groups.find({"status": core.PROCESSING, "lease_expires_at": {"$lte": now}},
                                     {"files": 0}).limit(limit))

    def count_by_status(self) -> dict[str, int]:
        return {status: self.groups.count_documents({"status": status}) for status in core.STATUSES}

    # --- leases ------------------------------------------------------------

    def lease(self, gid: str, now: float, timeout_seconds: float) -> dict | None:
        """ready -> processing with a lease; None when the group was not ready (or another won)."""
        return self.groups.find_one_and_update(
            {"_id": gid, "status": core.READY},
            {"$set": {"status": core.PROCESSING, "leased_at": now, "lease_expires_at": now + timeout_seconds,
                      "lease_id": uuid.uuid4().hex, "updated": now}},
            return_document=ReturnDocument.AFTER, projection={"files": 0})

    def expire_lease(self, gid: str, lease_id: str | None, target: str, expiries: int, now: float) -> dict | None:
        """processing -> ready/failed, only for the very lease that was seen expired."""
        update: dict[str, Any] = {"$set": {"status": target, "lease_expiries": expiries, "updated": now},
                                  "$unset": {"leased_at": "", "lease_expires_at": "", "lease_id": ""}}
        if target == core.FAILED:
            update["$set"]["failed_at"] = now
        return self.groups.find_one_and_update(
            {"_id": gid, "status": core.PROCESSING, "lease_id": lease_id}, update,
            return_document=ReturnDocument.AFTER, projection={"files": 0})

    # --- results -----------------------------------------------------------

    def claim_result(self, gid: str, claim: str, now: float) -> dict | None:
        """processing|ready -> done before any byte is uploaded: of two posts exactly one wins.

        Returns the group as it was (its status is needed to revert), or None.
        """
        return self.groups.find_one_and_update(
            {"_id": gid, "status": {"$in": list(core.RESULT_ACCEPTING)}, "result_claim": None},
            {"$set": {"status": core.DONE, "result_claim": claim, "done_at": now, "updated": now}},
            return_document=ReturnDocument.BEFORE, projection={"files": 0})

    def set_result_id(self, gid: str, claim: str, result_id: str) -> None:
        self.groups.update_one({"_id": gid, "result_claim": claim}, {"$set": {"result_id": result_id}})

    def revert_claim(self, gid: str, claim: str, previous_status: str, now: float) -> bool:
        """Undo a claim whose upload failed, so the processor can post again."""
        result = self.groups.update_one(
            {"_id": gid, "status": core.DONE, "result_claim": claim},
            {"$set": {"status": previous_status, "updated": now},
             "$unset": {"result_claim": "", "result_id": "", "done_at": ""}})
        return result.modified_count == 1

    def insert_result(self, doc: dict[str, Any]) -> None:
        self.results.insert_one({"_id": doc["result_id"], **doc})

    def delete_result(self, result_id: str) -> None:
        self.results.delete_one({"_id": result_id, "stored": False})

    def get_result(self, result_id: str) -> dict | None:
        return self.results.find_one({"_id": result_id})

    def mark_result_stored(self, result_id: str, now: float, size: int, sha256: str) -> dict | None:
        return self.results.find_one_and_update(
            {"_id": result_id},
            {"$set": {"stored": True, "stored_at": now, "size": size, "sha256": sha256}},
            return_document=ReturnDocument.AFTER)

    def mark_result_published(self, result_id: str) -> None:
        self.results.update_one({"_id": result_id}, {"$set": {"published": True}})

    def list_results(self, pool_id: str, since: float | None, limit: int = 1000) -> list[dict]:
        query: dict[str, Any] = {"pool_id": pool_id, "stored": True}
        if since is not None:
            query["created_ts"] = {"$gt": since}
        return list(self.results.find(query).sort("created_ts", pymongo.ASCENDING).limit(limit))
