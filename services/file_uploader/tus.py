"""The tus 1.0.0 protocol's pure parts: versions, extensions, Upload-Metadata, Upload-Checksum.

No I/O here (``tus_uploads`` holds the use cases, ``tus_routes`` the HTTP door).
Everything a client sends is bounded before it is decoded: the metadata header's
length and pair count, key length and alphabet, base64 strictness, checksum size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from services.common.errors import ApiError, bad_request

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
MAX_METADATA_PAIRS = 64  # a few keys are meaningful (SPEC); more is abuse
MAX_KEY_LENGTH = 64
# The tus headers a browser client must send and read (CORS).
REQUEST_HEADERS = ("Authorization", "Content-Type", "Tus-Resumable", "Upload-Length", "Upload-Offset",
                   "Upload-Metadata", "Upload-Checksum", "Upload-Defer-Length", "Upload-Concat",
                   "X-HTTP-Method-Override", "X-Requested-With")
EXPOSED_HEADERS = ("Location", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
                   "Tus-Checksum-Algorithm", "Upload-Offset", "Upload-Length", "Upload-Expires",
                   "Upload-Metadata")
# SPEC's Upload-Metadata keys -> start-transfer fields; common client spellings are accepted too
# (Uppy sends name/filetype), the SPEC key wins when both are given.
FIELDS = {"filename": "file_name", "content_type": "content_type", "pool_id": "pool_id",
          "timestamp": "timestamp", "sha256": "sha256"}
ALIASES = {"name": "file_name", "filetype": "content_type", "type": "content_type"}
_KEY = re.compile(r"^[!-+\--~]+$")  # printable ASCII without space and comma


def checksum_mismatch() -> ApiError:
    return ApiError(460, "checksum_mismatch", "the body does not match Upload-Checksum; nothing was kept")


def parse_int_header(value: str | None, name: str) -> int | None:
    """A non-negative decimal header (Upload-Length, Upload-Offset); None when absent."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise bad_request(f"{name} must be a non-negative integer")
    return int(value)


def parse_metadata(header: str | None, max_bytes: int) -> dict[str, str]:
    """Upload-Metadata: comma-separated ``key base64(value)`` pairs (the value may be absent)."""
    if not header:
        return {}
    if len(header) > max_bytes:
        raise bad_request(f"Upload-Metadata is longer than {max_bytes} bytes")
    pairs = header.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise bad_request(f"Upload-Metadata holds more than {MAX_METADATA_PAIRS} pairs")
    found: dict[str, str] = {}
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise bad_request("Upload-Metadata pairs are 'key base64value'")
        key = parts[0]
        if len(key) > MAX_KEY_LENGTH or not _KEY.match(key):
            raise bad_request("an Upload-Metadata key is too long or holds forbidden characters")
        if key in found:
            raise bad_request(f"Upload-Metadata key {key!r} is given twice")
        raw = parts[1] if len(parts) == 2 else ""
        try:
            found[key] = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise bad_request(f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text") from exc
    return found


def start_payload(metadata: dict[str, str], length: int) -> dict[str, Any]:
    """The start-transfer payload of a tus creation; other keys travel as the file's metadata."""
    payload: dict[str, Any] = {"size": length}
    extra: dict[str, str] = {}
    for key, value in metadata.items():
        if key in FIELDS:
            payload[FIELDS[key]] = value or None
        elif key not in ALIASES:
            extra[key] = value
    for key, field in ALIASES.items():
        if payload.get(field) is None and metadata.get(key):
            payload[field] = metadata[key]
    if not payload.get("file_name"):
        raise bad_request("Upload-Metadata must hold filename")
    payload["metadata"] = extra or None
    return payload


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return CHECKSUM_ALGORITHMS[self.algorithm]()


def parse_checksum(header: str | None) -> Checksum | None:
    """Upload-Checksum: ``<algorithm> <base64 digest>``; an unsupported algorithm is a 400."""
    if not header:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2 or len(parts[1]) > 128:
        raise bad_request("Upload-Checksum is '<algorithm> <base64 digest>'")
    algorithm = parts[0].lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise bad_request(f"Upload-Checksum algorithm must be one of {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request("Upload-Checksum digest is not base64") from exc
    return Checksum(algorithm, digest)


def http_date(epoch: float) -> str:
    """Upload-Expires is an RFC 7231 date."""
    return formatdate(epoch, usegmt=True)


def contiguous(missing: list[int], chunk_count: int) -> int:
    """How many chunks from the start are written (a tus upload writes them in order)."""
    return missing[0] if missing else chunk_count
