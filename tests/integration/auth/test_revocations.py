"""The shared revocation list in real Redis: written before the 200, read as the gateway reads it."""

from __future__ import annotations

import jwt
import redis

from services.auth.app import create_app
from services.common.authclient import Identity
from services.common.messaging import Broker
from services.common.revocations import RevocationList

from .conftest import AuthEnv, bearer, make_settings


def reader(auth_env: AuthEnv) -> RevocationList:
    client = redis.Redis.from_url(auth_env.settings.common.redis_url)
    return RevocationList(client, auth_env.settings.common.redis_prefix, cache_seconds=0)


def identity(auth_env: AuthEnv, token: str) -> Identity:
    response = auth_env.client.get("/auth/validate", headers=bearer(token))
    assert response.status_code == 200
    return Identity.from_validate(response.get_json())


def test_a_logout_whose_broker_message_is_lost_is_refused_by_the_reader(auth_env: AuthEnv) -> None:
    dead = Broker("amqp://guest:guest@127.0.0.1:1/%2F", publish_attempts=1)
    app = create_app(auth_env.settings, store=auth_env.store, broker=dead, passwords=auth_env.passwords)
    c = app.test_client()
    login = auth_env.signup("uma")
    who = identity(auth_env, login["access_token"])
    other = identity(auth_env, auth_env.login("uma", "password-123")["access_token"])
    assert not reader(auth_env).is_revoked(who)
    assert c.put("/auth/logout/uma", headers=bearer(login["access_token"])).status_code == 200
    assert 'auth_publish_failures_total{event="TokenRevoked"} 1.0' in c.get("/metrics").get_data(as_text=True)
    assert reader(auth_env).is_revoked(who)
    assert not reader(auth_env).is_revoked(other)
    prefix = auth_env.settings.common.redis_prefix
    ttl = redis.Redis.from_url(auth_env.settings.common.redis_url).ttl(f"{prefix}:revoked:token:{who.token_id}")
    assert 900 <= ttl <= 900 + 62  # the token's remaining life and the clock slack


def test_refresh_reuse_is_listed(auth_env: AuthEnv) -> None:
    login = auth_env.signup("vic")
    renewed = auth_env.client.post("/auth/refresh", json={"refresh_token": login["refresh_token"]}).get_json()
    newest = identity(auth_env, renewed["access_token"])
    assert auth_env.client.post("/auth/refresh", json={"refresh_token": login["refresh_token"]}).status_code == 401
    assert reader(auth_env).is_revoked(newest)


def test_a_logout_is_503_while_redis_cannot_be_written(auth_env: AuthEnv, pg_url: str, amqp_url: str) -> None:
    login = auth_env.signup("wes")
    settings = make_settings(pg_url, amqp_url, REDIS_URL="redis://127.0.0.1:1/0",
                             REDIS_PREFIX=auth_env.settings.common.redis_prefix)
    cut_off = create_app(settings, store=auth_env.store, broker=auth_env.broker,
                         passwords=auth_env.passwords).test_client()
    response = cut_off.put("/auth/logout/wes", headers=bearer(login["access_token"]))
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "unavailable"
    # Retried once Redis answers: done, and listed.
    assert auth_env.client.put("/auth/logout/wes", headers=bearer(login["access_token"])).status_code == 200
    assert auth_env.client.get("/auth/validate", headers=bearer(login["access_token"])).status_code == 401
    claims = jwt.decode(login["access_token"], options={"verify_signature": False})
    who = Identity(user_id=claims["sub"], user_name="wes", role="user", token_id=claims["jti"],
                   session_id=claims["sid"], issued_at=claims["iat_ms"] / 1000)
    assert reader(auth_env).is_revoked(who)
