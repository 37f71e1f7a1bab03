"""A deep backlog of one pool's batches does not hold another pool's file (issue 10), on real
RabbitMQ and MongoDB: the aggregator's input is sharded by pool (topology.AGGREGATOR_SHARD_QUEUES)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from services.common.contracts import Message, StoredItem, UploadStored
from services.common.messaging import start_consumers, stop_consumers
from services.common.topology import EXCHANGE, queues_for
from services.pool_aggregator import core, handlers
from services.pool_aggregator.app import create_app
from services.pool_aggregator.config import Settings
from services.pool_aggregator.store import MongoGroupStore

from .conftest import POOL, Rig

W = 60
CONSUMERS = 16  # GROUPING_CONSUMERS: 2 per shard now; before the shards, 16 on the one queue
PREFETCH = 2  # handlers.consumers' prefetch per consumer
BACKLOG = 3 * CONSUMERS * PREFETCH  # pool A's batches queued before pool B's file: 96
ITEMS = 20  # files per batch; GROUPING_SLICE too, so each of A's batches is a slice of its own


def _queues(message: Message) -> list[str]:
    return [q.name for q in queues_for(EXCHANGE, message.key())]


def test_a_deep_backlog_of_one_pool_does_not_hold_another_pools_file(rig: Rig, mongo_db) -> None:
    """96 batches of pool A, then one file of pool B (in another shard), all queued before any
    consumer runs. In one queue B could only be delivered once at most CONSUMERS x PREFETCH of
    A's messages were unacked, i.e. after at least BACKLOG - 32 = 64 of A's batches were grouped
    (acks follow the grouping); in its own shard it is taken at once. Structural, not timed: when
    B's file is counted, fewer than 64 of A's batches are."""
    start = core.window_for(rig.clock(), W).start
    pool_a = POOL
    probe = rig.stored("probe", ts=start)
    pool_b = next((p for p in (f"pool{n}" for n in range(2, 100))
                   if _queues(rig.stored("probe", ts=start, pool_id=p)) != _queues(probe)), "pool2")
    rig.auth.set_pool(pool_b)
    store = MongoGroupStore(mongo_db)
    app = create_app(Settings.from_env({"AMQP_URL": rig.amqp_url, "GROUPING_CONSUMERS": str(CONSUMERS),
                                        "GROUPING_SLICE": str(ITEMS), "POOL_CACHE_SECONDS": "5"}),
                     store=store, broker=rig.deps.broker, auth=rig.auth, clock=rig.clock)
    deps = app.extensions["deps"]
    batches = []
    for b in range(BACKLOG):
        files = [rig.stored(f"a{b:03d}-{n:02d}", ts=start + 1, size=1) for n in range(ITEMS)]
        batches.append(UploadStored(upload_id=f"up-a{b:03d}", owner_id="u1", owner_name="u1",
                                    content_type="application/octet-stream", created=files[0].created, pool_id=pool_a,
                                    items=tuple(StoredItem(file_id=f.file_id, file_name=f.file_name, size=f.size,
                                                           sha256=f.sha256, timestamp=f.timestamp) for f in files)))
    lone = rig.stored("b-lone", ts=start + 1, pool_id=pool_b)
    with ThreadPoolExecutor(8) as pool:  # as file_service_manager's store consumers announce, in parallel
        list(pool.map(rig.deps.broker.publish, batches))
    rig.deps.broker.publish(lone)  # behind the whole backlog
    gid_a, gid_b = core.group_id(pool_a, start), core.group_id(pool_b, start)
    consumers = start_consumers(rig.amqp_url, handlers.consumers(deps))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (store.get(gid_b) or {}).get("file_count"):
            time.sleep(0.02)
        # Read after B's file was counted: A only moves on meanwhile, so this errs against the shards.
        a_files = int((store.get(gid_a) or {}).get("file_count") or 0)
        assert (store.get(gid_b) or {}).get("file_count") == 1, "pool B's file was never grouped"
        single_queue_floor = (BACKLOG - CONSUMERS * PREFETCH) * ITEMS
        assert a_files < single_queue_floor, (
            f"pool B's file waited for {a_files // ITEMS} of pool A's {BACKLOG} batches "
            f"(queues: A {_queues(probe)}, B {_queues(lone)})")
        # Nothing of A's backlog is lost or counted twice meanwhile.
        while time.time() < deadline and (store.get(gid_a) or {}).get("file_count") != BACKLOG * ITEMS:
            time.sleep(0.1)
        assert (store.get(gid_a) or {}).get("file_count") == BACKLOG * ITEMS
        assert store.files.count_documents({"group_id": gid_a}) == BACKLOG * ITEMS
    finally:
        stop_consumers(consumers)
        stopping = time.time() + 10
        while any(c.connected for c in consumers) and time.time() < stopping:  # slices finish first
            time.sleep(0.05)
