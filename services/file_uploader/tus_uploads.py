"""The tus door's use cases: create, offset, append (PATCH), terminate -- on top of ``UploadService``.

A tus upload IS a chunked upload: creation is ``UploadService.start`` (same checks,
limits, quota, slots), every chunk gets the checks of ``UploadService.write_chunk``
(content sniffing, overload and per-user byte budgets, streaming sha256) and the last
byte goes through ``UploadService.complete`` (the StoreUpload and the ``file-status``
events). What tus adds is byte offsets: a client picks its own PATCH sizes, so a
PATCH may end mid-chunk. Those bytes -- less than one chunk -- are appended in Redis
to the upload's *tail* of that chunk (``store.append_tail``: each PATCH sends only
its new bytes), and the PATCH that completes the chunk, on any replica, appends its
bytes and turns the tail into the chunk in Redis (``store.seal_tail``: the tail is
never read back). The offset is derived from Redis alone: ``written chunks from the
start * chunk_size + STRLEN(tail of the next)``.

Round trips: a PATCH starts with one script (``store.tus_begin``: session, writer lock,
slot and quota in place, every key's expiry renewed, the offset; anything unusual takes
the general path, ``resume``), then one append or seal per chunk it touches, then the
lock's release (or, for the last byte, the completion, told the session it holds).

Concurrency: a PATCH holds the upload's writer lock (the same lock a socket writer
holds) for its whole length; another PATCH meanwhile gets 423, which tus clients retry.
The tail is appended by a script that checks the lock and the length the writer
saw, so a late request can neither clobber nor double the tail of the one that took over.
The first bytes of a file are sniffed as soon as they arrive, even in a tail: an
executable is never kept, not even as a partial chunk.

Redis per user: a tail is less than one chunk per unfinished upload, so tails add at most
``MAX_UPLOADS_PER_USER`` x ``CHUNK_SIZE`` per user beside the chunk budget (which counts
whole chunks, checked as each is written).

Memory per PATCH: at most one chunk (``CHUNK_SIZE``, 4 MiB by default) is assembled
in memory; the body is read from the request stream in ``READ_PIECE`` pieces. With a
checksum the body is first spooled (``SpooledTemporaryFile``: one chunk in memory,
the rest on disk, bounded by the bytes the upload still lacks) and verified, so a
mismatching PATCH keeps nothing.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import IO, Any

from services.common import contracts, errors, validation
from services.common.authclient import Identity
from services.common.errors import ApiError

from . import core, tus
from .ports import CANCELLED, UPLOADING, TokenCheck, UploadCache
from .uploads import UploadService

READ_PIECE = 256 * 1024  # one read of a PATCH body; bounds each read's buffer


@dataclass(frozen=True)
class TusState:
    offset: int
    length: int
    expires: float | None  # epoch seconds; None once complete (nothing expires any more)


def locked() -> ApiError:
    return ApiError(423, "locked", "another request is writing this upload; retry shortly")


class TusUploads:
    def __init__(self, uploads: UploadService, store: UploadCache, auth: TokenCheck) -> None:
        self.uploads = uploads
        self.store = store
        self.settings = uploads.settings
        self.auth = auth  # create_app gives it a few seconds' memory (identities.RecentIdentities)

    def identify(self, token: str | None) -> Identity:
        identity = self.auth.validate(token)
        if identity is None:
            raise errors.unauthorized()
        return identity

    # --- helpers ----------------------------------------------------------------
    def _expires(self, session: dict[str, Any]) -> float:
        try:
            updated = float(session.get("updated") or time.time())
        except ValueError:
            updated = time.time()
        return updated + self.settings.upload_ttl_seconds

    def _session(self, file_id: str, identity: Identity) -> dict[str, Any] | None:
        """The live session of ``identity``'s upload; None when it is complete (the tomb says so).

        Unknown or someone else's: the same 404 (an id must not be probed for existence). Unfinished
        but its session expired: 410 (tus
        "expiration"): the tombstone outlives the bytes, so expiry is told from never-was.
        """
        if not validation.optional_id(file_id, "file_id"):
            raise ApiError(404, "not_found", "no such upload")
        session = self.store.session(file_id)
        owner = session["owner_id"] if session else (self.store.status(file_id) or {}).get("owner_id")
        if owner is None or owner != identity.user_id:
            raise ApiError(404, "not_found", "no such upload")
        if session is not None:
            return session
        tomb = self.store.status(file_id) or {}
        status = tomb.get("status")
        if status == UPLOADING:
            raise ApiError(410, "gone", "the upload expired; start it again")
        if status in (CANCELLED, contracts.FAILED):
            raise ApiError(410, "gone", f"the upload was {status}; start it again")
        return None  # cached or stored: complete

    def _offset(self, file_id: str, session: dict[str, Any]) -> int:
        if session["status"] != UPLOADING:
            return int(session["size"])
        have = self.store.existing_chunks(file_id, session["chunk_count"])
        done = tus.contiguous(core.missing_indexes(session["chunk_count"], have), session["chunk_count"])
        return self._offset_from(file_id, session, done)

    def _offset_from(self, file_id: str, session: dict[str, Any], done: int) -> int:
        offset = done * session["chunk_size"]
        if done < session["chunk_count"]:
            offset += self.store.tail_length(file_id, done)
        return min(offset, int(session["size"]))

    # --- use cases --------------------------------------------------------------
    def create(self, identity: Identity, length: int | None, metadata_header: str | None) -> str:
        if length is None:
            raise errors.bad_request("Upload-Length is required (Upload-Defer-Length is not supported)")
        limits = self.settings.limits
        if length > limits.max_file_size:
            raise errors.too_large(f"Upload-Length passes Tus-Max-Size ({limits.max_file_size} bytes)")
        payload = tus.start_payload(tus.parse_metadata(metadata_header, limits.max_metadata_bytes), length)
        pool_id = payload.get("pool_id")
        if pool_id and not identity.can_contribute(str(pool_id)):
            raise errors.forbidden("you are not a contributor of this pool")
        # No lock is left held (each PATCH takes it for itself); the tombstone remembers the
        # length (HEAD answers a finished upload after its bytes are stored). One round trip.
        body, _ = self.uploads.start({**payload, "file_id": None}, owner_id=identity.user_id,
                                     owner_name=identity.user_name, writer=f"tus-{uuid.uuid4().hex}",
                                     lock=False, tomb={"size": length})
        return str(body["file_id"])

    def fresh(self, length: int) -> TusState:
        """A just-created upload: offset 0, expiring ``UPLOAD_TTL_SECONDS`` from now unless written."""
        return TusState(0, length, time.time() + self.settings.upload_ttl_seconds)

    def state(self, identity: Identity, file_id: str) -> TusState:
        session = self._session(file_id, identity)
        if session is None:
            size = int((self.store.status(file_id) or {}).get("size") or 0)
            return TusState(size, size, None)
        offset = self._offset(file_id, session)
        size = int(session["size"])
        if offset == size and (session["status"] == UPLOADING or session.get("published") == "0"):
            # Every byte is here but no StoreUpload was confirmed: the last PATCH was answered 503
            # (the broker refused it; the session went back to uploading) or its completer died
            # between cached and the publish. A tus client reads Upload-Offset == Upload-Length as
            # done and never sends that PATCH again (review: tus-js-client), so this HEAD
            # completes the upload itself, as complete-upload would; until that succeeds it
            # answers the completion's error (503 with Retry-After), never "done".
            self._check_member(identity, session)
            try:
                self.uploads.complete(file_id, owner_id=identity.user_id, writer=None)
                return TusState(size, size, None)
            except ApiError as exc:
                if exc.status != 409:  # 409: a PATCH holds the lock right now and completes it
                    raise
        return TusState(offset, size, self._expires(session) if session["status"] == UPLOADING else None)

    def _begin(self, identity: Identity, file_id: str, writer: str) -> tuple[dict[str, Any], int, int]:
        """Before a PATCH's body: the session, the writer lock taken, slot, quota and expiries
        renewed; ``(session, written chunks from the start, tail length)``. One round trip in the
        common case (``store.tus_begin``); the general path (``resume``) for anything else."""
        if not validation.optional_id(file_id, "file_id"):
            raise ApiError(404, "not_found", "no such upload")
        outcome, session, done, tail = self.store.tus_begin(file_id, identity.user_id, writer)
        if outcome == "locked" and session is not None:
            self._check_member(identity, session)
            raise locked()
        if outcome == "ok" and session is not None:
            try:
                # The lock was taken before this check (one round trip): a refusal lets it go at once.
                self._check_member(identity, session)
            except ApiError:
                self.store.release_writer(file_id, writer)
                raise
            return session, done, tail
        found = self._session(file_id, identity)
        if found is None or found["status"] != UPLOADING:
            raise errors.conflict("the upload is complete")
        self._check_member(identity, found)
        if not self.store.acquire_writer(file_id, writer):
            raise locked()
        try:
            # resume(): the same lock (ours now), the slot and quota kept, every key's expiry renewed.
            missing = self.uploads.resume(file_id, owner_id=identity.user_id, writer=writer,
                                          session=found)["missing"]
            done = tus.contiguous(missing, found["chunk_count"])
            tail = self.store.tail_length(file_id, done) if done < found["chunk_count"] else 0
        except BaseException:
            self.store.release_writer(file_id, writer)
            raise
        return found, done, tail

    @staticmethod
    def _check_member(identity: Identity, session: dict[str, Any]) -> None:
        pool_id = session.get("pool_id") or None
        if pool_id and not identity.can_contribute(str(pool_id)):
            # Membership is checked on every PATCH, not only at creation: a contributor removed
            # from the pool (or made a listener) mid-upload cannot finish it (identity <= 2 s old).
            raise errors.forbidden("you are no longer a contributor of this pool")

    def append(self, identity: Identity, file_id: str, offset: int | None, body: IO[bytes],
               content_length: int | None, checksum: tus.Checksum | None) -> TusState:
        if offset is None:
            raise errors.bad_request("Upload-Offset is required")
        writer = f"tus-{uuid.uuid4().hex}"
        session, done, tail = self._begin(identity, file_id, writer)
        completed = False
        try:
            size = int(session["size"])
            current = min(done * session["chunk_size"] + (tail if done < session["chunk_count"] else 0), size)
            if offset != current:
                raise ApiError(409, "conflict", f"Upload-Offset is {offset} but the upload is at {current}",
                               offset=current)
            remaining = size - current
            if content_length is not None and content_length > remaining:
                raise errors.too_large(f"the body passes Upload-Length by {content_length - remaining} bytes")
            source = body
            spool = None
            if checksum is not None:
                spool = self._verified(body, remaining, checksum)
                source = spool
            try:
                new_offset = self._feed(session, file_id, writer, done, current, source, remaining)
            finally:
                if spool is not None:
                    spool.close()
            if new_offset == size:
                # The last byte: the same completion as complete-upload (StoreUpload, file-status
                # cached); it lets the writer lock go itself.
                self.uploads.complete(file_id, owner_id=identity.user_id, writer=writer, written=session)
                completed = True
                return TusState(size, size, None)
            return TusState(new_offset, size, time.time() + self.settings.upload_ttl_seconds)
        finally:
            if not completed:  # a completion deleted the lock already: no round trip for nothing
                self.store.release_writer(file_id, writer)

    def _verified(self, body: IO[bytes], remaining: int, checksum: tus.Checksum) -> IO[bytes]:
        """The whole body, spooled (one chunk in memory, the rest on disk) and checked."""
        spool = tempfile.SpooledTemporaryFile(max_size=self.settings.limits.chunk_size)  # noqa: SIM115
        hasher = checksum.hasher()
        total = 0
        while True:
            piece = body.read(READ_PIECE)
            if not piece:
                break
            total += len(piece)
            if total > remaining:
                spool.close()
                raise errors.too_large("the body passes Upload-Length")
            hasher.update(piece)
            spool.write(piece)
        if hasher.digest() != checksum.digest:
            spool.close()
            raise tus.checksum_mismatch()
        spool.seek(0)
        return spool

    def _feed(self, session: dict[str, Any], file_id: str, writer: str, index: int, offset: int,
              source: IO[bytes], remaining: int) -> int:
        """Append ``source`` at ``offset``: to the tail of the chunk it falls in, sealing each
        chunk it completes (``_keep``)."""
        chunk_size = session["chunk_size"]
        size = int(session["size"])
        tail_length = offset - index * chunk_size  # bytes of chunk ``index`` already in its tail
        buf = bytearray()  # this PATCH's bytes of chunk ``index``: at most one chunk in memory
        read_total = 0
        while read_total < remaining:
            length = core.chunk_length(size, chunk_size, index)
            piece = source.read(min(READ_PIECE, length - tail_length - len(buf), remaining - read_total))
            if not piece:
                break  # the body ended (or the client went away): keep what arrived
            read_total += len(piece)
            buf += piece
            if tail_length + len(buf) == length:
                self._keep(session, file_id, writer, index, tail_length, bytes(buf), length)
                index, tail_length, buf = index + 1, 0, bytearray()
        if source.read(1):
            raise errors.too_large("the body passes Upload-Length")
        if buf:
            self._keep(session, file_id, writer, index, tail_length, bytes(buf),
                       core.chunk_length(size, chunk_size, index))
        return offset + read_total

    def _keep(self, session: dict[str, Any], file_id: str, writer: str, index: int, at: int, data: bytes,
              length: int) -> None:
        """Chunk ``index``'s bytes from ``at`` on into Redis: appended to its tail, or -- when they
        complete the chunk -- sealed with the tail into the chunk (``store.seal_tail``: the tail's
        bytes are not read back). The checks of a chunk write come with it: the first bytes of
        the file sniffed before anything is kept, the overload check and the owner's budget."""
        started = time.perf_counter()
        position = index * session["chunk_size"] + at
        if position < core.MAGIC_LENGTH:
            self._sniff_head(session, file_id, position, data)
        sealing = at + len(data) == length
        if sealing:
            self.uploads.check_load()
            outcome = self.store.seal_tail(file_id, index, data, writer, at, owner_id=session["owner_id"],
                                           max_owner_bytes=self.settings.max_cached_bytes_per_user)
        else:
            outcome = self.store.append_tail(file_id, index, data, writer, at)
        if outcome == "gone":
            raise ApiError(404, "not_found", "no such upload")
        if outcome == "locked":
            raise locked()
        if outcome == "full":
            raise self.uploads.budget_full()
        if outcome == "complete":
            raise errors.conflict("the upload is already complete")
        if outcome != "ok":
            raise errors.conflict("the upload moved on meanwhile; HEAD and resume")
        self.uploads.hashes.advance_part(file_id, index, at, data, length)
        if sealing:
            self.uploads.metrics.bytes.inc(length)
            self.uploads.metrics.chunk_latency.observe(time.perf_counter() - started)

    def _sniff_head(self, session: dict[str, Any], file_id: str, position: int, data: bytes) -> None:
        """The file's first bytes (those before ``position`` read back: fewer than MAGIC_LENGTH)
        with ``data`` after them, sniffed: an executable is never kept, not even as a tail."""
        chunk_size = session["chunk_size"]
        prefix = b""
        for i in range(position // chunk_size + 1):
            want = min(position, (i + 1) * chunk_size) - i * chunk_size
            if want <= 0:
                break
            piece = self.store.read_range(file_id, i, 0, want)
            prefix += piece if piece is not None else (self.store.read_tail(file_id, i) or b"")[:want]
        self.uploads.check_head(session, (prefix + data)[:core.MAGIC_LENGTH])

    def terminate(self, identity: Identity, file_id: str) -> None:
        session = self._session(file_id, identity)
        if session is None:
            raise errors.conflict("the upload is complete; it can no longer be terminated")
        self.uploads.cancel(file_id, owner_id=identity.user_id)
