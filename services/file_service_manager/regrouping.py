"""Regrouping: a pool file stored but never grouped is announced again (issue 14).

A stored pool file is announced once (``FileStored``, or its batch's ``UploadStored``: a
confirmed publish) and pool_aggregator answers with ``FileGrouped``/``FilesGrouped``, which
sets the record's ``group_id``. If the announcement is lost after the broker confirmed it,
nothing else would ever group the file: its window closes and is processed without it, and
its owner is not told. That happened in the replica kill test
(``tests/e2e/test_replicas.py``, about one run in ten on a loaded machine): a file stored and
announced 0.2 s after the pool_aggregator replica that held its delivery was SIGKILLed never
reached the surviving replica and was never grouped (cause not proven: the surviving replica
logged nothing of it; the test now prints the broker's queue counts and the replicas' waiting
stacks if it happens again). Whatever loses a message, the index knows the file is waiting:

- a stored pool file's record carries ``regroup_at`` (epoch seconds: REGROUP_AFTER_SECONDS
  after it was stored) until its group is known; ``FileGrouped``/``FilesGrouped`` (and a
  delete) remove it. A sparse index on it holds only the files still waiting;
- every REGROUP_INTERVAL_SECONDS a pass announces again, as ``FileStored``, each file whose
  ``regroup_at`` has passed (at most REGROUP_BATCH a pass, oldest first). Grouping is
  idempotent: a file grouped meanwhile is only answered again (its ``FileGrouped``); a late one
  joins a later window as SPEC's late rule says;
- attempt n moves ``regroup_at`` REGROUP_AFTER_SECONDS x 2^n later (at most an hour), with a
  conditional write, so of two replicas' passes one announces. After MAX_REGROUPS
  announcements without an answer (a pool deleted since, pool_aggregator down for hours) the
  file is given up: ``never_grouped`` on its record, an error in the log and
  ``files_never_grouped_total``, for an operator to look at. A file whose pool auth no longer
  knows (deleted: pool_aggregator drops its files unanswered) is given up at once, quietly.

REGROUP_AFTER_SECONDS defaults to 10 minutes: a file still queued behind a backlog is not lost,
and announcing it again only queues a duplicate behind the same backlog (bounded by
REGROUP_BATCH a pass and the backoff).
"""

from __future__ import annotations

import logging

from services.common.contracts import FileStored

from .deps import Deps

log = logging.getLogger(__name__)

REGROUP_BATCH = 500  # files announced again per pass: bounds a pass's publishes and its query
MAX_REGROUPS = 8  # announcements again, then the file is given up (with the backoff: ~6 h at the defaults)
MAX_BACKOFF_SECONDS = 3600.0


def due_at(stored_at: float, after_seconds: float) -> float:
    """When a file stored at ``stored_at`` is first announced again if no group is known by then."""
    return stored_at + after_seconds


def next_due(now: float, after_seconds: float, attempts: int) -> float:
    return now + min(after_seconds * (2 ** attempts), MAX_BACKOFF_SECONDS)


def announcement(record: dict) -> FileStored:
    """The record's ``FileStored``, as ``storing.announce`` published it."""
    return FileStored(
        file_id=record["file_id"], upload_id=record.get("upload_id") or record["file_id"],
        owner_id=str(record.get("owner_id") or ""), owner_name=str(record.get("owner_name") or ""),
        file_name=str(record.get("file_name") or ""), size=int(record.get("size") or 0),
        sha256=str(record.get("sha256") or ""), content_type=str(record.get("content_type") or ""),
        timestamp=str(record.get("timestamp") or ""), created=str(record.get("created") or ""),
        pool_id=record.get("pool_id"), kind="file")


def regroup_pass(deps: Deps) -> int:
    """Announce again the pool files whose group is overdue; returns how many were announced."""
    settings = deps.settings
    now = deps.clock.time()
    announced = 0
    pools: dict[str, bool] = {}  # pool id -> whether auth still knows it, asked once a pass
    for record in deps.index.due_for_regroup(now, REGROUP_BATCH):
        attempts = int(record.get("regroups") or 0)
        seen = float(record["regroup_at"])
        pool_id = str(record.get("pool_id"))
        if pool_id not in pools:  # AuthUnavailable: this pass ends, the next one asks again
            pools[pool_id] = deps.pool_storage.auth.pool(pool_id) is not None
        if not pools[pool_id]:
            # Deleted since: pool_aggregator drops its files (nothing to group), so no answer
            # will come. Not an operator's problem: no alert, one line.
            if deps.index.reschedule_regroup(record["file_id"], seen, None):
                log.info("regroup_pool_gone", extra={"file_id": record["file_id"], "pool_id": pool_id})
            continue
        if attempts >= MAX_REGROUPS:
            if deps.index.reschedule_regroup(record["file_id"], seen, None):
                deps.metrics.never_grouped.inc()
                log.error("file_never_grouped", extra={"file_id": record["file_id"], "pool_id": record.get("pool_id"),
                                                       "announcements": attempts})
            continue
        # Claimed first: of two replicas' passes, the one whose write moved regroup_at announces.
        if not deps.index.reschedule_regroup(record["file_id"], seen,
                                             next_due(now, settings.regroup_after_seconds, attempts + 1)):
            continue
        # ANNOUNCE_BATCHES=false (a rolling upgrade, OPERATIONS "Queues"): the unsharded key, which
        # a pool_aggregator older than the shards still consumes, as storing.announce does.
        deps.broker.publish(announcement(record),
                            routing_key=None if settings.announce_batches else FileStored.routing_key)
        deps.metrics.regrouped.inc()
        log.warning("file_announced_again", extra={"file_id": record["file_id"], "pool_id": record.get("pool_id"),
                                                   "attempt": attempts + 1})
        announced += 1
    return announced
