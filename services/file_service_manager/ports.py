"""What file_service_manager's use cases and handlers need from its stores.

``store.FileIndex`` (MongoDB + GridFS) and ``store.UploadCache`` (Redis) are
the real ones; ``services.common.testing.file_service_manager`` has in-memory
ones for fast tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from services.common.contracts import StoreUpload, UploadItem


class Download(Protocol):
    """An open stored file: its length, and reads from a position."""

    length: int

    def seek(self, pos: int) -> Any: ...

    def read(self, size: int = -1) -> bytes: ...

    def close(self) -> None: ...


class Index(Protocol):
    def ping(self) -> bool: ...

    def ensure_indexes(self) -> None: ...

    def is_stored(self, file_id: str) -> bool: ...

    def remove_partial(self, file_id: str) -> None: ...

    def write_file(self, file_id: str, name: str, pieces: Iterator[bytes],
                   content_type: str) -> tuple[int, str]: ...

    def open_download(self, file_id: str) -> Download | None: ...

    def upsert_stored(self, doc: dict[str, Any]) -> None: ...

    def drop_provisional(self, upload_id: str, keep: list[str]) -> None: ...

    def record(self, file_id: str) -> dict[str, Any] | None: ...

    def apply_status(self, upload_id: str, owner_id: str, status: str, *, attempt: int | None,
                     reason: str | None, pool_id: str | None, file_name: str | None) -> int: ...

    def set_group(self, file_id: str, group_id: str, late: bool) -> int: ...

    def find_files(self, query: dict[str, Any], limit: int) -> list[dict[str, Any]]: ...

    def add_audit(self, doc: dict[str, Any]) -> bool: ...

    def find_audit(self, query: dict[str, Any], after: tuple[str, str] | None,
                   limit: int) -> list[dict[str, Any]]: ...

    # The sweeper's questions: leftovers of crashed attempts older than a cutoff.
    def orphan_chunk_files(self, older_than: datetime) -> list[Any]: ...

    def unindexed_files(self, older_than: datetime) -> list[Any]: ...


class Cache(Protocol):
    """The cached chunks of an upload (file_uploader writes them; we read and drop them)."""

    def ping(self) -> bool: ...

    def item_pieces(self, msg: StoreUpload, item: UploadItem) -> Iterator[bytes]: ...

    def drop(self, msg: StoreUpload) -> None: ...


class LeftoverAttempt(RuntimeError):
    """GridFS already holds documents under this id: a crashed earlier attempt's."""
