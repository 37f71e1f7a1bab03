"""The client library against a real auth (PostgreSQL, Redis): it renews an expired access token by itself."""

from __future__ import annotations

import io
import time
from typing import Any

import requests
from requests.adapters import BaseAdapter

from client import DropboxClient, DropboxError
from services.auth.app import create_app

from .conftest import AuthEnv, make_settings


class WsgiAdapter(BaseAdapter):
    """requests -> a Flask app's test client: the client's real HTTP code against the real auth."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.client = app.test_client()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        path = "/" + (request.url or "").split("://", 1)[1].split("/", 1)[1]
        answer = self.client.open(path, method=request.method, headers=dict(request.headers), data=request.body)
        response = requests.Response()
        response.status_code = answer.status_code
        response.raw = io.BytesIO(answer.get_data())
        response.headers.update(dict(answer.headers))
        response.request, response.url = request, request.url or ""
        return response

    def close(self) -> None:
        pass


def test_the_client_outlives_its_access_token(auth_env: AuthEnv, pg_url: str, amqp_url: str) -> None:
    settings = make_settings(pg_url, amqp_url, ACCESS_TOKEN_TTL_SECONDS="5",
                             REDIS_PREFIX=auth_env.settings.common.redis_prefix)
    app = create_app(settings, store=auth_env.store, broker=auth_env.broker, passwords=auth_env.passwords)
    c = DropboxClient("http://gw", auth_url="http://auth", fsm_url="http://auth", aggregator_url="http://agg")
    c.http.mount("http://", WsgiAdapter(app))
    c.signup("quinn", "password-123")
    first_refresh = c.refresh_token
    assert first_refresh and c.token
    time.sleep(6)  # the access token has expired
    # An authenticated call refused 401 refreshes once and retries (here GET /auth/validate through
    # the download path, which every "listen" download takes).
    result = c.download("http://auth/auth/validate", io.BytesIO())
    assert result["status"] == 200 and c.refresh_token != first_refresh
    # The old refresh token, presented again, ends the login: even the client's new tokens stop.
    stolen = requests.Session()
    stolen.mount("http://", WsgiAdapter(app))
    assert stolen.post("http://auth/auth/refresh", json={"refresh_token": first_refresh}).status_code == 401
    try:
        c.download("http://auth/auth/validate", io.BytesIO())
    except DropboxError as exc:
        assert exc.code == "unauthorized"
    else:
        raise AssertionError("the revoked login still works")
