"""An upload outlives its access token: events refused ``unauthorized`` (the token expired before
the keeper renewed it, as with 5-s tokens on a loaded machine) reauth and go on; a login that
ended (the refresh refused) still fails the upload. Found by the issue-11 soak (examples.pool_sim
--soak): uploads failed with "the socket's token has expired ... send reauth"."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest

from client import DropboxClient, DropboxError

from .test_feed_client import FakeSocket, connected
from .test_refresh import FakeFleet, client_on

EXPIRED = {"error": {"code": "unauthorized", "message": "the socket's token has expired; send reauth {token}"}}


class ExpiringSocket(FakeSocket):
    """The gateway's side of an upload: every event is refused while the socket's token is stale."""

    def __init__(self, client: DropboxClient, fleet: FakeFleet, refuse_chunk: int | None = None) -> None:
        super().__init__(client)
        self.fleet = fleet
        self.token = client.token
        self.refuse_chunk = refuse_chunk  # this chunk's first write is refused (expiry mid-upload)
        self.chunks: dict[int, bytes] = {}

    def _stale(self) -> bool:
        return self.token not in self.fleet.valid_access

    def call(self, event: str, data: dict[str, Any], timeout: float = 0) -> dict[str, Any]:
        with self.lock:
            self.calls.append((event, dict(data)))
        if event == "reauth":
            if data["token"] not in self.fleet.valid_access:
                return EXPIRED
            self.token = data["token"]
            return {"ok": True, "expires_in": 900}
        if self._stale():
            return EXPIRED
        if event == "start-transfer":
            missing = [i for i in range(3) if i not in self.chunks]
            return {"file_id": "f1", "chunk_size": 4, **({"missing": missing} if "file_id" in data else {})}
        if event == "complete-upload":
            assert sorted(self.chunks) == [0, 1, 2], self.chunks
            return {"file_id": "f1", "status": "cached"}
        return super().call(event, data, timeout)

    def emit(self, event: str, data: dict[str, Any], callback: Any = None) -> None:
        assert event == "write-chunk"
        with self.lock:
            self.calls.append((event, {"index": data["index"]}))
        if data["index"] == self.refuse_chunk:
            self.refuse_chunk = None
            self.fleet.expire()  # the token expires while the upload runs
        if self._stale():
            callback(EXPIRED)
            return
        self.chunks[data["index"]] = data["data"]
        callback({"file_id": "f1", "index": data["index"], "received": len(data["data"])})


def socket_for(c: DropboxClient, fleet: FakeFleet, **kw: Any) -> ExpiringSocket:
    base = connected(c)  # the client's connect bookkeeping, then the expiring socket in its place
    sock = ExpiringSocket(c, fleet, **kw)
    sock.acks = base.acks
    c.sio = sock  # type: ignore[assignment]
    return sock


def test_an_upload_whose_token_expired_before_it_began_reauths_and_goes_through() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    sock = socket_for(c, fleet)
    fleet.expire()  # the gateway saw the token expire before the client's keeper renewed it
    assert c.upload(io.BytesIO(b"0123456789ab"), file_name="u.bin", sha256=False) == "f1"
    assert fleet.refreshes == 1 and c.token == "a2" and sock.token == "a2"
    assert [d["token"] for d in sock.of("reauth")] == ["a1", "a2"]  # the stale one refused, then the new
    assert b"".join(sock.chunks[i] for i in range(3)) == b"0123456789ab"


def test_an_upload_whose_token_expires_mid_way_resumes_after_the_reauth() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    sock = socket_for(c, fleet, refuse_chunk=1)
    c.window = 1  # one chunk at a time: chunk 0 lands, chunk 1 is refused, then resumed
    assert c.upload(io.BytesIO(b"0123456789ab"), file_name="u.bin", sha256=False) == "f1"
    assert fleet.refreshes == 1 and sock.token == "a2"
    starts = sock.of("start-transfer")
    assert len(starts) == 2 and starts[1].get("file_id") == "f1"  # the resume asked what was missing
    assert b"".join(sock.chunks[i] for i in range(3)) == b"0123456789ab"


def test_an_upload_of_a_login_that_ended_still_fails_unauthorized() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    socket_for(c, fleet)
    fleet.valid_refresh.clear()  # reuse detected elsewhere, or logout: no refresh works any more
    fleet.expire()
    with pytest.raises(DropboxError) as refused:
        c.upload(io.BytesIO(b"0123456789ab"), file_name="u.bin", sha256=False)
    assert refused.value.code == "unauthorized"


def test_a_socket_the_gateway_closed_is_reopened_by_the_keeper(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-socketio does not reconnect after the server's own disconnect (a reauth grace that
    ran out under load): the keeper opens a new socket, with a fresh token. Found by the full soak:
    members stayed disconnected for good."""
    from .test_feed_client import start_keeper, wait_until

    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    first = connected(c)
    opened: list[str | None] = []

    def reopen(wait_timeout: float) -> None:
        opened.append(c.token)
        sock = FakeSocket(c)
        c.sio = sock  # type: ignore[assignment]
        c._on_connect()

    monkeypatch.setattr(c, "_open", reopen)
    start_keeper(c)
    try:
        time.sleep(0.5)
        c._on_disconnect("transport close")  # python-socketio reconnects by itself: not the keeper
        time.sleep(0.6)
        assert opened == []
        c._on_connect()
        c.token_expires_at = time.time() - 1  # the token went stale: why the gateway cut the socket
        c._on_disconnect("server disconnect")
        wait_until(lambda: len(opened) == 1, 5)
        assert opened == ["a2"] and fleet.refreshes == 1 and c.connected and c.sio is not first
    finally:
        c.disconnect()
