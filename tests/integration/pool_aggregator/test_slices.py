"""The FileStored/UploadStored consumers against real RabbitMQ and MongoDB: concurrent deliveries
are grouped in shared slices, every file counted once, duplicates included."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.common.contracts import FileGrouped, FilesGrouped, GroupedFiles, StoredItem, UploadStored
from services.common.messaging import start_consumers, stop_consumers
from services.pool_aggregator import core, handlers
from services.pool_aggregator.app import create_app
from services.pool_aggregator.config import Settings
from services.pool_aggregator.store import MongoGroupStore

from .conftest import POOL, Rig

W = 60


def _aggregator(rig: Rig, mongo_db, consumers: int) -> tuple[MongoGroupStore, Any]:
    """pool_aggregator wired to the rig's broker, auth and clock, with ``consumers`` grouping consumers."""
    store = MongoGroupStore(mongo_db)
    app = create_app(Settings.from_env({"AMQP_URL": rig.amqp_url, "GROUPING_CONSUMERS": str(consumers),
                                        "POOL_CACHE_SECONDS": "5"}),
                     store=store, broker=rig.deps.broker, auth=rig.auth, clock=rig.clock)
    return store, app.extensions["deps"]


def test_a_batch_is_grouped_in_shared_slices_once_each(rig: Rig, mongo_db) -> None:
    # 32: 4 per pool shard (topology.STORED_SHARDS), the deliveries of one pool in flight together.
    store, deps = _aggregator(rig, mongo_db, consumers=32)
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


def test_a_batch_as_one_upload_stored_is_grouped_once_beside_older_file_stored(rig: Rig, mongo_db) -> None:
    """file_service_manager announces a batch as one UploadStored: grouped in one slice and
    answered by one FilesGrouped per delivery. Redelivered, and with some of its files also
    arriving as FileStored (an older file_service_manager, or messages queued before the
    upgrade), every file is still counted once; another pool's file goes through beside it."""
    rig.auth.set_pool("pool2")
    store, deps = _aggregator(rig, mongo_db, consumers=8)
    start = core.window_for(rig.clock(), W).start
    gid, other = core.group_id(POOL, start), core.group_id("pool2", start)
    files = [rig.stored(f"item{n:04d}", ts=start + n / 100, owner="u1", size=10) for n in range(1000)]
    batch = UploadStored(upload_id="up1", owner_id="u1", owner_name="u1", content_type="application/octet-stream",
                         created=files[0].created, pool_id=POOL, items=tuple(
                             StoredItem(file_id=f.file_id, file_name=f"\U0001F4C8 {f.file_name}", size=f.size,
                                        sha256=f.sha256, timestamp=f.timestamp) for f in files))
    consumers = start_consumers(rig.amqp_url, handlers.consumers(deps))
    try:
        # 30 files announced one by one first, spread over every insert chunk of the batch's slice.
        for message in [*files[::34], batch, rig.stored("lone", ts=start + 1, pool_id="pool2"), batch]:
            rig.deps.broker.publish(message)
        answers = rig.events.of(FilesGrouped, timeout=60, count=2)
        singles = rig.events.of(FileGrouped, timeout=30, count=31)
    finally:
        stop_consumers(consumers)
    assert len(answers) == 2 and answers[0] == answers[1]
    assert answers[0].groups == (GroupedFiles(group_id=gid, late=False, file_ids=tuple(f.file_id for f in files)),)
    assert sorted(m.file_id for m in singles) == sorted([f.file_id for f in files[::34]] + ["lone"])
    assert {m.group_id for m in singles if m.file_id == "lone"} == {other}
    group = store.get(gid)
    assert (group["file_count"], group["bytes"]) == (1000, 10000)
    assert store.groups.find_one({"_id": gid})["pending"] == []  # every slice settled (steps 3-4)
    assert store.files.count_documents({"group_id": gid}) == 1000
    listed = store.files_of(gid)
    assert [e["file_id"] for e in listed] == [f.file_id for f in files]
    assert listed[1]["file_name"] == "\U0001F4C8 item0001.f64"  # UTF-8 on the wire, intact
    assert store.get(other)["file_count"] == 1
