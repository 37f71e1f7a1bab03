"""What file_uploader's use cases need from the Redis upload cache and the broker.

``store.UploadStore`` is the real cache; ``services.common.testing.file_uploader``
has an in-memory one with the same semantics (writer lock, immutable chunks,
claimed retry attempts, a status tombstone that outlives the bytes).
"""

from __future__ import annotations

from typing import Any, Protocol

from services.common.authclient import Identity
from services.common.ports import Publisher

from .core import UploadPlan

# Session statuses inside the cache (SPEC's file statuses start at "cached").
UPLOADING = "uploading"
CACHED = "cached"
CANCELLED = "cancelled"  # the tombstone of a cancelled upload (SPEC's cancel-upload answer)
# How long a failed attempt's claim holds while its handler runs (``claim_attempt``): the handler
# takes milliseconds (a few Redis writes, two publishes); a redelivery of a handler killed
# mid-way is retried by its consumer (1 s apart, 5 deliveries) and takes the claim over once it
# lapses. A handler slower than this may meet a second one: both schedule the same next attempt,
# which file_service_manager stores once (keyed by file_id).
CLAIM_LEASE_SECONDS = 2.0


class UploadCache(Protocol):
    def cache_key(self, file_id: str) -> str: ...

    def ping(self) -> bool: ...

    def open_slot(self, owner_id: str, upload_id: str, limit: int) -> bool:
        """Count ``upload_id`` among the owner's unfinished uploads (at most ``limit``); idempotent.

        A slot lives as long as its upload: freed at completion, cancel or drop, and
        forgotten once the session is gone (expired or stored), never while it lives.
        """
        ...

    def free_slot(self, owner_id: str, upload_id: str) -> None: ...

    def create(self, plan: UploadPlan, writer: str) -> None: ...

    def start_upload(self, plan: UploadPlan, writer: str | None, *, limit: int, quota: int,
                     tomb: dict[str, Any] | None = None) -> str:
        """``open_slot`` (``limit``), ``reserve`` (``quota``) and ``create`` at once: ``ok``,
        ``slots`` or ``quota`` (then nothing is kept). ``writer`` None: no lock is taken.
        ``tomb``: more fields for the status tombstone."""
        ...

    def session(self, file_id: str) -> dict[str, Any] | None: ...

    def status(self, file_id: str) -> dict[str, str] | None: ...

    def set_status(self, file_id: str, status: str, **fields: Any) -> None: ...

    def received_count(self, file_id: str) -> int: ...

    def acquire_writer(self, file_id: str, writer: str) -> bool: ...

    def refresh_writer(self, file_id: str, writer: str) -> bool: ...

    def release_writer(self, file_id: str, writer: str) -> bool: ...

    def writer(self, file_id: str) -> str | None: ...

    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, max_owner_bytes: int = 0) -> str:
        """``new``, ``same`` (an identical rewrite), ``different`` (refused: chunks are immutable),
        ``full`` (refused: the owner's cached bytes would pass ``max_owner_bytes``; 0 = no budget)
        or ``gone`` (refused: the session no longer exists)."""
        ...

    def read_chunk(self, file_id: str, index: int) -> bytes | None: ...

    def read_range(self, file_id: str, index: int, start: int, end: int) -> bytes | None:
        """Bytes ``start:end`` of chunk ``index`` (a few bytes of an item head), None if not written."""
        ...

    def existing_chunks(self, file_id: str, count: int) -> set[int]: ...

    # The tus door's partial tail: the bytes of chunk ``index`` received so far (less than
    # one chunk), appended PATCH by PATCH until a PATCH completes the chunk (see ``tus_uploads``).
    def tail_length(self, file_id: str, index: int) -> int: ...

    def read_tail(self, file_id: str, index: int) -> bytes | None: ...

    def append_tail(self, file_id: str, index: int, data: bytes, writer: str, at: int) -> str:
        """``ok``, ``gone`` (no session), ``locked`` (``writer`` does not hold the writer lock),
        ``written`` (chunk ``index`` exists already) or ``moved`` (the tail is not ``at`` bytes long)."""
        ...

    def seal_tail(self, file_id: str, index: int, data: bytes, writer: str, at: int, *, owner_id: str,
                  max_owner_bytes: int = 0) -> str:
        """Append ``data`` to the ``at``-byte tail of chunk ``index`` and make the whole the chunk
        (the tail is gone after): ``ok``, or as ``append_tail`` plus ``complete`` (the session is
        no longer uploading) and ``full`` (as ``put_chunk``: the owner's cached bytes)."""
        ...

    def tus_begin(self, file_id: str, owner_id: str, writer: str) -> tuple[str, dict[str, Any] | None, int, int]:
        """A tus PATCH's start in one step: ``(outcome, session, written chunks from the start, tail
        length)``. ``ok``: ``owner_id``'s upload, uploading, slot and quota reservation in place; the
        writer lock is taken and every key's expiry renewed. ``locked``: another writer holds the
        lock (the session is given; nothing renewed). ``slow``: anything else, nothing done."""
        ...

    def drop_tail(self, file_id: str, index: int) -> None: ...

    def touch(self, file_id: str, chunk_count: int, ttl: int) -> None: ...

    def mark_cached(self, file_id: str, size: int, *, owner_id: str, sha256: str = "", now: float = 0.0) -> bool:
        """``uploading -> cached`` once; the upload's bytes count as the owner's stored bytes.
        The session records it as not yet published (``published`` "0", ``cached_at``, ``cached_sha256``)."""
        ...

    def published(self, file_id: str, *, owner_id: str, sha256: str) -> None:
        """The StoreUpload was confirmed: the session marked published (if it still exists), the
        tombstone ``cached`` with ``sha256``, the owner's slot and reservation freed."""
        ...

    def mark_published(self, file_id: str) -> None:
        """The StoreUpload of a cached upload is confirmed by the broker."""
        ...

    def claim_republish(self, file_id: str, seconds: int) -> bool:
        """One replica at a time may publish again a StoreUpload its completer never published."""
        ...

    def mark_cancelled(self, file_id: str) -> bool:
        """``uploading -> cancelled`` once (atomic with ``mark_cached``: one of them wins)."""
        ...

    def unmark_cached(self, file_id: str, *, owner_id: str) -> None: ...

    def reserve(self, owner_id: str, upload_id: str, size: int, quota: int) -> bool:
        """Reserve ``size`` bytes of the owner's quota for an unfinished upload (holding a slot);
        False when stored + reserved + size would pass ``quota`` (0 = unlimited). Idempotent."""
        ...

    def give_back(self, owner_id: str, upload_id: str) -> int:
        """The upload will not be stored: its reservation and counted bytes leave the ledger (once)."""
        ...

    def committed_bytes(self, owner_id: str) -> int: ...

    def drop(self, file_id: str, chunk_count: int | None = None, owner_id: str | None = None) -> int: ...

    def claim_attempt(self, file_id: str, attempt: int, lease_seconds: float = CLAIM_LEASE_SECONDS) -> str:
        """``claimed`` (handle it, then ``finish_attempt``), ``done`` (handled, or older than the last
        handled) or ``busy`` (another handler's claim holds: try again later)."""
        ...

    def finish_attempt(self, file_id: str, attempt: int) -> None: ...

    def unclaim_attempt(self, file_id: str, attempt: int) -> None: ...

    def pending_bytes(self) -> int: ...

    def used_memory(self) -> int: ...


class TokenCheck(Protocol):
    """Who a Bearer token is (the tus door asks per request); None when auth refuses it."""

    def validate(self, token: str | None) -> Identity | None: ...


class PoolPolicy(Protocol):
    """A pool's rules an upload is checked against at start (``pools.PoolPolicies``: auth's, cached)."""

    def max_late_seconds(self, pool_id: str) -> float: ...


class Broker(Publisher, Protocol):
    """A publisher that can also say how deep a queue is (the overload check)."""

    def queue_depths(self, names: list[str]) -> dict[str, int]: ...
