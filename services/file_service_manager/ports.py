"""What file_service_manager's use cases and handlers need from its stores.

``store.FileIndex`` (MongoDB), ``store.UploadCache`` (Redis) and the
``backends`` (GridFS, filesystem, S3) are the real ones; ``services.common.testing.file_service_manager`` has in-memory
ones for fast tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from services.common.contracts import PrestoreUpload, StoreUpload, UploadItem


class Download(Protocol):
    """An open stored file: its length, and reads from a position."""

    length: int

    def seek(self, pos: int) -> Any: ...

    def read(self, size: int = -1) -> bytes: ...

    def close(self) -> None: ...


class Index(Protocol):
    def ping(self) -> bool: ...

    def ensure_indexes(self) -> None: ...

    def remove_partial(self, file_id: str, bucket: str = "fs") -> bool: ...

    def upsert_stored(self, doc: dict[str, Any]) -> bool:
        """False (nothing written) when the record says ``deleted``."""
        ...

    def drop_provisional(self, upload_id: str, keep: list[str]) -> None: ...

    def record(self, file_id: str) -> dict[str, Any] | None: ...

    def apply_status(self, upload_id: str, owner_id: str, status: str, *, attempt: int | None,
                     reason: str | None, pool_id: str | None, file_name: str | None) -> int: ...

    def set_group(self, file_id: str, group_id: str, late: bool) -> int: ...

    def set_groups(self, file_ids: list[str], group_id: str, late: bool) -> int:
        """``set_group`` for many files at once (one write): how many records matched."""
        ...

    def mark_deleted(self, file_id: str, actor: str) -> bool:
        """The record says ``deleted`` (once: False when it already did)."""
        ...

    def due_for_regroup(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Stored records still waiting for their group whose ``regroup_at`` is at or before
        ``now``, soonest first, at most ``limit`` (regrouping)."""
        ...

    def reschedule_regroup(self, file_id: str, seen: float, next_at: float | None) -> bool:
        """Move ``regroup_at`` from ``seen`` to ``next_at`` and count the announcement (None: give
        the file up, ``never_grouped``). False when it was not ``seen`` any more (another pass
        took it, or the file was grouped meanwhile)."""
        ...

    def find_files(self, query: dict[str, Any], limit: int) -> list[dict[str, Any]]: ...

    def expired(self, pool_id: str | None, created_before: str, limit: int) -> list[dict[str, Any]]:
        """Stored or failed records (never ``deleted`` or still being stored) of the pool (None: files
        without a pool) created before the ISO instant, oldest first, at most ``limit``."""
        ...

    def add_audit(self, doc: dict[str, Any]) -> bool: ...

    def add_audits(self, docs: list[dict[str, Any]]) -> int:
        """Append audit documents in one write; one whose ``_id`` is already there (a redelivered
        batch) is skipped, any other failure raises. Returns how many were new."""
        ...

    def find_audit(self, query: dict[str, Any], after: tuple[str, str] | None,
                   limit: int) -> list[dict[str, Any]]: ...

    # The sweeper's questions: leftovers of crashed attempts older than a cutoff.
    def orphan_chunk_files(self, older_than: datetime) -> list[Any]: ...

    def unindexed_files(self, older_than: datetime, bucket: str = "fs") -> list[Any]: ...


class Written(NamedTuple):
    size: int
    sha256: str


class StorageBackend(Protocol):
    """Where a file's bytes live (``backends``: GridFS, filesystem, S3).

    ``key`` is a file_id (``name``, the original file name, is only a label). A write is
    all or nothing: a writer whose ``pieces`` raise half-way leaves no object visible
    under ``key`` (``exists`` is False, ``open`` None).
    """

    kind: str  # "gridfs" | "filesystem" | "s3"
    descriptor: dict[str, Any]  # non-secret: what a file record keeps (its "id" names the backend)

    def write(self, key: str, pieces: Iterable[bytes], *, content_type: str,
              name: str | None = None) -> Written: ...

    def open(self, key: str) -> Download | None: ...

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool: ...

    def probe(self) -> bool:
        """Write, read back and delete a small object; raises ``BackendError`` with the reason."""
        ...

    def leftovers(self, older_than: datetime, *, remove: bool) -> list[str]:
        """Half-written objects a crashed writer left (never visible to reads) older than the
        cutoff; removed unless ``remove`` is False. Bounded per call."""
        ...


@runtime_checkable
class Prestorable(Protocol):
    """A backend a prestore (``prestoring``) can write into while the upload still arrives.

    The bytes a prestore writes are never what a read of ``key`` finds before the StoreUpload
    adopts them: GridFS writes them under ``key`` (a file is visible only through its index
    record, which only the StoreUpload writes); the filesystem into a temporary name beside
    the final one, renamed by ``prestore_adopt``.
    """

    def prestore_write(self, key: str, pieces: Iterable[bytes], *, content_type: str, name: str | None,
                       tag: str) -> tuple[Written, str]:
        """Write ``pieces`` for ``key`` (the caller holds the upload's prestore lease; ``tag`` is its
        token, unique); returns what was written and where (``ref``, for ``prestore_adopt``). A
        failure removes what only this write knows of (a temporary file); what it wrote under
        ``key`` itself (GridFS's chunks) stays: another writer may own ``key`` by then, so the
        caller removes it (``prestore_clear(key, "", owned=True)``) only while its lease lives."""
        ...

    def prestore_clear(self, key: str, ref: str, *, owned: bool) -> None:
        """Remove what a prestore wrote: always its ``ref`` (a name only it knows), and what is
        under ``key`` only when ``owned`` (no other writer of ``key`` can be running)."""
        ...

    def prestore_adopt(self, key: str, ref: str, size: int) -> bool:
        """Make the prestored ``size`` bytes at ``ref`` the object ``key`` (the filesystem: an
        atomic rename, fsynced); False when they are not there any more (swept, adopted by an
        earlier attempt, the wrong length): the StoreUpload then writes the file itself."""
        ...


class Catalog(Protocol):
    """Every storage this service has written to, by descriptor id, with its credentials encrypted
    (``secretbox``): how a record's S3 backend is found again after the default or a pool moves on,
    and how the health probe and the sweeper find every location in use."""

    def save(self, spec_id: str, descriptor: dict[str, Any], secrets: dict[str, str]) -> None: ...

    def load(self, spec_id: str) -> dict[str, Any] | None: ...

    def all(self) -> list[dict[str, Any]]: ...

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` entries, the most recently saved first."""
        ...

    def replace_secrets(self, spec_id: str, old: dict[str, str], new: dict[str, str]) -> bool: ...


class PoolDirectory(Protocol):
    """What this service asks auth about pools (``authclient.AuthClient``): a pool with its storage
    (secrets in clear: never logged), and every retention rule. Raises ``AuthUnavailable``."""

    def pool(self, pool_id: str) -> dict[str, Any] | None: ...

    def retention_rules(self) -> list[dict[str, Any]]:
        """``[{pool_id, retention_days, deleted}]``: every pool (live or deleted) with a rule."""
        ...


class BackendError(RuntimeError):
    """A storage backend refused or failed; the message is the reason (never a secret)."""


class Cache(Protocol):
    """The cached chunks of an upload (file_uploader writes them; we read and drop them)."""

    def ping(self) -> bool: ...

    def upload_waiting(self, file_id: str) -> bool: ...

    def item_pieces(self, msg: StoreUpload, item: UploadItem) -> Iterator[bytes]: ...

    def drop(self, msg: StoreUpload) -> None: ...

    # A prestore (``prestoring``): one at a time per upload (a lease), chunk by chunk, its outcome kept.
    def claim_prestore(self, msg: PrestoreUpload, token: str, lease_seconds: int) -> bool: ...

    def next_prestore_chunk(self, msg: PrestoreUpload, index: int, token: str,
                            lease_seconds: int) -> tuple[str, bytes | None]:
        """("ok", bytes), or ("wait" | "gone" | "lost", None); renews the lease."""
        ...

    def prestore_done(self, msg: PrestoreUpload, token: str, size: int, sha256: str, backend: str,
                      ref: str) -> bool:
        """Record the outcome (``ref``: where the backend put the bytes) while the lease is ``token``'s."""
        ...

    def release_prestore(self, msg: PrestoreUpload, token: str) -> None: ...

    def prestore_state(self, cache_key: str) -> tuple[bool, dict[str, str]]:
        """(a prestore's lease is alive, its outcome: ``{size, sha256, backend, ref}`` or {})."""
        ...


class LeftoverAttempt(RuntimeError):
    """The backend already holds a half-written object under this key (a crashed earlier
    attempt's; GridFS refuses to write over it): delete it, write again."""


class StagingStore(Protocol):
    """Staging status per (result, target) (``store.StagingStatuses``); transitions are
    conditional (status pending, the attempt count), each returning whether it happened."""

    def ensure_indexes(self) -> None: ...

    def plan(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert the documents that do not exist yet; the result's documents, by target."""
        ...

    def get(self, result_id: str, target: int) -> dict[str, Any] | None: ...

    def claim(self, result_id: str, target: int, attempt: int, running_until: float,
              updated: str) -> dict[str, Any] | None:
        """pending with ``attempt - 1`` attempts -> ``attempt`` attempts, running until then."""
        ...

    def take_over(self, result_id: str, target: int, attempt: int, now: float, running_until: float,
                  updated: str) -> dict[str, Any] | None:
        """Attempt ``attempt`` whose runner's lease ran out (it crashed) is run again."""
        ...

    def finish(self, result_id: str, target: int, attempt: int, *, status: str, location: str | None,
               error: str | None, updated: str) -> bool: ...

    def for_result(self, result_id: str) -> list[dict[str, Any]]: ...
