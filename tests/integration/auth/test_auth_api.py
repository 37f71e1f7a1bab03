"""auth against a real PostgreSQL database and RabbitMQ vhost (Flask test client)."""

from __future__ import annotations

import threading

import jwt
import psycopg2

from services.auth import core
from services.auth.app import bootstrap_admin, create_app
from services.auth.store import MIGRATIONS_DIR, Store
from services.common.contracts import MembershipChanged, TokenRevoked
from services.common.messaging import Broker

from .conftest import FAST_HASHER, AuthEnv, Inbox, bearer, make_settings

INTERNAL = {"X-Internal-Key": "integration-internal-key"}


def error_code(response) -> str:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) >= {"code", "message"}, body
    return body["error"]["code"]


# --- migrations -----------------------------------------------------------------------


def test_migrations_are_ordered_idempotent_and_safe_concurrently(pg_url: str) -> None:
    stores = [Store(pg_url, pool_size=2) for _ in range(3)]
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run(store: Store) -> None:
        try:
            results.append(store.migrate())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    applied = sorted(v for r in results for v in r)
    expected = sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))
    assert expected[:3] == ["0001_users_tokens", "0002_pools", "0003_refresh_tokens"]
    assert applied == expected  # each exactly once, across all starters
    assert stores[0].migrate() == []
    assert stores[0].applied_migrations() == expected
    for s in stores:
        s.close()


# --- signup / login / logout / validate ---------------------------------------------------


def test_signup_login_validate(auth_env: AuthEnv) -> None:
    body = auth_env.signup("alice", "password-123")
    assert body["user_name"] == "alice" and body["role"] == "user" and body["user_id"]
    validated = auth_env.client.get("/auth/validate", headers=bearer(body["access_token"]))
    assert validated.status_code == 200
    doc = validated.get_json()
    assert doc["user_id"] == body["user_id"] and doc["user_name"] == "alice" and doc["role"] == "user"
    assert doc["pools"] == [] and doc["token_id"] == jwt.decode(
        body["access_token"], options={"verify_signature": False})["jti"]

    login = auth_env.login("alice", "password-123")
    assert login["user_id"] == body["user_id"] and login["access_token"] != body["access_token"]
    assert set(login) >= {"user_id", "user_name", "role", "access_token"}
    claims = jwt.decode(login["access_token"], auth_env.settings.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == body["user_id"] and claims["name"] == "alice" and claims["role"] == "user"
    assert claims["exp"] - claims["iat"] == 900 == login["expires_in"]  # ACCESS_TOKEN_TTL_SECONDS' default


def test_signup_rejections(auth_env: AuthEnv) -> None:
    auth_env.signup("bob")
    c = auth_env.client
    dup = c.post("/auth/signup", json={"user_name": "bob", "password": "another-pass"})
    assert dup.status_code == 409 and error_code(dup) == "conflict"
    dup_case = c.post("/auth/signup", json={"user_name": "BOB", "password": "another-pass"})
    assert dup_case.status_code == 409
    for body in ({"user_name": "x", "password": "password-1"},
                 {"user_name": "has space", "password": "p" * 9},
                 {"user_name": "carol", "password": "short"}, {"user_name": "carol"},
                 {"user_name": "carol", "password": "p" * 1025}, {"user_name": 7, "password": "p" * 9}):
        response = c.post("/auth/signup", json=body)
        assert response.status_code == 400 and error_code(response) == "bad_request", body
    not_json = c.post("/auth/signup", data="user_name=carol",
                      content_type="application/x-www-form-urlencoded")
    assert not_json.status_code == 400 and error_code(not_json) == "bad_request"
    huge = c.post("/auth/signup", data="x" * 100_000, content_type="application/json")
    assert huge.status_code == 413 and error_code(huge) == "too_large"


def test_login_failures_look_the_same(auth_env: AuthEnv) -> None:
    auth_env.signup("dave", "password-123")
    c = auth_env.client
    wrong = c.put("/auth/login/dave", json={"password": "wrong-password"})
    unknown = c.put("/auth/login/nobody", json={"password": "wrong-password"})
    bad_name = c.put("/auth/login/no%20such", json={"password": "wrong-password"})
    assert wrong.status_code == unknown.status_code == bad_name.status_code == 401
    assert wrong.get_json() == unknown.get_json() == bad_name.get_json()
    assert error_code(wrong) == "unauthorized"
    assert c.put("/auth/login/dave", json={"password": "p" * 5000}).status_code == 401
    assert c.put("/auth/login/dave", json={}).status_code == 400
    metrics = c.get("/metrics").get_data(as_text=True)
    assert 'auth_logins_total{outcome="failed"} 4.0' in metrics


def test_logout_revokes_and_publishes(auth_env: AuthEnv, inbox: Inbox) -> None:
    erin = auth_env.signup("erin")
    other = auth_env.signup("frank")
    second = auth_env.login("erin", "password-123")["access_token"]
    c = auth_env.client
    token = erin["access_token"]

    assert c.put("/auth/logout/erin").status_code == 401
    foreign = c.put("/auth/logout/erin", headers=bearer(other["access_token"]))
    assert foreign.status_code == 403 and error_code(foreign) == "forbidden"

    response = c.put("/auth/logout/erin", headers=bearer(token))
    assert response.status_code == 200
    token_id = jwt.decode(token, options={"verify_signature": False})["jti"]

    refused = c.get("/auth/validate", headers=bearer(token))
    assert refused.status_code == 401 and error_code(refused) == "unauthorized"
    # Logging out again with the revoked (unexpired) token answers the same: a logout that failed
    # half-way can be retried.
    assert c.put("/auth/logout/erin", headers=bearer(token)).status_code == 200
    assert c.get("/auth/pools", headers=bearer(token)).status_code == 401
    # Only that token: the user's other session and other users are untouched.
    assert c.get("/auth/validate", headers=bearer(second)).status_code == 200
    assert c.get("/auth/validate", headers=bearer(other["access_token"])).status_code == 200
    assert auth_env.store.is_revoked(token_id)

    message = inbox.next()
    assert message == TokenRevoked(token_id=token_id, user_id=erin["user_id"])
    assert "auth_tokens_revoked_total 1.0" in c.get("/metrics").get_data(as_text=True)


def test_expired_forged_and_deleted_tokens_refused(auth_env: AuthEnv, pg_url: str) -> None:
    gina = auth_env.signup("gina")
    secret = auth_env.settings.jwt_secret
    c = auth_env.client
    expired = core.encode_token(secret, user_id=gina["user_id"], user_name="gina", role="user",
                                ttl_seconds=60, now=0).token
    forged = core.encode_token("not-the-secret-0123456789abcdef012345", user_id=gina["user_id"],
                               user_name="gina", role="admin").token
    claims = jwt.decode(gina["access_token"], secret, algorithms=["HS256"])
    unsigned = jwt.encode({**claims, "role": "admin"}, None, algorithm="none")
    for token in (expired, forged, unsigned, "garbage", gina["access_token"] + "x"):
        response = c.get("/auth/validate", headers=bearer(token))
        assert response.status_code == 401 and error_code(response) == "unauthorized", token
    assert c.get("/auth/validate", headers={"Authorization": "Basic abc"}).status_code == 401
    assert c.get("/auth/validate").status_code == 401

    assert c.get("/auth/validate", headers=bearer(gina["access_token"])).status_code == 200
    conn = psycopg2.connect(pg_url)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM users WHERE user_id = %s", (gina["user_id"],))
    conn.close()
    assert c.get("/auth/validate", headers=bearer(gina["access_token"])).status_code == 401


def test_logout_succeeds_when_the_broker_is_down(auth_env: AuthEnv) -> None:
    dead = Broker("amqp://guest:guest@127.0.0.1:1/%2F", publish_attempts=1)
    app = create_app(auth_env.settings, store=auth_env.store, broker=dead, passwords=auth_env.passwords)
    c = app.test_client()
    token = auth_env.signup("hank")["access_token"]
    assert c.put("/auth/logout/hank", headers=bearer(token)).status_code == 200
    assert c.get("/auth/validate", headers=bearer(token)).status_code == 401  # durable in PostgreSQL
    metrics = c.get("/metrics").get_data(as_text=True)
    assert 'auth_publish_failures_total{event="TokenRevoked"} 1.0' in metrics
    ready = c.get("/ready")
    assert ready.status_code == 503 and ready.get_json()["checks"] == {"postgres": True, "rabbitmq": False}


# --- admin bootstrap --------------------------------------------------------------------------


def test_admin_bootstrap_keeps_password_and_role(auth_env: AuthEnv) -> None:
    token = auth_env.admin_token()
    doc = auth_env.client.get("/auth/validate", headers=bearer(token)).get_json()
    assert doc["role"] == "admin" and doc["user_name"] == "admin"
    # A second start with another password neither duplicates nor resets the account.
    assert bootstrap_admin(auth_env.store, auth_env.passwords, "admin", "a-different-password") is False
    auth_env.login("admin", "admin-password")
    bad = auth_env.client.put("/auth/login/admin", json={"password": "a-different-password"})
    assert bad.status_code == 401
    # An existing ordinary account named as ADMIN_USER is made admin.
    auth_env.signup("ivy", "password-123")
    assert bootstrap_admin(auth_env.store, auth_env.passwords, "ivy", "whatever-pass") is False
    ivy = auth_env.login("ivy", "password-123")
    assert ivy["role"] == "admin"


def test_users_list_is_admin_only(auth_env: AuthEnv) -> None:
    user = auth_env.signup("jack")
    c = auth_env.client
    assert c.get("/auth/users", headers=bearer(user["access_token"])).status_code == 403
    assert c.get("/auth/users").status_code == 401
    users = c.get("/auth/users", headers=bearer(auth_env.admin_token())).get_json()["users"]
    assert [u["user_name"] for u in users] == ["admin", "jack"]
    assert set(users[0]) == {"user_id", "user_name", "role", "disabled", "created"}
    assert all("password" not in str(u) for u in users)


# --- pools and members ------------------------------------------------------------------------


def test_pools_members_and_events(auth_env: AuthEnv, inbox: Inbox) -> None:
    c = auth_env.client
    admin = bearer(auth_env.admin_token())
    kim = auth_env.signup("kim")
    lee = auth_env.signup("lee")
    kim_h, lee_h = bearer(kim["access_token"]), bearer(lee["access_token"])

    assert c.post("/auth/pools", json={"name": "p", "window_seconds": 60}, headers=kim_h).status_code == 403
    assert c.post("/auth/pools", json={"name": "p", "window_seconds": 60}).status_code == 401
    bad = c.post("/auth/pools", json={"name": "p", "window_seconds": 0}, headers=admin)
    assert bad.status_code == 400 and error_code(bad) == "bad_request"

    made = c.post("/auth/pools", json={"name": "sensors", "window_seconds": 60}, headers=admin)
    assert made.status_code == 201
    pool = made.get_json()
    assert set(pool) == {"pool_id", "name", "window_seconds", "close_grace_seconds", "min_contributors",
                         "processing_timeout_seconds", "processor_url", "quorum_wait_seconds", "on_short",
                         "max_late_seconds", "storage", "staging", "retention_days", "created"}
    assert (pool["close_grace_seconds"], pool["min_contributors"], pool["processing_timeout_seconds"],
            pool["processor_url"], pool["storage"], pool["staging"], pool["retention_days"]) == \
        (0, None, 300, None, {"backend": "gridfs"}, [], None)
    other = c.post("/auth/pools", headers=admin, json={
        "name": "cams", "window_seconds": 3600, "close_grace_seconds": 30, "min_contributors": 2,
        "processing_timeout_seconds": 120, "processor_url": "http://127.0.0.1:9999/hook"}).get_json()
    assert other["min_contributors"] == 2 and other["processor_url"] == "http://127.0.0.1:9999/hook"
    pid = pool["pool_id"]

    # Membership: add, re-add with another role, events for each change.
    added = c.post(f"/auth/pools/{pid}/members", json={"user_name": "kim", "role": "contributor"},
                   headers=admin)
    assert added.status_code == 201
    assert added.get_json() == {"pool_id": pid, "user_id": kim["user_id"], "user_name": "kim",
                                "role": "contributor"}
    assert inbox.next() == MembershipChanged(pool_id=pid, user_id=kim["user_id"], user_name="kim",
                                             role="contributor")
    assert c.post(f"/auth/pools/{pid}/members", json={"user_name": "lee", "role": "listener"},
                  headers=admin).status_code == 201
    assert inbox.next().role == "listener"
    again = c.post(f"/auth/pools/{pid}/members", json={"user_name": "lee", "role": "contributor"},
                   headers=admin)
    assert again.status_code == 201
    assert inbox.next() == MembershipChanged(pool_id=pid, user_id=lee["user_id"], user_name="lee",
                                             role="contributor")

    for body, status in (({"user_name": "nobody", "role": "listener"}, 404),
                         ({"user_name": "kim", "role": "admin"}, 400), ({"user_name": "kim"}, 400)):
        assert c.post(f"/auth/pools/{pid}/members", json=body, headers=admin).status_code == status
    assert c.post("/auth/pools/p_unknown/members", json={"user_name": "kim", "role": "listener"},
                  headers=admin).status_code == 404
    assert c.post(f"/auth/pools/{pid}/members", json={"user_name": "kim", "role": "listener"},
                  headers=kim_h).status_code == 403

    # What members and admins see.
    validated = c.get("/auth/validate", headers=kim_h).get_json()
    assert validated["pools"] == [{"pool_id": pid, "role": "contributor"}]
    kim_pools = c.get("/auth/pools", headers=kim_h).get_json()["pools"]
    assert [(p["pool_id"], p["role"]) for p in kim_pools] == [(pid, "contributor")]
    admin_pools = c.get("/auth/pools", headers=admin).get_json()["pools"]
    assert {p["pool_id"] for p in admin_pools} == {pid, other["pool_id"]}
    assert c.get(f"/auth/pools/{pid}", headers=kim_h).get_json()["name"] == "sensors"
    assert c.get(f"/auth/pools/{other['pool_id']}", headers=kim_h).status_code == 403
    assert c.get(f"/auth/pools/{other['pool_id']}", headers=admin).status_code == 200
    assert c.get("/auth/pools/p_nope", headers=admin).status_code == 404
    members = c.get(f"/auth/pools/{pid}/members", headers=lee_h).get_json()["members"]
    assert members == [{"user_id": kim["user_id"], "user_name": "kim", "role": "contributor"},
                       {"user_id": lee["user_id"], "user_name": "lee", "role": "contributor"}]
    assert c.get(f"/auth/pools/{other['pool_id']}/members", headers=lee_h).status_code == 403

    # Removal.
    assert c.delete(f"/auth/pools/{pid}/members/kim", headers=kim_h).status_code == 403
    removed = c.delete(f"/auth/pools/{pid}/members/kim", headers=admin)
    assert removed.status_code == 200
    assert inbox.next() == MembershipChanged(pool_id=pid, user_id=kim["user_id"], user_name="kim", role=None)
    assert c.delete(f"/auth/pools/{pid}/members/kim", headers=admin).status_code == 404
    assert c.delete(f"/auth/pools/{pid}/members/nobody", headers=admin).status_code == 404
    assert c.get("/auth/validate", headers=kim_h).get_json()["pools"] == []
    assert c.get("/auth/pools", headers=kim_h).get_json()["pools"] == []
    assert c.get(f"/auth/pools/{pid}", headers=kim_h).status_code == 403

    # Internal views.
    internal = c.get(f"/auth/internal/pools/{other['pool_id']}", headers=INTERNAL)
    assert internal.status_code == 200 and internal.get_json() == other
    assert c.get(f"/auth/internal/pools/{pid}").status_code == 401
    assert c.get(f"/auth/internal/pools/{pid}", headers={"X-Internal-Key": "wrong"}).status_code == 401
    assert c.get("/auth/internal/pools/p_nope", headers=INTERNAL).status_code == 404
    assert c.get(f"/auth/internal/pools/{pid}/members", headers=INTERNAL).get_json()["members"] == [
        {"user_id": lee["user_id"], "user_name": "lee", "role": "contributor"}]
    assert c.get("/auth/internal/pools/p_nope/members", headers=INTERNAL).status_code == 404


def test_processor_keys(auth_env: AuthEnv) -> None:
    c = auth_env.client
    admin = bearer(auth_env.admin_token())
    user = bearer(auth_env.signup("mia")["access_token"])

    def new_pool(name: str) -> str:
        made = c.post("/auth/pools", json={"name": name, "window_seconds": 60}, headers=admin)
        return made.get_json()["pool_id"]

    pid, other = new_pool("k"), new_pool("k2")

    assert c.post(f"/auth/pools/{pid}/processor-keys", headers=user).status_code == 403
    assert c.post("/auth/pools/p_nope/processor-keys", headers=admin).status_code == 404
    made = c.post(f"/auth/pools/{pid}/processor-keys", headers=admin)
    assert made.status_code == 201
    key = made.get_json()
    api_key, key_id = key["api_key"], key["key_id"]
    assert api_key.startswith(f"pk_{key_id}_")

    listed = c.get(f"/auth/pools/{pid}/processor-keys", headers=admin).get_json()["keys"]
    assert [k["key_id"] for k in listed] == [key_id] and not listed[0]["revoked"]
    assert api_key.split("_")[2] not in str(listed)
    assert c.get(f"/auth/pools/{other}/processor-keys", headers=admin).get_json()["keys"] == []
    assert c.get(f"/auth/pools/{pid}/processor-keys", headers=user).status_code == 403

    verify = "/auth/internal/processor-keys/verify"
    ok = c.post(verify, json={"api_key": api_key}, headers=INTERNAL)
    assert ok.status_code == 200 and ok.get_json() == {"pool_id": pid, "key_id": key_id}
    assert c.post(verify, json={"api_key": api_key}).status_code == 401  # no internal key
    forged = f"pk_{key_id}_{'0' * 64}"
    for bad in (forged, "garbage", None, 42, api_key + "x"):
        response = c.post(verify, json={"api_key": bad}, headers=INTERNAL)
        assert response.status_code == 401 and error_code(response) == "unauthorized", bad

    # Revoking: only through its own pool, then refused.
    assert c.delete(f"/auth/pools/{other}/processor-keys/{key_id}", headers=admin).status_code == 404
    assert c.delete(f"/auth/pools/{pid}/processor-keys/{key_id}", headers=user).status_code == 403
    assert c.delete(f"/auth/pools/{pid}/processor-keys/{key_id}", headers=admin).status_code == 200
    assert c.post(verify, json={"api_key": api_key}, headers=INTERNAL).status_code == 401
    assert c.get(f"/auth/pools/{pid}/processor-keys", headers=admin).get_json()["keys"][0]["revoked"]
    assert c.delete(f"/auth/pools/{pid}/processor-keys/nokey", headers=admin).status_code == 404


def test_health_ready_metrics(auth_env: AuthEnv) -> None:
    c = auth_env.client
    assert c.get("/health").get_json()["status"] == "ok"
    ready = c.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"postgres": True, "rabbitmq": True}
    auth_env.signup("nina")
    metrics = c.get("/metrics").get_data(as_text=True)
    assert "auth_signups_total 1.0" in metrics
    missing = c.get("/auth/nothing-here")
    assert missing.status_code == 404 and error_code(missing) == "not_found"


def test_create_app_does_not_connect(pg_url: str) -> None:
    # Nothing answers on these ports: building the app must still succeed.
    settings = make_settings("postgresql://postgres@127.0.0.1:1/none", "amqp://guest:guest@127.0.0.1:1/%2F")
    app = create_app(settings, passwords=core.Passwords(FAST_HASHER, slots=1))
    ready = app.test_client().get("/ready")
    assert ready.status_code == 503 and ready.get_json()["checks"] == {"postgres": False, "rabbitmq": False}
