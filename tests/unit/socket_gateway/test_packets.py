"""Socket.IO packets beyond what a client event needs are refused, and bytes in flight are bounded."""

from __future__ import annotations

import pytest
import socketio

from services.socket_gateway import events, sockets
from services.socket_gateway.config import Settings
from services.socket_gateway.deps import Deps
from services.socket_gateway.local import LocalSockets

CHUNK_HEADER = '["write-chunk",{"file_id":"f1","index":0,"data":{"_placeholder":true,"num":0}}]'


def test_one_attachment_is_the_most_a_packet_may_announce() -> None:
    assert events.BoundedPacket(encoded_packet="51-" + CHUNK_HEADER).attachment_count == 1
    for count in ("2", "1000", "9999999999"):
        with pytest.raises(events.PacketRefused):
            events.BoundedPacket(encoded_packet=f"5{count}-" + CHUNK_HEADER)
    with pytest.raises(events.PacketRefused):  # a binary ack is held the same way
        events.BoundedPacket(encoded_packet="62-[{}]")


def test_a_binary_packets_header_is_small() -> None:
    big = '["write-chunk",{"file_id":"f1","pad":"' + "x" * 5000 + '","data":{"_placeholder":true,"num":0}}]'
    with pytest.raises(events.PacketRefused):
        events.BoundedPacket(encoded_packet="51-" + big)
    # A text event of that size (start-transfer with items) is not held waiting: it is let through.
    assert events.BoundedPacket(encoded_packet="2" + big.replace('{"_placeholder":true,"num":0}', "1")).data


class Recorder:
    def __init__(self) -> None:
        self.disconnected: list[str] = []

    def disconnect(self, eio_sid: str) -> None:
        self.disconnected.append(eio_sid)


@pytest.fixture
def server() -> events.GatewayServer:
    made = events.server_for(Settings.from_env({}), socketio.Manager(), async_mode="threading")
    assert isinstance(made, events.GatewayServer)
    made.eio.disconnect = Recorder().disconnect  # type: ignore[method-assign]
    return made


@pytest.mark.parametrize("message", ["5999999999-" + CHUNK_HEADER, '2["alive", {', b"\x00\x01 bytes with no packet"])
def test_a_refused_or_malformed_packet_disconnects_the_client(server: events.GatewayServer, message) -> None:
    server._handle_eio_message("eio-1", message)
    assert server.eio.disconnect.__self__.disconnected == ["eio-1"]  # type: ignore[attr-defined]
    assert "eio-1" not in server._binary_packet


def test_websocket_is_the_only_transport(server: events.GatewayServer) -> None:
    # A long-polling POST body would be read whole, outside the WebSocket assembly budget.
    assert server.eio.transports == ["websocket"]


def test_a_well_formed_packet_is_handled_as_before(server: events.GatewayServer) -> None:
    server._handle_eio_message("eio-1", '2["alive",{}]')  # not connected to the namespace: ignored
    assert server.eio.disconnect.__self__.disconnected == []  # type: ignore[attr-defined]


def test_bytes_in_flight_per_socket_and_in_all() -> None:
    local = LocalSockets(64, 64, max_bytes_per_socket=100, max_bytes=250)
    assert local.enter("a", 500)  # one event is always admitted (the message cap bounds it)
    assert not local.enter("a", 1)  # ... but nothing more while it holds 500
    local.leave("a", 500)
    assert local.enter("a", 60) and not local.enter("a", 60) and local.enter("a", 40)
    assert local.enter("b", 100) and local.enter("c", 50)
    assert not local.enter("d", 1)  # 250 in all
    for sid, size in (("a", 60), ("a", 40), ("b", 100), ("c", 50)):
        local.leave(sid, size)
    assert (local.inflight, local.inflight_bytes, local.inflight_total, local.inflight_bytes_total) == ({}, {}, 0, 0)


def test_payload_bytes_counts_what_a_payload_holds() -> None:
    assert sockets.payload_bytes({"file_id": "f1", "index": 0, "data": b"x" * 1000}) >= 1000
    assert sockets.payload_bytes(None) < 100
    many = {"items": [{"name": "n" * 10}] * 50_000}  # past the walk's bound: estimated, not walked
    assert sockets.payload_bytes(many) > 50_000 * 10


def test_a_chunk_past_the_sockets_bytes_is_overloaded(deps: Deps) -> None:
    sockets.connect(deps, sockets.Session("s1"), {"token": "tok-alice"})
    chunk = b"x" * 1000
    limit = deps.settings.max_inflight_bytes_per_socket
    assert deps.local.enter("s1", limit - 500)  # earlier chunks of this socket still in flight
    ack = events._handler(deps, "write-chunk", events.EVENTS["write-chunk"])(
        "s1", {"file_id": "f1", "index": 0, "data": chunk})
    assert ack["error"]["code"] == "overloaded" and ack["error"]["retry_after"] == 1
    assert deps.uploader.chunks == {}  # type: ignore[attr-defined]
    deps.local.leave("s1", limit - 500)
    ack = events._handler(deps, "write-chunk", events.EVENTS["write-chunk"])(
        "s1", {"file_id": "f1", "index": 0, "data": chunk})
    assert ack["received"] == 1 and deps.local.inflight_bytes_total == 0
