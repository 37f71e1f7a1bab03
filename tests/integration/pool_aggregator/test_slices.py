"""The FileStored consumers against real RabbitMQ and MongoDB: concurrent deliveries are
grouped in shared slices, every file counted once, duplicates included."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from services.common.contracts import FileGrouped
from services.common.messaging import start_consumers, stop_consumers
from services.pool_aggregator import core, handlers
from services.pool_aggregator.app import create_app
from services.pool_aggregator.config import Settings
from services.pool_aggregator.store import MongoGroupStore

from .conftest import POOL, Rig

W = 60


def test_a_batch_is_grouped_in_shared_slices_once_each(rig: Rig, mongo_db) -> None:
    store = MongoGroupStore(mongo_db)
    app = create_app(Settings.from_env({"AMQP_URL": rig.amqp_url, "GROUPING_CONSUMERS": "16",
                                        "POOL_CACHE_SECONDS": "5"}),
                     store=store, broker=rig.deps.broker, auth=rig.auth, clock=rig.clock)
    deps = app.extensions["deps"]
    start = core.window_for(rig.clock(), W).start
    gid = core.group_id(POOL, start)
    batch = [rig.stored(f"item{n:04d}", ts=start + n / 100, owner=f"u{n % 5}", size=10) for n in range(300)]
    consumers = start_consumers(rig.amqp_url, handlers.consumers(deps))
    try:
        with ThreadPoolExecutor(8) as pool:  # announced as file_service_manager would, plus 20 duplicates
            list(pool.map(rig.deps.broker.publish, batch + batch[:20]))
        deadline = time.time() + 60
        while time.time() < deadline and len(rig.events.of(FileGrouped, timeout=0.1, count=320)) < 320:
            time.sleep(0.1)
    finally:
        stop_consumers(consumers)
    grouped = rig.events.of(FileGrouped, count=320)
    assert len(grouped) == 320 and {m.group_id for m in grouped} == {gid}
    group = store.get(gid)
    assert (group["file_count"], group["bytes"], len(group["contributors"])) == (300, 3000, 5)
    assert store.files.count_documents({"group_id": gid}) == 300
    assert [e["file_id"] for e in store.files_of(gid)] == [m.file_id for m in batch]
    assert deps.grouper.slices < 300  # deliveries shared slices: not one round of writes per file
