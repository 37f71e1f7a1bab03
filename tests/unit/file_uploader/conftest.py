"""file_uploader's use cases on in-memory stand-ins: the fake upload cache and broker, no network."""

from __future__ import annotations

import dataclasses

import pytest

from services.common.contracts import StoreUpload
from services.common.httpkit import ServiceMetrics
from services.common.testing import FakeAuth, InMemoryBroker
from services.common.testing.file_uploader import FakeUploadCache
from services.file_uploader.config import Settings
from services.file_uploader.deps import Deps
from services.file_uploader.tus_uploads import TusUploads
from services.file_uploader.uploads import UploaderMetrics, UploadService

CHUNK = 8  # tiny chunks: a few bytes exercise every multi-chunk path
OWNER = "7"
WRITER = "sid-1"


@pytest.fixture
def cache() -> FakeUploadCache:
    return FakeUploadCache()


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


@pytest.fixture
def settings() -> Settings:
    base = Settings.from_env({"INTERNAL_API_KEY": "k" * 32})
    return dataclasses.replace(base, limits=dataclasses.replace(base.limits, max_file_size=1024, chunk_size=CHUNK,
                                                                max_uploads_per_user=2))


@pytest.fixture
def uploads(settings: Settings, cache: FakeUploadCache, broker: InMemoryBroker) -> UploadService:
    return UploadService(settings, cache, broker, UploaderMetrics(ServiceMetrics("file_uploader")))


@pytest.fixture
def deps(settings: Settings, uploads: UploadService, cache: FakeUploadCache) -> Deps:
    auth = FakeAuth()
    return Deps(settings=settings, uploads=uploads, auth=auth, tus=TusUploads(uploads, cache, auth))


def start(uploads: UploadService, size: int, **payload: object) -> str:
    body, status = uploads.start({"file_name": "a.bin", "size": size, "pool_id": "p1", **payload},
                                 owner_id=OWNER, owner_name="alice", writer=WRITER)
    assert status == 201
    return str(body["file_id"])


def send_all(uploads: UploadService, file_id: str, data: bytes) -> None:
    for index in range(0, (len(data) + CHUNK - 1) // CHUNK):
        uploads.write_chunk(file_id, index, data[index * CHUNK:(index + 1) * CHUNK], owner_id=OWNER, writer=WRITER)


def cached_upload(uploads: UploadService, broker: InMemoryBroker, data: bytes = b"0123456789") -> StoreUpload:
    """An upload written and completed: the StoreUpload command it published."""
    file_id = start(uploads, len(data))
    send_all(uploads, file_id, data)
    uploads.complete(file_id, owner_id=OWNER, writer=WRITER)
    [command] = [c for c in broker.of_type(StoreUpload) if c.upload_id == file_id]
    return command
