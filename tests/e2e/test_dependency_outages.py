"""Issue 4 crash safety: a service that loses Redis or MongoDB for a while reports
not-ready, keeps its data, and recovers without a restart.

The fleet here gets a Redis server and a secantusdb of its own, so they can be
stopped and started again without touching anything else on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import requests

from devtools import infra

from .helpers import RawSocket, bearer, signup

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=infra.die_with_parent)
    infra.wait_port("127.0.0.1", port, 20, "redis-server")
    return proc


def _ready(url: str) -> int:
    try:
        return requests.get(f"{url}/ready", timeout=10).status_code
    except requests.RequestException:
        return 0


def _wait_ready_state(urls: list[str], status: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_ready(u) == status for u in urls):
            return
        time.sleep(0.5)
    raise AssertionError(f"not all of {urls} answered /ready {status} within {timeout}s: "
                         f"{[_ready(u) for u in urls]}")


def _upload_and_wait(fleet, token: str, name: str) -> str:
    sock = RawSocket(fleet.gateway, token)
    try:
        file_id = sock.upload_bytes(os.urandom(110_000), name)
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully",
                        timeout=60)
        return file_id
    finally:
        sock.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to run a private Redis")
def test_losing_redis_and_mongodb_for_a_while(make_fleet, tmp_path):
    redis_port, mongo_port = infra.free_port(), infra.free_port()
    redis_proc = _start_redis(redis_port)
    mongo_dir = tmp_path / "mongo"
    mongo_proc = infra.start_secantus(mongo_port, mongo_dir, tmp_path / "secantus.log")
    try:
        fleet = make_fleet(REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                           MONGODB_URI=f"mongodb://127.0.0.1:{mongo_port}")
        user = signup(fleet.urls["auth"])
        before = _upload_and_wait(fleet, user["access_token"], "before.bin")

        # Redis goes away: the services that need it say so, and recover when it is back.
        redis_users = [fleet.urls[n] for n in ("file_uploader", "file_service_manager", "socket_gateway")]
        redis_proc.kill()
        redis_proc.wait(10)
        _wait_ready_state(redis_users, 503)
        assert _ready(fleet.urls["auth"]) == 200, "auth does not depend on Redis"
        redis_proc = _start_redis(redis_port)
        _wait_ready_state(redis_users, 200)
        during_redis = _upload_and_wait(fleet, user["access_token"], "after-redis.bin")

        # MongoDB goes away (its data stays on disk) and comes back on the same port.
        mongo_users = [fleet.urls[n] for n in ("file_service_manager", "pool_aggregator")]
        infra.stop_process(mongo_proc)
        _wait_ready_state(mongo_users, 503)
        mongo_proc = infra.start_secantus(mongo_port, mongo_dir, tmp_path / "secantus.log")
        _wait_ready_state(mongo_users, 200)
        after_mongo = _upload_and_wait(fleet, user["access_token"], "after-mongo.bin")

        # Nothing stored before the outages was lost, and every file downloads.
        fsm = fleet.urls["file_service_manager"]
        files = requests.get(f"{fsm}/files", headers=bearer(user["access_token"]), timeout=10).json()["files"]
        stored = {f["file_id"] for f in files if f["status"] == "uploaded_successfully"}
        assert {before, during_redis, after_mongo} <= stored
        for file_id in (before, during_redis, after_mongo):
            r = requests.get(f"{fsm}/file/{file_id}", headers=bearer(user["access_token"]), timeout=30)
            assert r.status_code == 200 and len(r.content) == 110_000
    finally:
        redis_proc.kill()
        infra.stop_process(mongo_proc)
