"""Issue 2 end to end: a real client signs up, uploads 50 MB in chunks over
Socket.IO, is told when it is stored, lists its history and downloads it back."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests

from client.api import DropboxClient

from .helpers import RawSocket, assert_error, bearer, signup

pytestmark = pytest.mark.e2e


def _write_random(path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            digest.update(block)
            out.write(block)
            remaining -= len(block)
    return digest.hexdigest()


@pytest.mark.slow
def test_fifty_megabytes_round_trip(fleet, tmp_path):
    source = tmp_path / "big.bin"
    expected = _write_random(source, 50 * 1024 * 1024)

    client = DropboxClient(fleet.gateway)
    client.signup(f"alice_{os.urandom(4).hex()}", "correct-horse-battery")
    client.connect()
    try:
        file_id = client.upload(source)
        client.wait_status(file_id, "uploaded_successfully", timeout=120)
        statuses = [event["status"] for event in client.statuses[file_id]]
        # cached is announced before the store finishes
        assert statuses == ["cached", "uploaded_successfully"], statuses

        history = client.history()
        record = next(f for f in history if f["file_id"] == file_id)
        assert record["sha256"] == expected
        assert record["size"] == 50 * 1024 * 1024
        assert record["status"] == "uploaded_successfully"
        assert record["file_name"] == "big.bin"

        fsm = fleet.urls["file_service_manager"]
        with requests.get(f"{fsm}/file/{file_id}", headers=bearer(client.token), stream=True, timeout=60) as r:
            assert r.status_code == 200
            assert r.headers["ETag"].strip('"') == expected
            assert "big.bin" in r.headers["Content-Disposition"]
            digest = hashlib.sha256()
            for block in r.iter_content(1 << 20):
                digest.update(block)
        assert digest.hexdigest() == expected

        start, end = 10_000_000, 10_000_999
        r = requests.get(f"{fsm}/file/{file_id}", headers={**bearer(client.token), "Range": f"bytes={start}-{end}"},
                         timeout=30)
        assert r.status_code == 206
        with open(source, "rb") as f:
            f.seek(start)
            assert r.content == f.read(end - start + 1)
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{50 * 1024 * 1024}"
    finally:
        client.disconnect()


def test_status_events_reach_owner_and_admins_only(fleet):
    owner = signup(fleet.urls["auth"])
    other = signup(fleet.urls["auth"])
    admin = requests.put(f"{fleet.urls['auth']}/auth/login/{fleet.admin[0]}",
                         json={"password": fleet.admin[1]}, timeout=10).json()
    sockets = {k: RawSocket(fleet.gateway, u["access_token"]) for k, u in
               (("owner", owner), ("other", other), ("admin", admin))}
    try:
        file_id = sockets["owner"].upload_bytes(os.urandom(300_000), "notes.txt")
        sockets["owner"].wait_event("file-status", lambda d: d["file_id"] == file_id
                                    and d["status"] == "uploaded_successfully")
        sockets["admin"].wait_event("file-status", lambda d: d["file_id"] == file_id
                                    and d["status"] == "uploaded_successfully")
        assert sockets["other"].statuses(file_id) == []
        history = sockets["admin"].call("get-history", {})
        assert any(f["file_id"] == file_id for f in history["files"]), "admin sees every user's files"
        assert not any(f["file_id"] == file_id for f in sockets["other"].call("get-history", {})["files"])
    finally:
        for s in sockets.values():
            s.close()


def test_other_users_file_is_not_served(fleet):
    owner = signup(fleet.urls["auth"])
    other = signup(fleet.urls["auth"])
    sock = RawSocket(fleet.gateway, owner["access_token"])
    try:
        file_id = sock.upload_bytes(os.urandom(200_000), "mine.dat")
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully")
    finally:
        sock.close()
    fsm = fleet.urls["file_service_manager"]
    r = requests.get(f"{fsm}/file/{file_id}", headers=bearer(other["access_token"]), timeout=10)
    assert r.status_code in (403, 404)
    assert_error(r, r.status_code)
    r = requests.get(f"{fsm}/file/{file_id}", timeout=10)
    assert_error(r, 401, "unauthorized")
    r = requests.get(f"{fsm}/client/history/{owner['user_id']}", headers=bearer(other["access_token"]), timeout=10)
    assert r.status_code in (403, 404)
    r = requests.get(f"{fsm}/client/history/{owner['user_id']}", headers=bearer(owner["access_token"]), timeout=10)
    assert r.status_code == 200 and any(f["file_id"] == file_id for f in r.json()["files"])
