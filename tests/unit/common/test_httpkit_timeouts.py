"""httpkit's waitress limits against a real server on a free port: idle sockets, slow
senders and slow readers cannot take the service away from a normal client."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from flask import Flask, Response

from services.common import httpkit

from .test_httpkit_server import Running, exchange

PIECE = 256 * 1024


def build_app() -> Flask:
    app = Flask("t")
    httpkit.install(app, "t", {})

    @app.get("/big")
    def big() -> Response:
        def pieces() -> Iterator[bytes]:
            for _ in range(256):  # 64 MiB, far past the watermark and loopback's socket buffers
                yield b"\0" * PIECE
        return Response(pieces(), mimetype="application/octet-stream")

    return app


def start(limits: httpkit.ServerLimits, threads: int = 2) -> tuple[Running, int]:
    running = Running(httpkit.make_server(build_app(), "127.0.0.1", 0, threads=threads, limits=limits))
    return running, running.port


def health(port: int, timeout: float) -> float:
    """Seconds a normal GET /health took (it must answer 200)."""
    began = time.monotonic()
    status, _, _ = exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=timeout)
    assert status == 200
    return time.monotonic() - began


def test_many_idle_sockets_from_one_client_leave_the_service_answering() -> None:
    running, port = start(httpkit.ServerLimits())  # the production defaults
    idle: list[socket.socket] = []
    try:
        for _ in range(150):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)  # the loop has accepted them all
        assert health(port, timeout=5) < 3
    finally:
        for sock in idle:
            sock.close()
        running.stop()


def test_headers_that_never_finish_are_dropped() -> None:
    limits = httpkit.ServerLimits(header_timeout=1, cleanup_interval=1, channel_timeout=60)
    running, port = start(limits)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow, \
                socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            began = time.monotonic()
            for sock in (slow, silent):
                assert sock.recv(1024) == b""  # closed by the server, not by our 10 s timeout
            assert time.monotonic() - began < 5
    finally:
        running.stop()


def test_a_reader_that_stops_reading_frees_its_worker() -> None:
    limits = httpkit.ServerLimits(write_stall=1, cleanup_interval=1, outbuf_high_watermark=1024 * 1024)
    running, port = start(limits, threads=1)  # one worker: a pinned worker would block /health
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)  # the worker is writing /big into a buffer nobody drains
            assert health(port, timeout=8) < 6
    finally:
        running.stop()


@pytest.mark.parametrize("field", ["header_timeout", "channel_timeout", "write_stall", "connection_limit"])
def test_defaults_are_bounded(field: str) -> None:
    value = getattr(httpkit.ServerLimits(), field)
    assert 0 < value <= 1000
