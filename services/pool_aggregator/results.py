"""Results: a processor posts one per group (claim, relay, record, complete, or undo all);
a stored result is announced once; members list them.

Posting in small steps, each named for what it does:

1. ``check_request``: name, checksum and length from the headers (nothing read yet);
2. ``check_group``: the group exists in this pool and can take a result;
3. ``claim``: the group becomes ``done`` before any byte is uploaded, so of two
   concurrent posts exactly one passes (a conditional update);
4. ``relay``: the body goes to file_uploader chunk by chunk (one chunk in memory);
5. ``record``: the result document, written before ``complete`` because the
   ``FileStored`` that marks it stored can only follow ``complete``;
6. ``complete`` then the group's ``result_id``;
on any failure ``undo``: the result document, the upload session, the claim.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import IO, Any

from services.common import httpkit, validation
from services.common.contracts import FileStored, ResultPublished
from services.common.errors import ApiError
from services.common.httpkit import bad_request, conflict
from services.common.timeutil import BadTimestamp, now_iso, parse

from . import core, ticking
from .core import epoch_iso
from .deps import Deps
from .groups import download_url, pool_group

log = logging.getLogger(__name__)

RESULT_KEYS = ("result_id", "pool_id", "group_id", "window_start", "window_end", "file_name", "size",
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
    before: dict[str, Any]  # the group as it was: its status is what an undo restores


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


def check_group(deps: Deps, pool_id: str, gid: str) -> None:
    group = pool_group(deps, pool_id, gid)
    if group["status"] == core.DONE:
        raise conflict("a result was already posted for this group")
    if group["status"] not in core.RESULT_ACCEPTING:
        raise conflict(f"the group is {group['status']}; a result needs it ready or processing")


def claim(deps: Deps, pool_id: str, gid: str) -> Claim:
    token = uuid.uuid4().hex
    before = deps.store.claim_result(gid, token, deps.clock.time())
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
        "created_ts": parse(created).timestamp(), "stored": False, "published": False,
        "download_url": download_url(deps, file_id)})


def undo(deps: Deps, held: Claim, upload: Upload) -> None:
    """So the processor can post again: the result doc, the upload session, then the claim."""
    if upload.file_id is not None:
        deps.store.delete_result(upload.file_id)
        deps.uploader.release(upload.file_id, writer=upload.writer)
    deps.store.revert_claim(held.gid, held.token, held.before["status"], deps.clock.time())


def post_result(deps: Deps, pool_id: str, gid: str, actor: str, request: ResultRequest,
                body: IO[bytes]) -> dict[str, Any]:
    check_group(deps, pool_id, gid)
    held = claim(deps, pool_id, gid)
    upload = Upload(owner_id=f"processor:{pool_id}", writer=uuid.uuid4().hex)
    try:
        sha256 = relay(deps, held, request, upload, body)
        file_id = str(upload.file_id)
        record(deps, held, request, file_id, sha256)
        deps.uploader.complete(file_id, owner_id=upload.owner_id, writer=upload.writer)
        deps.store.set_result_id(gid, held.token, file_id)
    except BaseException:
        undo(deps, held, upload)
        deps.audit.record("result_posted", actor=actor, outcome="failed", group_id=gid, pool_id=pool_id,
                          file_id=upload.file_id, file_name=request.file_name)
        raise
    deps.metrics.results_posted.inc()
    ticking.publish_changed(deps, {**held.before, "status": core.DONE})
    deps.audit.record("result_posted", actor=actor, group_id=gid, pool_id=pool_id, file_id=file_id,
                      size=request.size, sha256=sha256, file_name=request.file_name)
    log.info("result_posted", extra={"group_id": gid, "pool_id": pool_id, "result_id": file_id})
    return {"result_id": file_id, "group_id": gid, "size": request.size, "sha256": sha256}


def list_results(deps: Deps, pool_id: str, since_raw: str | None) -> list[dict[str, Any]]:
    since = None
    if since_raw:
        try:
            since = parse(since_raw).timestamp()
        except BadTimestamp as exc:
            raise bad_request(str(exc)) from exc
    return [result_view(r) for r in deps.store.list_results(pool_id, since)]


def publish_stored_result(deps: Deps, msg: FileStored) -> None:
    """A result's bytes are stored: announce it to the pool, once (a redelivery finds it published)."""
    result = deps.store.get_result(msg.file_id)
    if result is None:
        # The result doc is written before the upload completes, so this is a
        # result whose post was reverted after all: nothing to announce.
        log.warning("stored_result_unknown")
        return
    if result.get("published"):
        return
    result = deps.store.mark_result_stored(msg.file_id, deps.clock.time(), int(msg.size), msg.sha256)
    if result is None:
        raise RuntimeError(f"result {msg.file_id} vanished while being marked stored")
    deps.broker.publish(ResultPublished(
        result_id=result["result_id"], pool_id=result["pool_id"], group_id=result["group_id"],
        window_start=result["window_start"], window_end=result["window_end"],
        file_name=result["file_name"], size=int(result["size"]), sha256=result["sha256"],
        created=result["created"], download_url=result["download_url"]))
    deps.store.mark_result_published(msg.file_id)
    deps.metrics.results_published.inc()
    log.info("result_published", extra={"group_id": result["group_id"], "result_id": result["result_id"]})
