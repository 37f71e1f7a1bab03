"""Small helpers for end-to-end tests: HTTP calls and a raw Socket.IO connection."""

from __future__ import annotations

import hashlib
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests
import socketio


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def signup(auth_url: str, name: str | None = None, password: str = "correct-horse-battery") -> dict:
    name = name or unique_name()
    response = requests.post(f"{auth_url}/auth/signup", json={"user_name": name, "password": password}, timeout=10)
    assert response.status_code == 201, response.text
    return {**response.json(), "password": password}


def login(auth_url: str, name: str, password: str) -> dict:
    response = requests.put(f"{auth_url}/auth/login/{name}", json={"password": password}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RawSocket:
    """A plain python-socketio client that records server events (no client-library help)."""

    def __init__(self, gateway_url: str, token: str, **auth: Any) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.sio.on("file-status", lambda data: self.events.put(("file-status", data)))
        self.sio.on("pool-result", lambda data: self.events.put(("pool-result", data)))
        self.sio.connect(gateway_url, auth={"token": token, **auth}, transports=["websocket"],
                         wait_timeout=10)

    def call(self, event: str, data: dict, timeout: float = 30) -> dict:
        return self.sio.call(event, data, timeout=timeout)

    def wait_event(self, name: str, predicate=lambda d: True, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {name} event within {timeout}s; saw {skipped}")
                try:
                    kind, data = self.events.get(timeout=remaining)
                except queue.Empty:
                    continue
                if kind == name and predicate(data):
                    return data
                skipped.append((kind, data))
        finally:
            for item in skipped:
                self.events.put(item)

    def statuses(self, file_id: str) -> list[str]:
        seen = []
        items = []
        while not self.events.empty():
            items.append(self.events.get())
        for item in items:
            self.events.put(item)
            if item[0] == "file-status" and item[1].get("file_id") == file_id:
                seen.append(item[1]["status"])
        return seen

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()

    def upload_bytes(self, data: bytes, file_name: str = "data.bin", **start: Any) -> str:
        """start-transfer, every chunk, complete-upload; returns the file_id (asserts success)."""
        ack = self.call("start-transfer", {"file_name": file_name, "size": len(data),
                                           "sha256": sha256_hex(data), **start})
        assert "error" not in ack, ack
        file_id, chunk = ack["file_id"], ack["chunk_size"]
        for index, offset in enumerate(range(0, len(data), chunk)):
            piece = data[offset:offset + chunk]
            answer = self.call("write-chunk", {"file_id": file_id, "index": index, "data": piece})
            assert "error" not in answer, answer
        done = self.call("complete-upload", {"file_id": file_id})
        assert done == {"file_id": file_id, "status": "cached"} or done.get("status") == "cached", done
        return file_id


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    """Poll ``predicate`` until it answers something truthy (returned), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
