"""`make run REPLICAS=2` through the launcher's Python API: HAProxy serves every service from
two replicas and keeps serving when one replica is SIGKILLed."""

from __future__ import annotations

import signal
import uuid

import pytest
import requests

from devtools.fleet import DEFAULT_PORTS, SERVICES, ReplicatedFleet, free_base_port, replica_ports

from .conftest import ADMIN, ROOT, fleet_env, teardown_env
from .helpers import RawSocket, bearer, login, signup

pytestmark = pytest.mark.slow


@pytest.fixture
def replicated(mongo_uri: str, tmp_path):
    env = fleet_env(mongo_uri, LOG_LEVEL="WARNING")
    base = free_base_port(2)
    fleet = ReplicatedFleet(env, replicas=2, base=base,
                            log_dir=ROOT / "artifacts" / "fleet-logs" / f"replicas-{uuid.uuid4().hex[:6]}",
                            run_dir=tmp_path)
    try:
        fleet.start(timeout=180)
        yield fleet
    finally:
        fleet.stop()
        teardown_env(env)


def _all_ready(fleet: ReplicatedFleet, times: int) -> dict[str, list[int]]:
    answers: dict[str, list[int]] = {}
    for name in DEFAULT_PORTS:
        answers[name] = [requests.get(f"{fleet.urls[name]}/ready", timeout=5).status_code for _ in range(times)]
    return answers


def test_the_balancer_serves_every_service_and_survives_a_replica_sigkill(replicated: ReplicatedFleet):
    fleet = replicated
    assert fleet.ports["auth"] == fleet.base + 1
    assert fleet.ports["auth-2"] == replica_ports(2, fleet.base)["auth"] == fleet.base + 201
    assert set(fleet.procs) == {f"{s}-{k}" for s in SERVICES for k in (1, 2)}
    assert _all_ready(fleet, 4) == {name: [200] * 4 for name in DEFAULT_PORTS}

    user = signup(fleet.urls["auth"])
    sock = RawSocket(fleet.urls["socket_gateway"], user["access_token"])
    try:
        file_id = sock.upload_bytes(b"x" * 150_000, file_name="before.bin")
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully",
                        timeout=60)
    finally:
        sock.close()

    for name in SERVICES:  # one replica of every service dies, one service at a time
        fleet.stop_service(f"{name}-1", sig=signal.SIGKILL)
        assert fleet.procs[f"{name}-1"].poll() is not None
        # Straight away (before the health check noticed): the balancer retries elsewhere.
        assert [requests.get(f"{fleet.urls[name]}/ready", timeout=10).status_code for _ in range(10)] == [200] * 10

    # Everything again, on the survivors alone: login, a socket upload end to end, the history.
    admin = login(fleet.urls["auth"], *ADMIN)
    assert admin["user_name"] == ADMIN[0]
    sock = RawSocket(fleet.urls["socket_gateway"], user["access_token"])
    try:
        file_id = sock.upload_bytes(b"y" * 150_000, file_name="after.bin")
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully",
                        timeout=60)
    finally:
        sock.close()
    history = requests.get(f"{fleet.urls['file_service_manager']}/client/history/{user['user_id']}",
                           headers=bearer(user["access_token"]), timeout=10)
    assert history.status_code == 200
    assert {f["file_name"] for f in history.json()["files"]} >= {"before.bin", "after.bin"}
    groups = requests.get(f"{fleet.urls['pool_aggregator']}/pools/none/groups", timeout=10)
    assert groups.status_code in (401, 403, 404)  # served (refused as it should be), not a 502/503


def test_a_socket_through_the_balancer_hears_its_uploads_from_any_replica(replicated: ReplicatedFleet):
    """The gateway takes WebSocket only (one TCP connection: no stickiness needed). Its file-status
    is taken off the queue by either gateway replica and reaches the socket through Redis."""
    user = signup(replicated.urls["auth"])
    sock = RawSocket(replicated.urls["socket_gateway"], user["access_token"])
    try:
        for n in range(4):
            file_id = sock.upload_bytes(f"through the balancer {n} ".encode() * 5000, f"b{n}.bin")
            sock.wait_event("file-status", lambda d, f=file_id: d["file_id"] == f
                            and d["status"] == "uploaded_successfully", timeout=60)
        assert sock.call("alive", {}, timeout=10)["ok"] is True
    finally:
        sock.close()
