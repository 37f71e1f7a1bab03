"""Property: any order and duplication of chunk writes yields the original bytes or a clear refusal.

Runs against the real Redis store (the test's redis_prefix); examples are small.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
import redis
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from services.common import messaging
from services.common.errors import ApiError
from services.common.httpkit import ServiceMetrics
from services.file_uploader.config import Settings
from services.file_uploader.core import MAGIC_LENGTH, Limits, sniff_executable
from services.file_uploader.store import UploadStore
from services.file_uploader.uploads import UploaderMetrics, UploadService

from .helpers import common

CHUNK = 8


@pytest.fixture
def service_factory(redis_prefix: str, amqp_url: str):
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    cfg = Settings(common=common(amqp_url, redis_prefix),
                   limits=Limits(chunk_size=CHUNK, max_uploads_per_user=10**6))
    broker = messaging.Broker(amqp_url)

    def build() -> UploadService:
        prefix = f"{redis_prefix}:{uuid.uuid4().hex[:6]}"
        store = UploadStore(client, prefix)
        return UploadService(cfg, store, broker, UploaderMetrics(ServiceMetrics("t")))

    yield build
    broker.close()
    client.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=5 * CHUNK), writes=st.lists(
    st.tuples(st.integers(min_value=0, max_value=6), st.booleans()), max_size=14))
@example(data=b"\xdc!rest", writes=[(0, True)])  # the corrupted first chunk reads "#!": a script
def test_any_write_order(service_factory, data: bytes, writes: list[tuple[int, bool]]) -> None:
    # Data that itself starts like an executable is refused at chunk 0 by design (tested
    # elsewhere); here the original bytes are harmless and only a corrupted write may not be.
    assume(sniff_executable(data[:MAGIC_LENGTH]) is None)
    service = service_factory()
    sha = hashlib.sha256(data).hexdigest()
    body, _ = service.start({"file_name": "p.txt", "size": len(data), "sha256": sha}, owner_id="o",
                            owner_name="o", writer="w")
    file_id = body["file_id"]
    count = -(-len(data) // CHUNK)
    first: dict[int, bytes] = {}
    for index, corrupt in writes:
        piece = data[index * CHUNK:(index + 1) * CHUNK]
        if corrupt and piece:
            piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
        try:
            service.write_chunk(file_id, index, piece, owner_id="o", writer="w")
        except ApiError as err:
            if err.code == "forbidden_type":
                # a corrupted first chunk that reads as an executable: refused, and the whole
                # upload dropped (an executable is never kept)
                assert index == 0 and sniff_executable(piece[:MAGIC_LENGTH]) is not None
                assert service.store.session(file_id) is None
                return
            if index >= count:
                assert err.code == "bad_request"
            else:  # only a rewrite with other bytes is refused
                assert err.code == "conflict" and first[index] != piece
            continue
        assert index < count and first.setdefault(index, piece) == piece
    missing = [i for i in range(count) if i not in first]
    try:
        result = service.complete(file_id, owner_id="o", writer="w")
    except ApiError as err:
        if missing:
            assert err.code == "conflict" and err.extra["missing"] == missing
        else:
            assert err.code == "bad_request" and "sha256 mismatch" in err.message
            assert b"".join(first[i] for i in range(count)) != data
            assert service.store.session(file_id) is None
        return
    assert not missing and result == {"file_id": file_id, "status": "cached"}
    stored = b"".join(service.store.read_chunk(file_id, i) for i in range(count))
    assert stored == data
    assert service.store.status(file_id)["sha256"] == sha  # what the StoreUpload carried
