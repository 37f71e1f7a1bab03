"""A webhook receiver for staging tests: a real HTTP server on a free loopback port, in a thread.

It answers its first ``fail_first`` requests with 500 (every request with ``always_fail``), then
204, and keeps every request (body, headers, time) for the test to check
the signature and the delays between attempts. At most MAX_KEPT requests are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_KEPT = 1000  # requests kept per receiver
MAX_BODY = 64 * 1024  # a staging webhook body is a small JSON object


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    at: float


@dataclass
class Receiver:
    fail_first: int = 0
    always_fail: bool = False
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
                body = self.rfile.read(length)
                with receiver.lock:
                    if len(receiver.requests) < MAX_KEPT:
                        receiver.requests.append(Received(body, dict(self.headers.items()), time.monotonic()))
                    count = len(receiver.requests)
                failing = receiver.always_fail or count <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def seen(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


def signed(secret: str, received: Received) -> bool:
    expected = hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, received.headers.get("X-Dropbox-Signature", ""))
