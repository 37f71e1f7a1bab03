"""Fixtures of the shared-infrastructure tests: a RabbitMQ cluster, a Redis Sentinel group."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.rabbit_cluster import SERVER, RabbitCluster
from devtools.redis_sentinel import SentinelGroup


@pytest.fixture
def rabbit_cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    """Three nodes of the installed rabbitmq-server joined into one cluster (own names, ports,
    cookie and data under tmp_path; the machine's broker on 5672 is left alone)."""
    if not Path(SERVER).exists() or not shutil.which("erl"):
        pytest.skip("rabbitmq-server is not installed")
    cluster = RabbitCluster(tmp_path / "rabbit").start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Redis primary, a replica and three Sentinels of the test's own (free ports)."""
    group = SentinelGroup(tmp_path / "redis").start()
    try:
        yield group
    finally:
        group.stop()
