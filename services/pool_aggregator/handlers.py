"""The messages pool_aggregator consumes, one function each, in a table per queue.

AGGREGATOR_QUEUE: ``FileStored`` -> a pool file into the group of its window
(``grouping``), a stored result announced (``results``); ``UploadStored`` -> a batch
upload's pool files into their groups, together (``grouping``). POOL_EVENTS_QUEUE:
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
    """CONSUMERS: the FileStored/UploadStored queue with its table bound to ``deps``."""
    # Several competing consumers so that deliveries are in flight together and grouped in
    # one slice (batching.py). prefetch 2 each: a consumer handles one message at a time;
    # the second is already on its way. Unacked messages per process: 2 x grouping_consumers
    # (an UploadStored among them holds up to MAX_ITEMS files' facts, ~0.2-0.46 MB).
    return [ConsumerSpec("stored", topology.AGGREGATOR_QUEUE, bind(HANDLERS, deps), prefetch=2,
                         count=deps.settings.grouping_consumers),
            ConsumerSpec("pools", topology.POOL_EVENTS_QUEUE, bind(POOL_HANDLERS, deps), prefetch=1)]
