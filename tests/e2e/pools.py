"""Pool helpers for end-to-end tests: an admin and a processor speaking plain HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import requests

from .helpers import bearer, login, signup


class Admin:
    def __init__(self, fleet) -> None:
        self.auth = fleet.urls["auth"]
        self.token = login(self.auth, *fleet.admin)["access_token"]

    def create_pool(self, name: str, window_seconds: int, **extra) -> dict:
        r = requests.post(f"{self.auth}/auth/pools", headers=bearer(self.token),
                          json={"name": name, "window_seconds": window_seconds, **extra}, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()

    def add_member(self, pool_id: str, user_name: str, role: str = "contributor") -> None:
        r = requests.post(f"{self.auth}/auth/pools/{pool_id}/members", headers=bearer(self.token),
                          json={"user_name": user_name, "role": role}, timeout=10)
        assert r.status_code == 201, r.text

    def remove_member(self, pool_id: str, user_name: str) -> None:
        r = requests.delete(f"{self.auth}/auth/pools/{pool_id}/members/{user_name}", headers=bearer(self.token),
                            timeout=10)
        assert r.status_code == 200, r.text

    def processor_key(self, pool_id: str) -> str:
        r = requests.post(f"{self.auth}/auth/pools/{pool_id}/processor-keys", headers=bearer(self.token), timeout=10)
        assert r.status_code == 201, r.text
        return r.json()["api_key"]

    def member(self, pool_id: str, role: str = "contributor") -> dict:
        user = signup(self.auth)
        self.add_member(pool_id, user["user_name"], role)
        return user


class Processor:
    """What an external processor does, step by step, over the SPEC API."""

    def __init__(self, fleet, pool_id: str, api_key: str) -> None:
        self.base = f"{fleet.urls['pool_aggregator']}/pools/{pool_id}"
        self.headers = {"X-API-Key": api_key}

    def groups(self, status: str | None = None) -> list[dict]:
        r = requests.get(f"{self.base}/groups", params={"status": status} if status else None,
                         headers=self.headers, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["groups"]

    def wait_ready(self, timeout: float = 60, group_id: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for group in self.groups("ready"):
                if group_id is None or group["group_id"] == group_id:
                    return group
            time.sleep(0.3)
        raise AssertionError(f"no ready group within {timeout}s: {self.groups()}")

    def files(self, group_id: str) -> requests.Response:
        return requests.get(f"{self.base}/groups/{group_id}/files", headers=self.headers, timeout=30)

    def post_result(self, group_id: str, data: bytes, name: str = "result.bin", **headers: str) -> requests.Response:
        return requests.post(f"{self.base}/groups/{group_id}/result", data=data,
                             headers={**self.headers, "X-File-Name": name, **headers}, timeout=60)


def window_timestamp(window_seconds: int, offset: float = 0.1, windows_ago: int = 0) -> str:
    """An ISO timestamp inside the current window (or one `windows_ago` earlier)."""
    now = time.time()
    start = (now // window_seconds - windows_ago) * window_seconds
    return datetime.fromtimestamp(start + offset, UTC).isoformat()
