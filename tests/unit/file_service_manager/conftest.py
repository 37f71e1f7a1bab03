"""file_service_manager's deps built from in-memory stand-ins: no network."""

from __future__ import annotations

import hashlib

import pytest

from services.common.audit import AuditTrail
from services.common.authclient import Identity
from services.common.contracts import StoreUpload, UploadItem
from services.common.httpkit import ServiceMetrics
from services.common.testing import FakeAuth, FakeClock, InMemoryBroker
from services.common.testing.file_service_manager import FakeCache, FakeIndex, FakePrestorable, FakeStaging
from services.file_service_manager import backends
from services.file_service_manager.config import Settings
from services.file_service_manager.deps import Deps, FsmMetrics
from services.file_service_manager.hotcache import HotFiles
from services.file_service_manager.pools import PoolStorage

CHUNK = 4


@pytest.fixture
def deps() -> Deps:
    settings = Settings.from_env({"INTERNAL_API_KEY": "k" * 32, "STORE_FAIL_PATTERN": "fail-me"})
    broker = InMemoryBroker()
    metrics = FsmMetrics(ServiceMetrics("file_service_manager"))
    index = FakeIndex()
    # The default backend's bytes are index.files; a prestore writes into it as into the filesystem.
    default = FakePrestorable.over(index)
    storage = backends.Storages(settings.default_storage, lambda spec: default)
    auth = FakeAuth()
    return Deps(settings=settings, index=index, cache=FakeCache(), broker=broker, auth=auth,
                metrics=metrics, audit=AuditTrail(broker, "file_service_manager"), hot=HotFiles(1 << 20, 1 << 16),
                storage=storage, pool_storage=PoolStorage(auth), staging=FakeStaging(), clock=FakeClock())


def command(deps: Deps, data: bytes, *, items: list[tuple[int, int]] | None = None, name: str = "a.bin",
            kind: str = "file") -> StoreUpload:
    """A StoreUpload for ``data`` cached in the fake cache (one item, or the given (offset, length))."""
    cache_key = "p:upload:u1"
    count = deps.cache.put(cache_key, data, CHUNK)  # type: ignore[attr-defined]
    spans = items or [(0, len(data))]
    ids = ["u1"] if items is None else [f"u1-{n:04d}" for n in range(len(spans))]
    return StoreUpload(upload_id="u1", owner_id="7", owner_name="alice", file_name=name, size=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), content_type="application/octet-stream",
                       chunk_size=CHUNK, chunk_count=count, cache_key=cache_key, created="2026-01-01T00:00:00Z",
                       items=tuple(UploadItem(i, off, n, "2026-01-01T00:00:00Z", f"{name}.{k}")
                                   for k, (i, (off, n)) in enumerate(zip(ids, spans, strict=True))),
                       pool_id="p1", kind=kind)


def alice() -> Identity:
    return Identity("7", "alice", "user", {"p1": "contributor"})
