"""The Redis key layout of a cached upload: written once, read by two services.

file_uploader writes an upload's chunks under these keys; file_service_manager
reads them to store the file and drops them once it is stored. The layout is the
contract between the two, so it lives here and nowhere else:

- ``{prefix}:upload:{file_id}``            the session hash (the ``cache_key``)
- ``{cache_key}:chunk:{i}``                chunk ``i``'s bytes
- ``{cache_key}:received``                 the set of received chunk indexes
- ``{cache_key}:writer``                   the writer lock (one connection writes)
- ``{cache_key}:status``                   a small tombstone (status, retries), kept after the drop
- ``{prefix}:upload-owner:{owner_id}``     sorted set of an owner's open uploads
"""

from __future__ import annotations

from collections.abc import Iterator


def session_key(prefix: str, file_id: str) -> str:
    return f"{prefix}:upload:{file_id}"


def upload_ids_of(file_id: str) -> list[str]:
    """The uploads a stored file may come from: its own id (a single file) and, for a batch's item
    (``{upload_id}-{n:04d}``, file_uploader's ``item_file_id``), the batch's id."""
    ids = [file_id]
    head, dash, tail = file_id.rpartition("-")
    if dash and head and len(tail) == 4 and tail.isdigit():
        ids.append(head)
    return ids


def session_pattern(prefix: str) -> str:
    """A SCAN pattern over every upload key (sessions and their parts)."""
    return f"{prefix}:upload:*"


def session_prefix(prefix: str) -> str:
    return f"{prefix}:upload:"


def chunk_key(cache_key: str, index: int) -> str:
    return f"{cache_key}:chunk:{index}"


def received_key(cache_key: str) -> str:
    return f"{cache_key}:received"


def writer_key(cache_key: str) -> str:
    return f"{cache_key}:writer"


def status_key(cache_key: str) -> str:
    return f"{cache_key}:status"


STATUS_SUFFIX = ":status"


def owner_key(prefix: str, owner_id: str) -> str:
    return f"{prefix}:upload-owner:{owner_id}"


def owner_pattern(prefix: str) -> str:
    return f"{prefix}:upload-owner:*"


def cached_keys(cache_key: str, chunk_count: int) -> Iterator[str]:
    """Every key holding a cached upload's bytes or session: dropped once the file is stored.

    The ``status`` tombstone is not among them: it outlives the bytes so a late
    client still learns the outcome.
    """
    yield cache_key
    yield received_key(cache_key)
    yield writer_key(cache_key)
    for index in range(chunk_count):
        yield chunk_key(cache_key, index)
