"""The client library and CLI keep updates made offline and send them as one batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from client.api import DropboxClient
from devtools import infra

from .pools import Admin, window_timestamp

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _wait_records(client: DropboxClient, upload_id: str, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [f for f in client.history() if f["file_id"].startswith(upload_id)
                   and f["status"] == "uploaded_successfully"]
        if len(records) == count:
            return records
        time.sleep(0.3)
    raise AssertionError(f"{count} stored records of {upload_id} not seen within {timeout}s")


def test_updates_made_offline_go_as_one_batch_on_reconnect(fleet, tmp_path):
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"offline-{uuid.uuid4().hex[:6]}", window_seconds=3600)["pool_id"]
    member = admin.member(pool_id)
    client = DropboxClient(fleet.gateway, spool_dir=tmp_path / "spool")
    client.login(member["user_name"], member["password"])
    stamps = [window_timestamp(3600, offset=5), window_timestamp(3600, offset=65)]
    updates = [os.urandom(100_000 + n) for n in range(2)]
    for stamp, data in zip(stamps, updates, strict=True):
        assert client.submit_update(data, pool_id, timestamp=stamp, name=f"u{stamp[-8:-6]}.bin") is None
    assert len(client.spool.pending(pool_id)) == 2
    try:
        client.connect()  # the reconnect flushes the spool in the background
        deadline = time.monotonic() + 30
        while client.spool.pending(pool_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.spool.pending(pool_id) == [], "the spool empties once the batch is cached"
        batch = [f for f in client.history() if f.get("pool_id") == pool_id]
        upload_id = batch[0]["file_id"].rsplit("-", 1)[0]
        records = sorted(_wait_records(client, upload_id, 2), key=lambda r: r["file_id"])
        assert [r["size"] for r in records] == [len(u) for u in updates]
        assert [r["timestamp"][:19] for r in records] == [s[:19] for s in stamps]
    finally:
        client.disconnect()


def test_cli_spools_while_the_fleet_is_unreachable_and_flushes_later(fleet, tmp_path):
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"cli-{uuid.uuid4().hex[:6]}", window_seconds=3600)["pool_id"]
    member = admin.member(pool_id)
    update = tmp_path / "update.bin"
    update.write_bytes(os.urandom(120_000))
    env = {**os.environ, "DROPBOX_USER": member["user_name"], "DROPBOX_PASSWORD": member["password"]}
    spool = str(tmp_path / "spool")

    def cli(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "client", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    dead = f"http://127.0.0.1:{infra.free_port()}"
    offline = cli("--gateway", dead, "update", str(update), "--pool", pool_id, "--spool", spool)
    assert offline["spooled"] is True and offline["pending"] == 1
    flushed = cli("--gateway", fleet.gateway, "flush", "--spool", spool)
    assert len(flushed["file_ids"]) == 1
    client = DropboxClient(fleet.gateway)
    client.login(member["user_name"], member["password"])
    client.connect()
    try:
        _wait_records(client, flushed["file_ids"][0], 1)
    finally:
        client.disconnect()
