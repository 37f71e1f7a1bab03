"""The fleet's rules for what a client may send as an id, a checksum, a name or a time.

Written once here so every door (HTTP routes, Socket.IO events, message handlers)
refuses the same input with the same SPEC error (``400 bad_request``). Every
check uses ``fullmatch``: ``re.match`` with ``$`` would let a trailing newline
through, and ids end up in internal URL paths and Redis keys.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from . import timeutil
from .errors import bad_request

# Ids go into URL paths (/uploads/<id>, /pools/<id>/results), Redis keys and Mongo filters:
# letters, digits, '_' and '-' only, so nothing can walk a path ("../"), smuggle a query or
# split a key. 128 characters bound a key; every id the fleet makes (uuid hex, "p_" + hex,
# "<upload>-0001", "<pool>-<window>") fits.
MAX_ID_LENGTH = 128
ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
SHA256 = re.compile(r"[0-9a-f]{64}")
USER_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,64}")
MAX_FILE_NAME_BYTES = 255
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_id(value: Any) -> bool:
    return isinstance(value, str) and ID.fullmatch(value) is not None


def check_id(value: Any, name: str) -> str:
    """An id (an int is taken as its decimal text), or 400."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not is_id(value):
        raise bad_request(f"{name} must be an id of 1-{MAX_ID_LENGTH} letters, digits, '_' or '-'")
    return str(value)


def optional_id(value: Any, name: str) -> str | None:
    """``check_id`` where the field may be absent (None or empty)."""
    return None if value is None or value == "" else check_id(value, name)


def check_sha256(value: Any, name: str = "sha256") -> str:
    """64 hex digits, answered lower-case, or 400."""
    if not isinstance(value, str) or SHA256.fullmatch(value.lower()) is None:
        raise bad_request(f"{name} must be 64 hex digits")
    return value.lower()


def optional_sha256(value: Any, name: str = "sha256") -> str | None:
    return None if value is None or value == "" else check_sha256(value, name)


def check_int(value: Any, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer (never a bool or a float) within bounds, or 400."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum \
            or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise bad_request(f"{name} must be an integer {bound}")
    return value


def check_user_name(value: Any) -> str:
    if not isinstance(value, str) or USER_NAME.fullmatch(value) is None:
        raise bad_request("user_name must be 3-64 characters of letters, digits, '_', '.' or '-'")
    return value


def check_file_name(name: Any) -> str:
    """The base name only, no path parts or control characters, 1..255 UTF-8 bytes.

    Path parts are stripped rather than refused (a browser may send
    ``C:\\fakepath\\x.txt``); what is left must be a usable name.
    """
    if not isinstance(name, str):
        raise bad_request("file_name must be a string")
    name = unicodedata.normalize("NFC", name)
    base = re.split(r"[\\/]", name)[-1].strip()
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in base):
        raise bad_request("file_name must not contain control characters")
    if base in ("", ".", ".."):
        raise bad_request("file_name is empty or not a file name")
    if len(base.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        raise bad_request(f"file_name is longer than {MAX_FILE_NAME_BYTES} bytes")
    return base


def safe_name(name: str, max_length: int = 120, fallback: str = "file") -> str:
    """A name safe as a tar member, a stored name or a header value: [A-Za-z0-9._-], bounded."""
    base = (name or "").replace("\\", "/").split("/")[-1]
    cleaned = _NAME_UNSAFE.sub("_", base).strip("._")
    cleaned = cleaned[:max_length].rstrip("._")
    return cleaned or fallback


def check_timestamp(value: Any, name: str = "timestamp") -> str:
    """An ISO 8601 time (naive means UTC), answered in the wire format, or 400."""
    try:
        return timeutil.iso(timeutil.parse(value))
    except timeutil.BadTimestamp as exc:
        raise bad_request(f"{name}: {exc}") from exc
