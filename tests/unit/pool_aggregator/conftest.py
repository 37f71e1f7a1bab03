"""pool_aggregator's deps built from in-memory stand-ins: no network, a clock that moves when told."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import pytest
from flask import Flask

from services.common.authclient import Identity
from services.common.contracts import FileStored, Message, StoredItem, UploadStored
from services.common.testing import FakeAuth, FakeClock, InMemoryBroker
from services.common.testing.pool_aggregator import (
    FakeFiles,
    FakeGroupStore,
    FakeStagingReader,
    FakeUploader,
    RecordingAnnouncer,
)
from services.pool_aggregator import core, handlers
from services.pool_aggregator.app import create_app
from services.pool_aggregator.config import Settings
from services.pool_aggregator.deps import Deps

POOL = "p1"
KEY = "key-p1"
OTHER_KEY = "key-p2"
MEMBER = "tok-member"
W = 60


@dataclass
class Kit:
    app: Flask
    deps: Deps
    store: FakeGroupStore
    broker: InMemoryBroker
    auth: FakeAuth
    clock: FakeClock
    uploader: FakeUploader
    files: FakeFiles
    announcer: RecordingAnnouncer
    staging: FakeStagingReader

    def window_start(self) -> int:
        return core.window_for(self.clock.time(), W).start

    def deliver(self, message: Message) -> None:
        """Publish and run it through the real consumer table, as RabbitMQ would."""
        self.broker.publish(message)
        self.broker.deliver(handlers.consumers(self.deps))

    def store_result(self, file_id: str) -> None:
        """The pipeline after file_uploader's complete: the result is stored, its FileStored consumed."""
        data = self.uploader.data(file_id)
        message = self.stored(file_id, ts=self.clock.time(), kind="result", size=len(data),
                              group_id=self.uploader.uploads[file_id]["body"]["group_id"])
        self.deliver(dataclasses.replace(message, sha256=hashlib.sha256(data).hexdigest()))

    def stored(self, file_id: str, *, ts: float, owner: str = "u1", size: int = 10, pool_id: str | None = POOL,
               kind: str = "file", group_id: str | None = None) -> FileStored:
        return FileStored(file_id=file_id, upload_id=file_id, owner_id=owner, owner_name=owner,
                          file_name=f"{file_id}.bin", size=size, sha256="0" * 64,
                          content_type="application/octet-stream", timestamp=core.epoch_iso(ts),
                          created=core.epoch_iso(self.clock.time()), pool_id=pool_id, kind=kind, group_id=group_id)


    def batch(self, upload_id: str, file_ids: list[str], *, ts: float | list[float], owner: str = "u1",
              pool_id: str | None = POOL) -> UploadStored:
        """A batch upload's UploadStored (``ts``: one timestamp for all, or one per item)."""
        stamps = ts if isinstance(ts, list) else [ts] * len(file_ids)
        return UploadStored(upload_id=upload_id, owner_id=owner, owner_name=owner,
                            content_type="application/octet-stream", created=core.epoch_iso(self.clock.time()),
                            pool_id=pool_id, items=tuple(
                                StoredItem(file_id=f, file_name=f"{f}.bin", size=10, sha256="0" * 64,
                                           timestamp=core.epoch_iso(t)) for f, t in zip(file_ids, stamps, strict=True)))


@pytest.fixture
def kit() -> Kit:
    settings = Settings.from_env({"PUBLIC_FILE_URL": "http://files.example", "POOL_CACHE_SECONDS": "0",
                                  "RESULT_MAX_BYTES": "1000", "LEASE_MAX_EXPIRIES": "3",
                                  "RESULT_STORE_WAIT_SECONDS": "0.05"})
    store, broker, clock = FakeGroupStore(), InMemoryBroker(), FakeClock()
    auth = FakeAuth(processor_keys={KEY: {"pool_id": POOL, "key_id": "k1"},
                                    OTHER_KEY: {"pool_id": "p2", "key_id": "k2"}})
    auth.pools[POOL] = {"pool_id": POOL, "window_seconds": W, "close_grace_seconds": 0, "min_contributors": None,
                        "processing_timeout_seconds": 30, "processor_url": "http://processor.example/hook"}
    auth.tokens[MEMBER] = Identity("u1", "alice", "user", {POOL: "contributor"})
    uploader, files, announcer, staging = FakeUploader(), FakeFiles(), RecordingAnnouncer(), FakeStagingReader()
    app = create_app(settings, store=store, broker=broker, auth=auth, uploader=uploader, files=files, clock=clock,
                     announcer=announcer, staging=staging)
    kit = Kit(app, app.extensions["deps"], store, broker, auth, clock, uploader, files, announcer, staging)
    uploader.on_complete = kit.store_result
    return kit
