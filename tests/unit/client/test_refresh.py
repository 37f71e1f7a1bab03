"""The client keeps its refresh token, renews on a 401 once and retries (downloads included)."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import requests
from requests.adapters import BaseAdapter

from client import DropboxClient, DropboxError


class FakeFleet(BaseAdapter):
    """auth's login/refresh/logout and a file route that accepts only the current access token."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.valid_access: set[str] = set()
        self.valid_refresh: set[str] = set()
        self.used_refresh: set[str] = set()
        self.refreshes = 0
        self.lock = threading.Lock()

    def _issue(self) -> dict[str, Any]:
        self.n += 1
        access, refresh = f"a{self.n}", f"rt_{self.n}"
        self.valid_access = {access}  # the older access token "expires" at once
        self.valid_refresh.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": 900}

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        with self.lock:
            status, body = self._route(request)
        response = requests.Response()
        response.status_code = status
        response.raw = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
        response.headers["Content-Type"] = "application/octet-stream" if isinstance(body, bytes) else \
            "application/json"
        response.request, response.url = request, request.url or ""
        return response

    def _route(self, request: requests.PreparedRequest) -> tuple[int, Any]:
        path = (request.url or "").split("://", 1)[1].split("/", 1)[1]
        bearer = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        if path.startswith("auth/login/"):
            return 200, {"user_id": "u1", "user_name": "alice", "role": "user", **self._issue()}
        if path == "auth/refresh":
            self.refreshes += 1
            token = json.loads(request.body or b"{}")["refresh_token"]
            if token in self.used_refresh or token not in self.valid_refresh:
                self.valid_refresh.clear()  # reuse: the login ends
                return 401, {"error": {"code": "unauthorized", "message": "reused"}}
            self.used_refresh.add(token)
            self.valid_refresh.discard(token)
            return 200, self._issue()
        if bearer not in self.valid_access:
            return 401, {"error": {"code": "unauthorized", "message": "token expired"}}
        if path.startswith("auth/logout/"):
            return 200, {"logged_out": True}
        return 200, b"file-bytes"

    def close(self) -> None:
        pass

    def expire(self) -> None:
        self.valid_access = set()


def client_on(fleet: FakeFleet) -> DropboxClient:
    c = DropboxClient("http://gw", auth_url="http://auth", fsm_url="http://fsm", aggregator_url="http://agg")
    c.http.mount("http://", fleet)
    return c


def test_login_keeps_the_refresh_token_and_refresh_rotates_it() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    assert (c.token, c.refresh_token) == ("a1", "rt_1") and c.token_expires_at is not None
    c.refresh()
    assert (c.token, c.refresh_token) == ("a2", "rt_2")


def test_a_download_refused_401_refreshes_once_and_retries() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    fleet.expire()
    out = io.BytesIO()
    assert c.download("f1", out)["bytes"] == len(b"file-bytes") and out.getvalue() == b"file-bytes"
    assert fleet.refreshes == 1 and c.token == "a2"


def test_a_401_after_a_failed_refresh_stands() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    fleet.expire()
    fleet.valid_refresh.clear()  # the login ended (logout elsewhere, disabled user)
    try:
        c.download("f1", io.BytesIO())
    except DropboxError as exc:
        assert exc.code == "unauthorized"
    else:
        raise AssertionError("the download should be refused")
    assert fleet.refreshes == 1  # once, not a loop


def test_threads_hitting_401_together_refresh_once() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    fleet.expire()
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            c.download("f1", io.BytesIO())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # No refresh token was presented twice (that would have ended the login).
    assert not errors and fleet.refreshes == 1 and fleet.used_refresh == {"rt_1"}


def test_logout_with_an_expired_token_refreshes_then_logs_out() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    fleet.expire()
    c.logout()
    assert c.token is None and c.refresh_token is None and fleet.refreshes == 1
