"""Fixtures for pool_aggregator's integration tests: real MongoDB (secantusdb) and RabbitMQ.

auth, file_uploader and file_service_manager are other services built in
parallel; here they are stood in for by ``FakeAuth`` (an injected AuthClient
look-alike) and ``Upstream`` (a small real HTTP server speaking file_uploader's
internal upload routes and file_service_manager's ``GET /file/<id>``). The
e2e suite runs the aggregator against the real ones.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from services.common.authclient import Identity
from services.common.contracts import FileStored, Message
from services.common.messaging import Broker, Consumer
from services.common.topology import EXCHANGE, queues_for
from services.pool_aggregator import handlers
from services.pool_aggregator.app import create_app
from services.pool_aggregator.config import Settings
from services.pool_aggregator.deps import Deps
from services.pool_aggregator.store import MongoGroupStore

POOL = "pool1"
KEY = "key-pool1"
OTHER_KEY = "key-pool2"
MEMBER_TOKEN = "tok-member"
OUTSIDER_TOKEN = "tok-outsider"
ADMIN_TOKEN = "tok-admin"


class FakeAuth:
    """What AuthClient answers, from dicts. Counts pool look-ups to check the cache."""

    def __init__(self) -> None:
        self.pools: dict[str, dict] = {}
        self.pool_calls = 0
        self.keys = {KEY: {"pool_id": POOL, "key_id": "k1"}, OTHER_KEY: {"pool_id": "pool2", "key_id": "k2"}}
        self.tokens = {
            MEMBER_TOKEN: Identity("u1", "alice", "user", {POOL: "contributor"}),
            OUTSIDER_TOKEN: Identity("u9", "mallory", "user", {"pool2": "contributor"}),
            ADMIN_TOKEN: Identity("u0", "admin", "admin", {}),
        }

    def set_pool(self, pool_id: str = POOL, **settings: Any) -> dict:
        pool = {"pool_id": pool_id, "name": pool_id, "window_seconds": 60, "close_grace_seconds": 0,
                "min_contributors": None, "processing_timeout_seconds": 300, "processor_url": None}
        pool.update(settings)
        self.pools[pool_id] = pool
        return pool

    def pool(self, pool_id: str) -> dict | None:
        self.pool_calls += 1
        return self.pools.get(pool_id)

    def processor_key(self, api_key: str | None) -> dict | None:
        return self.keys.get(api_key or "")

    def processor_pool(self, api_key: str | None) -> str | None:
        info = self.processor_key(api_key)
        return info["pool_id"] if info else None

    def validate(self, token: str | None) -> Identity | None:
        return self.tokens.get(token or "")


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def time(self) -> float:  # ports.Clock
        return self.t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Upstream:
    """file_uploader's internal upload routes + file_service_manager's GET /file/<id>, in memory."""

    files: dict[str, bytes] = field(default_factory=dict)
    file_keys: dict[str, str] = field(default_factory=dict)  # file_id -> the API key allowed to read it
    uploads: dict[str, dict] = field(default_factory=dict)
    fail_complete: bool = False
    url: str = ""
    # The pipeline after complete (file_service_manager stores, FileStored is consumed): called
    # with the file id; None = the storage is down and no FileStored ever comes.
    on_complete: Callable[[str], None] | None = None

    def app(self) -> Flask:
        app = Flask("upstream")

        @app.post("/uploads")
        def start() -> Response:
            body = request.get_json()
            file_id = uuid.uuid4().hex
            self.uploads[file_id] = {"body": body, "chunks": {}, "completed": False, "released": False}
            response = jsonify({"file_id": file_id, "chunk_size": 1000})
            response.status_code = 201
            return response

        @app.put("/uploads/<file_id>/chunks/<int:index>")
        def chunk(file_id: str, index: int) -> Response:
            upload = self.uploads[file_id]
            assert request.headers["X-Writer"] == upload["body"]["writer"]
            assert request.headers["X-Owner-Id"] == upload["body"]["owner_id"]
            upload["chunks"][index] = request.get_data()
            return jsonify({"file_id": file_id, "index": index, "received": len(upload["chunks"])})

        @app.post("/uploads/<file_id>/complete")
        def complete(file_id: str) -> Response:
            if self.fail_complete:
                response = jsonify({"error": {"code": "overloaded", "message": "busy", "retry_after": 1}})
                response.status_code = 429
                return response
            upload = self.uploads[file_id]
            upload["completed"] = True
            self.files[file_id] = b"".join(upload["chunks"][i] for i in sorted(upload["chunks"]))
            if self.on_complete is not None:
                self.on_complete(file_id)
            return jsonify({"file_id": file_id, "status": "cached"})

        @app.post("/uploads/<file_id>/release")
        def release(file_id: str) -> Response:
            self.uploads[file_id]["released"] = True
            return jsonify({})

        @app.get("/file/<file_id>")
        def download(file_id: str) -> Response:
            if request.headers.get("X-API-Key") != self.file_keys.get(file_id):
                return Response(status=403)
            if file_id not in self.files:
                return Response(status=404)
            data = self.files[file_id]
            return Response((data[i:i + 333] for i in range(0, len(data), 333)),
                            mimetype="application/octet-stream")

        return app


def serve_in_thread(app: Any) -> tuple[str, Callable[[], None]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


class Events:
    """Every event published on the vhost, collected by a private queue."""

    def __init__(self, amqp_url: str) -> None:
        self.items: list[Message] = []
        self.consumer = Consumer(amqp_url, None, self.items.append, bindings=("#",), name="test-events")
        self.consumer.start()
        deadline = time.time() + 10
        while not self.consumer.connected and time.time() < deadline:
            time.sleep(0.02)
        assert self.consumer.connected

    def of(self, kind: type, timeout: float = 3.0, count: int = 1) -> list:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [m for m in self.items if isinstance(m, kind)]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        return [m for m in self.items if isinstance(m, kind)]

    def settle(self, seconds: float = 0.3) -> None:
        time.sleep(seconds)


@dataclass
class Rig:
    app: Flask
    deps: Deps
    store: MongoGroupStore
    auth: FakeAuth
    clock: Clock
    upstream: Upstream
    events: Events
    url: str
    amqp_url: str

    def handle(self, message: Message) -> None:
        """What the consumer of the queue this message's routing key reaches does with one delivery."""
        reached = queues_for(EXCHANGE, message.key())
        for spec in handlers.consumers(self.deps):
            if spec.queue in reached:
                spec.dispatch(message)

    def store_result(self, file_id: str) -> None:
        """What happens after complete when the storage works: the result's FileStored handled."""
        body = self.upstream.uploads[file_id]["body"]
        self.handle(self.stored(file_id, ts=self.clock(), kind="result", group_id=body["group_id"],
                                data=self.upstream.files[file_id]))

    def stored(self, file_id: str, *, ts: float, owner: str = "u1", size: int = 100,
               pool_id: str | None = POOL, kind: str = "file", group_id: str | None = None,
               data: bytes | None = None) -> FileStored:
        from services.pool_aggregator.core import epoch_iso

        if data is not None:
            self.upstream.files[file_id] = data
            self.upstream.file_keys[file_id] = KEY
            size = len(data)
        return FileStored(file_id=file_id, upload_id=file_id, owner_id=owner, owner_name=owner,
                          file_name=f"{file_id}.f64", size=size,
                          sha256=hashlib.sha256(data or b"").hexdigest(),
                          content_type="application/octet-stream", timestamp=epoch_iso(ts),
                          created=epoch_iso(self.clock()), pool_id=pool_id, kind=kind, group_id=group_id)


@pytest.fixture
def rig(mongo_db, amqp_url: str) -> Iterator[Rig]:
    upstream = Upstream()
    up_url, up_stop = serve_in_thread(upstream.app())
    upstream.url = up_url
    env = {"AMQP_URL": amqp_url, "FILE_UPLOADER_URL": up_url, "FILE_SERVICE_MANAGER_URL": up_url,
           "PUBLIC_FILE_URL": "http://files.example", "LEASE_MAX_EXPIRIES": "3", "POOL_CACHE_SECONDS": "0",
           "RESULT_MAX_BYTES": "100000", "RESULT_STORE_WAIT_SECONDS": "1",
           "LOG_LEVEL": "WARNING"}
    auth = FakeAuth()
    auth.set_pool()
    clock = Clock()
    broker = Broker(amqp_url)
    events = Events(amqp_url)
    store = MongoGroupStore(mongo_db)
    app = create_app(Settings.from_env(env), store=store, broker=broker, auth=auth, clock=clock)
    deps: Deps = app.extensions["deps"]
    store.ensure_indexes()
    deps.announcer.backoff = 0.05  # type: ignore[attr-defined]
    url, stop = serve_in_thread(app)
    try:
        the_rig = Rig(app, deps, store, auth, clock, upstream, events, url, amqp_url)
        upstream.on_complete = the_rig.store_result
        yield the_rig
    finally:
        stop()
        up_stop()
        events.consumer.stop()
        broker.close()


def number_on_replicas(store: Any, ids: list[str], replicas: int) -> None:
    """``replicas`` threads, each numbering every result of ``ids`` (``assign_seq``) in its own
    shuffled order, all at once: what N pool_aggregator replicas handling redeliveries do (each
    thread a store of its own on the same database, as a replica is: no in-process lock shared).
    Fails with the first error a replica met."""
    import random

    barrier = threading.Barrier(replicas)
    errors: list[BaseException] = []

    def replica(seed: int) -> None:
        own = type(store)(store.db)
        order = list(ids)
        random.Random(seed).shuffle(order)
        barrier.wait()
        try:
            for rid in order:
                own.assign_seq(rid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
