"""What declaring the durable topology costs, by the number of pool shards (issue 10).

    python -m bench.topology_bench [--shards 0 8 16 32] [--vhosts 3] [--reconnects 5]

Every connection (each pooled publisher channel, each consumer) declares every durable queue
and binding first (``messaging.declare_topology``), and every integration test does so in a
vhost of its own. For each shard count, the topology is declared with that many
``pool_aggregator.stored.<k>`` quorum queues (instead of ``topology.STORED_SHARDS``) in fresh
vhosts: the first connection creates the queues (an integration test's cost, with the vhost's
deletion afterwards), each later one declares them again (every connection's cost). Prints
medians (min-max) in ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import pika

from devtools import infra
from services.common import messaging, topology
from services.common.topology import QueueSpec, quorum


def queues(shards: int) -> list[QueueSpec]:
    """The durable topology with ``shards`` aggregator shard queues, bound as topology's are."""
    base = [q for q in topology.DURABLE_QUEUES if q not in topology.AGGREGATOR_SHARD_QUEUES]
    return base + [QueueSpec(f"pool_aggregator.stored.{k}", (f"file.stored.{k}", f"upload.stored.{k}"),
                             arguments=quorum()) for k in range(shards)]


def declare_once(url: str, specs: list[QueueSpec]) -> float:
    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    messaging.declare_topology(connection, specs)
    took = time.perf_counter() - started
    connection.close()
    return took


def figure(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms ({min(samples) * 1000:.0f}-{max(samples) * 1000:.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, nargs="+", default=[0, topology.STORED_SHARDS, 16, 32])
    parser.add_argument("--vhosts", type=int, default=3, help="fresh vhosts per shard count")
    parser.add_argument("--reconnects", type=int, default=5, help="later connections per vhost")
    args = parser.parse_args(argv)
    infra.ensure_rabbitmq()
    for shards in args.shards:
        specs = queues(shards)
        created, again, deleted = [], [], []
        for _ in range(args.vhosts):
            url = infra.create_vhost("topology_bench")
            try:
                created.append(declare_once(url, specs))
                again.extend(declare_once(url, specs) for _ in range(args.reconnects))
            finally:
                started = time.perf_counter()
                infra.delete_vhost(url)
                deleted.append(time.perf_counter() - started)
        print(f"{shards:2d} shards ({len(specs)} queues): created in a fresh vhost {figure(created)}, "
              f"declared again per connection {figure(again)}, vhost deleted {figure(deleted)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
