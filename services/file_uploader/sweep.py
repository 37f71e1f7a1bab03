"""Remove upload data whose session expired or was abandoned.

``python -m services.file_uploader.sweep [--dry-run]`` (also run periodically by
the service in a background thread). Redis expiries do most of this on their
own; the sweep catches what they cannot: chunks or received sets whose session
hash is gone, sessions still ``uploading`` with no write for longer than the
upload TTL, and expired entries of the per-owner open-upload sets.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from services.common import uploadkeys

from .store import UPLOADING, UploadStore

log = logging.getLogger(__name__)


def sweep(store: UploadStore, *, upload_ttl: int, dry_run: bool = False) -> dict[str, Any]:
    """One pass; returns what it removed (or would remove)."""
    # Pass 1: every upload id that has keys, and whether its session hash exists.
    ids: set[str] = set()
    for key in store.upload_keys():
        file_id = store.file_id_of(key)
        if file_id:
            ids.add(file_id)
    doomed: dict[str, str] = {}
    now = time.time()
    for file_id in ids:
        session = store.session(file_id)
        if session is None:
            doomed[file_id] = "orphaned"
        elif session.get("status") == UPLOADING and now - float(session.get("updated") or 0) > upload_ttl:
            doomed[file_id] = "abandoned"
    # Pass 2: the keys of doomed uploads, except the small status tombstone (it expires itself
    # and keeps completion/retries idempotent meanwhile).
    removed: dict[str, list[str]] = {}
    for key in store.upload_keys():
        file_id = store.file_id_of(key)
        if file_id in doomed and not key.endswith(uploadkeys.STATUS_SUFFIX):
            removed.setdefault(file_id, []).append(key)
    deleted = 0
    for file_id, keys in removed.items():
        log.info("sweeping upload", extra={"file_id": file_id, "why": doomed[file_id], "keys": len(keys),
                                           "dry_run": dry_run})
        if not dry_run:
            session = store.session(file_id)
            if session is not None:
                store.free_slot(session["owner_id"], file_id)
            deleted += store.delete_keys(keys)
    pruned = 0
    for key in store.owner_keys():
        if not dry_run:
            pruned += store.prune_owner(key)
    return {"uploads": {f: doomed[f] for f in removed}, "keys_deleted": deleted,
            "owner_entries_pruned": pruned,
            "dry_run": dry_run}


def pass_for(store: UploadStore, *, upload_ttl: int) -> Callable[[], None]:
    """One background pass, for the service's Runtime (every UPLOAD_SWEEP_INTERVAL_SECONDS)."""
    def one_pass() -> None:
        result = sweep(store, upload_ttl=upload_ttl)
        if result["uploads"]:
            log.info("sweep done", extra={"removed": len(result["uploads"])})

    return one_pass


def main(argv: list[str] | None = None) -> int:
    import json

    from services.common import logs, redisconn

    from .config import Settings

    parser = argparse.ArgumentParser(prog="python -m services.file_uploader.sweep", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed; remove nothing")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    logs.configure("file_uploader.sweep", settings.common.log_level)
    store = UploadStore(redisconn.redis_client(settings.common), settings.common.redis_prefix,
                        upload_ttl=settings.upload_ttl_seconds)
    result = sweep(store, upload_ttl=settings.upload_ttl_seconds, dry_run=args.dry_run)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
