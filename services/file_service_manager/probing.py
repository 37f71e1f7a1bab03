"""SPEC "Storage backends": a storage an admin sets on a pool is checked before auth saves it.

auth cannot build a backend (no service imports another), so it asks here through the internal
route ``POST /internal/storage/probe`` (X-Internal-Key) with the storage, secrets in clear. The
storage is parsed with the same rules the service writes with, a one-off backend is built (not
cached, nothing saved: the pool is not saved yet) and probed with a write, a read back and a
delete. A failure is 400 ``bad_storage`` with the backend's reason, every secret value scrubbed
from it; the spec is never logged.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common import poolstorage
from services.common.errors import ApiError

from .backends import parse_spec
from .deps import Deps
from .ports import BackendError

log = logging.getLogger(__name__)

MAX_REASON = 300  # characters of the backend's reason given back


def scrubbed(message: str, secrets: dict[str, str]) -> str:
    """``message`` without any secret value in it (a driver may quote what it was given)."""
    for value in secrets.values():
        if value:
            message = message.replace(value, "***")
    return message[:MAX_REASON]


def probe_storage(deps: Deps, body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("storage")
    try:
        spec = parse_spec(raw)
    except BackendError as exc:
        secrets = {k: v for k, v in raw.items() if isinstance(v, str)} if isinstance(raw, dict) else {}
        raise ApiError(400, "bad_storage", scrubbed(str(exc), secrets)) from None
    if spec.backend == "filesystem" and not poolstorage.under_roots(spec.root or "",
                                                                   deps.settings.common.filesystem_roots):
        # FILESYSTEM_ROOTS: the probe writes, so it is checked here too, not only by auth
        raise ApiError(400, "bad_storage", "filesystem root is not under a directory this fleet allows "
                       "(FILESYSTEM_ROOTS)")
    try:
        deps.storage.trial(spec).probe()
    except Exception as exc:  # noqa: BLE001 - any failure of the backend is the probe's answer
        reason = scrubbed(str(exc) or type(exc).__name__, spec.secrets())
        log.info("storage probe refused", extra={"storage": spec.id, "kind": spec.backend, "reason": reason})
        raise ApiError(400, "bad_storage", f"{spec.backend} storage failed its write-read-delete probe: {reason}"
                       ) from None
    return {"ok": True, "storage": spec.descriptor()}
