"""Fixtures of the shared-infrastructure tests: a RabbitMQ cluster of the test's own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.rabbit_cluster import SERVER, RabbitCluster


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
