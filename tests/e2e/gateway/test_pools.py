"""Pool results through the whole fleet: live delivery to members' sockets, offline delivery on
reconnect, membership changes applied to connected sockets."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from client import DropboxClient, DropboxError

from ..helpers import RawSocket
from .conftest import GatewayFleet

pytestmark = pytest.mark.e2e


def _admin_call(fleet: GatewayFleet, admin: DropboxClient, method: str, path: str, **kwargs) -> dict:
    response = requests.request(method, f"{fleet.urls['auth']}{path}",
                                headers={"Authorization": f"Bearer {admin.token}"}, timeout=10, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def _wait_group(fleet: GatewayFleet, pool_id: str, key: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = requests.get(f"{fleet.urls['pool_aggregator']}/pools/{pool_id}/groups",
                              params={"status": "ready"}, headers={"X-API-Key": key},
                              timeout=10).json()["groups"]
        if groups:
            return groups[0]["group_id"]
        time.sleep(0.2)
    raise AssertionError(f"no ready group in {timeout}s:\n{fleet.log_tail('pool_aggregator')}")


def test_results_live_offline_and_membership(fleet: GatewayFleet, tmp_path: Path) -> None:
    admin = fleet.admin()
    pool_id = str(_admin_call(fleet, admin, "POST", "/auth/pools",
                              json={"name": f"pool{uuid.uuid4().hex[:6]}", "window_seconds": 60})["pool_id"])
    key = _admin_call(fleet, admin, "POST", f"/auth/pools/{pool_id}/processor-keys")["api_key"]
    contributor, contributor_name = fleet.user("c")
    listener, listener_name = fleet.user("l")
    late, late_name = fleet.user("n")
    _admin_call(fleet, admin, "POST", f"/auth/pools/{pool_id}/members",
                json={"user_name": contributor_name, "role": "contributor"})
    _admin_call(fleet, admin, "POST", f"/auth/pools/{pool_id}/members",
                json={"user_name": listener_name, "role": "listener"})
    contributor.connect()
    listener.connect()
    late.connect()  # not a member yet: joins the pool while connected
    try:
        path = tmp_path / "update.bin"
        path.write_bytes(os.urandom(50_000))
        with pytest.raises(DropboxError) as info:
            listener.upload(path, pool_id=pool_id)  # listeners receive, they do not upload
        assert info.value.code == "forbidden"
        with pytest.raises(DropboxError) as info:
            late.call("get-results", {"pool_id": pool_id})
        assert info.value.code == "forbidden"

        _admin_call(fleet, admin, "POST", f"/auth/pools/{pool_id}/members",
                    json={"user_name": late_name, "role": "listener"})
        # a window long closed: its group becomes ready at once
        stamp = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        file_id = contributor.upload(path, pool_id=pool_id, timestamp=stamp)
        contributor.wait_status(file_id, "uploaded_successfully", 30)
        group_id = _wait_group(fleet, pool_id, key)
        requests.get(f"{fleet.urls['pool_aggregator']}/pools/{pool_id}/groups/{group_id}/files",
                     headers={"X-API-Key": key}, timeout=10).raise_for_status()

        listener.disconnect()  # offline while the result arrives
        body = os.urandom(20_000)
        posted = requests.post(f"{fleet.urls['pool_aggregator']}/pools/{pool_id}/groups/{group_id}/result",
                               data=body, headers={"X-API-Key": key, "X-File-Name": "result.bin"}, timeout=30)
        assert posted.status_code == 201, posted.text
        result_id = posted.json()["result_id"]

        for member in (contributor, late):  # late joined while connected: the room was updated live
            got = member.wait_result(pool_id, 20)
            assert got["result_id"] == result_id and got["group_id"] == group_id
            assert set(got) >= {"pool_id", "group_id", "result_id", "file_name", "size", "sha256",
                                "download_url"}
        assert admin.sio is None or pool_id not in {r["pool_id"] for r in admin.results_received}

        listener.connect()  # offline delivery: the result it missed comes on connect
        got = listener.wait_result(pool_id, 20)
        assert got["result_id"] == result_id
        info = listener.download(got["download_url"], tmp_path / "result.bin")
        assert (tmp_path / "result.bin").read_bytes() == body and info["sha256"] == got["sha256"]
        assert [r["result_id"] for r in listener.results(pool_id)] == [result_id]

        # removed from the pool: no longer allowed to read its results
        _admin_call(fleet, admin, "DELETE", f"/auth/pools/{pool_id}/members/{late_name}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                late.call("get-results", {"pool_id": pool_id})
            except DropboxError as err:
                assert err.code == "forbidden"
                break
            time.sleep(0.2)
        else:
            raise AssertionError("a removed member still reads the pool's results")
    finally:
        for c in (contributor, listener, late, admin):
            c.disconnect()


def test_group_status_reaches_members_and_admins_only(fleet: GatewayFleet) -> None:
    admin = fleet.admin()
    pool_id = str(_admin_call(fleet, admin, "POST", "/auth/pools",
                              json={"name": f"gs{uuid.uuid4().hex[:6]}", "window_seconds": 60})["pool_id"])
    member, member_name = fleet.user("gs")
    outsider, _ = fleet.user("go")
    _admin_call(fleet, admin, "POST", f"/auth/pools/{pool_id}/members",
                json={"user_name": member_name, "role": "contributor"})
    sockets = {who: RawSocket(fleet.gateway, str(c.token)) for who, c in
               (("member", member), ("admin", admin), ("outsider", outsider))}
    for sock in sockets.values():
        sock.sio.on("group-status", lambda data, sock=sock: sock.events.put(("group-status", data)))
    try:
        # a window long closed: its group becomes ready at once
        stamp = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        sockets["member"].upload_bytes(os.urandom(20_000), "gs.bin", pool_id=pool_id, timestamp=stamp)
        for who in ("member", "admin"):
            seen = sockets[who].wait_event("group-status", lambda d: d["pool_id"] == pool_id and
                                           d["status"] == "ready", timeout=30)
            assert set(seen) <= {"pool_id", "group_id", "status", "reason", "short"} and seen["group_id"], seen
        time.sleep(0.5)
        assert not [e for e in list(sockets["outsider"].events.queue) if e[0] == "group-status"]
    finally:
        for sock in sockets.values():
            sock.close()


def test_cancel_upload_drops_the_owners_upload_only(fleet: GatewayFleet) -> None:
    owner, _ = fleet.user("co")
    other, _ = fleet.user("cx")
    mine, theirs = RawSocket(fleet.gateway, str(owner.token)), RawSocket(fleet.gateway, str(other.token))
    try:
        ack = mine.call("start-transfer", {"file_name": "c.bin", "size": 100_000})
        file_id = ack["file_id"]
        assert "error" not in mine.call("write-chunk", {"file_id": file_id, "index": 0,
                                                         "data": os.urandom(min(100_000, ack["chunk_size"]))})
        assert theirs.call("cancel-upload", {"file_id": file_id})["error"]["code"] == "not_found"
        assert mine.call("cancel-upload", {"file_id": file_id}) == {"file_id": file_id, "status": "cancelled"}
        assert mine.call("complete-upload", {"file_id": file_id})["error"]["code"] == "conflict"
        assert mine.call("cancel-upload", {"file_id": file_id})["error"]["code"] in ("conflict", "not_found")
    finally:
        mine.close()
        theirs.close()
