"""auth's audit records reach the audit queue over the real broker, with actors and no secrets."""

from __future__ import annotations

import time

import pika

from services.common.contracts import AuditRecorded, decode
from services.common.topology import AUDIT_QUEUE

from .conftest import AuthEnv, bearer


def audit_records(amqp_url: str, wanted: int) -> list[AuditRecorded]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    found: list[AuditRecorded] = []
    try:
        channel = connection.channel()
        deadline = time.monotonic() + 10
        while len(found) < wanted and time.monotonic() < deadline:
            method, _props, body = channel.basic_get(AUDIT_QUEUE.name, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            message = decode(body)
            assert isinstance(message, AuditRecorded)
            found.append(message)
    finally:
        connection.close()
    return found


def test_logins_refusals_and_admin_actions_are_audited(auth_env: AuthEnv, amqp_url: str) -> None:
    c = auth_env.client
    user = auth_env.signup("pia")
    assert c.put("/auth/login/pia", json={"password": "wrong-password"}).status_code == 401
    admin = auth_env.login("admin", "admin-password")
    pid = c.post("/auth/pools", json={"name": "a", "window_seconds": 60},
                 headers=bearer(admin["access_token"])).get_json()["pool_id"]
    assert c.put("/auth/logout/pia", headers=bearer(user["access_token"])).status_code == 200
    records = audit_records(amqp_url, 5)
    assert [(r.action, r.actor) for r in records] == [
        ("signup", user["user_id"]), ("login_failed", user["user_id"]), ("login", admin["user_id"]),
        ("pool_created", admin["user_id"]), ("logout", user["user_id"])]
    assert records[3].pool_id == pid and all(r.service == "auth" for r in records)
    wire = b"".join(r.encode() for r in records)
    for secret in ("wrong-password", "admin-password", user["access_token"], user["refresh_token"],
                   admin["access_token"], admin["refresh_token"]):
        assert secret.encode() not in wire
