"""The fleet's rules for what a client may send as an id, a checksum, a name or a time.

Written once here so every door (HTTP routes, Socket.IO events, message handlers)
refuses the same input with the same SPEC error (``400 bad_request``). Every
check uses ``fullmatch``: ``re.match`` with ``$`` would let a trailing newline
through, and ids end up in internal URL paths and Redis keys.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from . import timeutil
from .errors import bad_request, too_large

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
# Characters Windows refuses in a name (the separators / and \ are stripped before).
_NAME_WINDOWS_FORBIDDEN = set('<>:"|?*')
# Device names Windows reserves whatever the extension ("con.txt" opens the console); Windows
# also reads the superscript digits 1-3 as digits (COM¹).
_NAME_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?", re.IGNORECASE)

# SPEC: an upload's timestamp may be at most this far in the future (client clocks drift).
# The default of MAX_CLOCK_SKEW_SECONDS; the value in force is read once from the environment
# into ``CommonSettings.max_clock_skew_seconds`` and passed down by each service.
MAX_CLOCK_SKEW_SECONDS = 300
# SPEC: a pool's max_late_seconds default (7 days): an update older than this is refused.
DEFAULT_MAX_LATE_SECONDS = 7 * 86400
# Times the fleet stores and does arithmetic on (windows, retention): within these years, so
# parsing never overflows; upload times are also bounded by the clock skew, so window arithmetic
# on them cannot overflow (a year-9999 timestamp made a groups listing answer 500).
MIN_YEAR, MAX_YEAR = 1970, 9999

# RFC 6838 section 4.2: type and subtype are restricted-names of at most 127 characters.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MEDIA_TYPE = re.compile(rf"({_RESTRICTED_NAME})/({_RESTRICTED_NAME})")
# Parameters (RFC 9110): token=token or token="quoted printable ASCII".
_MEDIA_PARAM = re.compile(r"""([A-Za-z0-9!#$%&'*+.^_`|~-]+)=([A-Za-z0-9!#$%&'*+.^_`|~-]+|"[ !#-\[\]-~]*")""")
MAX_CONTENT_TYPE_LENGTH = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"

# Client metadata is stored with every record and sent back in every listing: its encoded size
# and its nesting are bounded (a deeply nested object also overflows recursive encoders).
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8


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
    """A file name usable on every OS, else 400; the name kept is the client's own otherwise.

    Sanitised (a browser sends ``C:\\fakepath\\x.txt``; Windows itself drops trailing dots
    and spaces, so the name means the same everywhere): the directory part, surrounding
    spaces and trailing dots are stripped. Refused: control and format characters,
    Windows' forbidden characters ``<>:"|?*``, its reserved device names (``CON``,
    ``nul.txt``, ``COM1``...), nothing left, ``.``/``..``, more than 255 UTF-8 bytes.
    Any other Unicode is kept exactly (downloads send it as RFC 5987 ``filename*``).
    """
    if not isinstance(name, str):
        raise bad_request("file_name must be a string")
    name = unicodedata.normalize("NFC", name)
    base = re.split(r"[\\/]", name)[-1].strip().rstrip(". ")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in base):
        raise bad_request("file_name must not contain control characters")
    if base in ("", ".", ".."):
        raise bad_request("file_name is empty or not a file name")
    if len(base.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        raise bad_request(f"file_name is longer than {MAX_FILE_NAME_BYTES} bytes")
    if _NAME_WINDOWS_FORBIDDEN & set(base):
        raise bad_request('file_name must not contain any of < > : " | ? *')
    if _NAME_RESERVED.fullmatch(base.rstrip()):
        raise bad_request("file_name is a reserved device name (CON, PRN, AUX, NUL, COMn, LPTn)")
    return base


def safe_name(name: str, max_length: int = 120, fallback: str = "file") -> str:
    """A name safe as a tar member, a stored name or a header value: [A-Za-z0-9._-], bounded."""
    base = (name or "").replace("\\", "/").split("/")[-1]
    cleaned = _NAME_UNSAFE.sub("_", base).strip("._")
    cleaned = cleaned[:max_length].rstrip("._")
    return cleaned or fallback


def check_timestamp(value: Any, name: str = "timestamp", *, max_future: float | None = None,
                    now: datetime | None = None) -> str:
    """An ISO 8601 time (naive means UTC) within years 1970..9999, answered in the wire format, or 400.

    ``max_future``: refuse a time more than this many seconds after ``now`` (an upload's
    timestamp: ``check_event_time``); None for a query bound such as ``since``.
    """
    try:
        moment = timeutil.parse(value)
    except timeutil.BadTimestamp as exc:
        raise bad_request(f"{name}: {exc}") from exc
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise bad_request(f"{name} must be within the years {MIN_YEAR}..{MAX_YEAR}")
    if max_future is not None:
        limit = (now or timeutil.now()) + timedelta(seconds=max_future)
        if moment > limit:
            raise bad_request(f"{name} is more than {int(max_future)} seconds in the future; "
                              "check the client's clock")
    return timeutil.iso(moment)


def check_event_time(value: Any, name: str = "timestamp", *, max_skew: float = MAX_CLOCK_SKEW_SECONDS,
                     max_late: float | None = None, now: datetime | None = None) -> str:
    """When an update was produced: ``check_timestamp`` at most ``max_skew`` seconds in the future
    and, with ``max_late`` (the pool's ``max_late_seconds``), at most that many seconds old (SPEC)."""
    now = now or timeutil.now()
    stamp = check_timestamp(value, name, max_future=max_skew, now=now)
    if max_late is not None:
        check_not_late(stamp, max_late, name, now=now)
    return stamp


def check_not_late(stamp: str, max_late: float, name: str = "timestamp", *, now: datetime | None = None) -> None:
    """Refuse a (valid, ISO) update time older than ``max_late`` seconds before ``now``: its window
    closed long ago (SPEC: the pool's ``max_late_seconds``)."""
    oldest = (now or timeutil.now()) - timedelta(seconds=max_late)
    # Stored times have millisecond precision: compare at it (a time "now", written out, is
    # up to 1 ms before now and must not count as late with max_late_seconds 0).
    oldest = oldest.replace(microsecond=oldest.microsecond // 1000 * 1000)
    if timeutil.parse(stamp) < oldest:
        raise bad_request(f"{name} is more than {int(max_late)} seconds old, older than the pool accepts "
                          "(its max_late_seconds)")


def check_content_type(value: Any, name: str = "content_type") -> str:
    """An RFC 6838 media type (``type/subtype``, ASCII restricted-names of at most 127 characters,
    optional ``; key=value`` parameters), normalised; absent means ``application/octet-stream``.

    Anything else is refused: the value goes into every download's Content-Type header,
    which must be Latin-1 (a non-Latin-1 one made a file undownloadable and cut archives).
    """
    if value is None or value == "":
        return DEFAULT_CONTENT_TYPE
    if not isinstance(value, str) or len(value) > MAX_CONTENT_TYPE_LENGTH or not value.isascii():
        raise bad_request(f"{name} must be an ASCII media type of at most {MAX_CONTENT_TYPE_LENGTH} characters")
    media, *params = value.split(";")
    found = MEDIA_TYPE.fullmatch(media.strip())
    if found is None:
        raise bad_request(f"{name} must be a media type such as application/octet-stream (RFC 6838)")
    parts = [f"{found.group(1).lower()}/{found.group(2).lower()}"]
    for param in params:
        if not param.strip():
            continue
        matched = _MEDIA_PARAM.fullmatch(param.strip())
        if matched is None:
            raise bad_request(f"{name} has a malformed parameter")
        parts.append(f"{matched.group(1).lower()}={matched.group(2)}")
    return "; ".join(parts)


def is_content_type(value: Any) -> bool:
    """Whether ``value`` passes ``check_content_type`` (e.g. a value stored by an older version)."""
    try:
        check_content_type(value)
    except Exception:  # noqa: BLE001 - any refusal means "not a valid one"
        return False
    return isinstance(value, str) and value != ""


def _depth(value: Any, limit: int) -> int:
    """The nesting depth of a JSON value, counted without recursion, stopping past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def check_metadata(value: Any, max_bytes: int = MAX_METADATA_BYTES, max_depth: int = MAX_METADATA_DEPTH,
                   name: str = "metadata") -> dict[str, Any]:
    """A JSON object (given as one or as JSON text) of at most ``max_bytes`` encoded and
    ``max_depth`` levels of nesting; absent means ``{}``. Too big: 413; anything else: 400."""
    if value is None or value == "":
        return {}
    if isinstance(value, str | bytes):
        if len(value) > max_bytes:
            raise too_large(f"{name} is larger than {max_bytes} bytes")
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise bad_request(f"{name} must be a JSON object") from exc
    if not isinstance(value, dict):
        raise bad_request(f"{name} must be a JSON object")
    if _depth(value, max_depth) > max_depth:
        raise bad_request(f"{name} is nested deeper than {max_depth} levels")
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise bad_request(f"{name} must hold only JSON values") from exc
    if len(encoded.encode("utf-8", "surrogatepass")) > max_bytes:
        raise too_large(f"{name} is larger than {max_bytes} bytes")
    return value


# --- paging -----------------------------------------------------------------------------------
MAX_PAGE, DEFAULT_PAGE = 1000, 100
_COUNT = re.compile(r"[0-9]{1,18}")  # ASCII digits only: "²".isdigit() is true and int() refuses it


def page_limit(raw: Any, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> int:
    """A listing's ``limit``: ``default`` when absent, else 1..``maximum``, or 400."""
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str) or _COUNT.fullmatch(raw) is None or not 1 <= int(raw) <= maximum:
        raise bad_request(f"limit must be an integer in [1, {maximum}]")
    return int(raw)


def count_param(raw: Any, name: str, *, signed: bool = False) -> int | None:
    """A non-negative (``signed``: any) integer parameter of at most 18 digits, so it fits a
    64-bit database field; None when absent; 400 otherwise."""
    if raw is None or raw == "":
        return None
    text = raw[1:] if signed and isinstance(raw, str) and raw.startswith("-") else raw
    if not isinstance(text, str) or _COUNT.fullmatch(text) is None:
        raise bad_request(f"{name} must be {'an' if signed else 'a non-negative'} integer of at most 18 digits")
    return int(raw)
