"""The whole fleet on a three-node RabbitMQ cluster: the node leading the store queue is
killed in the middle of 100 uploads; every upload still ends uploaded_successfully."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from devtools import infra
from devtools.fleet import SERVICES, Fleet
from devtools.rabbit_cluster import SERVER, RabbitCluster

from .conftest import ADMIN, ROOT
from .helpers import RawSocket, signup

pytestmark = pytest.mark.slow

UPLOADS = 100


@pytest.fixture
def clustered_fleet(mongo_uri: str, tmp_path: Path):
    if not Path(SERVER).exists() or not shutil.which("erl"):
        pytest.skip("rabbitmq-server is not installed")
    infra.ensure_all()
    cluster = RabbitCluster(tmp_path / "rabbit").start()
    env = {"DROPBOX_ENV": "development", "DATABASE_URL": infra.create_postgres_db("dropbox_e2e"),
           "AMQP_URL": cluster.amqp_url(), "REDIS_URL": "redis://127.0.0.1:6379/0",
           "REDIS_PREFIX": f"e2e:{uuid.uuid4().hex[:10]}", "MONGODB_URI": mongo_uri,
           "MONGODB_DB": f"e2e_{uuid.uuid4().hex[:10]}", "ADMIN_USER": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1],
           "LOG_LEVEL": "INFO"}
    fleet = Fleet(env, ports={name: infra.free_port() for name in SERVICES},
                  log_dir=ROOT / "artifacts" / "fleet-logs" / f"cluster-{uuid.uuid4().hex[:6]}")
    try:
        fleet.start(timeout=180)
        yield fleet, cluster
    finally:
        fleet.stop()
        cluster.stop()
        infra.drop_postgres_db(env["DATABASE_URL"])


def _leader(cluster: RabbitCluster, queue_name: str) -> int:
    out = cluster.ctl(cluster.nodes[1], "list_queues", "name", "leader", "--no-table-headers")
    leader = next(line.split()[1] for line in out.splitlines() if line.split()[0] == queue_name)
    return [n.name for n in cluster.nodes].index(leader)


def test_losing_the_store_queues_leader_during_100_uploads_loses_none(clustered_fleet):
    fleet, cluster = clustered_fleet
    user = signup(fleet.urls["auth"])
    sock = RawSocket(fleet.urls["socket_gateway"], user["access_token"])
    try:
        victim = _leader(cluster, "file_service_manager.store")
        file_ids = []
        for n in range(UPLOADS):
            if n == UPLOADS // 3:
                cluster.stop_node(victim, kill=True)
            data = f"upload {n} ".encode() * 12_000  # ~100 KB, distinct per upload
            file_ids.append(sock.upload_bytes(data, file_name=f"u{n}.bin"))
        deadline = time.monotonic() + 180
        done: dict[str, int] = {}
        while time.monotonic() < deadline and len(done) < UPLOADS:
            for file_id in file_ids:
                done[file_id] = sock.statuses(file_id).count("uploaded_successfully")
            done = {k: v for k, v in done.items() if v}
            time.sleep(1)
        missing = [f for f in file_ids if f not in done]
        assert not missing, f"{len(missing)} uploads never reached uploaded_successfully"
        time.sleep(3)  # a late duplicate would arrive by now
        twice = {f: n for f in file_ids if (n := sock.statuses(f).count("uploaded_successfully")) != 1}
        assert not twice, f"uploaded_successfully more than once: {twice}"
        assert len(cluster.running_members()) == 2
    finally:
        sock.close()
