"""Login rate limits counted in the real Redis: shared by replicas; Redis down lets logins through."""

from __future__ import annotations

from services.auth.app import create_app

from .conftest import AuthEnv, make_settings


def test_failed_logins_are_counted_across_replicas(auth_env: AuthEnv, pg_url: str, amqp_url: str,
                                                   redis_prefix: str) -> None:
    auth_env.signup("olga", "password-123")
    limit = auth_env.settings.login_rate_per_minute
    other = create_app(auth_env.settings, store=auth_env.store, broker=auth_env.broker,
                       passwords=auth_env.passwords).test_client()  # a second replica, same Redis
    for n in range(limit):
        client = auth_env.client if n % 2 else other
        assert client.put("/auth/login/olga", json={"password": "wrong-password"}).status_code == 401
    refused = auth_env.client.put("/auth/login/olga", json={"password": "password-123"})
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "overloaded" and 1 <= error["retry_after"] <= 60
    assert refused.headers["Retry-After"] == str(error["retry_after"])
    assert other.put("/auth/login/olga", json={"password": "password-123"}).status_code == 429


def test_login_works_while_redis_is_unreachable(auth_env: AuthEnv, pg_url: str, amqp_url: str) -> None:
    settings = make_settings(pg_url, amqp_url, REDIS_URL="redis://127.0.0.1:1/0", LOGIN_RATE_PER_MINUTE="1",
                             LOGIN_IP_RATE_PER_MINUTE="1")
    client = create_app(settings, store=auth_env.store, broker=auth_env.broker,
                        passwords=auth_env.passwords).test_client()
    auth_env.signup("pia", "password-123")
    for _ in range(3):
        assert client.put("/auth/login/pia", json={"password": "password-123"}).status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'auth_rate_unchecked_total{action="login"}' in metrics
