"""The messages pool_aggregator consumes, one function each, in a table per queue.

AGGREGATOR_QUEUE: ``FileStored`` -> a pool file into the group of its window
(``grouping``), a stored result announced (``results``). POOL_EVENTS_QUEUE:
``PoolDeleted`` -> the pool's open and ready groups end (``ticking.end_pool``).
"""

from __future__ import annotations

from services.common import logs, topology
from services.common.contracts import FileStored, PoolDeleted
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


def on_pool_deleted(deps: Deps, message: PoolDeleted) -> None:
    with logs.bound(pool_id=message.pool_id):
        ticking.end_pool(deps, message.pool_id)


HANDLERS = {FileStored: on_file_stored}
POOL_HANDLERS = {PoolDeleted: on_pool_deleted}


def consumers(deps: Deps) -> list[ConsumerSpec]:
    """CONSUMERS: the FileStored queue with its table bound to ``deps``."""
    # Several competing consumers so that deliveries are in flight together and grouped in
    # one slice (batching.py). prefetch 2 each: a consumer handles one message at a time;
    # the second is already on its way. Unacked messages per process: 2 x grouping_consumers.
    return [ConsumerSpec("stored", topology.AGGREGATOR_QUEUE, bind(HANDLERS, deps), prefetch=2,
                         count=deps.settings.grouping_consumers),
            ConsumerSpec("pools", topology.POOL_EVENTS_QUEUE, bind(POOL_HANDLERS, deps), prefetch=1)]
