"""A pool's ``storage`` and ``staging`` (SPEC "Storage backends", "Staging"): shapes and secrets, no I/O.

auth checks what an admin sends (``check_storage``, ``check_staging``), keeps
the secret fields encrypted (``seal`` with a ``SecretBox``), shows them as
``"***"`` (``mask``) and gives them back in clear only on its internal route
(``unseal``); a PATCH that sends ``"***"`` back keeps the stored secret
(``keep_masked``) as long as it still goes to the same place (an admin cannot
redirect a stored secret to another endpoint without typing it again).
file_service_manager checks a storage fully when it probes it
(``backends.parse_spec``); pool_aggregator reads staging targets. A filesystem
staging path and the number of targets follow one rule for auth and
file_service_manager (``check_staging_path``, ``MAX_STAGING_TARGETS``), so a
target auth accepts is never refused later.

Every value is bounded: field lengths, number of targets, the whole JSON.
"""

from __future__ import annotations

import copy
import json
import os
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MASK", "MAX_STAGING_TARGETS", "PLACEHOLDERS", "StorageInvalid", "check_staging", "check_staging_path",
           "check_roots", "check_storage", "keep_masked", "mask", "seal", "staging_base_dir", "under_roots", "unseal"]

MASK = "***"  # what every response shows in place of a secret
STORAGE_BACKENDS = ("gridfs", "filesystem", "s3")
STAGING_KINDS = ("filesystem", "s3", "webhook")
MAX_FIELD = 1024  # characters of any one field (a path, a URL, a key)
# each result is copied once per target (one message, one status document each): a bound on the
# work one result makes; auth refuses more, file_service_manager uses no more
MAX_STAGING_TARGETS = 8
MAX_JSON = 16 * 1024  # characters of a storage or staging value as JSON
PLACEHOLDERS = ("pool_id", "group_id", "window_start", "seq", "file_name")  # SPEC "Staging"

# The fields holding secrets, per storage backend / staging kind.
STORAGE_SECRETS = {"s3": ("secret_access_key",)}
STAGING_SECRETS = {"s3": ("secret_access_key",), "webhook": ("secret",)}

STORAGE_FIELDS = {
    "gridfs": ({"backend"}, {"bucket"}),
    "filesystem": ({"backend", "root"}, set()),
    "s3": ({"backend", "endpoint_url", "bucket", "access_key_id", "secret_access_key"}, {"prefix", "region"}),
}
STAGING_FIELDS = {
    "filesystem": ({"kind", "path"}, {"link"}),
    "s3": ({"kind", "endpoint_url", "bucket", "access_key_id", "secret_access_key"}, {"prefix", "region"}),
    "webhook": ({"kind", "url", "secret"}, set()),
}


class StorageInvalid(ValueError):
    """A storage or staging value breaks a rule; the message is safe to show (it never quotes a secret)."""


def _size(value: Any, what: str) -> None:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        raise StorageInvalid(f"{what} must be JSON") from None
    if len(text) > MAX_JSON:
        raise StorageInvalid(f"{what} is longer than {MAX_JSON} characters as JSON")


def _fields(raw: Mapping[str, Any], what: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    unknown = sorted(str(k)[:40] for k in raw if k not in required | optional)
    if unknown:
        raise StorageInvalid(f"{what}: unknown fields {', '.join(unknown[:10])}")
    missing = sorted(k for k in required if raw.get(k) in (None, ""))
    if missing:
        raise StorageInvalid(f"{what}: {', '.join(missing)} required")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key == "link":
            if not isinstance(value, bool):
                raise StorageInvalid(f"{what}: link must be true or false")
        elif not isinstance(value, str) or len(value) > MAX_FIELD or any(ord(c) < 32 for c in value):
            raise StorageInvalid(f"{what}: {key} must be a string of at most {MAX_FIELD} printable characters")
        out[key] = value
    return out


def _http_url(value: str, what: str) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise StorageInvalid(f"{what} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise StorageInvalid(f"{what} must be an http or https URL with a host")


def _template(value: str, what: str) -> None:
    """Only SPEC's placeholders, plain (no attribute, index, conversion or format spec)."""
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError:
        raise StorageInvalid(f"{what}: unbalanced braces (write {{{{ and }}}} for literal braces)") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise StorageInvalid(f"{what}: placeholders are only {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")


def staging_base_dir(path: str) -> str:
    """A filesystem staging path's *fixed directory*: the template's fixed part before the first
    placeholder, up to its last ``/`` (the whole path when it has no placeholder)."""
    head = ""
    for literal, name, _spec, _conversion in string.Formatter().parse(path):
        head += literal
        if name is not None:
            return os.path.normpath(head[: head.rfind("/") + 1] or "/")
    return os.path.normpath(head)


def check_staging_path(path: str, what: str = "path") -> str:
    """The one rule for a filesystem staging path template, used by auth (when an admin sets it)
    and by file_service_manager (before writing): absolute, only SPEC's placeholders, no ``..``
    in its fixed parts, and a fixed directory (not ``/``) before the first placeholder.
    Returns that fixed directory."""
    _template(path, what)
    if not os.path.isabs(path):
        raise StorageInvalid(f"{what} must be absolute")
    # The fixed parts must not climb: a ".." segment could leave the directory the admin named.
    fixed = "".join(literal + ("x" if name else "")
                    for literal, name, _spec, _conversion in string.Formatter().parse(path))
    if ".." in fixed.replace("\\", "/").split("/"):
        raise StorageInvalid(f"{what} must not contain '..'")
    base = staging_base_dir(path)
    if base == "/":
        raise StorageInvalid(f"{what} needs a fixed directory before its first placeholder")
    return base


def under_roots(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies under one (lexically; no roots: no restriction)."""
    if not roots:
        return True
    path = os.path.normpath(path)
    return any(os.path.commonpath([path, os.path.normpath(root)]) == os.path.normpath(root) for root in roots)


def check_roots(storage: Mapping[str, Any] | None, staging: Sequence[Mapping[str, Any]] | None,
                roots: Sequence[str]) -> None:
    """FILESYSTEM_ROOTS: a filesystem storage root and every filesystem staging path's fixed
    directory lie under one of ``roots`` (empty: no restriction). Raises ``StorageInvalid``
    naming the field, never the configured roots."""
    if storage is not None and storage.get("backend") == "filesystem" \
            and not under_roots(str(storage.get("root") or ""), roots):
        raise StorageInvalid("storage: filesystem root is not under a directory this fleet allows (FILESYSTEM_ROOTS)")
    for i, target in enumerate(staging or []):
        if target.get("kind") == "filesystem" and not under_roots(staging_base_dir(str(target.get("path"))), roots):
            raise StorageInvalid(f"staging[{i}]: path is not under a directory this fleet allows (FILESYSTEM_ROOTS)")


def check_storage(raw: Any) -> dict[str, Any]:
    """SPEC's storage JSON, its shape checked (``"***"`` allowed for a secret: ``keep_masked`` resolves it)."""
    if not isinstance(raw, Mapping):
        raise StorageInvalid("storage must be a JSON object")
    _size(raw, "storage")
    backend = raw.get("backend")
    if backend not in STORAGE_BACKENDS:
        raise StorageInvalid(f"storage backend must be one of {', '.join(STORAGE_BACKENDS)}")
    required, optional = STORAGE_FIELDS[backend]
    out = _fields(raw, "storage", required, optional)
    if backend == "gridfs":
        bucket = out.get("bucket")
        if bucket is not None and (len(bucket) > 64 or not bucket.replace("_", "").replace("-", "").isalnum()):
            raise StorageInvalid("storage: gridfs bucket must be letters, digits, '-' or '_' (at most 64)")
    elif backend == "filesystem":
        if not os.path.isabs(out["root"]):
            raise StorageInvalid("storage: filesystem root must be an absolute path")
        out["root"] = os.path.normpath(out["root"])
    else:
        _http_url(out["endpoint_url"], "storage: endpoint_url")
    return out


def check_staging(raw: Any) -> list[dict[str, Any]]:
    """SPEC's staging list, each target checked; at most ``MAX_STAGING_TARGETS``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise StorageInvalid("staging must be a list of targets")
    if len(raw) > MAX_STAGING_TARGETS:
        raise StorageInvalid(f"staging: at most {MAX_STAGING_TARGETS} targets")
    _size(raw, "staging")
    targets = []
    for i, target in enumerate(raw):
        what = f"staging[{i}]"
        if not isinstance(target, Mapping):
            raise StorageInvalid(f"{what} must be a JSON object")
        kind = target.get("kind")
        if kind not in STAGING_KINDS:
            raise StorageInvalid(f"{what}: kind must be one of {', '.join(STAGING_KINDS)}")
        required, optional = STAGING_FIELDS[kind]
        out = _fields(target, what, required, optional)
        if kind == "filesystem":
            check_staging_path(out["path"], f"{what}: path")
        elif kind == "s3":
            _http_url(out["endpoint_url"], f"{what}: endpoint_url")
            if "prefix" in out:
                _template(out["prefix"], f"{what}: prefix")
        else:
            _http_url(out["url"], f"{what}: url")
        targets.append(out)
    return targets


def _secret_fields(doc: Mapping[str, Any], table: Mapping[str, tuple[str, ...]], key: str) -> tuple[str, ...]:
    return table.get(str(doc.get(key)), ())


def _each(storage: Mapping[str, Any] | None, staging: Sequence[Mapping[str, Any]] | None,
          fn: Callable[[dict[str, Any], tuple[str, ...]], None]) -> tuple[dict[str, Any] | None,
                                                                          list[dict[str, Any]] | None]:
    new_storage = copy.deepcopy(dict(storage)) if storage is not None else None
    new_staging = [copy.deepcopy(dict(t)) for t in staging] if staging is not None else None
    if new_storage is not None:
        fn(new_storage, _secret_fields(new_storage, STORAGE_SECRETS, "backend"))
    for target in new_staging or []:
        fn(target, _secret_fields(target, STAGING_SECRETS, "kind"))
    return new_storage, new_staging


def mask(storage: Mapping[str, Any] | None, staging: Sequence[Mapping[str, Any]] | None
         ) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """The values as any response shows them: every secret ``"***"``."""
    def hide(doc: dict[str, Any], fields: tuple[str, ...]) -> None:
        for f in fields:
            if f in doc:
                doc[f] = MASK
    return _each(storage, staging, hide)


def seal(storage: Mapping[str, Any] | None, staging: Sequence[Mapping[str, Any]] | None,
         encrypt: Callable[[str], str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """Every secret encrypted (what is stored); ``"***"`` must have been resolved before."""
    def lock(doc: dict[str, Any], fields: tuple[str, ...]) -> None:
        for f in fields:
            if f in doc:
                if doc[f] == MASK:
                    raise StorageInvalid(f"{f} is '***': give the secret itself")
                doc[f] = encrypt(doc[f])
    return _each(storage, staging, lock)


def unseal(storage: Mapping[str, Any] | None, staging: Sequence[Mapping[str, Any]] | None,
           decrypt: Callable[[str], str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """Every secret in clear (for the fleet's own services only)."""
    def open_(doc: dict[str, Any], fields: tuple[str, ...]) -> None:
        for f in fields:
            if f in doc:
                doc[f] = decrypt(doc[f])
    return _each(storage, staging, open_)


def _place(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """Where a secret is sent: a kept secret must keep going there."""
    return (doc.get("backend"), doc.get("kind"), doc.get("endpoint_url"), doc.get("url"), doc.get("bucket"))


def keep_masked(new: Mapping[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """``new`` with each ``"***"`` replaced by ``stored``'s (encrypted) value, when ``stored`` is the same
    kind of target at the same place; otherwise ``StorageInvalid`` (the admin must give the secret)."""
    out = dict(new)
    for key, value in new.items():
        if value != MASK:
            continue
        if stored is None or key not in stored or _place(stored) != _place(new):
            raise StorageInvalid(f"{key} is '***' but no secret is stored for this place: give the secret itself")
        out[key] = stored[key]
    return out
