"""A three-node RabbitMQ cluster loses a node in the middle of the work: nothing is lost."""

from __future__ import annotations

import queue
import time

import pytest

from devtools.rabbit_cluster import RabbitCluster
from services.common import contracts as c
from services.common.messaging import AGGREGATOR_QUEUE, Broker, Consumer

# The legacy queue's unsharded key, as a file_service_manager older than the pool shards publishes
# FileStored: these use pool_aggregator.stored as any consumed quorum queue.
LEGACY_KEY = c.FileStored.routing_key

pytestmark = pytest.mark.slow


def _stored(file_id: str) -> c.FileStored:
    return c.FileStored(file_id=file_id, upload_id=file_id, owner_id="1", owner_name="a", file_name="a",
                        size=1, sha256="x", content_type="t", timestamp="t", created="t")


def _leader(cluster: RabbitCluster, queue_name: str) -> int:
    """The index of the node that leads the quorum queue (losing it forces an election)."""
    out = cluster.ctl(cluster.nodes[1], "list_queues", "name", "leader", "--no-table-headers")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue_name:
            return next(i for i, node in enumerate(cluster.nodes) if node.name == parts[1])
    raise AssertionError(f"no leader for {queue_name}: {out}")


def test_stopping_a_node_during_100_publishes_and_consumes_loses_nothing(rabbit_cluster: RabbitCluster):
    url = rabbit_cluster.amqp_url()
    assert url.count(",") == 2
    broker = Broker(url)
    got: queue.Queue = queue.Queue()
    # Three consumers: the node rotation puts one on each node, so one loses its connection.
    consumers = [Consumer(url, AGGREGATOR_QUEUE, got.put, name=f"c{n}", retry_pause=0.1) for n in range(3)]
    for consumer in consumers:
        consumer.start()
    received: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not all(consumer.connected for consumer in consumers):
            assert time.monotonic() < deadline, "consumers did not connect"
            time.sleep(0.2)
        victim = _leader(rabbit_cluster, AGGREGATOR_QUEUE.name)
        for n in range(100):
            if n == 30:
                rabbit_cluster.stop_node(victim, kill=True)
            broker.publish(_stored(f"f{n}"), routing_key=LEGACY_KEY)  # confirmed: the surviving majority has it
            while not got.empty():
                received.append(got.get_nowait().file_id)
        deadline = time.monotonic() + 90
        expected = {f"f{n}" for n in range(100)}
        while set(received) != expected and time.monotonic() < deadline:
            try:
                received.append(got.get(timeout=1).file_id)
            except queue.Empty:
                pass
        assert set(received) == expected, sorted(expected - set(received))
        # At-least-once: a message in flight on the lost node may come twice, never more.
        assert len(received) - len(expected) <= 3 * consumers[0].prefetch
        assert len(rabbit_cluster.running_members()) == 2
        assert _leader(rabbit_cluster, AGGREGATOR_QUEUE.name) != victim
        assert all(consumer.connected for consumer in consumers)  # the lost node's consumer moved
    finally:
        for consumer in consumers:
            consumer.stop()
        broker.close()
