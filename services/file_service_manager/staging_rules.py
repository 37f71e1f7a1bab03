"""Staging's pure rules (SPEC "Staging"): targets checked, path templates, signing, the retry schedule.

No I/O here. A pool's ``staging`` comes from auth (secrets decrypted on its internal route),
so it is checked again before use: never trusted, every field bounded. A target's secrets
(an S3 secret key, a webhook secret) never appear in a repr, an error, a status or a log:
errors name fields, never values.

Path templates: ``{pool_id}``, ``{group_id}``, ``{window_start}``, ``{seq}``, ``{file_name}``.
The *target's directory* is the template's fixed part: everything before the first
placeholder, up to its last ``/``. Every substituted value is made a single safe path
component (no ``/``, ``\\``, NUL or control characters, never ``.``/``..`` nor hidden), so a
rendered path cannot climb out of that directory; the I/O side checks it again on the
resolved path (symlinks).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from services.common import poolstorage

KINDS = ("filesystem", "s3", "webhook")
MAX_TARGETS = poolstorage.MAX_STAGING_TARGETS  # the bound auth enforces: one message + one status doc each
MAX_FIELD = 1024  # characters of any one target field (a path, a URL, a key)
MAX_COMPONENT_BYTES = 200  # UTF-8 bytes of one rendered path component (filesystems allow 255)
MAX_ERROR = 300  # characters of an error kept in a status document
PLACEHOLDERS = ("pool_id", "group_id", "window_start", "seq", "file_name")

PENDING, DONE, FAILED = "pending", "done", "failed"


class BadTarget(ValueError):
    """A staging target that cannot be used; the message names fields, never their values."""


@dataclass(frozen=True)
class Target:
    kind: str
    path: str | None = None  # filesystem: the path template (absolute)
    link: bool = False
    endpoint_url: str | None = None
    bucket: str | None = None
    prefix: str = ""
    region: str | None = None
    url: str | None = None  # webhook
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)


def _text(raw: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise BadTarget(f"staging target field {name!r} is required for kind {raw.get('kind')!r}")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD or "\x00" in value:
        raise BadTarget(f"staging target field {name!r} must be a string of at most {MAX_FIELD} characters")
    return value


def _http_url(raw: Mapping[str, Any], name: str) -> str:
    value = _text(raw, name, required=True) or ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadTarget(f"staging target field {name!r} must be an http(s) URL")
    return value


def parse_target(raw: object) -> Target:
    """A checked ``Target`` from SPEC's JSON shape."""
    if not isinstance(raw, Mapping):
        raise BadTarget("a staging target must be a JSON object")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise BadTarget(f"staging target kind must be one of {', '.join(KINDS)}")
    if kind == "filesystem":
        path = _text(raw, "path", required=True) or ""
        check_template(path)
        link = raw.get("link", False)
        if not isinstance(link, bool):
            raise BadTarget("staging target field 'link' must be true or false")
        return Target("filesystem", path=path, link=link)
    if kind == "s3":
        prefix = _text(raw, "prefix") or ""
        if prefix:
            check_placeholders(prefix)
        return Target("s3", endpoint_url=_http_url(raw, "endpoint_url"), bucket=_text(raw, "bucket", required=True),
                      prefix=prefix, region=_text(raw, "region"),
                      access_key_id=_text(raw, "access_key_id", required=True),
                      secret_access_key=_text(raw, "secret_access_key", required=True))
    return Target("webhook", url=_http_url(raw, "url"), secret=_text(raw, "secret", required=True))


def kind_of(raw: object) -> str:
    """The kind a raw target claims (for the status of a target that did not parse)."""
    kind = raw.get("kind") if isinstance(raw, Mapping) else None
    return kind if isinstance(kind, str) and kind in KINDS else "unknown"


def _parts(template: str) -> list[tuple[str, str | None]]:
    """``(literal, placeholder or None)`` pairs, by ``str.format``'s rules (``{{``/``}}`` are
    literal braces, as auth's check of the same template allows)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise BadTarget("unbalanced braces in a staging template") from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            raise BadTarget(f"unknown placeholder in a staging template (known: {', '.join(PLACEHOLDERS)})")
        parts.append((literal, name))
    return parts


def check_placeholders(template: str) -> None:
    _parts(template)


def names_in(template: str) -> set[str]:
    return {name for _, name in _parts(template) if name is not None}


def check_template(path: str) -> None:
    """The same rule auth applies (``poolstorage.check_staging_path``): absolute, known
    placeholders, no ``..``, a fixed directory before the first placeholder."""
    _parts(path)
    try:
        poolstorage.check_staging_path(path, "a filesystem staging path")
    except poolstorage.StorageInvalid as exc:
        raise BadTarget(str(exc)) from None


def base_dir(template: str) -> str:
    """The target's directory: the template's fixed part before the first placeholder, to its last '/'."""
    _parts(template)
    return poolstorage.staging_base_dir(template)


def safe_component(value: str) -> str:
    """``value`` as one harmless path component: separators, NUL and control characters become
    ``_``; never empty, ``.``, ``..`` or hidden (a leading ``.`` becomes ``_``); at most
    MAX_COMPONENT_BYTES."""
    cleaned = "".join("_" if (ch in "/\\" or not ch.isprintable()) else ch for ch in value).strip()
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    if not cleaned:
        cleaned = "_"
    encoded = cleaned.encode()[:MAX_COMPONENT_BYTES]
    return encoded.decode(errors="ignore") or "_"


def render(template: str, values: Mapping[str, object]) -> str:
    """``template`` with each placeholder replaced by its value made safe (``safe_component``)."""
    return "".join(literal + (safe_component(str(values[name])) if name else "") for literal, name in _parts(template))


def file_path(template: str, values: Mapping[str, object]) -> str:
    """Where a result goes: the rendered template, plus the safe file name unless the template
    names it (``{file_name}``). Always a path under ``base_dir(template)``."""
    rendered = render(template, values)
    if "file_name" not in names_in(template):
        rendered = rendered.rstrip("/") + "/" + safe_component(str(values["file_name"]))
    path = os.path.normpath(rendered)
    if not is_under(path, base_dir(template)):  # cannot happen with safe components; checked anyway
        raise BadTarget("a staging path leaves its target directory")
    return path


def s3_key(prefix: str, values: Mapping[str, object]) -> str:
    """The object key: the rendered prefix, plus the safe file name unless the prefix names it."""
    rendered = render(prefix, values) if prefix else ""
    if "file_name" in names_in(prefix):
        return rendered
    return rendered + safe_component(str(values["file_name"]))


def is_under(path: str, directory: str) -> bool:
    directory = os.path.normpath(directory)
    return os.path.commonpath([os.path.normpath(path), directory]) == directory and path != directory


def webhook_body(values: Mapping[str, Any]) -> bytes:
    """SPEC's webhook payload, compact JSON with sorted keys (what the signature covers)."""
    keys = ("pool_id", "group_id", "result_id", "seq", "sha256", "download_url")
    return json.dumps({k: values[k] for k in keys}, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, body: bytes) -> str:
    """``X-Dropbox-Signature``: the lowercase hex HMAC-SHA256 of the exact body bytes."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(retry: int, base: float, factor: float, cap: float) -> float:
    """Seconds before retry ``retry`` (1 = the second attempt): base, base*factor, ... up to cap."""
    if retry < 1:
        raise ValueError("retries count from 1")
    return min(cap, base * factor ** (retry - 1))


def next_step(attempt: int, max_attempts: int) -> str:
    """After failed attempt ``attempt``: ``retry`` or ``failed`` (SPEC: at most max_attempts)."""
    return "retry" if attempt < max_attempts else FAILED


def public_url(url: str) -> str:
    """A URL as status and logs may show it: scheme, host, port and path, never user info
    or a query (either may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def short_error(text: str) -> str:
    return text[:MAX_ERROR]
