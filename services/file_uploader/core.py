"""Pure upload logic: validation, chunk arithmetic, content sniffing, retry decisions.

No I/O here: app.py and store.py call these functions with what they read.
Every refusal is the fleet's ``ApiError`` carrying SPEC's status and error code;
the routes answer it as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.common import validation
from services.common.contracts import MAX_STORE_ATTEMPTS, UploadItem
from services.common.errors import ApiError, bad_request

MiB = 1024 * 1024

DEFAULT_FORBIDDEN_EXTENSIONS: tuple[str, ...] = (
    ".exe", ".dll", ".bat", ".cmd", ".com", ".msi", ".msp", ".scr", ".ps1", ".psm1", ".sh", ".bash",
    ".jar", ".vbs", ".vbe", ".wsf", ".wsh", ".hta", ".cpl", ".pif", ".lnk", ".apk", ".app", ".elf",
    ".so", ".dylib", ".sys", ".drv", ".reg", ".gadget", ".class",
)

# Content types a client may declare for an executable; refused at start like the extension.
EXECUTABLE_CONTENT_TYPES = frozenset({
    "application/x-msdownload", "application/x-ms-dos-executable", "application/x-dosexec",
    "application/x-executable", "application/x-elf", "application/x-sharedlib",
    "application/x-mach-binary", "application/x-msi", "application/x-ms-installer",
    "application/vnd.microsoft.portable-executable", "application/java-archive",
    "application/x-java-archive", "application/x-sh", "application/x-shellscript", "text/x-shellscript",
    "application/x-bat", "application/x-msdos-program", "application/x-ms-shortcut",
    "application/java-vm",
})

# Magic bytes of executables (checked on the first bytes of the file and of every item).
EXECUTABLE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows/DOS executable"),
    (b"\x7fELF", "an ELF executable"),
    (b"\xfe\xed\xfa\xce", "a Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O universal binary or Java class"),
    (b"#!", "a script with a shebang"),
)
MAGIC_LENGTH = 4  # the longest magic above



@dataclass(frozen=True)
class Limits:
    max_file_size: int = 64 * MiB
    chunk_size: int = MiB
    forbidden_extensions: tuple[str, ...] = DEFAULT_FORBIDDEN_EXTENSIONS
    max_metadata_bytes: int = 16 * 1024
    max_items: int = 1_000  # SPEC's MAX_ITEMS: each item is a file record and a grouping step
    max_uploads_per_user: int = 20
    # SPEC's MAX_CLOCK_SKEW_SECONDS (CommonSettings): an update at most this far in the future.
    max_clock_skew_seconds: int = validation.MAX_CLOCK_SKEW_SECONDS


# --- names, types, sizes -----------------------------------------------------


def check_extension(name: str, forbidden: Iterable[str]) -> None:
    lowered = name.lower().rstrip(". ")  # Windows ignores trailing dots/spaces: "x.exe." runs
    for ext in forbidden:
        if lowered.endswith(ext.lower()):
            raise ApiError(415, "forbidden_type", f"files of type {ext} are not accepted")


def check_content_type(content_type: Any) -> str:
    if content_type is None or content_type == "":
        return "application/octet-stream"
    if not isinstance(content_type, str) or len(content_type) > 255 \
            or any(ord(ch) < 32 or ord(ch) == 127 for ch in content_type):
        raise bad_request("content_type must be a short string")
    base = content_type.split(";", 1)[0].strip().lower()
    if base in EXECUTABLE_CONTENT_TYPES:
        raise ApiError(415, "forbidden_type", f"content type {base} is not accepted")
    return content_type.strip()


def sniff_executable(head: bytes) -> str | None:
    """What kind of executable ``head`` (the first bytes of a file) starts, or None."""
    for magic, what in EXECUTABLE_MAGIC:
        if head.startswith(magic):
            return what
    return None


def check_content(head: bytes) -> None:
    what = sniff_executable(head)
    if what is not None:
        raise ApiError(415, "forbidden_type", f"the content is {what}; executables are not accepted")


def check_size(size: Any, limits: Limits) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise bad_request("size must be an integer number of bytes")
    if size == 0:
        raise ApiError(400, "empty_file", "the file is empty")
    if size < 0:
        raise bad_request("size must be positive")
    if size > limits.max_file_size:
        raise ApiError(413, "too_large", f"the file is larger than {limits.max_file_size} bytes",
                      max_size=limits.max_file_size)
    return size


def parse_metadata(value: Any, max_bytes: int) -> dict[str, Any]:
    """A JSON object (given as an object or as JSON text) of at most ``max_bytes``."""
    if value is None or value == "":
        return {}
    if isinstance(value, str | bytes):
        if len(value) > max_bytes:
            raise ApiError(413, "too_large", f"metadata is larger than {max_bytes} bytes")
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise bad_request("metadata must be a JSON object") from exc
    if not isinstance(value, dict):
        raise bad_request("metadata must be a JSON object")
    encoded = json.dumps(value, separators=(",", ":"))
    if len(encoded.encode()) > max_bytes:
        raise ApiError(413, "too_large", f"metadata is larger than {max_bytes} bytes")
    return value


def parse_timestamp(value: Any, default: str, max_skew: float = validation.MAX_CLOCK_SKEW_SECONDS,
                    name: str = "timestamp") -> str:
    return default if value is None or value == "" else validation.check_event_time(value, name, max_skew=max_skew)


# --- items -------------------------------------------------------------------


def item_file_id(upload_id: str, n: int) -> str:
    return f"{upload_id}-{n:04d}"


def build_items(upload_id: str, raw: Any, size: int, file_name: str, timestamp: str,
                limits: Limits) -> tuple[UploadItem, ...]:
    """The upload's file records: one covering it all, or one per batch item.

    Batch ranges must be inside the file, at least one byte long and must not
    overlap (each range is a separate update; overlapping ones would be two
    records sharing bytes, which no client means to send).
    """
    if raw is None or raw == [] or raw == "":
        return (UploadItem(file_id=upload_id, offset=0, length=size, timestamp=timestamp, name=file_name),)
    if not isinstance(raw, list):
        raise bad_request("items must be a list")
    if len(raw) > limits.max_items:
        raise bad_request(f"at most {limits.max_items} items per upload; send the rest as another batch",
                          max_items=limits.max_items)
    items = []
    for n, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise bad_request(f"items[{n}] must be an object")
        offset = validation.check_int(entry.get("offset"), f"items[{n}].offset", minimum=-(2 ** 63))
        length = validation.check_int(entry.get("length"), f"items[{n}].length", minimum=-(2 ** 63))
        if offset < 0 or length < 1 or offset + length > size:
            raise bad_request(f"items[{n}] range [{offset}, {offset + length}) is not inside the file")
        if "timestamp" not in entry:
            raise bad_request(f"items[{n}].timestamp is required")
        stamp = parse_timestamp(entry.get("timestamp"), timestamp, limits.max_clock_skew_seconds,
                                f"items[{n}].timestamp")
        name = entry.get("name")
        name = validation.check_file_name(name) if name not in (None, "") else f"{file_name}.{n:04d}"
        check_extension(name, limits.forbidden_extensions)
        items.append(UploadItem(file_id=item_file_id(upload_id, n), offset=offset, length=length,
                                timestamp=stamp, name=name))
    ordered = sorted(items, key=lambda i: i.offset)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.offset < before.offset + before.length:
            raise bad_request("items ranges overlap")
    return tuple(items)


# --- chunks ------------------------------------------------------------------


def chunk_count(size: int, chunk_size: int) -> int:
    return max(1, math.ceil(size / chunk_size))


def chunk_length(size: int, chunk_size: int, index: int) -> int:
    """Exactly ``chunk_size`` except the last chunk, which holds the remainder."""
    count = chunk_count(size, chunk_size)
    if index < count - 1:
        return chunk_size
    return size - chunk_size * (count - 1)


def parse_index(raw: Any) -> int:
    try:
        index = int(raw)
    except (TypeError, ValueError) as exc:
        raise bad_request("index must be an integer") from exc
    if isinstance(raw, bool):
        raise bad_request("index must be an integer")
    return index


def check_chunk(size: int, chunk_size: int, index: int, length: int) -> None:
    count = chunk_count(size, chunk_size)
    if index < 0 or index >= count:
        raise bad_request(f"chunk index {index} is outside 0..{count - 1}")
    expected = chunk_length(size, chunk_size, index)
    if length > expected:
        raise ApiError(413, "too_large", f"chunk {index} must be {expected} bytes, got {length}",
                      expected=expected)
    if length != expected:
        raise bad_request(f"chunk {index} must be {expected} bytes, got {length}", expected=expected)


def missing_indexes(count: int, received: Iterable[int]) -> list[int]:
    have = set(received)
    return [i for i in range(count) if i not in have]


HeadPart = tuple[int, int, int]  # (chunk index, start, end) of a head's bytes inside that chunk


def head_parts(item: UploadItem, chunk_size: int) -> list[HeadPart]:
    """Where ``item``'s head lies: its first MAGIC_LENGTH bytes (fewer if the item is shorter).

    One part when the head sits inside a chunk, two when it crosses a chunk boundary
    (an item starting 1-3 bytes before a boundary): both halves must be put
    together before sniffing, or "MZ" split over two chunks passes unseen.
    """
    end = item.offset + min(MAGIC_LENGTH, item.length)
    parts: list[HeadPart] = []
    pos = item.offset
    while pos < end:
        index = pos // chunk_size
        base = index * chunk_size
        stop = min(end, base + chunk_size)
        parts.append((index, pos - base, stop - base))
        pos = stop
    return parts


def heads_touching_chunk(items: Iterable[UploadItem], index: int, chunk_size: int) -> list[list[HeadPart]]:
    """The heads with bytes in chunk ``index`` (each as its parts)."""
    heads = (head_parts(item, chunk_size) for item in items)
    return [parts for parts in heads if any(part[0] == index for part in parts)]


def straddling_heads(items: Iterable[UploadItem], chunk_size: int) -> list[list[HeadPart]]:
    """The heads that cross a chunk boundary: re-checked whole at completion (two chunks
    written at once may each have missed the other's half). Items do not overlap, so
    there is at most one per boundary."""
    heads = (head_parts(item, chunk_size) for item in items)
    return [parts for parts in heads if len(parts) > 1]


# --- start of an upload ----------------------------------------------------------


@dataclass(frozen=True)
class UploadPlan:
    upload_id: str
    owner_id: str
    owner_name: str
    file_name: str
    size: int
    content_type: str
    sha256: str | None
    pool_id: str | None
    timestamp: str
    items: tuple[UploadItem, ...]
    metadata: dict[str, Any]
    kind: str
    group_id: str | None
    chunk_size: int
    chunk_count: int
    created: str
    extra: dict[str, Any] = field(default_factory=dict)


def plan_upload(payload: Mapping[str, Any], *, upload_id: str, owner_id: str, owner_name: str,
                limits: Limits, now: str) -> UploadPlan:
    """Validate a start-transfer request; every rule of SPEC's start-transfer is here."""
    file_name = validation.check_file_name(payload.get("file_name"))
    check_extension(file_name, limits.forbidden_extensions)
    content_type = check_content_type(validation.check_content_type(payload.get("content_type")))
    size = check_size(payload.get("size"), limits)
    sha256 = validation.optional_sha256(payload.get("sha256"))
    pool_id = validation.optional_id(payload.get("pool_id"), "pool_id")
    timestamp = parse_timestamp(payload.get("timestamp"), now, limits.max_clock_skew_seconds)
    metadata = validation.check_metadata(payload.get("metadata"), limits.max_metadata_bytes)
    kind = payload.get("kind") or "file"
    if kind not in ("file", "result"):
        raise bad_request("kind must be file or result")
    group_id = validation.optional_id(payload.get("group_id"), "group_id")
    items = build_items(upload_id, payload.get("items"), size, file_name, timestamp, limits)
    return UploadPlan(upload_id=upload_id, owner_id=owner_id, owner_name=owner_name, file_name=file_name,
                      size=size, content_type=content_type, sha256=sha256, pool_id=pool_id,
                      timestamp=timestamp, items=items, metadata=metadata, kind=kind, group_id=group_id,
                      chunk_size=limits.chunk_size, chunk_count=chunk_count(size, limits.chunk_size),
                      created=now)


def check_not_late(plan: UploadPlan, max_late_seconds: float, now: datetime) -> None:
    """SPEC: an update older than its pool's ``max_late_seconds`` is refused (``bad_request``).

    Checked on every item of a batch: one late item refuses the whole upload before any
    byte is sent, rather than storing a batch whose late part its pool would never group.
    """
    whole = len(plan.items) == 1 and plan.items[0].file_id == plan.upload_id
    for n, item in enumerate(plan.items):
        validation.check_not_late(item.timestamp, max_late_seconds,
                                  "timestamp" if whole else f"items[{n}].timestamp", now=now)


# --- store retries -----------------------------------------------------------


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    next_attempt: int | None


def retry_decision(failed_attempt: int, max_attempts: int = MAX_STORE_ATTEMPTS) -> RetryDecision:
    """After attempt ``failed_attempt`` failed: try again (attempt+1) or give up."""
    if failed_attempt < max_attempts:
        return RetryDecision(True, failed_attempt + 1)
    return RetryDecision(False, None)


def overload_reasons(*, queue_depth: int | None, max_queue_depth: int, redis_memory: int | None,
                     max_redis_memory: int, pending_bytes: int | None, max_pending_bytes: int) -> list[str]:
    """Why new uploads should wait (a threshold of 0 disables its check)."""
    reasons = []
    if max_queue_depth and queue_depth is not None and queue_depth >= max_queue_depth:
        reasons.append(f"store queue holds {queue_depth} uploads")
    if max_redis_memory and redis_memory is not None and redis_memory >= max_redis_memory:
        reasons.append("upload cache memory is full")
    if max_pending_bytes and pending_bytes is not None and pending_bytes >= max_pending_bytes:
        reasons.append("too many bytes are waiting to be stored")
    return reasons
