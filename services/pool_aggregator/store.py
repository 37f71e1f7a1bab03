"""The one module owning pool_aggregator's MongoDB collections.

``groups``, ``group_files``, ``group_slices``, ``results``, ``result_counters`` and ``acks``.

Several aggregator processes share these collections, so every state change is
one conditional update whose filter names the state it leaves: of two
processes racing for the same transition exactly one matches, the other sees
``modified_count == 0`` and does nothing. Times are stored as epoch seconds
(floats) so filters are plain number comparisons.

Group document::

    {_id: group_id, pool_id, window_start, window_end (epoch ints), status,
     close_at (window_end + grace), min_contributors, contributors: [owner_id],
     file_count, bytes, late_count, pending: [slice id], created, updated, ready_at, leased_at, lease_expires_at,
     lease_id, lease_expiries, result_claim, result_id, done_at, failed_at, fence}

Group membership (``group_files``), one document per file::

    {_id: file_id, group_id, pool_id, owner_id, timestamp, ts, size, sha256, file_name, late, slice, at, owner}

Recorded slices (``group_slices``): ``{_id: slice id, group_id}``.

Acknowledged results (``acks``), one document per (pool, member)::

    {_id: "<pool_id>:<user_id>", pool_id, user_id, seq, updated}

``seq`` only grows (``$max``): of two gateways writing acks of one member at once, the
higher wins whatever the order. MongoDB keeps it on disk for as long as the pool lives
(months), unlike the gateway's Redis.

Leader leases (``leases``, ``MongoLeaseStore``): ``{_id: name, holder, term, version, released, since, renewed,
expires_at}`` (``expires_at`` only for replicas of the previous version).
The ticker's fencing term (``fences``): ``{_id: "pool_aggregator.ticker", term}``, the highest term
whose takeover stamp began (``fence_live``). A group carries ``fence``, the highest term that
stamped or wrote it, and ``fence_pending`` (a nonce) from its creation or a processor's lease
until it is adopted (see "Fencing" below).

Groups written before ``group_files`` existed carry ``files: [entry]`` instead;
they are still read (see ``files_of`` and ``_legacy_memberships``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import pymongo
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from services.common.leader import LeaseState

from . import core
from .ports import ADDED, CLOSED, UNSETTLED

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# Never read with a group: a legacy group's embedded files, and its slices between steps 2 and 4.
HIDDEN = {"files": 0, "pending": 0}
# The statuses a leader's ticker moves groups out of: a new leader stamps its term on them
# (``fence_live``). A group enters them only by its creation (open) or a processor's lease
# (ready -> processing), and no transition leads from one to the other: see "Fencing".
TICKED = (core.OPEN, core.PROCESSING)
FENCE_TERM_ID = "pool_aggregator.ticker"  # the ``fences`` document holding the ticker's term
ADOPT_PAGE = 1000  # groups adopted per tick by the leader's sweep; the rest at the next tick
# An uncounted membership this old was left by a crash (a live delivery finishes in well under a second).
# The rule for a membership whose owner is not known to be dead (see "Owners" below).
SETTLE_AFTER_SECONDS = 30.0
# Owners (issue 14): a membership names the process that inserted it (``owner``). An uncounted
# membership of a slice this process knows failed before its counters moved is dropped at once;
# one of another process waits SETTLE_AFTER_SECONDS as before (a live process's slice may still
# count it: only time tells). That wait no longer holds the pool's lane: a slice that meets an
# uncounted membership leaves that file out (``UNSETTLED``) and groups the rest; only the
# delivery of that file waits, outside the slice (grouping.py). Before, in the replica kill test,
# a SIGKILLed replica's leftover held 47 files of its pool for 30 s behind one redelivery, and
# their windows closed without them (late).
FAILED_SLICES_KEPT = 4096  # this process's failed slices remembered (see "Owners"); older ones wait the settle time
SETTLE_POLL_SECONDS = 0.1  # how often a redelivery waiting on an uncounted slice looks again
# Memberships per insert_many (step 1 of a slice). secantusdb (the tests' and bench's MongoDB-wire
# server) runs inserts into one collection one at a time: another pool's one-file slice waited
# for a whole 1,000-file insert (0.3-2 s on the loaded bench machine); in chunks it waits for one
# chunk. Measured with bench/grouping_bench.py (README "Grouping").
INSERT_CHUNK = 250
SEQ_LOCKS = 16  # stripes of the in-process numbering lock (assign_seq)
CREATED_MAX_MEMO = 1024  # pools whose last created_max this process remembers (_remember_created_max)
BACKFILL_RANGE = 1000  # results read per turn of ``backfill_created_max`` (documents held at once)


# Fencing the ticker's writes (issue 14). A leader's write carries its term ``t`` and applies
# only to a group whose ``fence`` is set, is <= t, and that is not ``fence_pending``; it sets
# ``fence`` = t. ``fence`` only ever grows: every write of it is conditional on the lower value
# (a fenced write, ``fence_live``) or a ``$max`` (adoption).
#
# A takeover by term T is, in this order: W1 the ``fences`` document's term raised to T ($max),
# W2 ``fence`` raised to T on every group in TICKED (``fence_live``); only then does T tick.
# A group enters TICKED only by E: its creation (``_count_in``, open) or a processor's lease
# (``lease``, ready -> processing; a ``retry`` leads to ready, so through a lease too). E writes
# ``fence_pending`` = a nonce in the same single-document write, so no fenced write applies to
# the group yet. Adoption then reads the ``fences`` term R (after E) and, if the nonce is still
# there, unsets it and raises ``fence`` to R ($max). The writer of E adopts right after it; the
# leader's tick adopts what a writer that died in between left (``adopt_pending``: it reads the
# pending groups, then R, then adopts each by its nonce, so R is still read after that E).
#
# Why an old term t < T cannot move a group G once T's W2 is done. Its write needs G adopted,
# G.fence <= t, and G open or processing. G has had that status (its index key for W2's scan)
# without a break since its last E: open is left only for ready or failed, processing only for
# ready, failed or done, and neither is entered again without an E.
#   - If W2's scan visited G after that E, it raised G.fence to >= T.
#   - Else that E came after the scan had passed G's key (its key stayed in the scanned range
#     from E on), so after W1; the adoption since then (G is adopted, and the nonce pins it to
#     this E) read R after E, after W1: R >= T, so G.fence >= T.
# Either way G.fence >= T > t for good. Unlike a term copied into a new group at its creation,
# there is no moment where a group created just after W2's scan carries an old term: until
# adopted it is nobody's. (Stamping ready groups instead of adopting at the lease would not do:
# a lease moving a group from ready to processing during W2's scan could be missed by it.)
# ``fence_live`` of a stale leader (paused inside its own takeover) only raises fences to its
# lower term (a no-op on what T stamped), and its sweep adopts with the term read from ``fences``.
# A group without ``fence`` (written before this scheme, or by an older replica during a
# rollout) is nobody's either until W2 or ``adopt_pending`` gives it one.


def set_then_read(collection: Collection, query: dict[str, Any], update: dict[str, Any],
                  projection: dict[str, int] | None = HIDDEN, *, upsert: bool = False) -> dict | None:
    """What ``find_one_and_update(..., ReturnDocument.AFTER)`` answers, in two round trips that
    each go by ``_id``: the conditional update decides (its filter names the state it leaves, so
    of two racing writers one matches), then the document is read. secantusdb (development,
    tests, CI) answers findAndModify by scanning the whole collection: 8 ms of its CPU at 1,000
    groups, 36 ms at 5,000, per call, where these two take ~1 ms together (README, "Result
    rate"). The read may already show a later change by another writer; callers publish or
    check what it shows, never undo by it. None when the filter matched nothing."""
    written = collection.update_one(query, update, upsert=upsert)
    if written.matched_count != 1 and written.upserted_id is None:
        return None
    found: dict | None = collection.find_one({"_id": query["_id"]}, projection)
    return found


def fenced(query: dict[str, Any], update: dict[str, Any], fence: int | None) -> None:
    """A leader's write carries its term: the filter refuses it when a higher term wrote the
    document (or stamped it at takeover) or while it is not adopted (see above), and the update
    records the term. ``fence`` None: a write that is not the leader's (a request, a consumer)
    and is not fenced. In place."""
    if fence is None:
        return
    query["fence"] = {"$lte": fence}  # an absent fence matches no term: the group is not adopted
    query["fence_pending"] = {"$exists": False}
    update.setdefault("$set", {})["fence"] = fence


RELEASED = ""  # the holder of a released lease (see MongoLeaseStore.read)


class MongoLeaseStore:
    """``services.common.leader.LeaseStore`` on MongoDB (collection ``leases``).

    Every change is one conditional write, so two replicas racing for the lease cannot both
    get it: a renewal matches its own holder *and* term, a takeover only the very (term,
    version) the contender saw unchanged for a whole lease (and ``$inc``s the term), the first
    lease ever is one insert (unique ``_id``). No time is compared here: ``since`` and
    ``renewed`` are the writers' wall clocks, for people.
    """

    def __init__(self, db: Database) -> None:
        self.leases = db["leases"]

    # A released lease names no holder (RELEASED): a replica of the previous version takes a lease
    # over by its ``expires_at`` alone and sets its own holder without clearing ``released``, so
    # ``released`` with a holder is that replica's live lease, not a released one (read as held,
    # and taken over only once it stops changing for a whole lease).

    def read(self, name: str) -> LeaseState | None:
        doc = self.leases.find_one({"_id": name})
        if doc is None:
            return None
        renewed = doc.get("renewed")
        holder = doc.get("holder")
        released = bool(doc.get("released")) and holder == RELEASED
        return LeaseState(str(holder), int(doc.get("term") or 0), int(doc.get("version") or 0),
                          released, float(renewed) if renewed is not None else None)

    # ``expires_at`` (now + ttl) is written for replicas of the previous version during a rolling
    # update: they take over by comparing it with their own clock; this version never reads it.

    def renew(self, name: str, holder: str, term: int, now: float, ttl: float) -> bool:
        return self.leases.update_one({"_id": name, "holder": holder, "term": term, "released": {"$ne": True}},
                                      {"$inc": {"version": 1},
                                       "$set": {"renewed": now, "expires_at": now + ttl}}).modified_count == 1

    def take(self, name: str, holder: str, seen: LeaseState | None, now: float, ttl: float) -> int | None:
        if seen is None:
            try:
                self.leases.insert_one({"_id": name, "holder": holder, "term": 1, "version": 0, "released": False,
                                        "since": now, "renewed": now, "expires_at": now + ttl})
            except DuplicateKeyError:
                return None  # created by a process racing us
            return 1
        # Exactly what was seen: 0 / None / False also match a lease written before versions existed.
        # (``released`` is not matched: a release bumps the version, and an older replica's takeover
        # leaves it set -- the holder tells them apart, see ``read``.)
        taken = self.leases.find_one_and_update(
            {"_id": name, "holder": seen.holder, "term": seen.term,
             "version": seen.version if seen.version else {"$in": [0, None]}, "renewed": seen.renewed},
            {"$set": {"holder": holder, "version": 0, "released": False, "since": now, "renewed": now,
                      "expires_at": now + ttl},
             "$inc": {"term": 1}},
            return_document=ReturnDocument.AFTER, projection={"term": 1})
        return int(taken["term"]) if taken is not None else None

    def release(self, name: str, holder: str, term: int) -> None:
        self.leases.update_one({"_id": name, "holder": holder, "term": term},
                               {"$set": {"released": True, "holder": RELEASED, "expires_at": 0.0},
                                "$inc": {"version": 1}})

    def get(self, name: str) -> dict | None:
        return self.leases.find_one({"_id": name})


class MongoGroupStore:
    """``ports.GroupStore`` on MongoDB."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.groups = db["groups"]
        self.files = db["group_files"]
        self.slices = db["group_slices"]
        self._legacy: bool | None = None  # any group with embedded files? (asked once)
        self.results = db["results"]
        self.counters = db["result_counters"]
        self.acks = db["acks"]
        self.fences = db["fences"]
        # This process, as the owner of the memberships it inserts (see "Owners").
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Slices of this process that ended with an error before their counters moved (add_files),
        # by id, oldest dropped past FAILED_SLICES_KEPT: their uncounted memberships are leftovers
        # nobody will count. Only a slice known to have failed here counts: one merely absent
        # from a list of running slices may have started a moment later (review).
        self._failed: OrderedDict[str, None] = OrderedDict()
        self._failed_lock = threading.Lock()
        # Numbering results in this process takes turns per pool (assign_seq): SEQ_LOCKS stripes,
        # a pool's always the same one; bounded whatever the number of pools.
        self._seq_locks = [threading.Lock() for _ in range(SEQ_LOCKS)]
        self._memo_lock = threading.Lock()
        self._created_max_memo: dict[str, tuple[int, float]] = {}  # see _remember_created_max

    def ensure_indexes(self) -> None:
        self.groups.create_index([("pool_id", pymongo.ASCENDING), ("status", pymongo.ASCENDING)])
        # Only groups between their creation (or lease) and their adoption: a handful at any time.
        self.groups.create_index([("fence_pending", pymongo.ASCENDING)], sparse=True)
        self.groups.create_index([("status", pymongo.ASCENDING)])
        self.groups.create_index([("files.file_id", pymongo.ASCENDING)])  # legacy embedded files
        self.slices.create_index([("group_id", pymongo.ASCENDING)])
        # _id = file_id is the unique key that makes a file count once; this one lists a group's files.
        self.files.create_index([("group_id", pymongo.ASCENDING), ("ts", pymongo.ASCENDING)])
        self.results.create_index([("result_id", pymongo.ASCENDING)], unique=True)
        self.results.create_index([("pool_id", pymongo.ASCENDING), ("created_ts", pymongo.ASCENDING)])
        self.results.create_index([("pool_id", pymongo.ASCENDING), ("seq", pymongo.ASCENDING)])

    def ping(self) -> bool:
        self.db.command("ping")
        return True


    # --- files into groups -------------------------------------------------
    #
    # A group's files live in ``group_files``, one document per file (``_id`` = file_id, so
    # a file can be in one group only, once): no group outgrows MongoDB's 16 MiB document
    # limit however many files a window gets. The group keeps counters, moved by ``$inc``.
    # Files are added a slice at a time (one slice id for all of them), and the writes are
    # not one transaction, so a slice goes through four steps:
    #   1. its membership documents are inserted (``slice`` = the slice id);
    #   2. one conditional update of the group (accepting only) ``$inc``s the counters and
    #      ``$push``es the slice id to ``pending``;
    #   3. ``group_slices`` records the slice id: its counters are in;
    #   4. the slice id is ``$pull``ed from ``pending``.
    # A membership counts iff its slice is in ``group_slices`` or the group's ``pending``.
    # A crash between steps leaves memberships of an unrecorded slice; the redelivery (the
    # messages were not acked) settles them by the group's ``pending``: there = the $inc
    # happened, record it; not there = it did not, drop them and group the files afresh.
    # ``pending`` holds only slices between steps 2 and 4: at most one per consumer.
    # Per slice: one ordered insert_many per INSERT_CHUNK files (in file-id order, see
    # ``_insert_memberships``) and three single-document writes. A file grouped before (a
    # redelivery) is found by the insert's duplicate key, not by a look-up first: the look-up
    # (``memberships``) runs only after a clash, so a slice of new files (nearly all of them)
    # saves that round trip (bench/grouping_bench.py, README).

    def memberships(self, pool_id: str, file_ids: list[str], now: float) -> dict[str, dict]:
        """``{file_id: {group_id, late}}`` for those of ``file_ids`` already in a group (redeliveries).

        A membership of an unrecorded slice was left by a delivery that crashed, or belongs
        to one still in flight (another consumer got a duplicate). Which one is only known
        by waiting: while it is younger than ``SETTLE_AFTER_SECONDS`` this call waits for
        its slice to be counted (then it is a membership), and past that it is settled as a
        crash's leftover (see above). Answering it as a membership at once would lose the
        file of a consumer killed between steps 1 and 2: its redelivery, a few milliseconds
        later, would find it "grouped" and never count it. The wait is bounded by
        ``SETTLE_AFTER_SECONDS`` of real time; a live delivery finishes in well under a second.
        """
        found: dict[str, dict] = {}
        pending = file_ids = list(file_ids)
        started = time.monotonic()
        while pending:
            waited = time.monotonic() - started
            settled, unsettled = self._memberships_once(pool_id, pending, now + waited)
            found.update(settled)
            if not unsettled:
                break
            if pending is file_ids or len(unsettled) != len(pending):
                # Once per wait (and when it shrinks): a file held up here, by its id (at most 64).
                log.info("memberships_unsettled", extra={"files": len(unsettled), "file_ids": unsettled[:64]})
            pending = unsettled
            time.sleep(SETTLE_POLL_SECONDS)
        missing = [f for f in file_ids if f not in found]
        if missing and self._has_legacy():
            found.update(self._legacy_memberships(pool_id, missing))
        return found

    def _memberships_once(self, pool_id: str, file_ids: list[str], now: float) -> tuple[dict[str, dict], list[str]]:
        """One look: (memberships, file ids whose slice is neither counted nor known to be abandoned)."""
        if not file_ids:
            return {}, []
        docs = list(self.files.find({"_id": {"$in": list(file_ids)}, "pool_id": pool_id},
                                    {"group_id": 1, "late": 1, "slice": 1, "at": 1, "owner": 1}))
        recorded = self._recorded({d.get("slice") for d in docs})
        with self._failed_lock:  # after the reads: a slice fails before it is listed, never after
            failed = {d.get("slice") for d in docs
                      if d.get("owner") == self.instance and d.get("slice") in self._failed}
        found: dict[str, dict] = {}
        unsettled: list[str] = []
        for doc in docs:
            member = {"group_id": doc["group_id"], "late": bool(doc.get("late"))}
            sid = doc.get("slice")
            if sid in recorded:
                found[doc["_id"]] = member
            elif self.groups.count_documents({"_id": doc["group_id"], "pending": sid}, limit=1):
                self._settle(doc["group_id"], sid)  # step 2 happened: counted, record it
                recorded.add(sid)
                found[doc["_id"]] = member
            elif sid not in failed and now - float(doc.get("at") or 0) < SETTLE_AFTER_SECONDS:
                unsettled.append(doc["_id"])  # in flight elsewhere, or its consumer died: wait and see
            else:
                log.info("leftover_membership_dropped", extra={"file_id": doc["_id"], "group_id": doc["group_id"],
                                                                "slice": sid, "owner": doc.get("owner")})
                self.files.delete_many({"slice": sid, "group_id": doc["group_id"]})
        return found, unsettled

    def _recorded(self, sids: set[Any]) -> set[Any]:
        wanted = [s for s in sids if s]
        if not wanted:
            return set()
        return {d["_id"] for d in self.slices.find({"_id": {"$in": wanted}}, {"_id": 1})}

    def _has_legacy(self) -> bool:
        """Whether any group still embeds its files (written before ``group_files``); asked once,
        as no new group embeds files."""
        if self._legacy is None:
            self._legacy = bool(self.groups.count_documents({"files": {"$exists": True}}, limit=1))
        return self._legacy

    def _legacy_memberships(self, pool_id: str, file_ids: list[str]) -> dict[str, dict]:
        """Groups written before ``group_files`` embedded their files (``files: [...]``).

        Such groups are still read (``files_of``) and still recognise a redelivered file;
        no new file is embedded any more.
        """
        wanted = set(file_ids)
        found: dict[str, dict] = {}
        for group in self.groups.find({"pool_id": pool_id, "files.file_id": {"$in": list(wanted)}},
                                      {"files.file_id": 1, "files.late": 1}):
            for entry in group.get("files") or ():
                if entry.get("file_id") in wanted:
                    found[entry["file_id"]] = {"group_id": group["_id"], "late": bool(entry.get("late"))}
        return found

    def add_files(self, *, pool_id: str, window: core.Window, close_grace_seconds: float,
                  min_contributors: int | None, entries: list[dict[str, Any]],
                  now: float) -> tuple[str, dict | None, dict[str, dict]]:
        """Put ``entries`` into the group of ``window``, if it accepts files.

        Returns (ADDED, the group after, present) or (CLOSED, the group, {}) when the group
        no longer accepts files (they go late elsewhere); ``present`` maps the entries grouped
        before (a redelivery, or a concurrent delivery first) to their membership (they were
        not added here).
        """
        gid = core.group_id(pool_id, window.start)
        sid = uuid.uuid4().hex
        present: dict[str, dict] = {}
        if self._has_legacy():  # groups written before group_files: their files are embedded
            present = self._legacy_memberships(pool_id, [e["file_id"] for e in entries])
            entries = [e for e in entries if e["file_id"] not in present]
        docs = sorted(({**e, "_id": e["file_id"], "group_id": gid, "pool_id": pool_id, "slice": sid, "at": now,
                        "owner": self.instance} for e in entries), key=lambda d: d["_id"])
        counting = False
        try:
            present.update(self._insert_memberships(pool_id, docs, now))
            entries = [e for e in entries if e["file_id"] not in present]
            if not entries:
                return ADDED, self.get(gid), present
            counting = True  # from here the group's pending list tells whether the counters moved
            group = self._count_in(gid, sid, pool_id, window, close_grace_seconds, min_contributors, entries, now)
            if group is None:
                self.files.delete_many({"slice": sid})
                return CLOSED, self.get(gid), {}
            self._settle(gid, sid)
            return ADDED, group, present
        except BaseException:
            if not counting:
                # Its memberships, if any were inserted, will never be counted: a leftover to
                # this process's next look (its redelivery), dropped at once (see "Owners").
                with self._failed_lock:
                    self._failed[sid] = None
                    while len(self._failed) > FAILED_SLICES_KEPT:
                        self._failed.popitem(last=False)
            raise

    def _insert_memberships(self, pool_id: str, docs: list[dict[str, Any]], now: float) -> dict[str, dict]:
        """Step 1: insert the slice's memberships (sorted by file id), except files grouped before;
        returns those ``{file_id: membership}``.

        In file-id order, in ordered chunks of INSERT_CHUNK (each stops at its first clash):
        two slices holding some of the same files (a redelivered batch on two replicas at once)
        then meet at their first common file, and the later one waits there (``memberships``)
        for the earlier one to be counted, holding only smaller ids. Inserted unordered, each
        could hold some of the other's files and wait for the other; after SETTLE_AFTER_SECONDS
        each took the other for a crash's leftovers, deleted them and counted every file: files
        counted twice, and memberships deleted by both (found by review, reproduced on
        secantusdb). A clash is answered by one look-up for every file still to insert; a crash's
        leftovers are dropped there (``memberships``) and inserted again. Each round takes at
        least the clashing file out (found) or inserts it; the bound only stops a livelock.
        """
        present: dict[str, dict] = {}
        todo = docs
        for _ in range(2 * len(docs) + 4):
            if not todo:
                return present
            chunk = todo[:INSERT_CHUNK]
            try:
                self.files.insert_many(chunk, ordered=True)
                todo = todo[len(chunk):]
                continue
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", ())
                if not errors or any(err.get("code") != DUPLICATE_KEY for err in errors):
                    raise
                todo = todo[min(int(errors[0].get("index", 0)), len(chunk)):]  # ordered: stopped there
            # Grouped before: by a concurrent delivery (counted or about to be), an earlier one
            # (a redelivery), or a slice that crashed before its counters moved. One look answers
            # what is settled, drops what is known abandoned (inserted again next round), and
            # leaves the rest out of this slice as UNSETTLED: its delivery waits for it outside
            # the slice (grouping.py), not the slice and its pool's lane (see "Owners").
            found, unsettled = self._memberships_once(pool_id, [d["_id"] for d in todo], now)
            present.update(found)
            present.update({f: {"group_id": None, "late": False, UNSETTLED: True} for f in unsettled})
            todo = [d for d in todo if d["_id"] not in present]
        raise RuntimeError(f"could not insert {len(todo)} memberships of {len(docs)}")

    def _count_in(self, gid: str, sid: str, pool_id: str, window: core.Window, close_grace_seconds: float,
                  min_contributors: int | None, entries: list[dict[str, Any]], now: float) -> dict | None:
        """Step 2: the counters of an accepting group (created if need be); None when it stopped accepting."""
        update = {
            "$setOnInsert": {
                "pool_id": pool_id, "window_start": window.start, "window_end": window.end,
                "status": core.OPEN, "close_at": window.end + float(close_grace_seconds or 0),
                "min_contributors": min_contributors or None, "created": now, "lease_expiries": 0,
                "fence_pending": sid,  # an E of "Fencing": nobody's until adopted (below)
            },
            # contributors is a set of owner ids: idempotent ($addToSet), and bounded by the
            # pool's membership, not by its files.
            "$addToSet": {"contributors": {"$each": sorted({e["owner_id"] for e in entries})}},
            "$inc": {"file_count": len(entries), "bytes": sum(int(e["size"]) for e in entries),
                     "late_count": sum(1 for e in entries if e.get("late"))},
            "$push": {"pending": sid},
            "$set": {"updated": now},
        }
        for _ in range(5):
            try:
                doc = set_then_read(self.groups, {"_id": gid, "status": {"$in": list(core.ACCEPTING)}}, update,
                                    upsert=True)
            except DuplicateKeyError:
                existing = self.groups.find_one({"_id": gid}, {"status": 1})
                if existing is None:
                    continue  # deleted in between (tests only); try again
                if existing["status"] not in core.ACCEPTING:
                    return None
                continue  # accepting: a concurrent insert of the same group won; retry
            if doc is None:
                # Seen on secantusdb with ten consumers creating one group at once: the
                # upsert answered no document. Whether it applied is read back, not guessed.
                if self.groups.count_documents({"_id": gid, "pending": sid}, limit=1):
                    doc = self.get(gid)
                    return self._adopt_created(doc, sid) if doc is not None else None
                continue
            return self._adopt_created(doc, sid)
        raise RuntimeError(f"could not add {len(entries)} files to {gid}")

    def _adopt_created(self, doc: dict, sid: str) -> dict:
        """The group this slice created (its nonce is the slice id) is adopted at once; the
        group as it is then. A failed adoption is left to the leader's next tick (``adopt_pending``):
        the files are counted either way."""
        if doc.get("fence_pending") != sid:
            return doc  # created by another slice (which adopts it), or adopted already
        return self._adopt_one(doc, sid)

    def _adopt_one(self, doc: dict, nonce: str) -> dict:
        """Adopt the group ``doc`` that this process just wrote pending with ``nonce``: the term is
        read now, after that write (see "Fencing"). The group after, or ``doc`` when it was adopted
        meanwhile or the adoption failed (the leader's next tick adopts it, ``adopt_pending``)."""
        try:
            term = self.fence_term()
            adopted = set_then_read(self.groups, {"_id": doc["_id"], "fence_pending": nonce},
                                    {"$max": {"fence": term}, "$unset": {"fence_pending": ""}})
        except PyMongoError as exc:
            log.warning("group_adoption_deferred", extra={"group_id": doc["_id"], "error": repr(exc)})
            return doc
        return adopted or doc

    def _settle(self, gid: str, sid: str) -> None:
        """Steps 3 and 4: the slice is recorded as counted; the group forgets it as pending."""
        try:
            self.slices.insert_one({"_id": sid, "group_id": gid})
        except DuplicateKeyError:
            pass  # recorded by a concurrent settle
        self.groups.update_one({"_id": gid}, {"$pull": {"pending": sid}})

    def mark_ready(self, gid: str, now: float, short: bool = False, fence: int | None = None) -> dict | None:
        """open -> ready (``short``: below its quorum); the group as it is now, or None if
        another process (or nothing) moved it, or a newer leader fenced it off."""
        changes: dict[str, Any] = {"status": core.READY, "ready_at": now, "updated": now}
        if short:
            changes["short"] = True
        query: dict[str, Any] = {"_id": gid, "status": core.OPEN}
        update: dict[str, Any] = {"$set": changes}
        fenced(query, update, fence)
        return set_then_read(self.groups, query, update)

    def mark_failed(self, gid: str, now: float, reason: str,
                    from_statuses: tuple[str, ...] = (core.OPEN,), fence: int | None = None) -> dict | None:
        """open (or ``from_statuses``) -> failed with its reason (quorum not met, pool deleted);
        None if it was in none of them (or a newer leader fenced it off)."""
        query: dict[str, Any] = {"_id": gid, "status": {"$in": list(from_statuses)}}
        update: dict[str, Any] = {"$set": {"status": core.FAILED, "reason": reason, "failed_at": now,
                                           "updated": now}}
        fenced(query, update, fence)
        return set_then_read(self.groups, query, update)

    def fence_live(self, term: int) -> int:
        """A new leader's first writes: W1 its term into ``fences`` (what adoptions read from now
        on), then W2 its term on every open and processing group (adopted or not), so no
        write of an older term is accepted on them from now on. How many groups were stamped."""
        for attempt in range(2):  # two first upserts racing: one inserts, the other's $max runs again
            try:
                self.fences.update_one({"_id": FENCE_TERM_ID}, {"$max": {"term": term}}, upsert=True)
                break
            except DuplicateKeyError:
                if attempt:
                    raise  # W2 must not run before W1 is written: the takeover is tried at the next tick
        query: dict[str, Any] = {"status": {"$in": list(TICKED)},
                                 "$or": [{"fence": {"$exists": False}}, {"fence": {"$lt": term}}]}
        return self.groups.update_many(query, {"$set": {"fence": term}}).modified_count

    def fence_term(self) -> int:
        """The ticker's term whose takeover stamp began last (0 before any)."""
        doc = self.fences.find_one({"_id": FENCE_TERM_ID}, {"term": 1})
        return int(doc["term"]) if doc is not None else 0

    def _adopt(self, pending: list[tuple[str, str | None]], term: int) -> int:
        """Adopt groups seen pending *before* ``term`` was read: by their nonce (None: a group
        without any fence, from before this scheme); see "Fencing" above. How many."""
        adopted = 0
        for gid, nonce in pending:
            query: dict[str, Any] = ({"_id": gid, "fence_pending": nonce} if nonce is not None else
                                     {"_id": gid, "fence_pending": {"$exists": False}, "fence": {"$exists": False}})
            adopted += self.groups.update_one(query, {"$max": {"fence": term},
                                                      "$unset": {"fence_pending": ""}}).modified_count
        return adopted

    def adopt_pending(self, limit: int = ADOPT_PAGE) -> int:
        """The leader's sweep: groups whose creator (or leaser) died before adopting them, and
        groups without any fence, are adopted (at most ``limit``, oldest first is not needed:
        the next tick takes the rest). Read first, then the term: the order the proof needs."""
        found = list(self.groups.find({"fence_pending": {"$exists": True}}, {"fence_pending": 1}).limit(limit))
        if len(found) < limit:  # written before this scheme (or by an older replica): no fence at all
            found += self.groups.find({"status": {"$in": list(TICKED)}, "fence": {"$exists": False},
                                       "fence_pending": {"$exists": False}}, {"_id": 1}).limit(limit - len(found))
        if not found:
            return 0
        return self._adopt([(d["_id"], d.get("fence_pending")) for d in found], self.fence_term())

    def retry(self, gid: str, now: float) -> dict | None:
        """failed -> ready with a fresh count of lease expiries; None if it was not failed."""
        return set_then_read(
            self.groups, {"_id": gid, "status": core.FAILED},
            {"$set": {"status": core.READY, "ready_at": now, "updated": now, "lease_expiries": 0},
             "$unset": {"reason": "", "failed_at": ""}, "$inc": {"retries": 1}})

    # --- reading -----------------------------------------------------------

    def get(self, gid: str) -> dict | None:
        return self.groups.find_one({"_id": gid}, HIDDEN)

    def files_of(self, gid: str) -> list[dict]:
        """Counted memberships (their slice recorded or pending) and a legacy group's embedded files."""
        group = self.groups.find_one({"_id": gid}, {"files": 1, "pending": 1}) or {}
        entries = list(group.get("files") or ())
        counted = [d["_id"] for d in self.slices.find({"group_id": gid}, {"_id": 1})]
        counted += list(group.get("pending") or ())
        entries += self.files.find({"group_id": gid, "slice": {"$in": counted}},
                                   {"_id": 0, "group_id": 0, "pool_id": 0, "slice": 0, "at": 0})
        return sorted(entries, key=lambda e: (e.get("ts", 0), e["file_id"]))

    def list_groups(self, pool_id: str, status: str | None = None, limit: int = 1000,
                    after: int | None = None) -> list[dict]:
        """Oldest window first; ``after``: only windows starting after it (the paging cursor)."""
        query: dict[str, Any] = {"pool_id": pool_id}
        if status:
            query["status"] = status
        if after is not None:
            query["window_start"] = {"$gt": after}
        cursor = self.groups.find(query, HIDDEN).sort("window_start", pymongo.ASCENDING)
        return list(cursor.limit(limit))

    def open_groups(self, limit: int = 10000) -> list[dict]:
        return list(self.groups.find({"status": core.OPEN}, HIDDEN).limit(limit))

    def expired_leases(self, now: float, limit: int = 10000) -> list[dict]:
        return list(self.groups.find({"status": core.PROCESSING, "lease_expires_at": {"$lte": now}},
                                     HIDDEN).limit(limit))

    def count_by_status(self) -> dict[str, int]:
        return {status: self.groups.count_documents({"status": status}) for status in core.STATUSES}

    # --- leases ------------------------------------------------------------

    def lease(self, gid: str, now: float, timeout_seconds: float) -> dict | None:
        """ready -> processing with a lease; None when the group was not ready (or another won).
        Back within the ticker's reach (a lease can expire): pending in the same write, then
        adopted like a new group ("Fencing"), so an old term cannot expire this lease."""
        nonce = uuid.uuid4().hex
        group = set_then_read(
            self.groups, {"_id": gid, "status": core.READY},
            {"$set": {"status": core.PROCESSING, "leased_at": now, "lease_expires_at": now + timeout_seconds,
                      "lease_id": uuid.uuid4().hex, "updated": now, "fence_pending": nonce}})
        return self._adopt_one(group, nonce) if group is not None else None

    def extend_lease(self, gid: str, now: float, timeout_seconds: float) -> dict | None:
        """A processing group's lease runs ``timeout_seconds`` from now; None if not processing."""
        return set_then_read(
            self.groups, {"_id": gid, "status": core.PROCESSING},
            {"$set": {"lease_expires_at": now + timeout_seconds, "updated": now}, "$inc": {"lease_renewals": 1}})

    def expire_lease(self, gid: str, lease_id: str | None, target: str, expiries: int, now: float,
                     fence: int | None = None) -> dict | None:
        """processing -> ready/failed, only for the very lease that was seen expired (and not
        fenced off by a newer leader)."""
        update: dict[str, Any] = {"$set": {"status": target, "lease_expiries": expiries, "updated": now},
                                  # A post in flight under this lease loses its claim: its result, if it
                                  # is stored later, is dropped (results.publish_stored_result).
                                  "$unset": {"leased_at": "", "lease_expires_at": "", "lease_id": "",
                                             "result_claim": "", "claimed_at": ""}}
        if target == core.FAILED:
            update["$set"]["failed_at"] = now
            update["$set"]["reason"] = core.LEASE_EXPIRED
        query: dict[str, Any] = {"_id": gid, "status": core.PROCESSING, "lease_id": lease_id}
        fenced(query, update, fence)
        return set_then_read(self.groups, query, update)

    # --- results -----------------------------------------------------------

    def claim_result(self, gid: str, claim: str, now: float) -> dict | None:
        """Hold a processing group for one post before any byte is uploaded: of two posts exactly
        one wins. The status stays ``processing`` (under its lease) until the result exists.

        Returns the group (with this claim: what callers read of it, its window, never changes),
        or None.
        """
        return set_then_read(
            self.groups, {"_id": gid, "status": core.PROCESSING, "result_claim": None, "result_id": None},
            {"$set": {"result_claim": claim, "claimed_at": now, "updated": now}})

    def revert_claim(self, gid: str, claim: str, now: float) -> bool:
        """Let go of a claim whose post failed, so the processor can post again (still processing)."""
        result = self.groups.update_one(
            {"_id": gid, "status": core.PROCESSING, "result_claim": claim},
            {"$set": {"updated": now}, "$unset": {"result_claim": "", "claimed_at": ""}})
        return result.modified_count == 1

    def finish_group(self, gid: str, result_id: str, now: float) -> dict | None:
        """processing -> done with its result_id, only once that result is recorded (has its seq),
        so a reader never sees ``done`` without its result. None if it was finished already."""
        return set_then_read(
            self.groups, {"_id": gid, "status": {"$in": list(core.RESULT_ACCEPTING)}, "result_id": None},
            {"$set": {"status": core.DONE, "result_id": result_id, "done_at": now, "updated": now},
             "$unset": {"result_claim": "", "claimed_at": "", "leased_at": "", "lease_expires_at": "",
                        "lease_id": ""}})

    def insert_result(self, doc: dict[str, Any]) -> None:
        self.results.insert_one({"_id": doc["result_id"], **doc})

    def delete_result(self, result_id: str) -> bool:
        """Drop a result not (yet) stored; False when it was stored meanwhile (then it stays)."""
        return self.results.delete_one({"_id": result_id, "stored": False}).deleted_count == 1

    def get_result(self, result_id: str) -> dict | None:
        return self.results.find_one({"_id": result_id})

    def mark_result_stored(self, result_id: str, now: float, size: int, sha256: str) -> dict | None:
        """Stored: from now on a post's undo no longer deletes it (None if the undo came first)."""
        return set_then_read(self.results, {"_id": result_id},
                             {"$set": {"stored": True, "stored_at": now, "size": size, "sha256": sha256}}, None)

    def mark_result_published(self, result_id: str) -> None:
        self.results.update_one({"_id": result_id}, {"$set": {"published": True}})

    # --- seq: each pool's results numbered 1, 2, 3, ... with no gaps -------
    #
    # ``counters`` holds one document per pool: ``{_id: pool_id, seq: last given, pending}``.
    # Giving a seq takes two writes that are not one transaction (the counter, then the result),
    # so the counter is taken by a compare-and-set that also names the result it is for
    # (``pending``); while ``pending`` is set nobody else can take the counter, and whoever finds
    # it set (after a crash, or a concurrent replica) rolls it forward first: the seq goes to its
    # result, or, if that result is gone or already numbered (a duplicate delivery), the counter
    # steps back. So no seq is ever burnt nor given twice, under replicas, retries and crashes.
    # With its seq a result gets ``created_max``, the highest created_ts of seqs 1..its own (see
    # core.results_since): seq - 1 is numbered by then (the counter was not free before it was),
    # with its created_max in the same write; whoever rolls forward computes the same value.
    # Without seq - 1's (numbered before the field existed) it gets none, until the backfill.

    def assign_seq(self, result_id: str, known: dict | None = None) -> dict | None:
        """The result numbered (the same seq if it already had one); None if it does not exist.

        ``known``: the result as its caller just read or wrote it (spares the first read).
        Numbering in this process holds the pool's stripe lock: its threads take turns instead
        of racing for the counter (a lost compare-and-set costs a re-read and often a roll-forward
        of the winner's seq, each a round trip); other replicas are kept out by the counter's
        compare-and-set, as before. Six round trips (four after a seq this process gave)."""
        doc = known if known is not None and known.get("_id") == result_id else None
        for _ in range(1000):  # bounded: each turn either finishes or lets a competitor finish
            if doc is None:
                doc = self.results.find_one({"_id": result_id})
            if doc is None or doc.get("seq") is not None:
                return doc
            pool_id = doc["pool_id"]
            with self._seq_locks[hash(pool_id) % len(self._seq_locks)]:
                counter = set_then_read(self.counters, {"_id": pool_id}, {"$setOnInsert": {"seq": 0, "pending": None}},
                                        None, upsert=True) or {}
                if counter.get("pending"):
                    self._roll_forward(pool_id, counter["pending"])
                else:
                    last = int(counter.get("seq") or 0)
                    pending = {"result_id": result_id, "seq": last + 1}
                    taken = self.counters.update_one({"_id": pool_id, "seq": last, "pending": None},
                                                     {"$set": {"seq": last + 1, "pending": pending}})
                    if taken.modified_count == 1:
                        numbered = self._roll_forward(pool_id, pending, doc)
                        if numbered is not None:
                            return numbered
            doc = None  # another numbered it, or took the counter first: read it again
        raise RuntimeError(f"could not number result {result_id}")

    def _roll_forward(self, pool_id: str, pending: dict[str, Any], own: dict | None = None) -> dict | None:
        """The pending seq goes to its result, or back to the counter; the numbered result, or
        None when the seq went back. ``own``: the pending result as its numberer read it."""
        rid, seq = pending["result_id"], int(pending["seq"])
        numbered: dict[str, Any] = {"seq": seq}
        high = self._created_max(pool_id, rid, seq, own if own is not None and own.get("_id") == rid else None)
        if high is not None:
            numbered["created_max"] = high
        self.results.update_one({"_id": rid, "seq": None}, {"$set": numbered})
        doc = self.results.find_one({"_id": rid})  # numbered now, or before (then it says so), or gone
        if doc is not None and doc.get("seq") == seq:
            self.counters.update_one({"_id": pool_id, "pending.result_id": rid, "pending.seq": seq},
                                     {"$set": {"pending": None}})
            if isinstance(doc.get("created_max"), int | float):
                self._remember_created_max(pool_id, seq, float(doc["created_max"]))
            return doc
        # gone, or numbered before: this seq goes back (nobody took one since: pending held it)
        self.counters.update_one({"_id": pool_id, "seq": seq, "pending.result_id": rid},
                                 {"$set": {"seq": seq - 1, "pending": None}})
        return None

    def _remember_created_max(self, pool_id: str, seq: int, high: float) -> None:
        """The last (seq, created_max) this process wrote per pool: the next seq's created_max
        needs it, and a seq's created_max never changes once written. Bounded (CREATED_MAX_MEMO
        pools; cleared when full: only a read is lost)."""
        with self._memo_lock:
            if len(self._created_max_memo) >= CREATED_MAX_MEMO and pool_id not in self._created_max_memo:
                self._created_max_memo.clear()
            self._created_max_memo[pool_id] = (seq, high)

    def _created_max(self, pool_id: str, rid: str, seq: int, own_doc: dict | None = None) -> float | None:
        doc = own_doc if own_doc is not None else self.results.find_one({"_id": rid}, {"created_ts": 1}) or {}
        own = doc.get("created_ts")
        if not isinstance(own, int | float):
            return None
        if seq <= 1:
            return float(own)
        with self._memo_lock:
            memo = self._created_max_memo.get(pool_id)
        if memo is not None and memo[0] == seq - 1:
            return max(memo[1], float(own))
        before = self.results.find_one({"pool_id": pool_id, "seq": seq - 1}, {"created_max": 1}) or {}
        high = before.get("created_max")
        return max(float(high), float(own)) if isinstance(high, int | float) else None

    def backfill_created_max(self, pool_id: str, limit: int = 1000000) -> int:
        """One pool's results numbered before ``created_max`` existed get theirs, in seq order;
        answers how many were written. A no-op (one look-up) when the pool's last result has one:
        a result gets it only after every lower seq has it. Bounded per call (``limit`` seqs
        walked). Racing replicas and numberings compute the same values; a result numbered while
        this walks, without one (its seq - 1 was not filled yet), is filled too, as the walk goes
        on to the counter's end -- but for one numbered right after the walk ended (then its pool
        stays on the slower full read until the next pass: never wrong, see core). Runs in the
        background (``results.backfill_created_max``, every BACKFILL_SECONDS), never before
        serving: a start must not wait for a walk over millions of results."""
        counter = self.counters.find_one({"_id": pool_id}) or {}
        last = int(counter.get("seq") or 0) - (1 if counter.get("pending") else 0)
        if last <= 0 or self._created_max_at(pool_id, last) is not None:
            return 0
        high: float | None = None
        written = low = 0
        while low < limit:  # bounded: each turn moves on by what it read, or ends
            before = low
            docs = list(self.results.find({"pool_id": pool_id, "seq": {"$gt": low, "$lte": low + BACKFILL_RANGE}},
                                          {"seq": 1, "created_ts": 1, "created_max": 1})
                        .sort("seq", pymongo.ASCENDING))
            updates = []  # one bulk write per range (one round trip for up to BACKFILL_RANGE results)
            gap = False
            for doc in docs:
                if int(doc["seq"]) != low + 1:
                    gap = True  # a gap (never expected): nothing above is provable
                    break
                created = doc.get("created_ts")
                if isinstance(created, int | float):  # a result without one never matches ``since``
                    high = float(created) if high is None else max(high, float(created))
                if high is not None and doc.get("created_max") != high:
                    updates.append(pymongo.UpdateOne({"_id": doc["_id"], "seq": doc["seq"]},
                                                     {"$set": {"created_max": high}}))
                low += 1
            if updates:
                self.results.bulk_write(updates, ordered=False)
                written += len(updates)
            if gap:
                return written
            if len(docs) < BACKFILL_RANGE:
                counter = self.counters.find_one({"_id": pool_id}, {"seq": 1}) or {}
                if low == before or int(counter.get("seq") or 0) <= low:
                    return written
        return written

    def result_pools(self, limit: int = 100000) -> list[str]:
        """Every pool that numbered a result (its counter), at most ``limit``."""
        return [str(doc["_id"]) for doc in self.counters.find({}, {"_id": 1}).limit(limit)]

    def unnumbered_results(self, limit: int = 100000) -> list[dict]:
        """Stored results written before seq existed, oldest first (for the one-off backfill)."""
        return list(self.results.find({"stored": True, "seq": None}, {"_id": 1, "pool_id": 1})
                    .sort("created_ts", pymongo.ASCENDING).limit(limit))

    def list_results(self, pool_id: str, *, since: float | None = None, after_seq: int = 0,
                     limit: int = 100) -> list[dict]:
        """Numbered results after ``after_seq`` (and created after ``since``), in seq order."""
        if since is not None:
            # Was one open query {pool_id, stored, seq > after_seq, created_ts > since}: a collection
            # scan on secantusdb (~0.5-1 s a page at 10,000 results). Now a binary search of point
            # look-ups on created_max, then bounded seq ranges, as below (core.results_since).
            counter = self.counters.find_one({"_id": pool_id}, {"seq": 1}) or {}
            return core.results_since(since, after_seq, limit, int(counter.get("seq") or 0),
                                      lambda seq: self._created_max_at(pool_id, seq),
                                      lambda low, high: self._seq_range(pool_id, low, high))
        # A pool's seqs are 1, 2, 3, ... with no gap, so the next ``limit`` results are the seq range
        # (after_seq, after_seq + limit]: a bounded range of the (pool_id, seq) index, which
        # secantusdb walks (~25 ms a page of 200 at 10,000 results); with ``stored`` in the filter
        # or an open range it scanned the whole collection (~0.7-1.2 s a page, README "Issue 11").
        # A numbered result is stored (the seq is given after the store), checked here anyway.
        found: list[dict] = []
        low = after_seq
        for _ in range(limit):  # bounded: each turn moves the range on, or ends at the last seq
            high = low + (limit - len(found))
            docs = list(self.results.find({"pool_id": pool_id, "seq": {"$gt": low, "$lte": high}})
                        .sort("seq", pymongo.ASCENDING))
            found += [doc for doc in docs if doc.get("stored")]
            if len(found) >= limit:
                break
            if not docs or int(docs[-1]["seq"]) < high:
                # The range ran past the last result, or (never expected) into a gap: the counter
                # says which; behind a gap the rest comes from the open query, never lost.
                counter = self.counters.find_one({"_id": pool_id}, {"seq": 1}) or {}
                if int(counter.get("seq") or 0) > high:
                    last = int(found[-1]["seq"]) if found else low
                    found += list(self.results.find({"pool_id": pool_id, "stored": True, "seq": {"$gt": last}})
                                  .sort("seq", pymongo.ASCENDING).limit(limit - len(found)))
                break
            low = high
        return found[:limit]

    def _created_max_at(self, pool_id: str, seq: int) -> float | None:
        doc = self.results.find_one({"pool_id": pool_id, "seq": seq}, {"created_max": 1}) or {}
        high = doc.get("created_max")
        return float(high) if isinstance(high, int | float) else None

    def _seq_range(self, pool_id: str, low: int, high: int) -> list[dict]:
        return list(self.results.find({"pool_id": pool_id, "seq": {"$gt": low, "$lte": high}})
                    .sort("seq", pymongo.ASCENDING))

    def last_seq(self, pool_id: str) -> int:
        """The highest seq a reader can see in the pool (0 before its first result)."""
        doc = self.results.find_one({"pool_id": pool_id, "stored": True, "seq": {"$ne": None}}, {"seq": 1},
                                    sort=[("seq", pymongo.DESCENDING)])
        return int(doc["seq"]) if doc is not None else 0

    # --- acks: the last seq each member acknowledged, per pool -------------

    def ack(self, pool_id: str, user_id: str, seq: int, now: float) -> int:
        """Move the member's ack forward to ``seq`` (never back); answers the ack after the write."""
        doc = set_then_read(
            self.acks, {"_id": f"{pool_id}:{user_id}"},
            {"$max": {"seq": seq, "updated": now}, "$setOnInsert": {"pool_id": pool_id, "user_id": user_id}},
            None, upsert=True)
        return int(doc["seq"]) if doc is not None else seq  # an upsert answers the document it wrote

    def acked(self, pool_id: str, user_id: str) -> int | None:
        """The member's acknowledged seq, or None when it never acknowledged one."""
        doc = self.acks.find_one({"_id": f"{pool_id}:{user_id}"}, {"seq": 1})
        return int(doc["seq"]) if doc is not None else None
