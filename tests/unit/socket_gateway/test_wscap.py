"""The whole-message cap on eventlet's WebSocket assembly (wsfast.CappedMessage), over a socketpair."""

from __future__ import annotations

import functools
import socket
import struct

import pytest

from services.socket_gateway import wsfast

MASK = b"\x11\x22\x33\x44"


# eventlet is imported when a test runs, not at collection (see test_wsfast.py: it hangs the browser suite).
@functools.cache
def _eventlet_ws():
    from eventlet.websocket import FailedConnectionError, RFC6455WebSocket

    return RFC6455WebSocket, FailedConnectionError


def frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + masked


def websocket(budget: wsfast.AssemblyBudget, max_frame_length: int, max_text: int):
    ws_class, failed = _eventlet_ws()
    capped = wsfast.message_class(ws_class.Message, budget, max_text, failed)
    server, client = socket.socketpair()
    server.settimeout(5)  # eventlet's own class would wait for FIN forever: fail instead of hanging
    ws = type("CappedWS", (ws_class,), {"Message": capped})(server, {}, max_frame_length=max_frame_length)
    return ws, client


def close_code(client: socket.socket) -> int:
    client.settimeout(5)
    data = b""
    while len(data) < 4:
        piece = client.recv(64)
        if not piece:
            break
        data += piece
    assert data[0] == 0x88, data  # a close frame
    return struct.unpack("!H", data[2:4])[0]


def test_a_fragmented_message_within_the_cap_is_assembled() -> None:
    budget = wsfast.AssemblyBudget(1 << 20)
    ws, client = websocket(budget, 1000, 500)
    client.sendall(frame(1, b"hello", False) + frame(0, b"", False) + frame(0, b" world", True))
    assert ws.wait() == "hello world"
    client.sendall(frame(2, b"\x00" * 300, False) + frame(0, b"\x01" * 300, True))
    assert ws.wait() == b"\x00" * 300 + b"\x01" * 300  # binary: up to max_frame_length, past the text cap
    assert budget.used == 0


@pytest.mark.parametrize("opcode,cap", [(1, 500), (2, 1000)])
def test_fragments_beyond_the_cap_close_with_1009(opcode: int, cap: int) -> None:
    budget = wsfast.AssemblyBudget(1 << 20)
    ws, client = websocket(budget, 1000, 500)
    # Each frame is far below max_frame_length: eventlet's per-frame check alone lets them all in.
    frames = frame(opcode, b"a" * 100, False) + b"".join(frame(0, b"a" * 100, False) for _ in range(20))
    client.sendall(frames)
    assert ws.wait() is None
    assert close_code(client) == 1009
    assert budget.used == 0


def test_the_process_budget_bounds_all_sockets_together() -> None:
    ws_class, failed = _eventlet_ws()
    budget = wsfast.AssemblyBudget(1000)
    capped = wsfast.message_class(ws_class.Message, budget, 10_000, failed)
    first, second = capped(2, 10_000), capped(2, 10_000)
    first.push(b"x" * 600)
    with pytest.raises(failed) as refused:
        second.push(b"y" * 600)
    assert refused.value.status == 1013 and budget.used == 600 and budget.refused == 1
    del first  # the socket went away mid-message: its bytes go back
    assert budget.used == 0
    second.push(b"y" * 600, final=True)
    assert second.getvalue() == b"y" * 600 and budget.used == 0


def test_a_message_keeps_one_buffer_not_a_piece_per_frame() -> None:
    ws_class, failed = _eventlet_ws()
    msg = wsfast.message_class(ws_class.Message, wsfast.AssemblyBudget(1 << 20), 1 << 20, failed)(2, 1 << 20)
    for _ in range(1000):
        msg.push(b"z")  # one-byte frames: ~40 bytes each as eventlet's list of bytes objects
    assert isinstance(msg.data, bytearray) and len(msg.data) == 1000


def test_install_patches_eventlet_once() -> None:
    ws_class, _failed = _eventlet_ws()
    original = ws_class.Message
    try:
        budget = wsfast.install_message_cap(4096, 1 << 20)
        assert ws_class.Message is not original and issubclass(ws_class.Message, original)
        assert wsfast.install_message_cap(2048, 2 << 20) is budget and budget.limit == 2 << 20
        assert ws_class.Message.settings["max_text"] == 2048
    finally:
        ws_class.Message = original
        wsfast._CAP_INSTALLED.clear()
