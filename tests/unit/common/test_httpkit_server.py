"""httpkit against a real waitress server on a free port: body bounds and SPEC-shaped errors.

waitress answers some requests itself (a body over the server's bound, huge headers,
malformed requests) before Flask sees them; these tests speak raw HTTP to prove that
those answers are SPEC's JSON too, and that a large Content-Length is refused when the
headers arrive, without the body ever being sent.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, jsonify

from services.common import httpkit

SERVER_BOUND = 4096
ROUTE_BOUND = 100


def build_app(calls: list[str]) -> Flask:
    app = Flask("t")
    httpkit.install(app, "t", {})

    @app.post("/echo")
    def echo() -> Any:
        calls.append("echo")
        return jsonify(httpkit.json_body())

    @app.post("/small")
    @httpkit.body_limit(ROUTE_BOUND)
    def small() -> Any:
        calls.append("small")
        from flask import request
        return jsonify({"read": len(request.get_data())})

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("secret detail: password=hunter2")

    return app


class Running:
    """A server run in a thread by our own loop, so that stopping it closes its sockets in
    that same thread (closing them from another thread raced fd reuse across tests)."""

    def __init__(self, srv: Any) -> None:
        self.srv = srv
        self.port = int(srv.effective_port)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        from waitress import wasyncore

        while not self.stopped.is_set():
            wasyncore.loop(timeout=0.05, map=self.srv._map, count=1)
        wasyncore.close_all(self.srv._map)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.srv.task_dispatcher.shutdown(timeout=2)


@pytest.fixture
def server() -> Iterator[tuple[int, list[str]]]:
    calls: list[str] = []
    running = Running(httpkit.make_server(build_app(calls), "127.0.0.1", 0, threads=2, max_body=SERVER_BOUND))
    try:
        yield running.port, calls
    finally:
        running.stop()


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw``, read one response (status, headers, body) until the server closes or it is complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
        return status, headers, body


def spec_error(headers: dict[str, str], body: bytes) -> dict[str, str]:
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert set(error) >= {"code", "message"}
    return error


def test_content_length_over_the_server_bound_is_refused_before_the_body(server) -> None:
    port, calls = server
    # 10 MiB announced, not one byte of it sent: the answer comes from the headers alone.
    status, headers, body = exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                           b"Content-Length: 10485760\r\n\r\n")
    assert status == 413
    assert spec_error(headers, body)["code"] == "too_large"
    assert calls == []


def test_the_server_bound_itself_is_allowed(server) -> None:
    port, calls = server
    payload = json.dumps({"k": "x" * (SERVER_BOUND - 20)}).encode()
    payload += b" " * (SERVER_BOUND - len(payload))
    assert len(payload) == SERVER_BOUND
    raw = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
           b"Content-Length: %d\r\n\r\n" % len(payload)) + payload
    status, _, _ = exchange(port, raw)
    # Past the server (not 413 from waitress); the JSON route's own 64 KiB bound allows it.
    assert status == 200
    assert calls == ["echo"]


def test_a_chunked_body_growing_past_the_bound_is_refused(server) -> None:
    port, calls = server
    chunk = b"x" * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
    status, headers, body = exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    assert status == 413
    assert spec_error(headers, body)["code"] == "too_large"
    assert calls == []


def test_huge_headers_and_garbage_are_answered_in_spec_shape(server) -> None:
    port, _ = server
    status, headers, body = exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n")
    assert status == 431
    assert spec_error(headers, body)["code"] == "too_large"
    status, headers, body = exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    assert status == 400
    assert spec_error(headers, body)["code"] == "bad_request"


def test_a_route_bound_refuses_by_content_length_without_reading(server) -> None:
    port, calls = server
    # Within the server's bound, over the route's: 413 from Flask, the view never runs.
    raw = (b"POST /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % (ROUTE_BOUND + 1)
           + b"y" * (ROUTE_BOUND + 1))
    status, headers, body = exchange(port, raw)
    assert status == 413
    assert spec_error(headers, body)["code"] == "too_large"
    assert calls == []
    raw = (b"POST /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % ROUTE_BOUND
           + b"y" * ROUTE_BOUND)
    status, _, body = exchange(port, raw)
    assert status == 200 and json.loads(body) == {"read": ROUTE_BOUND}


def test_unexpected_errors_say_nothing_of_their_cause(server) -> None:
    port, _ = server
    status, headers, body = exchange(port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 500
    error = spec_error(headers, body)
    assert error["code"] == "internal_error"
    assert "hunter2" not in body.decode() and "RuntimeError" not in body.decode()


# --- the same bounds in Flask alone (no server): json_body and body_limit ---------------

def test_json_body_bound_and_nesting_in_flask() -> None:
    calls: list[str] = []
    client = build_app(calls).test_client()
    big = json.dumps({"k": "x" * httpkit.JSON_BODY_LIMIT})
    response = client.post("/echo", data=big, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_large"
    response = client.post("/echo", data="[" * 50_000, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request"
    response = client.post("/echo", json={"a": 1})
    assert response.status_code == 200 and response.get_json() == {"a": 1}
    assert calls == ["echo", "echo", "echo"]


def test_body_limit_cuts_a_body_without_length_while_reading() -> None:
    calls: list[str] = []
    app = build_app(calls)

    # No Content-Length, a stream the server says is terminated (as a de-chunking server does).
    response = app.test_client().post("/small", input_stream=io.BytesIO(b"z" * (ROUTE_BOUND * 3)),
                                      environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_5xx_http_errors_answer_a_generic_message() -> None:
    from werkzeug.exceptions import InternalServerError, ServiceUnavailable

    app = Flask("t")
    httpkit.install(app, "t", {})

    @app.get("/a")
    def a() -> Any:
        raise InternalServerError(description="query failed on db-7.internal:5432")

    @app.get("/b")
    def b() -> Any:
        raise ServiceUnavailable(description="redis at 10.0.0.5 refused")

    client = app.test_client()
    for path, status in (("/a", 500), ("/b", 503)):
        response = client.get(path)
        assert response.status_code == status
        error = response.get_json()["error"]
        assert error["message"] == httpkit.GENERIC_5XX
        assert "db-7" not in response.get_data(as_text=True) and "10.0.0.5" not in response.get_data(as_text=True)
    # 4xx descriptions are ours and useful: kept.
    assert client.get("/nope").get_json()["error"]["code"] == "not_found"


def test_reads_are_large_only_inside_a_content_length_body(monkeypatch) -> None:
    """256 KiB reads for a Content-Length body (never past its end); waitress's 8 KiB for headers,
    chunked bodies and what follows a body. Large reads of a chunked body held the loop thread
    for seconds (waitress's chunked parser is quadratic in the read), and a large read of tiny
    pipelined requests parsed thousands at once (review of the read-size change)."""
    from waitress import wasyncore

    sizes: list[int] = []
    reads: list[tuple[int, int]] = []  # (asked for, got), in order
    real_recv = wasyncore.dispatcher.recv

    def spy(self: Any, buffer_size: int) -> bytes:
        data = bytes(real_recv(self, buffer_size))
        sizes.append(buffer_size)
        reads.append((buffer_size, len(data)))
        return data

    monkeypatch.setattr(wasyncore.dispatcher, "recv", spy)
    app = Flask("t")
    httpkit.install(app, "t", {})

    @app.post("/sink")
    def sink() -> Any:
        from flask import request
        return jsonify({"read": len(request.get_data())})

    running = Running(httpkit.make_server(app, "127.0.0.1", 0, threads=2, max_body=4 << 20))
    try:
        body = b"x" * (1 << 20) + b"y" * 1000  # 1 MiB and a tail shorter than a large read
        raw = (b"POST /sink HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status, _, answer = exchange(running.port, raw)
        assert status == 200 and json.loads(answer)["read"] == len(body)
        big = [s for s in sizes if s > httpkit.SMALL_READ]
        assert big and max(big) <= httpkit.ServerLimits().recv_bytes
        taken = 0
        for asked, got in reads:
            if asked > httpkit.SMALL_READ:
                assert asked <= len(raw) - taken  # never past the body's end
            taken += got
        sizes.clear()
        chunked = b"1\r\nx\r\n" * 20_000 + b"0\r\n\r\n"
        status, _, answer = exchange(running.port, b"POST /sink HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        assert status == 200 and json.loads(answer)["read"] == 20_000
        assert sizes and set(sizes) == {httpkit.SMALL_READ}
    finally:
        running.stop()
