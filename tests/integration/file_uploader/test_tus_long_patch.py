"""The tus door on real Redis (found by review): a slow but live PATCH keeps its writer lock."""

from __future__ import annotations

import io
import os
import time

import redis

from services.common.authclient import Identity

from .helpers import StaticAuth

CHUNK = 64 * 1024
V = {"Tus-Resumable": "1.0.0", "Authorization": "Bearer tok"}


def auth() -> StaticAuth:
    return StaticAuth({"tok": Identity(user_id="u1", user_name="alice", role="user", pools={})})


class SlowBody(io.RawIOBase):
    """A live but slow client: one chunk every ``pause`` seconds."""

    def __init__(self, data: bytes, pause: float) -> None:
        self.data, self.pos, self.pause = data, 0, pause

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else len(self.data) + pos)
        return self.pos

    def readinto(self, b) -> int:  # noqa: ANN001
        if self.pos >= len(self.data):
            return 0
        if self.pos and self.pos % CHUNK == 0:
            time.sleep(self.pause)
        n = min(len(b), CHUNK - self.pos % CHUNK)
        piece = self.data[self.pos:self.pos + n]
        b[:len(piece)] = piece
        self.pos += len(piece)
        return len(piece)


def test_a_slow_but_live_patch_keeps_its_writer_lock(make_uploader, rclient: redis.Redis, monkeypatch) -> None:
    """Every chunk arrives well within WRITER_LOCK_SECONDS of the previous one (as with the socket
    door, whose write_chunk refreshes the lock per chunk); the PATCH as a whole lasts longer."""
    _, client, uploads = make_uploader(auth(), CHUNK_SIZE=str(CHUNK), WRITER_LOCK_SECONDS="1")
    monkeypatch.setattr(uploads.broker, "publish", lambda m, **_: None)
    data = os.urandom(4 * CHUNK)
    response = client.post("/files/", headers={**V, "Upload-Length": str(len(data)),
                                               "Upload-Metadata": "filename ZGF0YS5iaW4="})
    file_id = response.headers["Location"].rsplit("/", 1)[1]
    response = client.patch(f"/files/{file_id}", input_stream=SlowBody(data, 0.6), headers={
        **V, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
        "Content-Length": str(len(data))})
    assert response.status_code == 204, (response.status_code, response.get_json())

