"""A hostile WebSocket client, written from RFC 6455 with the standard library.

The probes of ``tests/e2e/test_hostile*.py`` and ``bench/hostile_bench.py``
need to send what no well-behaved client library would: a text message whose
frames never end (no FIN), or a Socket.IO packet that announces more binary
attachments than it will ever be allowed. ``Flood`` drives many such sockets
from one thread with a selector, so 1,000 of them cost one thread, not 1,000.

Everything here is bounded: each socket sends at most ``per_socket_bytes``,
each run stops at ``deadline`` seconds, and a socket the server closed is
counted and dropped.
"""

from __future__ import annotations

import base64
import json
import os
import select
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TEXT, BINARY, CONTINUATION, CLOSE = 0x1, 0x2, 0x0, 0x8
HANDSHAKE_LIMIT = 64 * 1024  # bytes of a handshake answer we read before giving up on it
SERVER_FRAME_LIMIT = 1 << 20  # the largest server frame a probe reads; a larger one is an error
TEXTS_KEPT = 1000  # server text messages poll() keeps (the newest): a probe reads a few


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client frame (clients must mask, RFC 6455 5.3)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
    return head + mask + body


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[:len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


class RawWebSocket:
    """A client socket after the upgrade, with what the server sent past the handshake kept."""

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self._buffer = buffered
        self.closed = False  # the server closed (a close frame, EOF or a reset)
        self.close_code: int | None = None  # the code of the server's close frame (1005: none given)
        self.sent = 0  # payload bytes sent through send_frame
        self.texts: list[str] = []  # text messages poll() read, the newest TEXTS_KEPT

    def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def read_message(self) -> tuple[int, bytes]:
        """One whole (unfragmented) server frame: (opcode, payload). Servers do not mask."""
        b0, b1 = self._exactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._exactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._exactly(8))[0]
        if n > 1 << 20:
            raise ConnectionError(f"server frame of {n} bytes: not what a probe expects")
        return b0 & 0x0F, self._exactly(n)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> bool:
        """Send one frame; False once the server has closed the connection."""
        if self.closed:
            return False
        try:
            self.sock.sendall(frame(opcode, payload, fin=fin))
        except OSError:  # reset or broken pipe: the server closed
            self.closed = True
            return False
        self.sent += len(payload)
        return True

    def poll(self, timeout: float = 0.0) -> bool:
        """Read what the server sent within ``timeout`` seconds; True once it closed (a close
        frame, EOF or a reset). Text messages go to ``texts``, a close frame's code to ``close_code``."""
        self._frames()  # what came with the handshake or after read_message
        while not self.closed:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return False
            try:
                piece = self.sock.recv(65536)
            except OSError:
                piece = b""
            if not piece:
                self.closed = True
                break
            self._buffer += piece
            self._frames()
        return self.closed

    def _frames(self) -> None:
        while len(self._buffer) >= 2 and not self.closed:
            opcode, n, start = self._buffer[0] & 0x0F, self._buffer[1] & 0x7F, 2
            if n == 126:
                if len(self._buffer) < 4:
                    return
                n, start = struct.unpack("!H", self._buffer[2:4])[0], 4
            elif n == 127:
                if len(self._buffer) < 10:
                    return
                n, start = struct.unpack("!Q", self._buffer[2:10])[0], 10
            if n > SERVER_FRAME_LIMIT:
                raise ConnectionError(f"server frame of {n} bytes: not what a probe expects")
            if len(self._buffer) < start + n:
                return
            payload, self._buffer = self._buffer[start:start + n], self._buffer[start + n:]
            if opcode == TEXT:
                self.texts = [*self.texts[-(TEXTS_KEPT - 1):], payload.decode(errors="replace")]
            elif opcode == CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.closed = True

    def close(self) -> None:
        self.sock.close()


def open_websocket(gateway_url: str, *, timeout: float = 10.0) -> RawWebSocket:
    """A raw socket upgraded to engine.io's WebSocket transport (no Socket.IO connect yet)."""
    parts = urlsplit(gateway_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sock = socket.create_connection((host, port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk or len(answer) > HANDSHAKE_LIMIT:
            sock.close()
            raise ConnectionError(f"WebSocket handshake failed: {answer[:200]!r}")
        answer += chunk
    head, rest = answer.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        sock.close()
        raise ConnectionError(f"WebSocket handshake refused: {answer[:200]!r}")
    return RawWebSocket(sock, rest)  # the server may already have sent engine.io's open packet


def socketio_connect(gateway_url: str, token: str, *, timeout: float = 10.0) -> RawWebSocket:
    """A raw socket that completed engine.io's open and Socket.IO's connect with ``token``."""
    ws = open_websocket(gateway_url, timeout=timeout)
    opcode, payload = ws.read_message()  # engine.io "0{...}" open packet
    if opcode != TEXT or not payload.startswith(b"0"):
        raise ConnectionError(f"no engine.io open packet: {payload[:100]!r}")
    ws.send(frame(TEXT, b"40" + json.dumps({"token": token}).encode()))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        opcode, payload = ws.read_message()
        if payload.startswith(b"40"):
            return ws
        if payload.startswith(b"44"):
            raise ConnectionError(f"Socket.IO connect refused: {payload[:200]!r}")
        if payload == b"2":  # engine.io ping
            ws.send(frame(TEXT, b"3"))
    raise TimeoutError("no Socket.IO connect answer")


@dataclass
class FloodReport:
    sockets: int = 0
    refused_at_handshake: int = 0
    closed_by_server: int = 0
    still_open: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def flood(sockets: list[socket.socket], first: bytes, following: bytes, *, per_socket_bytes: int,
          deadline: float) -> FloodReport:
    """Send ``first`` then ``following`` again and again on every socket until each has sent
    ``per_socket_bytes``, the server closes it, or ``deadline`` (seconds) passes.

    Non-blocking, one selector: a socket the server stops reading simply stops being writable,
    which is how a server that refuses to buffer pushes back.
    """
    report = FloodReport(sockets=len(sockets))
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, memoryview] = {}
    sent: dict[socket.socket, int] = {}
    for sock in sockets:
        sock.setblocking(False)
        pending[sock] = memoryview(first)
        sent[sock] = 0
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    started = time.monotonic()
    end = started + deadline
    while sel.get_map() and time.monotonic() < end:
        for key, events in sel.select(timeout=0.2):
            if not isinstance(key.fileobj, socket.socket):
                continue
            sock = key.fileobj
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(65536)  # pings or a close frame; a server never sends much here
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    data = b""
                if data is not None and (not data or data[0] & 0x0F == CLOSE):
                    report.closed_by_server += 1
                    sel.unregister(sock)
                    sock.close()
                    continue
            if events & selectors.EVENT_WRITE:
                view = pending[sock]
                try:
                    n = sock.send(view)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    report.closed_by_server += 1
                    sel.unregister(sock)
                    sock.close()
                    continue
                sent[sock] += n
                report.bytes_sent += n
                view = view[n:]
                if not view:
                    if sent[sock] >= per_socket_bytes:
                        sel.modify(sock, selectors.EVENT_READ)  # budget spent: only watch for the close
                        pending[sock] = memoryview(b"")
                        continue
                    view = memoryview(following)
                pending[sock] = view
    report.still_open = len(sel.get_map())
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]
    report.seconds = round(time.monotonic() - started, 2)
    return report


def fragment_flood(gateway_url: str, count: int, *, frame_bytes: int = 64 * 1024,
                   per_socket_bytes: int = 8 << 20, deadline: float = 30.0) -> FloodReport:
    """Issue 10 item 1: ``count`` anonymous sockets each send a text message that never ends."""
    sockets: list[socket.socket] = []
    refused = 0
    for _ in range(count):
        try:
            sockets.append(open_websocket(gateway_url).sock)
        except OSError:
            refused += 1
    payload = b"4" + b"x" * (frame_bytes - 1)  # starts like an engine.io message packet
    report = flood(sockets, frame(TEXT, payload, fin=False), frame(CONTINUATION, b"x" * frame_bytes, fin=False),
                   per_socket_bytes=per_socket_bytes, deadline=deadline)
    report.sockets += refused
    report.refused_at_handshake = refused
    return report


def attachment_flood(gateway_url: str, token: str, *, announced: int = 1_000_000, frame_bytes: int = 256 * 1024,
                     per_socket_bytes: int = 64 << 20, deadline: float = 30.0) -> FloodReport:
    """Issue 10 item 2: an authenticated socket announces ``announced`` binary attachments and
    sends binary messages for them until stopped."""
    sock = socketio_connect(gateway_url, token).sock
    header = f'5{announced}-["alive",{{"_placeholder":true,"num":0}}]'.encode()
    return flood([sock], frame(TEXT, header), frame(BINARY, b"\0" * frame_bytes),
                 per_socket_bytes=per_socket_bytes, deadline=deadline)
