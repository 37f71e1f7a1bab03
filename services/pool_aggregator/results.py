"""Results: a processor posts one per group (claim, relay, record, complete, wait until stored,
or undo all); a stored result is numbered, finishes its group and is announced once; members page them.

Posting in small steps, each named for what it does:

1. ``check_request``: name, checksum and length from the headers (nothing read yet);
2. ``check_group``: the group exists in this pool and can take a result;
3. ``claim``: the group (leased first if it was ``ready``) is held for this post before any
   byte is uploaded, so of two concurrent posts exactly one passes; it stays ``processing``;
4. ``relay``: the body goes to file_uploader chunk by chunk (one chunk in memory);
5. ``record``: the result document (not visible: no ``seq``), written before ``complete``
   because the ``FileStored`` that marks it stored can only follow ``complete``;
6. ``complete``, then ``wait_stored``: the answer 201 ``{result_id, seq}`` goes out only once
   file_service_manager stored the bytes and ``publish_stored_result`` numbered the result and
   made the group ``done`` (in that order: a reader never sees ``done`` without its result);
on any failure, or no store within ``result_store_wait_seconds``, ``undo``: the result
document, the upload session, the claim; the answer is 503 and the group stays
``processing`` under its lease. A crash mid-post leaves an unnumbered (invisible) result and
a claim that the lease expiry drops; that result's late ``FileStored`` finds its claim gone
and deletes it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import IO, Any

from services.common import httpkit, validation
from services.common.contracts import FileStored, ResultPublished
from services.common.errors import ApiError, unavailable
from services.common.httpkit import bad_request, conflict
from services.common.timeutil import BadTimestamp, now_iso, parse

from . import core, ticking
from .core import epoch_iso
from .deps import Deps
from .groups import download_url, pool_group
from .pools import processing_timeout

log = logging.getLogger(__name__)

RESULT_KEYS = ("result_id", "pool_id", "group_id", "seq", "window_start", "window_end", "file_name", "size",
               "sha256", "created", "download_url")


@dataclass(frozen=True)
class ResultRequest:
    file_name: str
    size: int
    expected_sha: str | None


@dataclass(frozen=True)
class Claim:
    pool_id: str
    gid: str
    token: str
    before: dict[str, Any]  # the group as claimed: the result records its window (which never changes)


@dataclass
class Upload:
    owner_id: str
    writer: str
    file_id: str | None = None


def result_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: doc.get(key) for key in RESULT_KEYS}


def check_request(deps: Deps, name_header: str, sha_header: str, raw_length: str | None) -> ResultRequest:
    """``X-File-Name``, ``X-Sha256`` and ``Content-Length`` checked before any byte is read."""
    raw_name = name_header.strip()
    if not raw_name:
        raise bad_request("X-File-Name is required")
    expected_sha = validation.optional_sha256(sha_header.strip(), "X-Sha256")
    if raw_length is None:
        raise ApiError(411, "length_required", "Content-Length is required")
    if not raw_length.strip().isdigit():
        raise bad_request("Content-Length must be a non-negative integer")
    size = int(raw_length)
    if size == 0:
        raise bad_request("the result is empty", code="empty_file")
    limit = deps.settings.max_result_bytes
    if size > limit:
        raise ApiError(413, "too_large", f"a result may be at most {limit} bytes")
    return ResultRequest(core.sanitize_name(raw_name, fallback="result"), size, expected_sha)


def check_group(deps: Deps, pool_id: str, gid: str) -> str:
    """The group's status, if it can take a result (else 404/409)."""
    group = pool_group(deps, pool_id, gid)
    if group["status"] == core.DONE or group.get("result_id"):
        raise conflict("a result was already posted for this group")
    if group["status"] not in core.RESULT_ACCEPTING:
        raise conflict(f"the group is {group['status']}; a result needs it ready or processing")
    return str(group["status"])


def claim(deps: Deps, pool_id: str, gid: str, seen: str | None = None) -> Claim:
    """Hold the group for this post; a ``ready`` group is leased first (a processor may post
    without listing the files), so a failed post leaves it ``processing`` under that lease.

    ``seen``: the status ``check_group`` read. A group seen ``processing`` (the processor
    listed its files first, the usual way) is claimed at once, sparing a lease attempt that
    cannot match; should its lease have expired meanwhile, it is leased again and claimed."""
    now = deps.clock.time()
    token = uuid.uuid4().hex
    before = deps.store.claim_result(gid, token, now) if seen == core.PROCESSING else None
    if before is None:
        leased = deps.store.lease(gid, now, processing_timeout(deps.pools.get(pool_id)))
        if leased is not None:
            ticking.publish_changed(deps, leased)
        before = deps.store.claim_result(gid, token, now)
    if before is None:
        raise conflict("a result was already posted for this group (or it is not processing)")
    return Claim(pool_id, gid, token, before)


def relay(deps: Deps, held: Claim, request: ResultRequest, upload: Upload, body: IO[bytes]) -> str:
    """Start the upload and send the body chunk by chunk; returns the body's sha256."""
    started = deps.uploader.start({
        "owner_id": upload.owner_id, "owner_name": "processor", "writer": upload.writer,
        "file_name": request.file_name, "size": request.size, "content_type": "application/octet-stream",
        "sha256": request.expected_sha, "pool_id": held.pool_id, "group_id": held.gid, "kind": "result",
        "timestamp": now_iso(), "metadata": {"group_id": held.gid}})
    file_id = upload.file_id = str(started["file_id"])
    chunk_size = int(started["chunk_size"])
    digest = hashlib.sha256()
    received = index = 0
    # One chunk in memory at a time (at most file_uploader's chunk_size): relayed, never held whole.
    while received < request.size:
        chunk = httpkit.read_exactly(body, min(chunk_size, request.size - received))
        if not chunk:
            raise bad_request("the body is shorter than Content-Length")
        digest.update(chunk)
        deps.uploader.put_chunk(file_id, index, chunk, owner_id=upload.owner_id, writer=upload.writer)
        received += len(chunk)
        index += 1
    sha256 = digest.hexdigest()
    if request.expected_sha is not None and sha256 != request.expected_sha:
        raise bad_request("the body does not match X-Sha256", code="checksum_mismatch")
    return sha256


def record(deps: Deps, held: Claim, request: ResultRequest, file_id: str, sha256: str) -> None:
    # created_ts is what a client gets back by parsing ``created`` (ms precision), so a
    # client that passes its last result's ``created`` as ``since`` never sees it twice.
    created = epoch_iso(deps.clock.time())
    deps.store.insert_result({
        "result_id": file_id, "pool_id": held.pool_id, "group_id": held.gid,
        "window_start": epoch_iso(held.before["window_start"]),
        "window_end": epoch_iso(held.before["window_end"]),
        "file_name": request.file_name, "size": request.size, "sha256": sha256, "created": created,
        "created_ts": parse(created).timestamp(), "stored": False, "published": False, "claim": held.token,
        "download_url": download_url(deps, file_id)})


def undo(deps: Deps, held: Claim, upload: Upload) -> bool:
    """So the processor can post again: the result doc, the upload session, then the claim.

    False when the result was stored meanwhile (its FileStored won the race): nothing is
    undone then, the result stands."""
    if upload.file_id is not None:
        if not deps.store.delete_result(upload.file_id) and deps.store.get_result(upload.file_id) is not None:
            return False
        deps.uploader.release(upload.file_id, writer=upload.writer)
    deps.store.revert_claim(held.gid, held.token, deps.clock.time())
    return True


def wait_stored(deps: Deps, result_id: str) -> dict[str, Any] | None:
    """The result once numbered (stored, its group done), or None after
    ``result_store_wait_seconds`` (the bound on how long a post holds its thread). This
    process's consumer hands it over as it numbers it (``stored_waits``); one numbered by
    another replica is found by reading the store now and then."""
    return deps.stored_waits.wait(result_id, deps.settings.result_store_wait_seconds,
                                  lambda: deps.store.get_result(result_id))


def post_result(deps: Deps, pool_id: str, gid: str, actor: str, request: ResultRequest,
                body: IO[bytes]) -> dict[str, Any]:
    held = claim(deps, pool_id, gid, check_group(deps, pool_id, gid))
    upload = Upload(owner_id=f"processor:{pool_id}", writer=uuid.uuid4().hex)
    stored: dict[str, Any] | None = None
    try:
        sha256 = relay(deps, held, request, upload, body)
        file_id = str(upload.file_id)
        record(deps, held, request, file_id, sha256)
        deps.stored_waits.expect(file_id)  # before complete: its FileStored may be consumed at once
        deps.uploader.complete(file_id, owner_id=upload.owner_id, writer=upload.writer)
        stored = wait_stored(deps, file_id)
        if stored is None:
            raise unavailable("the result could not be stored in time; post it again")
    except BaseException as exc:
        if upload.file_id is not None:
            deps.stored_waits.forget(upload.file_id)
        if not undo(deps, held, upload):
            stored = wait_stored(deps, str(upload.file_id))
        if stored is None:
            deps.audit.record("result_posted", actor=actor, outcome="failed", group_id=gid, pool_id=pool_id,
                              file_id=upload.file_id, file_name=request.file_name)
            if isinstance(exc, ApiError) and exc.status < 500:
                raise
            log.warning("result_not_stored", extra={"group_id": gid, "pool_id": pool_id, "error": repr(exc)})
            raise unavailable("the result could not be stored; the group stays processing, post it again") \
                from exc
    deps.metrics.results_posted.inc()
    deps.audit.record("result_posted", actor=actor, group_id=gid, pool_id=pool_id, file_id=stored["result_id"],
                      size=request.size, sha256=stored["sha256"], file_name=request.file_name, seq=stored["seq"])
    log.info("result_posted", extra={"group_id": gid, "pool_id": pool_id, "result_id": stored["result_id"]})
    return {"result_id": stored["result_id"], "seq": int(stored["seq"]), "group_id": gid,
            "size": request.size, "sha256": stored["sha256"]}


def list_results(deps: Deps, pool_id: str, *, since_raw: str | None = None, after_seq_raw: str | None = None,
                 limit_raw: str | None = None) -> dict[str, Any]:
    """A page ``{results, next_seq, more}``, oldest (lowest seq) first; ``next_seq`` is what to
    pass as ``after_seq`` for the next page (the last seq seen, or ``after_seq`` when empty)."""
    since = None
    if since_raw:
        try:
            since = parse(since_raw).timestamp()
        except BadTimestamp as exc:
            raise bad_request(str(exc)) from exc
    after_seq = validation.count_param(after_seq_raw, "after_seq") or 0
    limit = validation.page_limit(limit_raw)
    found = deps.store.list_results(pool_id, since=since, after_seq=after_seq, limit=limit + 1)
    page = found[:limit]
    return {"results": [result_view(r) for r in page], "next_seq": int(page[-1]["seq"]) if page else after_seq,
            "more": len(found) > limit}


def publish_stored_result(deps: Deps, msg: FileStored) -> None:
    """A result's bytes are stored: number it, finish its group, announce it, once each (a
    redelivery finds each step done). A result whose post let go of the group (undone, or its
    lease expired) is dropped instead: it never gets a seq, so members never see it."""
    result = deps.store.get_result(msg.file_id)
    if result is None:
        # The result doc is written before the upload completes, so this is a
        # result whose post was reverted after all: nothing to announce.
        log.warning("stored_result_unknown")
        return
    if result.get("published"):
        return
    if result.get("seq") is None:
        group = deps.store.get(result["group_id"]) or {}
        # Pre-seq result docs carry no claim: they are numbered like any other.
        if "claim" in result and group.get("result_claim") != result["claim"] \
                and group.get("result_id") != result["result_id"]:
            if deps.store.delete_result(msg.file_id):
                log.warning("stored_result_orphaned", extra={"result_id": msg.file_id})
                return
        marked = deps.store.mark_result_stored(msg.file_id, deps.clock.time(), int(msg.size), msg.sha256)
        if marked is None:
            log.warning("stored_result_unknown")
            return
        result = deps.store.assign_seq(msg.file_id, known=marked)
        if result is None:
            raise RuntimeError(f"result {msg.file_id} vanished while being numbered")
    finished = deps.store.finish_group(result["group_id"], result["result_id"], deps.clock.time())
    # Stored, numbered, its group done: the post waiting here may answer 201 now.
    deps.stored_waits.arrived(msg.file_id, result)
    # The result first, the group's `done` after it: the gateway handles its notifications one
    # at a time, and each is a broadcast to every member's socket (0.7 s for 5,000 sockets on a
    # loaded machine, README "Issue 11"): members wait for the result, not for the `done`. A
    # crash between the two loses the `done` (informational, as before: a redelivery finds the
    # group finished already), never the result (published before it is marked so).
    deps.broker.publish(ResultPublished(
        result_id=result["result_id"], pool_id=result["pool_id"], group_id=result["group_id"],
        window_start=result["window_start"], window_end=result["window_end"],
        file_name=result["file_name"], size=int(result["size"]), sha256=result["sha256"],
        created=result["created"], download_url=result["download_url"], seq=int(result["seq"])))
    if finished is not None:
        ticking.publish_changed(deps, finished)
    deps.store.mark_result_published(msg.file_id)
    deps.metrics.results_published.inc()
    log.info("result_published", extra={"group_id": result["group_id"], "result_id": result["result_id"],
                                        "seq": result["seq"]})


def backfill_seq(deps: Deps) -> int:
    """One-off at start: stored results from before ``seq`` get theirs, oldest first.

    Safe beside other replicas doing the same and beside new posts: ``assign_seq`` numbers a
    result at most once (the counter's compare-and-set), and each backfiller walks the same
    created order, moving on only once a result has its seq, so no result is numbered before
    an older unnumbered one. Bounded per start (100,000); the next start goes on."""
    count = 0
    for doc in deps.store.unnumbered_results():
        if deps.store.assign_seq(doc["_id"]) is not None:
            count += 1
    if count:
        log.info("results_backfilled", extra={"count": count})
    return count


def backfill_created_max(deps: Deps) -> int:
    """At start: each pool's results numbered before ``created_max`` existed get theirs (one
    look-up for a pool that has them), so its catch-ups ``since`` a time search instead of reading
    every result. Never needed for correctness (core.results_since); bounded (the store's limits)."""
    count = 0
    for pool_id in deps.store.result_pools():
        count += deps.store.backfill_created_max(pool_id)
    if count:
        log.info("results_created_max_backfilled", extra={"count": count})
    return count
