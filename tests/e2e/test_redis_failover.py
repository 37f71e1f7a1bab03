"""The whole fleet on Redis behind Sentinel: the primary is SIGKILLed in the middle of uploads.
An upload in flight either goes on or fails with an error its client can see (and then
succeeds when sent again); none is stored twice or corrupted."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import pytest
import requests

from devtools import infra
from devtools.fleet import SERVICES, Fleet
from devtools.redis_sentinel import SentinelGroup

from .conftest import ADMIN, ROOT
from .helpers import RawSocket, bearer, signup

pytestmark = pytest.mark.slow

UPLOADS = 40


@pytest.fixture
def sentinel_fleet(mongo_uri: str, tmp_path: Path):
    infra.ensure_all()
    group = SentinelGroup(tmp_path / "redis").start()
    env = {"DROPBOX_ENV": "development", "DATABASE_URL": infra.create_postgres_db("dropbox_e2e"),
           "AMQP_URL": infra.create_vhost("dropbox_e2e"), "REDIS_SENTINELS": group.sentinels_env,
           "REDIS_MASTER_NAME": group.master_name, "REDIS_URL": "redis://sentinel-knows:6379/0",
           "REDIS_PREFIX": f"e2e:{uuid.uuid4().hex[:10]}", "MONGODB_URI": mongo_uri,
           "MONGODB_DB": f"e2e_{uuid.uuid4().hex[:10]}", "ADMIN_USER": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1],
           "LOG_LEVEL": "INFO"}
    fleet = Fleet(env, ports={name: infra.free_port() for name in SERVICES},
                  log_dir=ROOT / "artifacts" / "fleet-logs" / f"sentinel-{uuid.uuid4().hex[:6]}")
    try:
        fleet.start(timeout=180)
        yield fleet, group
    finally:
        fleet.stop()
        group.stop()
        infra.drop_postgres_db(env["DATABASE_URL"])
        infra.delete_vhost(env["AMQP_URL"])


def test_killing_the_redis_primary_during_uploads_stores_each_once_and_intact(sentinel_fleet):
    fleet, group = sentinel_fleet
    user = signup(fleet.urls["auth"])
    sock = RawSocket(fleet.urls["socket_gateway"], user["access_token"])
    sent: dict[str, str] = {}  # file_id -> sha256 of what was sent
    failed_clearly = 0
    try:
        old = None
        for n in range(UPLOADS):
            if n == UPLOADS // 3:
                old = group.kill_primary()
            data = f"update {n} ".encode() * 11_000
            for _attempt in range(5):  # bounded: a client sends a failed upload again a few times
                try:
                    file_id = sock.upload_bytes(data, file_name=f"u{n}.bin")
                    break
                except AssertionError:  # an {"error": ...} ack: the client was told
                    failed_clearly += 1
                    time.sleep(1)
            else:
                raise AssertionError(f"upload {n} never went through")
            sent[file_id] = hashlib.sha256(data).hexdigest()
        assert old is not None and group.wait_failover(old) == group.ports["replica"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all("uploaded_successfully" in sock.statuses(f) for f in sent):
                break
            time.sleep(1)
        time.sleep(2)  # a late duplicate would arrive by now
        counts = {f: sock.statuses(f).count("uploaded_successfully") for f in sent}
        assert all(n == 1 for n in counts.values()), {f: n for f, n in counts.items() if n != 1}
        history = requests.get(f"{fleet.urls['file_service_manager']}/client/history/{user['user_id']}?limit=100",
                               headers=bearer(user["access_token"]), timeout=10)
        assert history.status_code == 200, history.text
        records = history.json()["files"]
        names = [r["file_name"] for r in records]
        assert sorted(names) == sorted(f"u{n}.bin" for n in range(UPLOADS))  # each stored once
        assert {r["file_id"]: r["sha256"] for r in records} == sent  # and intact
    finally:
        sock.close()
    print(f"uploads that failed clearly and were sent again: {failed_clearly}")
