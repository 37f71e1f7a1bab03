"""Issue 5 end to end: several gateways, the audit trail, metrics and logs of the running fleet."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid

import pytest
import requests

from devtools import infra

from .helpers import RawSocket, bearer, login, signup
from .pools import Admin, Processor, window_timestamp

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def second_gateway(fleet):
    """Another gateway process of the same fleet (its own port, the same Redis/RabbitMQ)."""
    port = infra.free_port()
    fleet.fleet.start_service("socket_gateway", instance="socket_gateway_2", port=port)
    fleet.fleet.wait_ready(("socket_gateway_2",), timeout=60)
    yield f"http://127.0.0.1:{port}"
    fleet.fleet.remove_service("socket_gateway_2")  # the shared fleet's later users must not see it


def test_events_reach_clients_of_every_gateway(fleet, second_gateway):
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"multi-{uuid.uuid4().hex[:6]}", window_seconds=2)["pool_id"]
    key = admin.processor_key(pool_id)
    owner = admin.member(pool_id)
    other_member = admin.member(pool_id, "listener")
    on_first = RawSocket(fleet.gateway, owner["access_token"])
    owner_on_second = RawSocket(second_gateway, owner["access_token"])
    admin_on_second = RawSocket(second_gateway, admin.token)
    member_on_second = RawSocket(second_gateway, other_member["access_token"])
    try:
        file_id = on_first.upload_bytes(os.urandom(150_000), "from-first.bin", pool_id=pool_id,
                                        timestamp=window_timestamp(2))
        for sock in (on_first, owner_on_second, admin_on_second):
            sock.wait_event("file-status", lambda d: d["file_id"] == file_id
                            and d["status"] == "uploaded_successfully", timeout=30)
        assert member_on_second.statuses(file_id) == [], "file-status goes to the owner and admins only"

        processor = Processor(fleet, pool_id, key)
        group = processor.wait_ready(timeout=30)
        assert processor.files(group["group_id"]).status_code == 200
        result = os.urandom(40_000)
        assert processor.post_result(group["group_id"], result, "r.bin").status_code == 201
        for sock in (on_first, owner_on_second, member_on_second):
            event = sock.wait_event("pool-result", lambda d: d["group_id"] == group["group_id"], timeout=30)
            assert event["sha256"] == hashlib.sha256(result).hexdigest()
        assert not any(e[0] == "pool-result" for e in admin_on_second.events.queue), \
            "an admin who is not a member gets no pool-result"
    finally:
        for sock in (on_first, owner_on_second, admin_on_second, member_on_second):
            sock.close()


def _audit(fleet, token: str, **params: str) -> list[dict]:
    r = requests.get(f"{fleet.urls['file_service_manager']}/audit", headers=bearer(token), params=params,
                     timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def test_every_file_operation_is_in_the_audit_trail(fleet):
    user = signup(fleet.urls["auth"])
    admin_token = login(fleet.urls["auth"], *fleet.admin)["access_token"]
    sock = RawSocket(fleet.gateway, user["access_token"])
    try:
        data = os.urandom(120_000)
        file_id = sock.upload_bytes(data, "audited.bin")
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully")
    finally:
        sock.close()
    r = requests.get(f"{fleet.urls['file_service_manager']}/file/{file_id}", headers=bearer(admin_token), timeout=10)
    assert r.status_code == 200

    wanted = {"upload_started", "upload_completed", "stored", "downloaded"}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events = _audit(fleet, admin_token, file_id=file_id)
        if wanted <= {e["action"] for e in events}:
            break
        time.sleep(0.3)
    by_action = {e["action"]: e for e in events}
    assert wanted <= set(by_action), sorted(by_action)
    assert by_action["stored"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert by_action["stored"]["bytes"] == len(data)
    assert by_action["upload_started"]["actor"] == user["user_id"]
    assert by_action["downloaded"]["actor"] != user["user_id"], "the download was the admin's"
    for event in events:
        assert {"actor", "action", "service", "time", "outcome", "file_id"} <= set(event)

    # filters and paging
    mine = _audit(fleet, admin_token, user=user["user_id"])
    assert {e["file_id"] for e in mine if e.get("file_id")} == {file_id}
    assert "signup" in {e["action"] for e in mine}  # auth's records of the user are in the trail too
    page = requests.get(f"{fleet.urls['file_service_manager']}/audit", headers=bearer(admin_token),
                        params={"file_id": file_id, "limit": 2}, timeout=10).json()
    assert len(page["events"]) == 2 and page["next_cursor"]
    rest = _audit(fleet, admin_token, file_id=file_id, cursor=page["next_cursor"], limit="100")
    assert {e["audit_id"] for e in rest}.isdisjoint({e["audit_id"] for e in page["events"]})
    assert len(rest) + 2 == len(_audit(fleet, admin_token, file_id=file_id))

    r = requests.get(f"{fleet.urls['file_service_manager']}/audit", headers=bearer(user["access_token"]), timeout=10)
    assert r.status_code == 403


def test_pool_operations_are_audited(fleet):
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"audit-{uuid.uuid4().hex[:6]}", window_seconds=2)["pool_id"]
    key = admin.processor_key(pool_id)
    member = admin.member(pool_id)
    sock = RawSocket(fleet.gateway, member["access_token"])
    try:
        sock.upload_bytes(os.urandom(100_200), "u.bin", pool_id=pool_id, timestamp=window_timestamp(2))
        processor = Processor(fleet, pool_id, key)
        group = processor.wait_ready(timeout=30)
        assert processor.files(group["group_id"]).status_code == 200
        assert processor.post_result(group["group_id"], b"r" * 5000, "r.bin").status_code == 201
        sock.wait_event("pool-result", lambda d: d["group_id"] == group["group_id"], timeout=30)
    finally:
        sock.close()
    wanted = {"group_fetched", "result_posted", "result_delivered"}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        actions = {e["action"] for e in _audit(fleet, admin.token, pool_id=pool_id, limit="500")}
        if wanted <= actions:
            break
        time.sleep(0.3)
    assert wanted <= actions, actions


METRICS = {
    "socket_gateway": ["gateway_connected_sockets", "gateway_max_connections", "gateway_ws_fast_unmask 1.0"],
    "file_uploader": ["http_requests_total"],
    "file_service_manager": ["http_requests_total"],
    "pool_aggregator": ["http_requests_total"],
    "auth": ["auth_logins_total", "http_requests_total"],
}


@pytest.mark.parametrize("service", sorted(METRICS))
def test_every_service_answers_health_ready_and_metrics(fleet, service):
    base = fleet.urls[service]
    health = requests.get(f"{base}/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = requests.get(f"{base}/ready", timeout=10)
    assert ready.status_code == 200 and all(ready.json()["checks"].values()), ready.text
    metrics = requests.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    for name in METRICS[service]:
        assert name in metrics.text, (service, name)


def test_logs_are_json_lines_without_secrets(fleet):
    user = signup(fleet.urls["auth"], password="a-password-never-logged")
    requests.put(f"{fleet.urls['auth']}/auth/login/{user['user_name']}", json={"password": "wrong-password-x"},
                 timeout=10)
    sock = RawSocket(fleet.gateway, user["access_token"])
    sock.close()
    time.sleep(1)
    seen_services = set()
    for path in fleet.fleet.log_dir.glob("*.log"):
        text = path.read_text(errors="replace")
        assert user["access_token"] not in text, f"a token leaked into {path.name}"
        assert "a-password-never-logged" not in text and "wrong-password-x" not in text
        for line in text.splitlines()[-200:]:
            if line.startswith("{"):
                doc = json.loads(line)
                assert {"timestamp", "level", "service", "message"} <= set(doc), line
                seen_services.add(doc["service"])
    assert {"auth", "socket_gateway", "file_uploader", "file_service_manager", "pool_aggregator"} <= seen_services
