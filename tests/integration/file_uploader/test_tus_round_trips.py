"""What a tus PATCH costs in Redis round trips (real Redis, every command counted at the connection).

A PATCH used to make 10-12 round trips before and around its body (the session, the lock,
slot, quota, every key's expiry, the chunks, the tail's length, ...), and the PATCH that
completed a chunk read the chunk's tail back to write the whole chunk. These pin the budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from services.common import messaging
from services.common.authclient import Identity
from services.file_uploader.app import create_app

from .helpers import StaticAuth, uploader_settings

CHUNK = 64 * 1024
V = {"Tus-Resumable": "1.0.0", "Authorization": "Bearer tok"}


class CountingConnection(redis.Connection):
    sent: list[list[tuple[bytes, ...]]] = []  # one entry per round trip: the commands it carried

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent.append(getattr(self, "_packing", []))
        self._packing = []
        super().send_packed_command(command, check_health)

    @staticmethod
    def _named(args: tuple[Any, ...]) -> tuple[bytes, ...]:
        return tuple(a if isinstance(a, bytes) else str(a).encode() for a in args[:2])  # command, first key

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self._packing = [self._named(args)]
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> list[bytes]:
        commands = list(commands)
        self._packing = [self._named(tuple(c)) for c in commands]
        return super().pack_commands(commands)


@pytest.fixture
def uploader(amqp_url: str, redis_prefix: str) -> Iterator[Any]:
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=CountingConnection,
                                                              host="127.0.0.1", port=6379, db=0))
    broker = messaging.Broker(amqp_url)
    app = create_app(uploader_settings(amqp_url, redis_prefix, CHUNK_SIZE=str(CHUNK)), broker=broker,
                     redis_client=client,
                     auth=StaticAuth({"tok": Identity(user_id="u1", user_name="alice", role="user", pools={})}))
    yield app.test_client()
    broker.close()
    client.close()


def patch(client: Any, file_id: str, offset: int, body: bytes) -> list[list[tuple[bytes, ...]]]:
    CountingConnection.sent = []
    response = client.patch(f"/files/{file_id}", data=body, headers={
        **V, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)})
    assert response.status_code == 204, response.get_json()
    return CountingConnection.sent


def test_a_patch_costs_a_few_round_trips_and_never_reads_its_tail_back(uploader) -> None:
    response = uploader.post("/files/", headers={**V, "Upload-Length": str(3 * CHUNK),
                                                 "Upload-Metadata": "filename ZGF0YS5iaW4="})
    file_id = response.headers["Location"].rsplit("/", 1)[1]
    uploader.application.extensions["deps"].uploads.load.interval = 3600  # measured once (at creation)

    # Inside a chunk: begin (session, lock, slot, quota, expiries, offset), the append, the release.
    assert len(patch(uploader, file_id, 0, b"DATA" + b"x" * 996)) <= 3
    assert len(patch(uploader, file_id, 1000, b"y" * 1000)) <= 3
    # Completing the chunk: the tail is sealed into the chunk in Redis, not read back and rewritten.
    trips = patch(uploader, file_id, 2000, b"z" * (CHUNK - 2000 + 500))
    assert len(trips) <= 4, trips
    tail_reads = [c for trip in trips for c in trip if c[0] in (b"GET", b"GETRANGE") and b":tail:" in c[1]]
    assert tail_reads == []


def test_a_one_patch_file_completes_in_a_few_round_trips(uploader) -> None:
    """A small file's PATCH: begin, the chunk, then completion (expiries, the transition, and after
    the StoreUpload's confirm the published/tombstone/slot update) -- it was about 24."""
    uploader.post("/files/", headers={**V, "Upload-Length": "5000", "Upload-Metadata": "filename ZGF0YS5iaW4="})
    uploader.application.extensions["deps"].uploads.load.interval = 3600  # measured once, by that creation
    CountingConnection.sent = []
    response = uploader.post("/files/", headers={**V, "Upload-Length": "5000",
                                                 "Upload-Metadata": "filename ZGF0YS5iaW4="})
    assert response.status_code == 201
    assert len(CountingConnection.sent) <= 1, CountingConnection.sent  # slot, quota, session, tombstone
    file_id = response.headers["Location"].rsplit("/", 1)[1]
    trips = patch(uploader, file_id, 0, b"DATA" + b"x" * 4996)
    assert len(trips) <= 6, trips
    assert uploader.head(f"/files/{file_id}", headers=V).headers["Upload-Offset"] == "5000"
