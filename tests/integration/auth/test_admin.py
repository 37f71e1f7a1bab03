"""Admin control against PostgreSQL, Redis and RabbitMQ: users paged and changed, pools changed and deleted."""

from __future__ import annotations

import time

import pika
import redis

from services.common.authclient import Identity
from services.common.contracts import MembershipChanged, PoolDeleted, decode
from services.common.revocations import RevocationList
from services.common.topology import POOL_EVENTS_QUEUE

from .conftest import AuthEnv, Inbox, bearer


def test_users_are_paged_until_next_cursor_is_null(auth_env: AuthEnv) -> None:
    for i in range(5):
        auth_env.signup(f"pager{i}")
    admin, c = bearer(auth_env.admin_token()), auth_env.client
    names, cursor = [], None
    for _ in range(10):
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = c.get("/auth/users", query_string=query, headers=admin).get_json()
        assert len(page["users"]) <= 2
        names += [u["user_name"] for u in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == ["admin"] + [f"pager{i}" for i in range(5)]
    for query in ({"limit": "5000"}, {"limit": "0"}, {"cursor": "not-a-cursor"}):
        response = c.get("/auth/users", query_string=query, headers=admin)
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request"


def test_disable_and_role_change_take_effect_at_once(auth_env: AuthEnv) -> None:
    c, admin = auth_env.client, bearer(auth_env.admin_token())
    login = auth_env.signup("mona")
    seen = Identity.from_validate(c.get("/auth/validate", headers=bearer(login["access_token"])).get_json())
    reader = RevocationList(redis.Redis.from_url(auth_env.settings.common.redis_url),
                            auth_env.settings.common.redis_prefix, cache_seconds=0)
    assert not reader.is_revoked(seen)
    time.sleep(0.01)
    promoted = c.patch("/auth/users/mona", json={"role": "admin"}, headers=admin)
    assert promoted.status_code == 200 and promoted.get_json()["role"] == "admin"
    assert c.get("/auth/validate", headers=bearer(login["access_token"])).status_code == 401
    assert reader.is_revoked(seen)
    time.sleep(0.01)
    renewed = c.post("/auth/refresh", json={"refresh_token": login["refresh_token"]}).get_json()
    assert c.get("/auth/validate", headers=bearer(renewed["access_token"])).get_json()["role"] == "admin"

    time.sleep(0.01)
    disabled = c.patch("/auth/users/mona", json={"disabled": True}, headers=admin)
    assert disabled.status_code == 200 and disabled.get_json()["disabled"] is True
    assert c.get("/auth/validate", headers=bearer(renewed["access_token"])).status_code == 401
    assert c.post("/auth/refresh", json={"refresh_token": renewed["refresh_token"]}).status_code == 401
    assert c.put("/auth/login/mona", json={"password": "password-123"}).status_code == 403
    listed = c.get("/auth/users", headers=admin).get_json()["users"]
    assert [u["disabled"] for u in listed if u["user_name"] == "mona"] == [True]

    assert c.patch("/auth/users/mona", json={"disabled": "no"}, headers=admin).status_code == 400
    assert c.patch("/auth/users/nobody", json={"disabled": True}, headers=admin).status_code == 404
    assert c.patch("/auth/users/mona", json={"disabled": False},
                   headers=bearer(auth_env.signup("nick")["access_token"])).status_code == 403


def _drain(amqp_url: str, queue: str) -> list[object]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        found = []
        for _ in range(20):
            method, _props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            found.append(decode(body))
        return found
    finally:
        connection.close()


def test_pool_patch_and_delete(auth_env: AuthEnv, inbox: Inbox, amqp_url: str) -> None:
    c, admin = auth_env.client, bearer(auth_env.admin_token())
    auth_env.signup("olga")
    pid = c.post("/auth/pools", json={"name": "q", "window_seconds": 60}, headers=admin).get_json()["pool_id"]
    changed = c.patch(f"/auth/pools/{pid}", json={"min_contributors": 3, "quorum_wait_seconds": 90,
                                                  "on_short": "fail", "max_late_seconds": 600}, headers=admin)
    assert changed.status_code == 200
    doc = changed.get_json()
    assert (doc["min_contributors"], doc["quorum_wait_seconds"], doc["on_short"], doc["max_late_seconds"]) == \
        (3, 90, "fail", 600)
    internal = c.get(f"/auth/internal/pools/{pid}", headers={"X-Internal-Key": auth_env.settings.internal_api_key})
    assert internal.get_json()["on_short"] == "fail"
    bad = c.patch(f"/auth/pools/{pid}", json={"on_short": "skip"}, headers=admin)
    assert bad.status_code == 400
    assert c.patch("/auth/pools/p_nope", json={"name": "x"}, headers=admin).status_code == 404

    assert c.post(f"/auth/pools/{pid}/members", json={"user_name": "olga", "role": "listener"},
                  headers=admin).status_code == 201
    assert inbox.next() == MembershipChanged(pool_id=pid, user_id=inbox_user(auth_env, "olga"), user_name="olga",
                                             role="listener")
    key = c.post(f"/auth/pools/{pid}/processor-keys", headers=admin).get_json()["api_key"]
    deleted = c.delete(f"/auth/pools/{pid}", headers=admin)
    assert deleted.status_code == 200 and deleted.get_json()["members_removed"] == 1
    assert inbox.next() == MembershipChanged(pool_id=pid, user_id=inbox_user(auth_env, "olga"), user_name="olga",
                                             role=None)
    assert c.get(f"/auth/pools/{pid}", headers=admin).status_code == 404
    verify = c.post("/auth/internal/processor-keys/verify", json={"api_key": key},
                    headers={"X-Internal-Key": auth_env.settings.internal_api_key})
    assert verify.status_code == 401
    assert _drain(amqp_url, POOL_EVENTS_QUEUE.name) == [PoolDeleted(pool_id=pid)]
    assert c.delete(f"/auth/pools/{pid}", headers=admin).status_code == 404


def inbox_user(auth_env: AuthEnv, name: str) -> str:
    user = auth_env.store.user_by_name(name)
    assert user is not None
    return str(user["user_id"])
