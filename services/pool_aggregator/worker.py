"""The ``FileStored`` handler: pool files into groups, stored results announced.

Thin: decode -> core (window, late rule) -> store (conditional upserts) -> publish.
Every step is idempotent under redelivery: a file already in a group is
found by its id and only its ``FileGrouped`` is published again; a result
already announced is not announced twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from services.common import logs
from services.common.contracts import FileGrouped, FileStored, Message, ResultPublished
from services.common.timeutil import BadTimestamp, parse

from . import core
from .metrics import AggregatorMetrics
from .pools import PoolCache
from .store import ADDED, CLOSED, GroupStore
from .ticker import Lifecycle

log = logging.getLogger(__name__)

MAX_LATE_STEPS = 16  # windows ahead a late file may be pushed before we give up (requeue)


class StoredHandler:
    def __init__(self, store: GroupStore, pools: PoolCache, broker: Any, metrics: AggregatorMetrics,
                 lifecycle: Lifecycle, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.pools = pools
        self.broker = broker
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.clock = clock

    def __call__(self, message: Message) -> None:
        if not isinstance(message, FileStored):
            return
        with logs.bound(file_id=message.file_id, pool_id=message.pool_id):
            if message.kind == "result":
                self.result_stored(message)
            elif message.kind == "file" and message.pool_id:
                self.file_stored(message)

    # --- pool files ----------------------------------------------------------

    def file_stored(self, msg: FileStored) -> None:
        pool_id = str(msg.pool_id)
        found = self.store.group_of_file(pool_id, msg.file_id)
        if found is not None:  # redelivery: the assignment stands, tell the index again
            late = bool(found["files"][0].get("late")) if found.get("files") else False
            self._publish_grouped(msg, found["_id"], late)
            return
        pool = self.pools.get(pool_id)  # AuthUnavailable -> raise -> requeued
        if pool is None:
            log.warning("file_of_unknown_pool_dropped")
            return
        window_seconds = int(pool["window_seconds"])
        try:
            ts = parse(msg.timestamp).timestamp()
        except BadTimestamp:
            # The uploader validated it; a broken one falls back to the storing time.
            ts = parse(msg.created).timestamp() if msg.created else self.clock()
        entry = {"file_id": msg.file_id, "owner_id": msg.owner_id, "timestamp": msg.timestamp, "ts": ts,
                 "size": int(msg.size), "sha256": msg.sha256, "file_name": msg.file_name, "late": False}
        grace = float(pool.get("close_grace_seconds") or 0)
        minimum = pool.get("min_contributors") or None
        window = core.window_for(ts, window_seconds)
        outcome, group = self.store.add_file(pool_id=pool_id, window=window, close_grace_seconds=grace,
                                             min_contributors=minimum, entry=entry, now=self.clock())
        late = False
        step = 0
        while outcome == CLOSED:
            # Its window is processing/done/failed: SPEC sends it to the current window, late.
            if step >= MAX_LATE_STEPS:
                raise RuntimeError(f"no accepting window found for {msg.file_id}")
            late = True
            window = core.late_window(ts, self.clock(), window_seconds, step)
            outcome, group = self.store.add_file(pool_id=pool_id, window=window, close_grace_seconds=grace,
                                                 min_contributors=minimum, entry={**entry, "late": True},
                                                 now=self.clock())
            step += 1
        if group is None:  # add_file returns a group with every outcome; never act on a guess
            raise RuntimeError(f"no group document for {msg.file_id}")
        if outcome == ADDED:
            self.metrics.files_grouped.inc()
            if late:
                self.metrics.late_files.inc()
            log.info("file_grouped", extra={"group_id": group["_id"], "late": late})
            if group.get("status") == core.OPEN and core.is_ready(
                    self.clock(), group["window_end"], grace, len(group.get("contributors") or ()), minimum):
                self.lifecycle.make_ready(group["_id"])
        self._publish_grouped(msg, group["_id"], late)

    def _publish_grouped(self, msg: FileStored, gid: str, late: bool) -> None:
        self.broker.publish(FileGrouped(file_id=msg.file_id, pool_id=str(msg.pool_id), group_id=gid,
                                        late=late))

    # --- results -------------------------------------------------------------

    def result_stored(self, msg: FileStored) -> None:
        result = self.store.get_result(msg.file_id)
        if result is None:
            # The result doc is written before the upload completes, so this is a
            # result whose post was reverted after all: nothing to announce.
            log.warning("stored_result_unknown")
            return
        if result.get("published"):
            return
        result = self.store.mark_result_stored(msg.file_id, self.clock(), int(msg.size), msg.sha256)
        if result is None:
            raise RuntimeError(f"result {msg.file_id} vanished while being marked stored")
        self.broker.publish(ResultPublished(
            result_id=result["result_id"], pool_id=result["pool_id"], group_id=result["group_id"],
            window_start=result["window_start"], window_end=result["window_end"],
            file_name=result["file_name"], size=int(result["size"]), sha256=result["sha256"],
            created=result["created"], download_url=result["download_url"]))
        self.store.mark_result_published(msg.file_id)
        self.metrics.results_published.inc()
        log.info("result_published", extra={"group_id": result["group_id"], "result_id": result["result_id"]})
