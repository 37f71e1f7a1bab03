"""The messages pool_aggregator consumes, one function each, in a table.

AGGREGATOR_QUEUE: ``FileStored`` -> a pool file into the group of its window
(``grouping``), a stored result announced (``results``).
"""

from __future__ import annotations

from services.common import logs, topology
from services.common.contracts import FileStored
from services.common.handlers import ConsumerSpec, bind

from . import grouping, results
from .deps import Deps


def on_file_stored(deps: Deps, message: FileStored) -> None:
    with logs.bound(file_id=message.file_id, pool_id=message.pool_id):
        if message.kind == "result":
            results.publish_stored_result(deps, message)
        elif message.kind == "file" and message.pool_id:
            grouping.group_file(deps, message)
        # A file outside any pool is not ours to group.


HANDLERS = {FileStored: on_file_stored}


def consumers(deps: Deps) -> list[ConsumerSpec]:
    """CONSUMERS: the FileStored queue with its table bound to ``deps``."""
    # Several competing consumers so that deliveries are in flight together and grouped in
    # one slice (batching.py). prefetch 2 each: a consumer handles one message at a time;
    # the second is already on its way. Unacked messages per process: 2 x grouping_consumers.
    return [ConsumerSpec("stored", topology.AGGREGATOR_QUEUE, bind(HANDLERS, deps), prefetch=2,
                         count=deps.settings.grouping_consumers)]
