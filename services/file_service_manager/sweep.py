"""Remove GridFS leftovers (chunks without a file document, files without an index record) and
the half-written objects of every storage backend in use (filesystem temporary files, S3
multipart uploads never completed, chunks without a file document and files without an index
record in GridFS buckets other than ``fs``): the default, each pool's storage and older
locations, as the storage catalog lists them (``Storages.in_use``, at most 64 per pass).

    python -m services.file_service_manager.sweep [--dry-run] [--grace-seconds N]

Both come from a store that died half-way (the StoreUpload is redelivered and
written again under the same id, so the leftovers are garbage). The service
runs the same pass in the background every ``GRIDFS_SWEEP_INTERVAL_SECONDS``.
Every removal is logged and recorded in the audit trail (action ``deleted``).

Replicas run it at once, safely: every step is a delete, so a second pass over the
same leftover removes nothing more, and only the pass that removed something records it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from services.common import timeutil
from services.common.audit import AuditTrail

from .backends import Storages
from .ports import Index

log = logging.getLogger(__name__)


def sweep(index: Index, *, grace_seconds: int, dry_run: bool = False,
          audit: AuditTrail | None = None, storages: Storages | None = None,
          waiting: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """One pass; returns what it removed (or, with dry_run, would remove).

    ``waiting(file_id)``: whether the file's upload is still cached in Redis. A complete file
    without an index record is kept while it is: its StoreUpload may still come (a completed
    upload waits up to CACHED_TTL_SECONDS, 24 h, through retries), find the prestored file and
    index it -- removing it then would lose the upload once the cache is dropped. The record is
    looked up again right before the removal: once the upload's session is gone its StoreUpload
    has indexed the file (the record is written before the cache is dropped) or never will."""
    cutoff = timeutil.now() - timedelta(seconds=grace_seconds)

    def unclaimed(file_id: Any) -> bool:
        return not (waiting is not None and waiting(str(file_id))) and index.record(str(file_id)) is None

    half_written: dict[str, list[str]] = {}
    unindexed_by_storage: dict[str, list[str]] = {}
    # Every backend in use (the default, pools' storages, old locations: Storages.in_use, at most
    # MAX_IN_USE), so a pool's own GridFS bucket, root or S3 bucket is swept too.
    for spec_id, backend in (storages.in_use().items() if storages is not None else ()):
        bucket = backend.descriptor.get("bucket") if backend.descriptor.get("backend") == "gridfs" else None
        if bucket and bucket != "fs":  # fs: the index-aware pass below
            try:
                unindexed = _unindexed(index, str(bucket), spec_id, cutoff, dry_run, audit, unclaimed)
            except Exception as exc:  # noqa: BLE001 - one backend down must not stop the others' pass
                log.warning("storage sweep failed", extra={"storage": spec_id, "reason": type(exc).__name__})
            else:
                if unindexed:
                    unindexed_by_storage[spec_id] = unindexed
        try:
            found = backend.leftovers(cutoff, remove=not dry_run)
        except Exception as exc:  # noqa: BLE001 - one backend down must not stop the others' pass
            log.warning("storage sweep failed", extra={"storage": spec_id, "reason": f"{type(exc).__name__}"})
            continue
        if found:
            half_written[spec_id] = found
            log.info("swept half-written objects", extra={"storage": spec_id, "count": len(found),
                                                          "dry_run": dry_run})
            if audit is not None and not dry_run:
                for name in found:
                    audit.record("deleted", actor="file_service_manager.sweep", storage=spec_id, object=name,
                                 reason="half_written")
    chunks = index.orphan_chunk_files(cutoff)
    files = [f for f in index.unindexed_files(cutoff) if unclaimed(f)]
    doomed = [(f, "chunks_without_file") for f in chunks] + [(f, "file_without_record") for f in files]
    for file_id, why in doomed:
        log.info("sweeping GridFS leftover",
                 extra={"leftover_id": str(file_id), "why": why, "dry_run": dry_run})
        if not dry_run:
            # A replica's pass that raced this one to the same leftover removed it: not ours to record.
            if not index.remove_partial(file_id):
                continue
            if audit is not None:
                audit.record("deleted", actor="file_service_manager.sweep", file_id=str(file_id), reason=why)
    return {"chunks_without_file": [str(f) for f in chunks], "files_without_record": [str(f) for f in files],
            "half_written": half_written, "files_without_record_by_storage": unindexed_by_storage,
            "dry_run": dry_run}


def _unindexed(index: Index, bucket: str, spec_id: str, cutoff: Any, dry_run: bool,
               audit: AuditTrail | None, unclaimed: Callable[[Any], bool]) -> list[str]:
    """Complete files in another GridFS bucket without an index record (a store that crashed
    between its two writes, a prestore whose upload was never stored), removed as in ``fs``."""
    found = [str(f) for f in index.unindexed_files(cutoff, bucket=bucket) if unclaimed(f)]
    for file_id in found:
        log.info("sweeping GridFS leftover", extra={"leftover_id": file_id, "why": "file_without_record",
                                                    "storage": spec_id, "dry_run": dry_run})
        if not dry_run and index.remove_partial(file_id, bucket=bucket) and audit is not None:
            audit.record("deleted", actor="file_service_manager.sweep", file_id=file_id, storage=spec_id,
                         reason="file_without_record")
    return found


def pass_for(index: Index, *, grace_seconds: int, audit: AuditTrail, storages: Storages | None = None,
             waiting: Callable[[str], bool] | None = None) -> Callable[[], object]:
    """One background pass, for the service's Runtime (every GRIDFS_SWEEP_INTERVAL_SECONDS)."""
    return lambda: sweep(index, grace_seconds=grace_seconds, audit=audit, storages=storages, waiting=waiting)


def main(argv: list[str] | None = None) -> int:
    from services.common import logs, mongo

    from .config import Settings

    parser = argparse.ArgumentParser(prog="python -m services.file_service_manager.sweep",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed; remove nothing")
    parser.add_argument("--grace-seconds", type=int, default=None,
                        help="only leftovers older than this (default GRIDFS_SWEEP_GRACE_SECONDS)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    logs.configure("file_service_manager.sweep", settings.common.log_level)
    from . import backends
    from .store import FileIndex, StorageCatalog

    db = mongo.connect(settings.common.mongodb_uri, settings.common.mongodb_db)
    index = FileIndex(db)
    storages = backends.storages_for(settings.default_storage, db=db, catalog=StorageCatalog(db),
                                     box=settings.secrets)
    grace = settings.sweep_grace_seconds if args.grace_seconds is None else args.grace_seconds
    from services.common import redisconn

    from .store import UploadCache

    cache = UploadCache(redisconn.redis_client(settings.common), settings.common.redis_prefix)
    print(json.dumps(sweep(index, grace_seconds=grace, dry_run=args.dry_run, storages=storages,
                           waiting=cache.upload_waiting)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
