"""Message contracts survive the wire and refuse what they do not know."""

from __future__ import annotations

import dataclasses

import pytest

from services.common import contracts as c


def _store_upload(**overrides):
    base = dict(upload_id="u1", owner_id="7", owner_name="alice", file_name="a.bin", size=10, sha256="ab" * 32,
                content_type="application/octet-stream", chunk_size=4, chunk_count=3, cache_key="p:upload:u1",
                items=(c.UploadItem("u1-0000", 0, 4, "2026-01-01T00:00:00Z", "a"),
                       c.UploadItem("u1-0001", 4, 6, "2026-01-01T00:00:05Z", "b")),
                created="2026-01-01T00:00:06Z", pool_id="p1", metadata={"k": [1, 2]})
    return c.StoreUpload(**{**base, **overrides})


def test_every_message_round_trips():
    message = _store_upload()
    decoded = c.decode(message.encode())
    assert decoded == message
    assert isinstance(decoded.items[0], c.UploadItem)
    assert message.chunk_key(2) == "p:upload:u1:chunk:2"
    status = c.FileStatusChanged(file_id="f", owner_id="1", status=c.RETRYING, attempt=2)
    assert c.decode(status.encode()) == status
    assert status.key() == "file.status.retrying"


def test_messages_are_frozen_and_carry_no_bytes():
    message = _store_upload()
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.size = 11  # type: ignore[misc]
    for cls in c._REGISTRY.values():
        for f in dataclasses.fields(cls):
            assert "bytes" not in str(f.type) or f.name == "bytes", (cls.__name__, f.name, f.type)


@pytest.mark.parametrize("body", [b"not json", b'{"type": "Nope", "data": {}}', b'{"type": "FileStored"}',
                                  b'{"type": "FileGrouped", "data": {"file_id": "x"}}'])
def test_unknown_or_incomplete_bodies_are_refused(body):
    with pytest.raises(c.UnknownMessage):
        c.decode(body)
