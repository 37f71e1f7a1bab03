"""The aggregator's input sharded by pool (issue 10): the shard function, the keys and the queues."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest

from services.common import topology
from services.common.contracts import FileStored, StoredItem, UploadStored
from services.common.handlers import ConsumerSpec
from services.common.testing import InMemoryBroker
from services.common.topology import (
    AGGREGATOR_QUEUE,
    AGGREGATOR_SHARD_QUEUES,
    DEAD_LETTER_EXCHANGE,
    EXCHANGE,
    RETRY_EXCHANGE,
    STORED_SHARDS,
    queues_for,
    stored_shard,
)


def _file(pool_id: str | None, upload_id: str = "up1", kind: str = "file") -> FileStored:
    return FileStored(file_id=f"{upload_id}-0", upload_id=upload_id, owner_id="7", owner_name="a", file_name="a",
                      size=1, sha256="s", content_type="application/octet-stream", timestamp="t", created="t",
                      pool_id=pool_id, kind=kind)


def _batch(pool_id: str | None, upload_id: str = "up1") -> UploadStored:
    return UploadStored(upload_id=upload_id, owner_id="7", owner_name="a", content_type="application/octet-stream",
                        created="t", pool_id=pool_id,
                        items=(StoredItem(file_id=f"{upload_id}-0", file_name="a", size=1, sha256="s", timestamp="t"),))


def test_the_shard_is_stable_across_processes_and_versions() -> None:
    """Pinned values: a publisher and a consumer of another process (or release) must agree.
    Python's hash() of a str differs per process (PYTHONHASHSEED), so it must not be used."""
    pinned = {"pool1": 2, "pool2": 6, "pool5": 0, "pool7": 7, "a3f9c2d4-5b6e-4f70-8a91-b2c3d4e5f607": 5}
    assert {p: stored_shard(p) for p in pinned} == pinned
    code = f"from services.common.topology import stored_shard; print([stored_shard(p) for p in {list(pinned)!r}])"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert out.strip() == str(list(pinned.values()))


@pytest.mark.parametrize("pool_id", ["", "p", "\U0001F4C8 pool", "a\udc80b", "x" * 10_000, "7"])
def test_the_shard_is_in_range_for_any_string(pool_id: str) -> None:
    assert 0 <= stored_shard(pool_id) < STORED_SHARDS


def test_the_shards_spread_pools_evenly() -> None:
    """8,000 pool ids (uuids, as auth gives, and sequential names): every shard gets its share
    within 15 % (a binomial's 3.5 sigma is ~11 %)."""
    for ids in ([str(uuid.UUID(int=n * 7919 + 1)) for n in range(8000)], [f"pool{n}" for n in range(8000)]):
        counts = Counter(stored_shard(p) for p in ids)
        assert set(counts) == set(range(STORED_SHARDS))
        share = len(ids) / STORED_SHARDS
        assert all(abs(c - share) <= 0.15 * share for c in counts.values()), counts


def test_a_pool_files_and_batches_and_results_reach_its_shard_queue_only() -> None:
    for pool in ("pool1", "pool2", "pool5", "b7"):
        shard = AGGREGATOR_SHARD_QUEUES[stored_shard(pool)]
        for message in (_file(pool), _batch(pool), _file(pool, kind="result")):
            assert message.key() == f"{message.routing_key}.{stored_shard(pool)}"
            assert queues_for(EXCHANGE, message.key()) == [shard], message.key()


def test_a_message_without_a_pool_takes_its_upload_ids_shard() -> None:
    """Nothing to group (its consumer acks it at once); spread by upload id so that no pool's
    shard takes every private upload."""
    for upload_id in ("u1", "u2", "u3"):
        shard = AGGREGATOR_SHARD_QUEUES[stored_shard(upload_id)]
        assert queues_for(EXCHANGE, _file(None, upload_id).key()) == [shard]
        assert queues_for(EXCHANGE, _batch(None, upload_id).key()) == [shard]


def test_unsharded_keys_of_older_publishers_reach_the_legacy_queue_only() -> None:
    for key in ("file.stored", "upload.stored"):
        assert queues_for(EXCHANGE, key) == [AGGREGATOR_QUEUE]


def test_shard_queues_are_quorum_queues_like_the_legacy_one() -> None:
    """Same dead-lettering and delivery limit: a poison message in a shard goes aside as before."""
    assert len(AGGREGATOR_SHARD_QUEUES) == STORED_SHARDS
    assert len({q.name for q in AGGREGATOR_SHARD_QUEUES}) == STORED_SHARDS
    for queue in AGGREGATOR_SHARD_QUEUES:
        assert queue.arguments == AGGREGATOR_QUEUE.arguments and queue.exchange == EXCHANGE
        assert queue in topology.DURABLE_QUEUES
    # What is dead-lettered from a shard (its key kept) still reaches the dead-letter queue.
    assert queues_for(DEAD_LETTER_EXCHANGE, _batch("pool1").key()) == [topology.DEAD_LETTER_QUEUE]


def test_a_delayed_message_comes_back_to_its_shard() -> None:
    """The retry exchange's queue dead-letters back to EXCHANGE with the message's own key: the
    sharded key, so it lands in its pool's shard (in memory, as topology routes; the real broker:
    tests/integration/common/test_messaging.py)."""
    pool = "pool2"
    assert queues_for(RETRY_EXCHANGE, _file(pool).key()) == [topology.RETRY_QUEUE]
    broker = InMemoryBroker()
    got: dict[int, list[object]] = {k: [] for k in range(STORED_SHARDS)}
    specs = [ConsumerSpec(f"s{k}", q, {FileStored: got[k].append}) for k, q in enumerate(AGGREGATOR_SHARD_QUEUES)]
    broker.publish_delayed(_file(pool), 5)
    assert broker.deliver(specs) == 0  # still waiting
    assert broker.deliver(specs, include_delayed=True) == 1
    assert got[stored_shard(pool)] == [_file(pool)]
