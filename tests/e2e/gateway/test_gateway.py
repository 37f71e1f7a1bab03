"""The gateway in a real fleet, driven through the client library (python-socketio over websocket)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import requests
import socketio

from client import DropboxClient, DropboxError

from .conftest import CHUNK_SIZE, GatewayFleet

pytestmark = pytest.mark.e2e


def _file(tmp_path: Path, size: int, name: str = "data.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def test_serves_dashboard_config_and_metrics(fleet: GatewayFleet) -> None:
    base = fleet.gateway
    assert requests.get(f"{base}/", timeout=5).status_code == 200
    config = requests.get(f"{base}/config.json", timeout=5).json()
    assert config["auth_url"] == fleet.urls["auth"]
    assert config["file_uploader_url"] == fleet.urls["file_uploader"]
    ready = requests.get(f"{base}/ready", timeout=5).json()
    assert ready["status"] == "ready", ready
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    # the process installed the fast WebSocket unmasking at start
    assert "gateway_ws_fast_unmask 1.0" in metrics
    assert "gateway_max_connections 10000.0" in metrics


def test_connect_refused_without_valid_token(fleet: GatewayFleet) -> None:
    for auth in (None, {}, {"token": "not-a-jwt"}):
        sio = socketio.Client(reconnection=False)
        refusals = []
        sio.on("connect_error", refusals.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            sio.connect(fleet.gateway, auth=auth, transports=["websocket"], wait_timeout=5)
        assert refusals[-1]["data"]["code"] == "unauthorized"
        sio.shutdown()
    c = fleet.client()
    c.token = "not-a-jwt"
    with pytest.raises(DropboxError) as info:
        c.connect()
    assert info.value.code == "unauthorized"


def test_upload_status_history_download(fleet: GatewayFleet, tmp_path: Path) -> None:
    c, _ = fleet.user()
    admin = fleet.admin()
    c.connect()
    admin.connect()
    try:
        assert c.alive()["ok"] is True
        size = 3 * CHUNK_SIZE + 1234
        path = _file(tmp_path, size)
        progress = []
        file_id = c.upload(path, on_progress=lambda sent, total: progress.append(sent))
        assert progress[-1] == size
        assert c.wait_status(file_id, "cached", 10)
        assert c.wait_status(file_id, "uploaded_successfully", 30)["status"] == "uploaded_successfully"
        # admins hear about every user's files
        assert admin.wait_status(file_id, "uploaded_successfully", 10)
        records = {r["file_id"]: r for r in c.history()}
        assert records[file_id]["size"] == size
        assert file_id in {r["file_id"] for r in admin.history()}
        dest = tmp_path / "back.bin"
        info = c.download(file_id, dest)
        assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        part = c.download(file_id, tmp_path / "part.bin", range=(10, 19))
        assert part["status"] == 206 and (tmp_path / "part.bin").read_bytes() == path.read_bytes()[10:20]
    finally:
        c.disconnect()
        admin.disconnect()


def test_other_users_do_not_hear_file_status(fleet: GatewayFleet, tmp_path: Path) -> None:
    owner, _ = fleet.user()
    other, _ = fleet.user()
    owner.connect()
    other.connect()
    try:
        file_id = owner.upload(_file(tmp_path, 5000))
        owner.wait_status(file_id, "uploaded_successfully", 30)
        # The other user's own upload, finished after the owner's: its socket demonstrably hears
        # file-status (so the check below is not vacuous), and by then the owner's events have passed.
        own_id = other.upload(_file(tmp_path, 6000, "other.bin"))
        other.wait_status(own_id, "uploaded_successfully", 30)
        assert other.statuses[own_id]
        assert file_id not in other.statuses
        assert own_id not in owner.statuses
    finally:
        owner.disconnect()
        other.disconnect()


def test_socket_errors_use_spec_codes(fleet: GatewayFleet, tmp_path: Path) -> None:
    c, _ = fleet.user()
    c.connect()
    try:
        with pytest.raises(DropboxError) as info:
            c.upload(_file(tmp_path, 0, "empty.txt"))
        assert info.value.code == "empty_file"
        with pytest.raises(DropboxError) as info:
            c.upload(_file(tmp_path, 100, "evil.exe"))
        assert info.value.code == "forbidden_type"
        with pytest.raises(DropboxError) as info:
            c.upload(_file(tmp_path, 100), pool_id="nosuchpool")
        assert info.value.code == "forbidden"
        with pytest.raises(DropboxError) as info:
            c.call("write-chunk", {"file_id": "abc", "index": 0, "data": "text, not bytes"})
        assert info.value.code == "bad_request"
        with pytest.raises(DropboxError) as info:
            c.call("start-transfer", {"file_name": "a", "size": "big"})
        assert info.value.code == "bad_request"
        with pytest.raises(DropboxError) as info:
            c.call("get-results", {"pool_id": "nosuchpool"})
        assert info.value.code == "forbidden"
        with pytest.raises(DropboxError) as info:
            c.call("complete-upload", {"file_id": "doesnotexist"})
        assert info.value.code == "not_found"
    finally:
        c.disconnect()


def test_resume_after_disconnect_sends_only_missing(fleet: GatewayFleet, tmp_path: Path) -> None:
    c, _ = fleet.user()
    c.connect()
    path = _file(tmp_path, 3 * CHUNK_SIZE)
    data = path.read_bytes()
    start = c.call("start-transfer", {"file_name": "r.bin", "size": len(data)})
    file_id, chunk = start["file_id"], start["chunk_size"]
    assert c.call("write-chunk", {"file_id": file_id, "index": 0, "data": data[:chunk]})["index"] == 0
    c.disconnect()  # the gateway releases this socket's writer lock
    c.connect()
    try:
        resumed = c.call("start-transfer", {"file_name": "r.bin", "size": len(data), "file_id": file_id})
        assert resumed["file_id"] == file_id and resumed["missing"] == [1, 2]
        for i in resumed["missing"]:
            c.call("write-chunk", {"file_id": file_id, "index": i, "data": data[i * chunk:(i + 1) * chunk]})
        assert c.call("complete-upload", {"file_id": file_id})["status"] == "cached"
        c.wait_status(file_id, "uploaded_successfully", 30)
    finally:
        c.disconnect()


def test_logout_keeps_the_users_other_tokens_connected(fleet: GatewayFleet) -> None:
    c, name = fleet.user()
    c.connect()
    other = fleet.client()
    other.login(name, "password-123")  # a second token of the same user stays connected
    other.connect()
    try:
        c.logout()
        deadline = time.monotonic() + 5
        while other.connected is False and time.monotonic() < deadline:
            time.sleep(0.1)
        assert other.alive()["ok"] is True
    finally:
        other.disconnect()


def test_revoked_token_socket_is_disconnected_by_the_gateway(fleet: GatewayFleet) -> None:
    c, name = fleet.user()
    c.connect()
    logout_client = DropboxClient(fleet.gateway, timeout=10)
    logout_client.token, logout_client.user = c.token, c.user
    logout_client.logout()  # logs the same token out from elsewhere: only the gateway can cut c
    deadline = time.monotonic() + 10
    while c.connected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not c.connected
    c.disconnect()
