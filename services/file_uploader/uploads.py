"""Uploads: start or resume, write a chunk, complete, release, describe, a whole HTTP upload.

The socket gateway (through the internal routes) and ``POST /file/upload`` go
through the same ``UploadService`` use cases, so both get the same checks. It
depends on the ``ports.UploadCache`` Protocol and a ``Publisher``, not on Redis
or pika: ``services.common.testing.file_uploader`` runs it in memory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import IO, Any

from services.common import contracts, errors, httpkit, messaging, timeutil, validation
from services.common.audit import AuditTrail
from services.common.contracts import FileStatusChanged, PrestoreUpload, StoreUpload, UploadItem
from services.common.errors import ApiError
from services.common.httpkit import ServiceMetrics

from . import core
from .config import Settings
from .pools import DefaultPolicies
from .ports import CACHED, CANCELLED, UPLOADING, Broker, PoolPolicy, UploadCache

log = logging.getLogger(__name__)

# A completer publishes its StoreUpload within milliseconds of turning the session cached
# (a confirmed publish); one still unpublished after this long died in between.
REPUBLISH_AFTER_SECONDS = 5.0
REPUBLISH_CLAIM_SECONDS = 30  # one replica re-publishes; another may try once this has passed


class UploaderMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.base = metrics
        self.started = metrics.counter("uploads_started_total", "uploads started")
        self.completed = metrics.counter("uploads_completed_total", "uploads completed (cached)")
        self.failed = metrics.counter("uploads_failed_total", "uploads dropped", ("reason",))
        self.bytes = metrics.counter("upload_bytes_received_total", "chunk bytes received (new chunks)")
        self.chunk_latency = metrics.histogram("upload_chunk_write_seconds", "chunk write latency",
                                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                        0.5, 1, 2.5))
        self.retries = metrics.counter("upload_store_retries_total", "store retries scheduled")
        self.overloaded = metrics.counter("upload_overloaded_total", "requests refused as overloaded")
        self.audit_lost = metrics.counter("audit_write_lost_total",
                                          "audit records that could not be published")


class StreamingHashes:
    """Per-upload sha256 advanced as contiguous chunks arrive, so completion needs no second read.

    In-process and bounded (LRU): a state that is missing (another process took
    the upload over, or it was evicted) or behind (chunks came out of order) is
    finished at completion from the chunks in Redis. The tus door advances it by
    parts of a chunk (``advance_part``: each PATCH's bytes once Redis kept them), so
    a state may stand inside chunk ``next_index`` (``part`` bytes of it hashed);
    one that is still inside a chunk at completion is not used (hashed again from
    the start), since a chunk boundary is where completion can go on from Redis.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._states: OrderedDict[str, tuple[Any, int, int]] = OrderedDict()  # id -> (hasher, next_index, part)

    def advance(self, upload_id: str, index: int, data: bytes) -> None:
        self.advance_part(upload_id, index, 0, data, len(data))

    def advance_part(self, upload_id: str, index: int, at: int, data: bytes, chunk_length: int) -> None:
        """``data`` is chunk ``index``'s bytes from ``at`` on; the chunk is ``chunk_length`` long."""
        with self._lock:
            state = self._states.get(upload_id)
            if state is None:
                if index != 0 or at != 0:
                    return
                state = (hashlib.sha256(), 0, 0)
            hasher, expected, part = state
            if index != expected or at != part:
                return  # a rewrite of an earlier chunk, or out of order: completion catches up
            hasher.update(data)
            part += len(data)
            self._states[upload_id] = (hasher, expected + 1, 0) if part >= chunk_length else (hasher, expected, part)
            self._states.move_to_end(upload_id)
            while len(self._states) > self.capacity:
                self._states.popitem(last=False)

    def take(self, upload_id: str) -> tuple[Any, int]:
        """The state to finish (removed from the table): ``(hasher, next_index)``."""
        with self._lock:
            state = self._states.pop(upload_id, None)
        if state is None or state[2]:
            return hashlib.sha256(), 0
        hasher, index, _ = state
        return hasher.copy(), index

    def restore(self, upload_id: str, hasher: Any, index: int) -> None:
        with self._lock:
            self._states[upload_id] = (hasher, index, 0)

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._states.pop(upload_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._states)


class LoadGauge:
    """Is the pipeline overloaded? Measured at most once per ``interval``; the answer is cached.

    Asked on every start and every chunk. Measuring means a passive queue declare on
    the broker plus Redis INFO and the pending-bytes hash: per chunk that would double
    a chunk's round trips, so one measurement a second serves every request of the
    process. A second of staleness lets at most a second of chunks past a threshold,
    which the thresholds' headroom (Redis maxmemory above MAX_REDIS_MEMORY_BYTES)
    absorbs. One thread measures at a time; the others answer from the last
    measurement meanwhile, so a slow broker or Redis does not queue every chunk
    behind the measurement.
    """

    def __init__(self, settings: Settings, store: UploadCache, broker: Broker, interval: float = 1.0) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.interval = interval
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._measuring = False
        self._reasons: list[str] = []

    def _measure(self) -> list[str]:
        depth = memory = pending = None
        try:
            depth = self.broker.queue_depths([messaging.STORE_QUEUE.name])[messaging.STORE_QUEUE.name]
        except Exception as exc:  # noqa: BLE001 - unknown depth does not refuse uploads; /ready reports it
            log.warning("store queue depth unknown", extra={"error": repr(exc)})
        try:
            memory = self.store.used_memory()
            pending = self.store.pending_bytes()
        except Exception as exc:  # noqa: BLE001
            log.warning("redis load unknown", extra={"error": repr(exc)})
        s = self.settings
        return core.overload_reasons(queue_depth=depth, max_queue_depth=s.max_store_queue_depth,
                                     redis_memory=memory, max_redis_memory=s.max_redis_memory_bytes,
                                     pending_bytes=pending, max_pending_bytes=s.max_pending_bytes)

    def reasons(self) -> list[str]:
        with self._lock:
            now = time.monotonic()
            if self._measuring or now - self._checked < self.interval:
                return list(self._reasons)
            self._measuring = True
        try:
            reasons = self._measure()
        finally:
            with self._lock:
                self._measuring = False
                self._checked = now
        with self._lock:
            self._reasons = reasons
        return list(reasons)


def _store_command(session: dict[str, Any], sha256: str, cache_key: str) -> StoreUpload:
    items = tuple(UploadItem(**i) for i in session["items"])
    return StoreUpload(
        upload_id=session["upload_id"], owner_id=session["owner_id"], owner_name=session["owner_name"],
        file_name=session["file_name"], size=session["size"], sha256=sha256,
        content_type=session["content_type"], chunk_size=session["chunk_size"],
        chunk_count=session["chunk_count"], cache_key=cache_key, items=items, created=session["created"],
        pool_id=session["pool_id"], metadata=session["metadata"], attempt=1, kind=session["kind"],
        group_id=session["group_id"],
    )


class UploadService:
    def __init__(self, settings: Settings, store: UploadCache, broker: Broker, metrics: UploaderMetrics,
                 audit: AuditTrail | None = None, hashes: StreamingHashes | None = None,
                 pools: PoolPolicy | None = None) -> None:
        self.settings = settings
        self.pools = pools or DefaultPolicies()
        self.limits = settings.limits
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.audit = audit or AuditTrail(broker, "file_uploader", metrics.audit_lost)
        self.hashes = hashes or StreamingHashes()
        self.load = LoadGauge(settings, store, broker)

    # --- helpers -------------------------------------------------------------
    def _overloaded(self, message: str) -> ApiError:
        self.metrics.overloaded.inc()
        return ApiError(429, "overloaded", message, retry_after=self.settings.overload_retry_after)

    def _quota_exceeded(self) -> ApiError:
        quota = self.settings.user_quota_bytes
        return ApiError(413, "quota_exceeded", f"this upload would pass your storage quota of {quota} bytes",
                        quota=quota)

    def budget_full(self) -> ApiError:
        """A chunk refused by the owner's cached-bytes budget (MAX_CACHED_BYTES_PER_USER)."""
        return self._overloaded(f"at most {self.settings.max_cached_bytes_per_user} bytes of your uploads may "
                                "wait in the cache; try again once earlier uploads are stored")

    def check_load(self) -> None:
        reasons = self.load.reasons()
        if reasons:
            # Queue depths and memory figures are for operators (logs, /metrics), not for users.
            log.warning("overloaded: refusing uploads", extra={"reasons": "; ".join(reasons)})
            raise self._overloaded("the service is busy; try again later")

    def _session(self, file_id: str, owner_id: str) -> dict[str, Any]:
        session = self.store.session(file_id) if validation.optional_id(file_id, "file_id") else None
        # Another owner's upload answers like an unknown one: ids are not to be probed.
        if session is None or session["owner_id"] != str(owner_id):
            raise ApiError(404, "not_found", "no such upload")
        return session

    def _drop(self, session: dict[str, Any], reason: str) -> None:
        self.store.drop(session["upload_id"], session["chunk_count"], session["owner_id"])
        self.hashes.forget(session["upload_id"])
        self.metrics.failed.labels(reason).inc()

    # --- start / resume --------------------------------------------------------
    def start(self, payload: dict[str, Any], *, owner_id: str, owner_name: str, writer: str,
              lock: bool = True, tomb: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
        """``lock`` False: the new upload is left unlocked (the tus door's creation: each PATCH
        takes the lock for itself). ``tomb``: more fields for the status tombstone."""
        if not owner_id or not writer:
            raise errors.bad_request("owner_id and writer are required")
        if payload.get("file_id"):
            return self.resume(str(payload["file_id"]), owner_id=owner_id, writer=writer), 200
        self.check_load()
        upload_id = uuid.uuid4().hex
        now = timeutil.now()
        plan = core.plan_upload(payload, upload_id=upload_id, owner_id=str(owner_id),
                                owner_name=str(owner_name or owner_id), limits=self.limits,
                                now=timeutil.iso(now))
        if plan.pool_id and plan.kind == "file":
            # SPEC: an update older than its pool's max_late_seconds is refused, every item of a
            # batch included (a processor's result is stamped now: it has no such rule).
            core.check_not_late(plan, self.pools.max_late_seconds(plan.pool_id), now)
        # The slot, the quota reservation and the session at once (one round trip).
        outcome = self.store.start_upload(plan, writer if lock else None, limit=self.limits.max_uploads_per_user,
                                          quota=self.settings.user_quota_bytes, tomb=tomb)
        if outcome == "slots":
            raise self._overloaded(f"at most {self.limits.max_uploads_per_user} unfinished uploads per user")
        if outcome == "quota":
            raise self._quota_exceeded()
        self._prestore(plan)
        self.metrics.started.inc()
        self.audit.record("upload_started", actor=plan.owner_id, file_id=upload_id, pool_id=plan.pool_id,
                          size=plan.size, file_name=plan.file_name, items=len(plan.items))
        return {"file_id": upload_id, "chunk_size": plan.chunk_size}, 201

    def resume(self, file_id: str, *, owner_id: str, writer: str,
               session: dict[str, Any] | None = None) -> dict[str, Any]:
        """``session``: the caller (the tus door, on every PATCH) has just read the session and
        taken the writer lock itself; neither is done twice (two Redis round trips per PATCH)."""
        if session is None or session["owner_id"] != str(owner_id):
            session = self._session(file_id, owner_id)
            acquired = False
        else:
            acquired = True
        if session["status"] != UPLOADING:
            raise errors.conflict("the upload is already complete")
        # A new writer takes over only when the previous one released or let its lock expire.
        if not acquired and not self.store.acquire_writer(file_id, writer):
            raise errors.conflict("another connection is writing this upload")
        # The slot is normally still there (it lives as long as the upload); taking it again
        # is idempotent and refreshes it, and counts an upload whose slot was lost.
        if not self.store.open_slot(session["owner_id"], file_id, self.limits.max_uploads_per_user):
            self.store.release_writer(file_id, writer)
            raise self._overloaded(f"at most {self.limits.max_uploads_per_user} unfinished uploads per user")
        if not self.store.reserve(session["owner_id"], file_id, session["size"], self.settings.user_quota_bytes):
            self.store.release_writer(file_id, writer)
            raise self._quota_exceeded()
        self.store.touch(file_id, session["chunk_count"], self.settings.upload_ttl_seconds)
        have = self.store.existing_chunks(file_id, session["chunk_count"])
        # pool_id: the gateway checks that the writer still contributes to the upload's pool
        # (it does not forward it to the client).
        return {"file_id": file_id, "chunk_size": session["chunk_size"], "pool_id": session["pool_id"],
                "missing": core.missing_indexes(session["chunk_count"], have)}

    def _prestore(self, plan: core.UploadPlan) -> None:
        """Ask file_service_manager to store the file while its chunks arrive (PrestoreUpload).

        Only an upload of several chunks that is one file (a batch's items are stored
        one by one, after the last chunk); a one-chunk file is stored at completion as
        fast as it could be prestored. Best effort: without it the StoreUpload writes
        the bytes, just later, so a broker refusing it refuses no upload.
        """
        items = plan.items
        if plan.chunk_count < 2 or len(items) != 1 or items[0].file_id != plan.upload_id \
                or items[0].offset != 0 or items[0].length != plan.size:
            return
        try:
            self.broker.publish(PrestoreUpload(
                upload_id=plan.upload_id, cache_key=self.store.cache_key(plan.upload_id), size=plan.size,
                chunk_size=plan.chunk_size, chunk_count=plan.chunk_count, content_type=plan.content_type,
                file_name=plan.file_name, pool_id=plan.pool_id))
        except messaging.PublishError as exc:
            log.warning("prestore not requested", extra={"file_id": plan.upload_id, "error": repr(exc)})

    # --- chunks ----------------------------------------------------------------
    def write_chunk(self, file_id: str, raw_index: Any, data: bytes, *, owner_id: str, writer: str,
                    chunk_sha256: str | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        session = self._session(file_id, owner_id)
        if session["status"] != UPLOADING:
            raise errors.conflict("the upload is already complete")
        index = core.parse_index(raw_index)
        core.check_chunk(session["size"], session["chunk_size"], index, len(data))
        declared = validation.optional_sha256(chunk_sha256)
        if declared and hashlib.sha256(data).hexdigest() != declared:
            raise errors.bad_request(f"chunk {index} does not match its sha256; it was not stored")
        if not writer or not self.store.refresh_writer(file_id, writer):
            raise errors.conflict("this connection does not hold the upload's writer lock; "
                                "send start-transfer with the file_id to resume")
        items = [UploadItem(**i) for i in session["items"]]
        for parts in core.heads_touching_chunk(items, index, session["chunk_size"]):
            # A head crossing into a chunk not written yet is sniffed when that chunk
            # arrives (it then sees this one), and again at completion.
            self._sniff(session, parts, index, data)
        # Every chunk, not only the start, passes the overload check: an upload started
        # before Redis filled up must not go on filling it (the answer is cached, see LoadGauge).
        self.check_load()
        budget = self.settings.max_cached_bytes_per_user
        outcome = self.store.put_chunk(file_id, index, data, owner_id=session["owner_id"], max_owner_bytes=budget)
        if outcome == "gone":
            raise ApiError(404, "not_found", "no such upload")
        if outcome == "full":
            raise self.budget_full()
        if outcome == "different":
            raise errors.conflict(f"chunk {index} was already received with different bytes")
        if outcome == "new":
            self.metrics.bytes.inc(len(data))
        self.hashes.advance(file_id, index, data)
        received = self.store.received_count(file_id)
        self.metrics.chunk_latency.observe(time.perf_counter() - started)
        return {"file_id": file_id, "index": index, "received": received}

    def cancel(self, file_id: str, *, owner_id: str) -> dict[str, Any]:
        """SPEC's cancel-upload: an unfinished upload's bytes are dropped and its slot freed.

        Any connection of the owner may cancel (the writer lock guards writes, not the
        owner's decision). A completed upload is already on its way to storage: 409.
        """
        session = self._session(file_id, owner_id)
        if session["status"] != UPLOADING or not self.store.mark_cancelled(file_id):
            # Completed (or completing right now: mark_cached won the switch) is on its way to storage.
            raise errors.conflict("the upload is complete; it can no longer be cancelled")
        self._drop(session, "cancelled")
        self.store.set_status(file_id, CANCELLED)
        self.audit.record("upload_cancelled", actor=session["owner_id"], file_id=file_id,
                          pool_id=session["pool_id"], outcome="cancelled")
        return {"file_id": file_id, "status": CANCELLED}

    def _sniff(self, session: dict[str, Any], parts: list[core.HeadPart], index: int | None = None,
               data: bytes = b"") -> bool:
        """Sniff one item head (chunk ``index`` given as ``data``, other parts read from the
        cache); False when a part is not in the cache yet. An executable is refused and
        never kept, not even as a resumable upload."""
        pieces = []
        for chunk, start, end in parts:
            piece = data[start:end] if chunk == index else self.store.read_range(session["upload_id"], chunk,
                                                                                  start, end)
            if piece is None:
                return False
            pieces.append(piece)
        try:
            core.check_content(b"".join(pieces))
        except ApiError:
            self._drop(session, "forbidden_type")
            self.audit.record("upload_refused", actor=session["owner_id"], file_id=session["upload_id"],
                              outcome="refused", reason="forbidden_type")
            raise
        return True

    def check_head(self, session: dict[str, Any], head: bytes) -> None:
        """Sniff the first bytes of a file before a whole chunk 0 exists (the tus door keeps a
        partial chunk): an executable is refused and dropped, as at chunk 0."""
        self._sniff(session, [(0, 0, len(head))], 0, head)

    def release(self, file_id: str, writer: str) -> bool:
        validation.optional_id(file_id, "file_id")
        return self.store.release_writer(file_id, writer)

    def describe(self, file_id: str, owner_id: str) -> dict[str, Any]:
        session = self.store.session(file_id) if validation.optional_id(file_id, "file_id") else None
        if session is None:
            tomb = self.store.status(file_id)
            if tomb and tomb.get("owner_id") == str(owner_id):
                return {"file_id": file_id, "status": tomb["status"], "received": [], "missing": []}
            raise ApiError(404, "not_found", "no such upload")
        if session["owner_id"] != str(owner_id):
            raise ApiError(404, "not_found", "no such upload")
        have = self.store.existing_chunks(file_id, session["chunk_count"])
        tomb = self.store.status(file_id) or {}
        return {"file_id": file_id, "status": tomb.get("status", session["status"]), "pool_id": session["pool_id"],
                "size": session["size"],
                "chunk_size": session["chunk_size"], "chunk_count": session["chunk_count"],
                "received": sorted(have), "missing": core.missing_indexes(session["chunk_count"], have)}

    # --- completion --------------------------------------------------------------
    def _whole_sha256(self, session: dict[str, Any]) -> str:
        upload_id = session["upload_id"]
        hasher, index = self.hashes.take(upload_id)
        for i in range(index, session["chunk_count"]):
            data = self.store.read_chunk(upload_id, i)
            if data is None:
                raise errors.conflict("a chunk disappeared while completing", missing=[i])
            hasher.update(data)
        return hasher.hexdigest()

    def complete(self, file_id: str, *, owner_id: str, writer: str | None,
                 written: dict[str, Any] | None = None) -> dict[str, Any]:
        """``written``: the session of an upload whose every chunk the caller has just written
        itself, holding the writer lock (the tus door's last PATCH: its scripts checked the lock
        and each chunk). The session read and the lock check are then not done again (two Redis
        round trips per file); the chunks' existence still is (one pipelined look: a chunk written
        earlier may be gone). The transition to cached still happens once only (``mark_cached``
        checks the status in Redis)."""
        if written is not None:
            return self._complete(written, file_id, writer, check=False)
        session = self.store.session(file_id) if validation.optional_id(file_id, "file_id") else None
        if session is None:
            tomb = self.store.status(file_id)
            if tomb and tomb.get("owner_id") == str(owner_id):
                if tomb["status"] == contracts.FAILED:
                    raise errors.conflict("the upload failed; start it again")
                if tomb["status"] == CANCELLED:
                    raise errors.conflict("the upload was cancelled; start it again")
                if tomb["status"] != UPLOADING:
                    return {"file_id": file_id, "status": CACHED}
            raise ApiError(404, "not_found", "no such upload")
        if session["owner_id"] != str(owner_id):
            raise ApiError(404, "not_found", "no such upload")
        if session["status"] == CACHED:
            if session.get("published") == "0":
                return self._publish_again(session, file_id)
            return {"file_id": file_id, "status": CACHED}  # idempotent: already published once
        return self._complete(session, file_id, writer, check=True)

    def _complete(self, session: dict[str, Any], file_id: str, writer: str | None, *, check: bool) -> dict[str, Any]:
        count = session["chunk_count"]
        if check:
            current = self.store.writer(file_id)
            if current is not None and current != writer:
                raise errors.conflict("another connection is writing this upload")
        # Always (one pipelined look): a chunk written earlier may be gone by now (Redis evicted
        # it, a failover lost it); published without it, the store would fail the upload where
        # a 409 lets the client send it again (review: the tus door's shortcut had skipped this).
        have = self.store.existing_chunks(file_id, count)
        missing = core.missing_indexes(count, have)
        if missing:
            raise errors.conflict(f"{len(missing)} chunk(s) missing", missing=missing[:1000])
        for parts in core.straddling_heads([UploadItem(**i) for i in session["items"]], session["chunk_size"]):
            if not self._sniff(session, parts):
                raise errors.conflict("a chunk disappeared while completing", missing=[parts[-1][0]])
        sha256 = self._whole_sha256(session)
        if session["sha256"] and session["sha256"] != sha256:
            # Corrupt data: nothing to resume from, the bytes do not make the declared file.
            self._drop(session, "sha256_mismatch")
            raise errors.bad_request("sha256 mismatch: the received bytes do not match the declared sha256")
        self.store.touch(file_id, count, self.settings.cached_ttl_seconds)
        # The session turns cached *before* the StoreUpload is published (so of two completes
        # exactly one publishes), marked unpublished until the broker confirms: a replica killed
        # between the two leaves ``published`` "0", and the client's next complete publishes it
        # (``_publish_again``) instead of answering cached for an upload nobody will store.
        if not self.store.mark_cached(file_id, session["size"], owner_id=session["owner_id"], sha256=sha256,
                                      now=time.time()):
            return {"file_id": file_id, "status": CACHED}  # a concurrent complete won the transition
        command = _store_command(session, sha256, self.store.cache_key(file_id))
        try:
            self.broker.publish(command)
        except messaging.PublishError:
            # Not accepted by the broker: back to uploading so the client's retry publishes it.
            self.store.unmark_cached(file_id, owner_id=session["owner_id"])
            raise ApiError(503, "unavailable",
                          "the store queue is unavailable; complete again later") from None
        self._cached(session, file_id, sha256)
        return {"file_id": file_id, "status": CACHED}

    def _publish_again(self, session: dict[str, Any], file_id: str) -> dict[str, Any]:
        """A cached upload whose StoreUpload was never confirmed: its completer died between the
        transition and the publish (a SIGKILLed replica). Published again, by one replica at a
        time (a claim in Redis). A completer that was only slow (past REPUBLISH_AFTER_SECONDS)
        makes it a duplicate, which file_service_manager stores once (keyed by file_id)."""
        age = time.time() - float(session.get("cached_at") or 0)
        if age < REPUBLISH_AFTER_SECONDS or not self.store.claim_republish(file_id, REPUBLISH_CLAIM_SECONDS):
            raise errors.overloaded("the upload is being completed; complete it again shortly", retry_after=1)
        sha256 = session.get("cached_sha256") or self._whole_sha256(session)
        try:
            self.broker.publish(_store_command(session, sha256, self.store.cache_key(file_id)))
        except messaging.PublishError:
            raise ApiError(503, "unavailable", "the store queue is unavailable; complete again later") from None
        log.warning("store command published again", extra={"file_id": file_id, "age": round(age, 1)})
        self._cached(session, file_id, sha256)
        return {"file_id": file_id, "status": CACHED}

    def _cached(self, session: dict[str, Any], file_id: str, sha256: str) -> None:
        """After the StoreUpload is confirmed: published, the status, the slot, the notice, the audit."""
        self.store.published(file_id, owner_id=session["owner_id"], sha256=sha256)
        self.notify(FileStatusChanged(file_id=file_id, owner_id=session["owner_id"], status=contracts.CACHED,
                                       pool_id=session["pool_id"], file_name=session["file_name"]))
        self.metrics.completed.inc()
        self.audit.record("upload_completed", actor=session["owner_id"], file_id=file_id,
                          pool_id=session["pool_id"], size=session["size"], sha256=sha256,
                          file_name=session["file_name"])

    def notify(self, event: FileStatusChanged) -> None:
        try:
            self.broker.publish(event)
        except messaging.PublishError as exc:  # a notice, not the data: the store goes on
            log.error("status notice lost", extra={"file_id": event.file_id, "error": repr(exc)})

    # --- plain HTTP uploads --------------------------------------------------------
    def upload_stream(self, stream: IO[bytes], size: int, payload: dict[str, Any], *, owner_id: str,
                      owner_name: str) -> str:
        """Feed a (spooled) multipart file part through the chunk pipeline, chunk_size at a time."""
        writer = f"http-{uuid.uuid4().hex}"
        body, _ = self.start({**payload, "size": size, "file_id": None}, owner_id=owner_id,
                             owner_name=owner_name, writer=writer)
        file_id = body["file_id"]
        chunk_size = body["chunk_size"]
        try:
            for index in range(core.chunk_count(size, chunk_size)):
                want = core.chunk_length(size, chunk_size, index)
                data = httpkit.read_exactly(stream, want)
                if len(data) != want:
                    raise errors.bad_request("the file part ended early")
                self.write_chunk(file_id, index, data, owner_id=owner_id, writer=writer)
            self.complete(file_id, owner_id=owner_id, writer=writer)
        except BaseException:
            session = self.store.session(file_id)
            if session is not None and session["status"] == UPLOADING:
                self._drop(session, "http_upload_aborted")
            raise
        return file_id

    # --- status updates (PUT /file/update/status) ---------------------------------
    def update_status(self, file_id: Any, status: Any) -> dict[str, Any]:
        if status not in (contracts.UPLOADED, contracts.FAILED):
            raise errors.bad_request(f"status must be {contracts.UPLOADED} or {contracts.FAILED}")
        if not isinstance(file_id, str) or not validation.optional_id(file_id, "file_id"):
            raise errors.bad_request("file_id is required")
        tomb = self.store.status(file_id)
        if tomb is None:
            raise ApiError(404, "not_found", "no such upload")
        self.store.set_status(file_id, status)
        if status == contracts.FAILED:
            session = self.store.session(file_id)
            if session is not None:
                self._drop(session, "marked_failed")
            self.store.give_back(tomb["owner_id"], file_id)  # not stored: its bytes leave the quota (once)
        self.broker.publish(FileStatusChanged(file_id=file_id, owner_id=tomb["owner_id"], status=status,
                                              pool_id=tomb.get("pool_id") or None,
                                              file_name=tomb.get("file_name") or None))
        return {"file_id": file_id, "status": status}
