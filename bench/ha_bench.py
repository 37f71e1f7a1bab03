"""The clustered data layer's figures in docs/SCALING.md: quorum vs classic queues, a
three-node RabbitMQ cluster and the loss of its leader, Redis through Sentinel and its failover.

Run: .venv/bin/python -m bench.ha_bench [--messages N] [--skip-cluster] [--skip-redis]

Starts what it measures itself (a vhost of the machine's broker, a local three-node
cluster, a Redis primary+replica+3 sentinels on free ports) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import queue
import tempfile
import threading
import time
from pathlib import Path

from devtools import infra
from services.common import contracts as c
from services.common import messaging
from services.common.messaging import AGGREGATOR_QUEUE, Broker, Consumer

# The legacy queue's unsharded key, as a file_service_manager older than the pool shards publishes
# FileStored: these use pool_aggregator.stored as any consumed quorum queue.
LEGACY_KEY = c.FileStored.routing_key


def _stored(n: int) -> c.FileStored:
    return c.FileStored(file_id=f"f{n}", upload_id="u", owner_id="1", owner_name="a", file_name="a",
                        size=1, sha256="x", content_type="t", timestamp="t", created="t")


def rates(url: str, count: int) -> tuple[float, float]:
    """Confirmed publishes/s from 4 threads (the publisher's pool), then deliveries/s to 1 consumer."""
    broker = Broker(url)
    broker.publish(_stored(-1), routing_key=LEGACY_KEY)

    def publish(first: int) -> None:
        for n in range(first, count, 4):
            broker.publish(_stored(n), routing_key=LEGACY_KEY)

    started = time.monotonic()
    threads = [threading.Thread(target=publish, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    published = count / (time.monotonic() - started)
    got: queue.Queue = queue.Queue()
    consumer = Consumer(url, AGGREGATOR_QUEUE, got.put, name="bench", prefetch=8)
    started = time.monotonic()
    consumer.start()
    for _ in range(count + 1):
        got.get(timeout=120)
    consumed = count / (time.monotonic() - started)
    consumer.stop()
    broker.close()
    return published, consumed


def queue_types(count: int) -> None:
    import pika

    for kind in ("classic", "quorum"):
        url = infra.create_vhost("dropbox_bench")
        try:
            if kind == "classic":  # what the topology declared before quorum queues
                conn = pika.BlockingConnection(pika.URLParameters(url))
                conn.channel().queue_declare(AGGREGATOR_QUEUE.name, durable=True,
                                             arguments={"x-dead-letter-exchange": messaging.DEAD_LETTER_EXCHANGE})
                conn.close()
            published, consumed = rates(url, count)
            print(f"one node, {kind:7}: publish {published:,.0f}/s (4 threads, confirmed), "
                  f"consume {consumed:,.0f}/s (1 consumer, prefetch 8)")
        finally:
            messaging._classic_fallbacks.discard(AGGREGATOR_QUEUE.name)
            infra.delete_vhost(url)


def cluster(count: int) -> None:
    from devtools.rabbit_cluster import RabbitCluster

    nodes = RabbitCluster(Path(tempfile.mkdtemp(prefix="dropbox-bench-rabbit-")))
    try:
        nodes.start()
        url = nodes.amqp_url()
        published, consumed = rates(url, count)
        print(f"three-node cluster, quorum: publish {published:,.0f}/s, consume {consumed:,.0f}/s")
        out = nodes.ctl(nodes.nodes[1], "list_queues", "name", "leader", "--no-table-headers")
        leader = next(line.split()[1] for line in out.splitlines() if line.startswith(AGGREGATOR_QUEUE.name))
        broker = Broker(url)
        broker.publish(_stored(0), routing_key=LEGACY_KEY)
        nodes.stop_node([n.name for n in nodes.nodes].index(leader), kill=True)
        slowest = 0.0
        for n in range(50):
            started = time.monotonic()
            broker.publish(_stored(n), routing_key=LEGACY_KEY)
            slowest = max(slowest, time.monotonic() - started)
        broker.close()
        print(f"leader's node SIGKILLed: slowest of the next 50 publishes {slowest:.2f}s, none failed")
    finally:
        nodes.stop()


def sentinel() -> None:
    import redis

    from devtools.redis_sentinel import SentinelGroup
    from services.common import redisconn
    from services.common.settings import CommonSettings

    group = SentinelGroup(Path(tempfile.mkdtemp(prefix="dropbox-bench-redis-"))).start()
    try:
        common = CommonSettings.from_env({"REDIS_SENTINELS": group.sentinels_env,
                                          "REDIS_MASTER_NAME": group.master_name})
        client = redisconn.redis_client(common, socket_timeout=1)
        started = time.monotonic()
        for n in range(2000):
            client.set(f"k{n}", b"x" * 1024)
        print(f"Redis through Sentinel: {2000 / (time.monotonic() - started):,.0f} SET/s (1 KB, one thread)")
        killed = time.monotonic()
        group.kill_primary()
        slowest, errors, writes = 0.0, 0, 0
        while time.monotonic() - killed < 15:  # bounded: 15 s of writes
            started = time.monotonic()
            try:
                client.set(f"a{writes}", writes)
                writes += 1
            except redis.RedisError:
                errors += 1
            slowest = max(slowest, time.monotonic() - started)
        print(f"primary SIGKILLed (down-after 1 s): slowest write {slowest:.2f}s, {errors} errors, "
              f"{writes:,} writes in 15 s")
    finally:
        group.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    infra.ensure_rabbitmq()
    queue_types(args.messages)
    if not args.skip_cluster:
        cluster(args.messages)
    if not args.skip_redis:
        sentinel()


if __name__ == "__main__":
    main()
