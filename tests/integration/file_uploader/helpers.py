"""Helpers for the upload pipeline's integration tests (real Redis, RabbitMQ vhost, secantusdb)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from services.common import messaging
from services.common.authclient import Identity
from services.common.settings import CommonSettings
from services.file_uploader.config import Settings as UploaderSettings

INTERNAL_KEY = "test-internal-key-0123456789"


class StaticAuth:
    """Stands in for the auth service (built elsewhere) with fixed tokens; same interface as AuthClient."""

    def __init__(self, tokens: dict[str, Identity] | None = None, keys: dict[str, str] | None = None,
                 pools: dict[str, dict] | None = None) -> None:
        self.tokens = tokens or {}
        self.keys = keys or {}
        self.pools = pools if pools is not None else {}  # pool_id -> auth's internal pool doc

    def pool(self, pool_id: str) -> dict | None:
        return self.pools.get(pool_id)

    def retention_rules(self) -> list[dict]:
        return [{"pool_id": p, "retention_days": d["retention_days"], "deleted": bool(d.get("deleted"))}
                for p, d in sorted(self.pools.items()) if d.get("retention_days") is not None]

    def validate(self, token: str | None) -> Identity | None:
        return self.tokens.get(token or "")

    def processor_pool(self, api_key: str | None) -> str | None:
        return self.keys.get(api_key or "")


def common_env(amqp_url: str, redis_prefix: str, **extra: str) -> dict[str, str]:
    # 1 MiB chunks (the service default is 4 MiB) keep multi-chunk cases small.
    return {"AMQP_URL": amqp_url, "REDIS_PREFIX": redis_prefix, "INTERNAL_API_KEY": INTERNAL_KEY,
            "LOG_LEVEL": "WARNING", "CHUNK_SIZE": str(1024 * 1024), **extra}


def uploader_settings(amqp_url: str, redis_prefix: str, **extra: str) -> UploaderSettings:
    return UploaderSettings.from_env(common_env(amqp_url, redis_prefix, **extra))


def common(amqp_url: str, redis_prefix: str, **extra: str) -> CommonSettings:
    return CommonSettings.from_env(common_env(amqp_url, redis_prefix, **extra))


class Collector:
    """Consumes a durable queue of the test's vhost in a thread, keeping every message."""

    def __init__(self, url: str, queue: messaging.QueueSpec,
                 handler: Callable[[Any], None] | None = None) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()
        self.handler = handler
        self.closed = False
        self.thread: threading.Thread | None = None
        self.consumer = messaging.Consumer(url, queue, self._handle, prefetch=20, name=f"test-{queue.name}",
                                           retry_pause=0.1)

    def _handle(self, message: Any) -> None:
        if self.closed:  # stopping: hand the message back (requeued) for the next consumer
            raise RuntimeError("collector closed")
        if self.handler is not None:
            self.handler(message)
        with self._lock:
            self.messages.append(message)

    def __enter__(self) -> Collector:
        self.thread = self.consumer.start()
        deadline = time.monotonic() + 10
        while not self.consumer.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True
        self.consumer.stop()
        if self.thread is not None:
            self.thread.join(5)

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.messages)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.02)
        raise AssertionError(f"timed out; got {snapshot!r}")


def start(client: Any, **body: Any) -> Any:
    body.setdefault("owner_id", "u1")
    body.setdefault("owner_name", "alice")
    body.setdefault("writer", "w1")
    return client.post("/uploads", json=body, headers={"X-Internal-Key": INTERNAL_KEY})


def put_chunk(client: Any, file_id: str, index: Any, data: bytes, owner: str = "u1", writer: str = "w1",
              **headers: str) -> Any:
    return client.put(f"/uploads/{file_id}/chunks/{index}", data=data,
                      headers={"X-Internal-Key": INTERNAL_KEY, "X-Owner-Id": owner, "X-Writer": writer,
                               **headers})


def complete(client: Any, file_id: str, owner: str = "u1", writer: str = "w1") -> Any:
    return client.post(f"/uploads/{file_id}/complete", json={"owner_id": owner, "writer": writer},
                       headers={"X-Internal-Key": INTERNAL_KEY})


def upload_all(client: Any, data: bytes, chunk_size: int, **body: Any) -> str:
    """Start, write every chunk and complete; returns the file id."""
    response = start(client, size=len(data), **body)
    assert response.status_code == 201, response.get_json()
    file_id = response.get_json()["file_id"]
    assert response.get_json()["chunk_size"] == chunk_size, "the test's chunk size must be the service's"
    owner = body.get("owner_id", "u1")
    for i in range(0, max(1, -(-len(data) // chunk_size))):
        r = put_chunk(client, file_id, i, data[i * chunk_size:(i + 1) * chunk_size], owner=owner)
        assert r.status_code == 200, r.get_json()
    r = complete(client, file_id, owner=owner)
    assert r.status_code == 200, r.get_json()
    return file_id
