"""The tus door against the real Redis cache: PATCHes ending mid-chunk, alternating between two
file_uploader replicas (two apps on one Redis prefix), are resumed from Redis alone."""

from __future__ import annotations

import hashlib
import os

import redis

from services.common.authclient import Identity
from services.common.contracts import StoreUpload

from .helpers import StaticAuth

CHUNK = 64 * 1024  # the smallest CHUNK_SIZE: a few hundred KiB cross several chunks
V = {"Tus-Resumable": "1.0.0", "Authorization": "Bearer tok"}


def auth() -> StaticAuth:
    return StaticAuth({"tok": Identity(user_id="u1", user_name="alice", role="user", pools={})})


def test_patches_across_two_replicas_build_the_file(make_uploader, rclient: redis.Redis, redis_prefix: str,
                                                   monkeypatch) -> None:
    published: list[StoreUpload] = []
    _, one, uploads_one = make_uploader(auth(), CHUNK_SIZE=str(CHUNK))
    _, two, _ = make_uploader(auth(), CHUNK_SIZE=str(CHUNK))
    monkeypatch.setattr(uploads_one.broker, "publish", lambda m, **_: published.append(m))
    monkeypatch.setattr(two.application.extensions["deps"].uploads.broker, "publish",
                        lambda m, **_: published.append(m))
    data = os.urandom(3 * CHUNK + 1234)
    response = one.post("/files/", headers={**V, "Upload-Length": str(len(data)),
                                            "Upload-Metadata": "filename ZGF0YS5iaW4="})
    assert response.status_code == 201, response.get_json()
    file_id = response.headers["Location"].rsplit("/", 1)[1]
    offset = 0
    sizes = [1000, CHUNK, 70_000, CHUNK - 5, len(data)]
    for turn, size in enumerate(sizes):
        client = (one, two)[turn % 2]
        piece = data[offset:offset + size]
        response = client.patch(f"/files/{file_id}", data=piece, headers={
            **V, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)})
        assert response.status_code == 204, response.get_json()
        offset += len(piece)
        assert int(response.headers["Upload-Offset"]) == offset
        if offset < len(data):
            other = (two, one)[turn % 2]
            assert other.head(f"/files/{file_id}", headers=V).headers["Upload-Offset"] == str(offset)
        if offset == len(data):
            break
    [command] = [m for m in published if isinstance(m, StoreUpload)]
    assert command.sha256 == hashlib.sha256(data).hexdigest()
    chunks = [rclient.get(command.chunk_key(i)) for i in range(command.chunk_count)]
    assert b"".join(c or b"" for c in chunks) == data
    assert rclient.keys(f"{command.cache_key}:tail:*") == []  # each chunk's write took its tail


def test_termination_leaves_no_tail(make_uploader, rclient: redis.Redis) -> None:
    _, client, _ = make_uploader(auth(), CHUNK_SIZE=str(CHUNK))
    response = client.post("/files/", headers={**V, "Upload-Length": str(2 * CHUNK),
                                               "Upload-Metadata": "filename ZGF0YS5iaW4="})
    file_id = response.headers["Location"].rsplit("/", 1)[1]
    client.patch(f"/files/{file_id}", data=b"x" * (CHUNK + 10), headers={
        **V, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    cache_key = client.application.extensions["deps"].uploads.store.cache_key(file_id)
    assert rclient.get(f"{cache_key}:tail:1") == b"x" * 10
    assert client.delete(f"/files/{file_id}", headers=V).status_code == 204
    assert rclient.keys(f"{cache_key}*") == [f"{cache_key}:status".encode()]
