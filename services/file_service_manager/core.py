"""Pure logic of file_service_manager: ranges, access rules, records, status order, paging."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from services.common import contracts, validation
from services.common.contracts import StoreUpload, UploadItem
from services.common.errors import ShownToUsers

# SPEC's file record, in order; index documents carry more (upload_id, kind, ...).
RECORD_KEYS = ("file_id", "file_name", "size", "sha256", "status", "owner_id", "owner_name", "pool_id",
               "timestamp", "group_id", "late", "created")
EXTRA_KEYS = ("upload_id", "content_type", "kind", "metadata", "attempt", "reason")

# Which statuses a FileStatusChanged may move a record from. Notices can arrive out of
# order (the store may finish before the "cached" notice is indexed): a record never
# moves backwards, and a final status is only replaced by the store itself.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    contracts.CACHED: (),
    contracts.RETRYING: (contracts.CACHED, contracts.RETRYING),
    contracts.FAILED: (contracts.CACHED, contracts.RETRYING),
    contracts.UPLOADED: (contracts.CACHED, contracts.RETRYING),
}


# SPEC: DELETE /file/<id> leaves the record saying "deleted" (the bytes are gone). No
# FileStatusChanged moves a record from or to it (ALLOWED_FROM never names it).
DELETED = "deleted"
# Statuses whose bytes are not in flight: a file still being stored (cached, retrying) cannot be
# deleted yet, or a store finishing after the delete would bring its bytes back.
DELETABLE = (contracts.UPLOADED, contracts.FAILED)


class RangeNotSatisfiable(ValueError):
    pass


class StoreFailure(ShownToUsers):
    """Storing an upload failed; file_uploader is told and decides on a retry (the message reaches the owner)."""


# One byte range: ASCII digits only (str.isdigit() also says yes to "²", which int() refuses).
_BYTE_RANGE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)", re.IGNORECASE | re.ASCII)
# A position with more digits than this is past any file (and int() of 5,000 digits raises).
_MAX_DIGITS = 18
_HUGE = 10 ** _MAX_DIGITS


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as inclusive ``(start, end)``; None means "send it all".

    Total over every string: anything but one well-formed byte range (several ranges,
    another unit, signs, non-ASCII digits, a reversed range) is ignored (RFC 9110 lets a
    server answer 200 with the whole file); a well-formed range that lies outside the
    file is unsatisfiable (416). Positions of any length are read without converting
    more than 18 digits (a longer one is past any file).
    """
    if not header:
        return None
    found = _BYTE_RANGE.fullmatch(header.strip())
    if found is None:
        return None
    first, last = found.group(1), found.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = _position(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - length), size - 1
    start = _position(first)
    if last and _position(last) < start:
        return None  # syntactically invalid: ignore it
    end = _position(last) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, min(end, size - 1)


def etag(sha256: str) -> str:
    return f'"{sha256}"'


def etag_matches(if_none_match: str | None, sha256: str) -> bool:
    if not if_none_match or not sha256:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t.removeprefix("W/") == etag(sha256) for t in tags)


# Bounds the header whatever an older version stored as the name (names are 255 bytes now).
_MAX_HEADER_NAME = 255


def content_disposition(name: Any) -> str:
    """``attachment`` with an ASCII fallback and the exact name as RFC 5987 ``filename*``.

    Safe for any stored name: the fallback is ASCII without quotes or controls, the
    ``filename*`` value is percent-encoded UTF-8 (a lone surrogate becomes U+FFFD), so
    the header is always Latin-1 and cannot be split.
    """
    text = str(name)[:_MAX_HEADER_NAME] if name not in (None, "") else "download"
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", text).strip() or "download"
    encoded = quote(text.encode("utf-8", "replace"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def content_type(stored: Any) -> str:
    """The Content-Type to send for a stored ``content_type``: the stored one if it is a valid
    media type, else ``application/octet-stream`` (older versions stored any text, and a
    non-Latin-1 one made the file undownloadable and cut group archives)."""
    if validation.is_content_type(stored):
        return validation.check_content_type(stored)
    return validation.DEFAULT_CONTENT_TYPE


@dataclass(frozen=True)
class Caller:
    """Who asks: a user (Bearer) or a processor (a pool's X-API-Key)."""

    user_id: str | None = None
    is_admin: bool = False
    pools: frozenset[str] = frozenset()
    processor_pool: str | None = None

    @property
    def actor(self) -> str:
        return self.user_id or f"processor:{self.processor_pool}"


def can_download(record: dict[str, Any], caller: Caller) -> bool:
    pool_id = record.get("pool_id")
    if caller.processor_pool is not None:
        return pool_id is not None and str(pool_id) == caller.processor_pool
    if caller.is_admin or (caller.user_id and record.get("owner_id") == caller.user_id):
        return True
    # SPEC: a pool's result goes to every member of the pool; a member's own updates stay
    # its own (the processor reads them with the pool's key, above).
    return record.get("kind") == "result" and pool_id is not None and str(pool_id) in caller.pools


def item_spans(item: UploadItem, chunk_size: int) -> Iterator[tuple[int, int, int]]:
    """``(chunk_index, start, end)`` slices of the cached chunks that make ``item`` (end exclusive)."""
    position = item.offset
    stop = item.offset + item.length
    while position < stop:
        index = position // chunk_size
        start = position - index * chunk_size
        end = min(chunk_size, stop - index * chunk_size)
        yield index, start, end
        position = index * chunk_size + end


def should_fail(pattern: str | None, file_name: str) -> bool:
    return pattern is not None and pattern != "" and re.search(pattern, file_name) is not None


def stored_record(msg: StoreUpload, item: UploadItem, sha256: str) -> dict[str, Any]:
    """The index fields a store sets (group_id/late are set by FileGrouped, not here)."""
    doc = {
        "file_id": item.file_id, "file_name": item.name, "size": item.length, "sha256": sha256,
        "status": contracts.UPLOADED, "owner_id": msg.owner_id, "owner_name": msg.owner_name,
        "pool_id": msg.pool_id, "timestamp": item.timestamp, "created": msg.created,
        "upload_id": msg.upload_id, "content_type": msg.content_type, "kind": msg.kind,
        "metadata": msg.metadata,
    }
    if msg.group_id:
        doc["group_id"] = msg.group_id
    return doc


def public_record(doc: dict[str, Any]) -> dict[str, Any]:
    out = {key: doc.get(key) for key in RECORD_KEYS}
    out["late"] = bool(doc.get("late", False))
    for key in EXTRA_KEYS:
        if doc.get(key) is not None:
            out[key] = doc[key]
    return out


def parse_limit(raw: str | None, default: int = 100, maximum: int = 1000) -> int:
    if raw is None or raw == "":
        return default
    # ASCII digits, a few of them: "²".isdigit() is true and int() of 5,000 digits raises.
    if re.fullmatch(r"[0-9]{1,9}", raw) is None or not 1 <= int(raw) <= maximum:
        raise ValueError(f"limit must be an integer within 1..{maximum}")
    return int(raw)


def encode_cursor(time: str, audit_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([time, audit_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        time, audit_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(time, str) or not isinstance(audit_id, str):
            raise TypeError
        return time, audit_id
    except (ValueError, TypeError) as exc:
        raise ValueError("cursor is not valid") from exc
