"""The messages pool_aggregator consumes, one function each, in a table per queue.

AGGREGATOR_SHARD_QUEUES (one per pool shard) and the legacy AGGREGATOR_QUEUE, one table:
``FileStored`` -> a pool file into the group of its window (``grouping``), a stored result
announced (``results``); ``UploadStored`` -> a batch upload's pool files into their groups,
together (``grouping``). POOL_EVENTS_QUEUE:
``PoolDeleted`` -> the pool's open and ready groups end (``ticking.end_pool``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.common import logs, topology
from services.common.contracts import FileStored, Message, PoolDeleted, UploadStored
from services.common.handlers import ConsumerSpec, bind

from . import grouping, results, ticking
from .deps import Deps


def on_file_stored(deps: Deps, message: FileStored) -> None:
    with logs.bound(file_id=message.file_id, pool_id=message.pool_id):
        if message.kind == "result":
            results.publish_stored_result(deps, message)
        elif message.kind == "file" and message.pool_id:
            grouping.group_file(deps, message)
        # A file outside any pool is not ours to group.


def on_upload_stored(deps: Deps, message: UploadStored) -> None:
    with logs.bound(file_id=message.upload_id, pool_id=message.pool_id):
        if message.kind == "file" and message.pool_id:
            grouping.group_upload(deps, message)
        # A batch outside any pool is not ours to group (results are single files: FileStored).


def on_pool_deleted(deps: Deps, message: PoolDeleted) -> None:
    with logs.bound(pool_id=message.pool_id):
        ticking.end_pool(deps, message.pool_id)


HANDLERS: dict[type[Message], Callable[[Deps, Any], None]] = {
    FileStored: on_file_stored, UploadStored: on_upload_stored}
POOL_HANDLERS = {PoolDeleted: on_pool_deleted}


def consumers(deps: Deps) -> list[ConsumerSpec]:
    """CONSUMERS: each FileStored/UploadStored shard queue, the legacy queue and the pools' queue,
    with the tables bound to ``deps``."""
    # Several competing consumers per queue so that deliveries are in flight together and grouped
    # in one slice (batching.py). prefetch 2 each: a consumer handles one message at a time; the
    # second is already on its way. grouping_consumers are spread over the shards (rounded up),
    # so a deep backlog of one pool holds only its shard's consumers (topology.STORED_SHARDS).
    # One pool's per-item FileStored are grouped in slices of about as many files as its shard
    # has consumers (the others' deliveries gather while a slice runs): 6 by default.
    # The legacy unsharded queue (an older file_service_manager's messages, or
    # ANNOUNCE_BATCHES=false during an upgrade: per-item FileStored) is consumed like one more
    # shard. Unacked messages per process: 2 x (shards + 1) x per shard (an UploadStored among
    # them holds up to MAX_ITEMS files' facts, ~0.2-0.46 MB).
    table = bind(HANDLERS, deps)
    per_shard = -(-deps.settings.grouping_consumers // topology.STORED_SHARDS)
    stored = [ConsumerSpec(f"stored-{k}", queue, table, prefetch=2, count=per_shard)
              for k, queue in enumerate(topology.AGGREGATOR_SHARD_QUEUES)]
    stored.append(ConsumerSpec("stored", topology.AGGREGATOR_QUEUE, table, prefetch=2, count=per_shard))
    return [*stored, ConsumerSpec("pools", topology.POOL_EVENTS_QUEUE, bind(POOL_HANDLERS, deps), prefetch=1)]
