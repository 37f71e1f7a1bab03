"""MongoDB (``files``, ``audit``) and the read/delete side of the Redis upload cache.

This module owns file_service_manager's index. The bytes are a storage
backend's (``backends``; GridFS buckets live in the same database). The Redis
part touches only the keys a ``StoreUpload`` or ``PrestoreUpload`` names (its ``cache_key``
and chunks) and this service's own ``{cache_key}:prestore`` and ``{cache_key}:prestore-lease``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pymongo
import redis
from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common import contracts, mongo, timeutil, uploadkeys
from services.common.contracts import PrestoreUpload, StoreUpload, UploadItem

from . import core
from .core import StoreFailure

# A sweep pass's claim on one leftover (remove_partial) is taken over after this long.
SWEEP_CLAIM_SECONDS = 600
DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index clash (E11000)

# A prestore starts (KEYS: session, lease, state) only while the upload is still arriving
# (a redelivered PrestoreUpload after completion must not touch what a StoreUpload writes)
# and only once at a time (the lease); an earlier, failed prestore's outcome is forgotten.
_CLAIM_PRESTORE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'uploading' then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('DEL', KEYS[3])
return 1
"""

# The prestore's next chunk, in one round trip (KEYS: lease, session, chunk): 'lost' when the
# lease is not ours any more (this worker stalled past it: it must stop and touch nothing),
# 'gone' when the upload was dropped, 'wait' while the chunk has not arrived; else the bytes.
# Every call renews the lease: a live prestore keeps it, a dead one loses it within ARGV[2] s.
_NEXT_PRESTORE_CHUNK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost'} end
redis.call('EXPIRE', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then return {'gone'} end
local data = redis.call('GET', KEYS[3])
if not data then return {'wait'} end
return {'ok', data}
"""

# The outcome, written only by the lease holder (KEYS: lease, state); ``ref`` is where the backend
# put the bytes (a filesystem temporary name; empty for GridFS, whose bytes are under the key).
_PRESTORE_DONE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'size', ARGV[2], 'sha256', ARGV[3], 'backend', ARGV[4], 'ref', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""

_RELEASE_PRESTORE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

PRESTORE_STATE_TTL = 86_400  # an outcome nobody used (the upload was never completed) expires


def prestore_key(cache_key: str) -> str:
    return f"{cache_key}:prestore"


def prestore_lease_key(cache_key: str) -> str:
    return f"{cache_key}:prestore-lease"


class UploadCache:
    """The cached chunks of an upload (file_uploader's layout, ARCHITECTURE)."""

    def __init__(self, client: redis.Redis, prefix: str = "dropbox") -> None:
        # redis-py types the sync client's answers as ``T | Awaitable[T]``; this one is sync.
        self.r: Any = client
        self.prefix = prefix  # REDIS_PREFIX: where file_uploader's sessions are (uploadkeys)
        self._claim_prestore = client.register_script(_CLAIM_PRESTORE)
        self._next_prestore_chunk = client.register_script(_NEXT_PRESTORE_CHUNK)
        self._prestore_done = client.register_script(_PRESTORE_DONE)
        self._release_prestore = client.register_script(_RELEASE_PRESTORE)

    def ping(self) -> bool:
        return bool(self.r.ping())

    def upload_waiting(self, file_id: str) -> bool:
        """Whether the upload a stored file comes from is still cached (its StoreUpload may yet index
        the file: a completed upload waits up to file_uploader's CACHED_TTL_SECONDS to be stored)."""
        keys = [uploadkeys.session_key(self.prefix, upload_id) for upload_id in uploadkeys.upload_ids_of(file_id)]
        return bool(self.r.exists(*keys))

    # --- prestores (``prestoring``) -----------------------------------------------
    def claim_prestore(self, msg: PrestoreUpload, token: str, lease_seconds: int) -> bool:
        return bool(self._claim_prestore(
            keys=[msg.cache_key, prestore_lease_key(msg.cache_key), prestore_key(msg.cache_key)],
            args=[token, lease_seconds]))

    def next_prestore_chunk(self, msg: PrestoreUpload, index: int, token: str,
                            lease_seconds: int) -> tuple[str, bytes | None]:
        answer = self._next_prestore_chunk(
            keys=[prestore_lease_key(msg.cache_key), msg.cache_key, msg.chunk_key(index)],
            args=[token, lease_seconds])
        outcome = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
        return outcome, (bytes(answer[1]) if outcome == "ok" else None)

    def prestore_done(self, msg: PrestoreUpload, token: str, size: int, sha256: str, backend: str,
                      ref: str) -> bool:
        return bool(self._prestore_done(keys=[prestore_lease_key(msg.cache_key), prestore_key(msg.cache_key)],
                                        args=[token, size, sha256, backend, PRESTORE_STATE_TTL, ref]))

    def release_prestore(self, msg: PrestoreUpload, token: str) -> None:
        self._release_prestore(keys=[prestore_lease_key(msg.cache_key)], args=[token])

    def prestore_state(self, cache_key: str) -> tuple[bool, dict[str, str]]:
        """(is a prestore running -- its lease alive --, its outcome: {size, sha256, backend, ref} or {})."""
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(prestore_lease_key(cache_key))
        pipe.hgetall(prestore_key(cache_key))
        running, state = pipe.execute()
        return bool(running), {k.decode(): v.decode() for k, v in state.items()}

    def item_pieces(self, msg: StoreUpload, item: UploadItem) -> Iterator[bytes]:
        """The item's bytes, one cached chunk (or part of one) at a time."""
        for index, start, end in core.item_spans(item, msg.chunk_size):
            key = msg.chunk_key(index)
            data: bytes | None
            if start == 0 and end == msg.chunk_size:
                data = self.r.get(key)
            else:
                data = self.r.getrange(key, start, end - 1) if self.r.exists(key) else None
            if data is None or len(data) != end - start:
                raise StoreFailure(f"chunk {index} of upload {msg.upload_id} is missing from the cache")
            yield data

    def drop(self, msg: StoreUpload) -> None:
        keys = [*uploadkeys.cached_keys(msg.cache_key, msg.chunk_count), prestore_key(msg.cache_key)]
        for start in range(0, len(keys), 1000):
            self.r.delete(*keys[start:start + 1000])


class FileIndex:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.files = db["files"]
        self.audit = db["audit"]
        self._indexed = False
        self._index_lock = threading.Lock()

    def ping(self) -> bool:
        return mongo.ping(self.db)

    def ensure_indexes(self) -> None:
        """Create the collections' indexes once per process, one thread at a time, before the
        consumers' first writes: secantusdb (the tests' MongoDB-wire server) was seen to deadlock
        when ``files`` was created by a createIndexes while another consumer's write created it
        too (or inserted elsewhere), so every consumer write below waits for this first."""
        if self._indexed:
            return
        with self._index_lock:
            if self._indexed:
                return
            self.files.create_index([("owner_id", pymongo.ASCENDING), ("created", pymongo.DESCENDING)])
            self.files.create_index([("upload_id", pymongo.ASCENDING)])
            self.files.create_index([("pool_id", pymongo.ASCENDING), ("created", pymongo.DESCENDING)])
            # Sparse: only the files still waiting for their group are in it (regrouping).
            self.files.create_index([("regroup_at", pymongo.ASCENDING)], sparse=True)
            self.audit.create_index([("time", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)])
            self._indexed = True

    # --- GridFS leftovers of the legacy bucket (the sweeper's) ---------------------------
    def remove_partial(self, file_id: str, bucket: str = "fs") -> bool:
        """Delete what a crashed attempt left in a GridFS bucket (``fs`` unless named: chunks without
        a file doc, or an unindexed file). Whether this call removed anything: of two sweepers
        (replicas) racing for one leftover, the one that finds it gone already answers False."""
        # Deleting the file document and the chunks are two writes, so each of two racing passes
        # may remove a part: a claim document (unique _id) picks the one pass that removes and
        # records it. It is dropped after the removal (a later pass finds nothing left: False);
        # one left by a pass that died holding it is taken over after SWEEP_CLAIM_SECONDS.
        claims = self.db["sweep_claims"]
        claim = file_id if bucket == "fs" else f"{bucket}/{file_id}"  # one id per leftover and bucket
        now = timeutil.now()
        try:
            claims.insert_one({"_id": claim, "at": now})
        except DuplicateKeyError:
            stale = now - timedelta(seconds=SWEEP_CLAIM_SECONDS)
            if not claims.find_one_and_update({"_id": claim, "at": {"$lt": stale}}, {"$set": {"at": now}}):
                return False  # another pass is removing it
        try:
            removed = self.db[f"{bucket}.files"].delete_one({"_id": file_id}).deleted_count
            removed += self.db[f"{bucket}.chunks"].delete_many({"files_id": file_id}).deleted_count
        finally:
            claims.delete_one({"_id": claim, "at": now})
        return removed > 0

    # --- the index ------------------------------------------------------------
    def upsert_stored(self, doc: dict[str, Any]) -> bool:
        """The stored record, unless the file was deleted meanwhile (False): a store racing a
        DELETE never brings a deleted file back. (The filter misses a deleted record, so the
        upsert tries an insert, which its _id refuses.)"""
        try:
            self.files.update_one({"_id": doc["file_id"], "status": {"$ne": core.DELETED}},
                                  {"$set": doc, "$setOnInsert": {"late": False},
                                   "$unset": {"provisional": "", "reason": "", "attempt": ""}},
                                  upsert=True)
        except DuplicateKeyError:
            return False
        return True

    def drop_provisional(self, upload_id: str, keep: list[str]) -> None:
        self.files.delete_many({"upload_id": upload_id, "provisional": True, "_id": {"$nin": keep}})

    def record(self, file_id: str) -> dict[str, Any] | None:
        return self.files.find_one({"_id": file_id})

    def apply_status(self, upload_id: str, owner_id: str, status: str, *, attempt: int | None,
                     reason: str | None, pool_id: str | None, file_name: str | None) -> int:
        """Move the upload's records to ``status`` (never backwards); a provisional record
        makes in-flight and failed uploads visible before (or without) a store."""
        self.ensure_indexes()  # never beside the first createIndexes (see there)
        allowed = core.ALLOWED_FROM.get(status)
        if allowed is None:
            return 0
        fields: dict[str, Any] = {"status": status}
        if attempt is not None:
            fields["attempt"] = attempt
        if reason is not None:
            fields["reason"] = reason
        changed = 0
        if allowed:
            changed = self.files.update_many({"upload_id": upload_id, "status": {"$in": list(allowed)}},
                                             {"$set": fields}).modified_count
        if changed or status not in (contracts.CACHED, contracts.FAILED):
            return changed
        if self.files.find_one({"upload_id": upload_id}, {"_id": 1}) is not None:
            return 0
        try:
            self.files.insert_one({"_id": upload_id, "file_id": upload_id, "upload_id": upload_id,
                                   "owner_id": owner_id, "owner_name": None, "file_name": file_name,
                                   "pool_id": pool_id, "size": None, "sha256": None, "timestamp": None,
                                   "group_id": None, "late": False, "created": timeutil.now_iso(),
                                   "provisional": True, **fields})
            return 1
        except DuplicateKeyError:  # the store (or another notice) got there first
            return 0

    def set_group(self, file_id: str, group_id: str, late: bool) -> int:
        self.ensure_indexes()
        result = self.files.update_one({"_id": file_id}, {"$set": {"group_id": group_id, "late": late},
                                                          "$unset": {"regroup_at": ""}})
        return result.matched_count

    def set_groups(self, file_ids: list[str], group_id: str, late: bool) -> int:
        # One update for a batch's files (FilesGrouped), not one round trip each; idempotent as
        # set_group is (a redelivery sets the same values). At most MAX_ITEMS ids in the $in.
        self.ensure_indexes()
        if not file_ids:
            return 0
        result = self.files.update_many({"_id": {"$in": list(file_ids)}},
                                        {"$set": {"group_id": group_id, "late": late},
                                         "$unset": {"regroup_at": ""}})
        return result.matched_count

    def due_for_regroup(self, now: float, limit: int) -> list[dict[str, Any]]:
        return list(self.files.find({"regroup_at": {"$lte": now}, "status": contracts.UPLOADED})
                    .sort("regroup_at", pymongo.ASCENDING).limit(limit))

    def reschedule_regroup(self, file_id: str, seen: float, next_at: float | None) -> bool:
        update: dict[str, Any] = ({"$set": {"regroup_at": next_at}, "$inc": {"regroups": 1}} if next_at is not None
                                  else {"$unset": {"regroup_at": ""}, "$set": {"never_grouped": True}})
        return self.files.update_one({"_id": file_id, "regroup_at": seen}, update).modified_count == 1

    def mark_deleted(self, file_id: str, actor: str) -> bool:
        result = self.files.update_one({"_id": file_id, "status": {"$ne": core.DELETED}},
                                       {"$set": {"status": core.DELETED, "deleted": timeutil.now_iso(),
                                                 "deleted_by": actor}, "$unset": {"regroup_at": ""}})
        return result.modified_count == 1

    def expired(self, pool_id: str | None, created_before: str, limit: int) -> list[dict[str, Any]]:
        # The (pool_id, created) index answers it; ISO instants (one format, UTC) sort as strings.
        query = {"pool_id": pool_id, "created": {"$lt": created_before}, "status": {"$in": list(core.DELETABLE)}}
        cursor = self.files.find(query).sort([("created", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)])
        return list(cursor.limit(limit))

    def find_files(self, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        cursor = self.files.find(query).sort([("created", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)])
        return list(cursor.limit(limit))

    # --- audit -----------------------------------------------------------------
    def add_audit(self, doc: dict[str, Any]) -> bool:
        self.ensure_indexes()
        try:
            self.audit.insert_one(doc)
            return True
        except DuplicateKeyError:  # a redelivered AuditRecorded: already appended
            return False

    def add_audits(self, docs: list[dict[str, Any]]) -> int:
        """One insert_many for a whole ``AuditsRecorded`` (up to MAX_AUDIT_RECORDS documents).

        Unordered: a redelivered batch (or a record already appended) fails only its own
        documents on the unique ``_id`` and the others are written. Those duplicate-key errors
        (11000) are the only ones ignored: any other write error, or a write concern error,
        raises, so the consumer retries the message (and dead-letters it at the limit)."""
        self.ensure_indexes()
        if not docs:
            return 0
        try:
            return len(self.audit.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            details = exc.details or {}
            if details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY
                                                         for e in details.get("writeErrors", [])):
                raise
            inserted = details.get("nInserted", 0)
            return inserted if isinstance(inserted, int) else 0

    def find_audit(self, query: dict[str, Any], after: tuple[str, str] | None, limit: int) -> list[dict]:
        if after is not None:
            time, audit_id = after
            query = {"$and": [query, {"$or": [{"time": {"$gt": time}},
                                              {"time": time, "_id": {"$gt": audit_id}}]}]}
        cursor = self.audit.find(query).sort([("time", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)])
        return list(cursor.limit(limit))

    # --- leftovers ---------------------------------------------------------------
    def orphan_chunk_files(self, older_than: datetime) -> list[str]:
        """files_ids with GridFS chunks but no file document, whose newest chunk is older
        than ``older_than`` (chunks are written before the file document, so a younger
        set may be a write in progress)."""
        found = []
        for files_id in self.db["fs.chunks"].distinct("files_id"):
            if self.db["fs.files"].find_one({"_id": files_id}, {"_id": 1}) is not None:
                continue
            newest = self.db["fs.chunks"].find_one({"files_id": files_id}, {"_id": 1},
                                                   sort=[("_id", pymongo.DESCENDING)])
            if newest is not None and isinstance(newest["_id"], ObjectId) \
                    and newest["_id"].generation_time < older_than:
                found.append(files_id)
        return found

    def unindexed_files(self, older_than: datetime, bucket: str = "fs") -> list[str]:
        """GridFS files (of bucket ``fs`` unless named) without an index record: a store that
        crashed between the two writes, or a prestore whose upload never got stored.

        Bounded: at most SWEEP_SCAN files (one index look-up each) per call, in (uploadDate, _id)
        order from where the previous call stopped (``sweep_cursors``, shared by the replicas);
        after the newest file older than the grace the next call starts again from the oldest.
        The caller still checks each one (``sweep``): its upload may be waiting to be stored."""
        cursors = self.db["sweep_cursors"]
        mark = cursors.find_one({"_id": bucket})
        query: dict[str, Any] = {"uploadDate": {"$lt": older_than}}
        if mark is not None:
            query = {"$and": [query, {"$or": [{"uploadDate": {"$gt": mark["date"]}},
                                               {"uploadDate": mark["date"], "_id": {"$gt": mark["id"]}}]}]}
        docs = list(self.db[f"{bucket}.files"].find(query, {"_id": 1, "uploadDate": 1})
                    .sort([("uploadDate", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)]).limit(SWEEP_SCAN))
        if len(docs) == SWEEP_SCAN:
            cursors.update_one({"_id": bucket}, {"$set": {"date": docs[-1]["uploadDate"], "id": docs[-1]["_id"]}},
                               upsert=True)
        else:
            cursors.delete_one({"_id": bucket})
        return [doc["_id"] for doc in docs if self.files.find_one({"_id": doc["_id"]}, {"_id": 1}) is None]


SWEEP_SCAN = 5_000  # GridFS files looked at per bucket per sweep pass (one index look-up each)


class StorageCatalog:
    """MongoDB ``storages``: ``{_id: descriptor id, descriptor, secrets: {field: ciphertext}, updated}``.

    Holds only ciphertext (``secretbox``); the plaintext credentials exist in memory alone.
    """

    MAX = 10_000  # storages listed at once (one per distinct location: the default and pools')

    def __init__(self, db: Database) -> None:
        self.docs = db["storages"]

    def save(self, spec_id: str, descriptor: dict[str, Any], secrets: dict[str, str]) -> None:
        self.docs.update_one({"_id": spec_id}, {"$set": {"descriptor": descriptor, "secrets": secrets,
                                                         "updated": timeutil.now_iso()}}, upsert=True)

    def load(self, spec_id: str) -> dict[str, Any] | None:
        return self.docs.find_one({"_id": spec_id})

    def all(self) -> list[dict[str, Any]]:
        return list(self.docs.find({}).sort("_id", pymongo.ASCENDING).limit(self.MAX))

    def recent(self, limit: int) -> list[dict[str, Any]]:
        # "updated" is an ISO-8601 UTC instant of fixed shape: its text order is its time order.
        return list(self.docs.find({}).sort([("updated", pymongo.DESCENDING), ("_id", pymongo.ASCENDING)])
                    .limit(max(0, min(limit, self.MAX))))

    def replace_secrets(self, spec_id: str, old: dict[str, str], new: dict[str, str]) -> bool:
        """Swap the ciphertext only if nobody changed it meanwhile (a concurrent save wins)."""
        result = self.docs.update_one({"_id": spec_id, "secrets": old},
                                      {"$set": {"secrets": new, "updated": timeutil.now_iso()}})
        return result.modified_count == 1


class StagingStatuses:
    """MongoDB ``staging``: one document per (result, target), SPEC "Staging"'s status.

    ``{_id: "<result_id>:<target>", result_id, pool_id, target, kind, status, attempts,
    location?, error?, running_until?, updated}``. Every transition is conditional on the
    state it leaves (status ``pending`` and the attempt count), so a redelivered or
    duplicated command changes nothing twice.
    """

    MAX_PER_RESULT = 64  # status documents read per result (a pool has at most 16 targets)

    def __init__(self, db: Database) -> None:
        self.docs = db["staging"]

    def ensure_indexes(self) -> None:
        self.docs.create_index([("result_id", pymongo.ASCENDING), ("target", pymongo.ASCENDING)])

    def plan(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for doc in docs:
            # $setOnInsert: a redelivered ResultPublished finds its documents and keeps them as they are.
            self.docs.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)
        return self.for_result(docs[0]["result_id"]) if docs else []

    def get(self, result_id: str, target: int) -> dict[str, Any] | None:
        return self.docs.find_one({"_id": f"{result_id}:{target}"})

    def claim(self, result_id: str, target: int, attempt: int, running_until: float,
              updated: str) -> dict[str, Any] | None:
        return self.docs.find_one_and_update(
            {"_id": f"{result_id}:{target}", "status": "pending", "attempts": attempt - 1},
            {"$set": {"attempts": attempt, "running_until": running_until, "updated": updated}},
            return_document=pymongo.ReturnDocument.AFTER)

    def take_over(self, result_id: str, target: int, attempt: int, now: float, running_until: float,
                  updated: str) -> dict[str, Any] | None:
        return self.docs.find_one_and_update(
            {"_id": f"{result_id}:{target}", "status": "pending", "attempts": attempt,
             "running_until": {"$lt": now}},
            {"$set": {"running_until": running_until, "updated": updated}},
            return_document=pymongo.ReturnDocument.AFTER)

    def finish(self, result_id: str, target: int, attempt: int, *, status: str, location: str | None,
               error: str | None, updated: str) -> bool:
        fields: dict[str, Any] = {"status": status, "updated": updated}
        unset: dict[str, Any] = {"running_until": ""}
        if location is not None:
            fields["location"] = location
        if error is not None:
            fields["error"] = error
        else:
            unset["error"] = ""
        result = self.docs.update_one({"_id": f"{result_id}:{target}", "status": "pending", "attempts": attempt},
                                      {"$set": fields, "$unset": unset})
        return result.modified_count == 1

    def for_result(self, result_id: str) -> list[dict[str, Any]]:
        return list(self.docs.find({"result_id": result_id}).sort("target", pymongo.ASCENDING)
                    .limit(self.MAX_PER_RESULT))
