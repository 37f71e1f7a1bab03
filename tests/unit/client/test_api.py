"""The client library's local logic: event collection, dedup, waits, errors, CLI parsing."""

from __future__ import annotations

import hashlib
import io
import threading

import pytest

from client import DropboxClient, DropboxError, UploadFailed, wsaccel_active
from client.__main__ import _safe_name, parser
from client.api import sha256_of


def make() -> DropboxClient:
    # URLs given: nothing is fetched from a gateway.
    return DropboxClient("http://127.0.0.1:1", auth_url="http://a", fsm_url="http://f", aggregator_url="http://g")


def test_websocket_client_uses_wsaccel() -> None:
    assert wsaccel_active()


def test_error_from_body() -> None:
    err = DropboxError.from_body({"error": {"code": "overloaded", "message": "busy", "retry_after": 3}}, 429)
    assert (err.code, err.message, err.retry_after) == ("overloaded", "busy", 3.0)
    assert DropboxError.from_body("garbage", 500).code == "error"


def test_sha256_streams_and_rewinds() -> None:
    data = b"x" * (3 * 1024 * 1024 + 7)
    f = io.BytesIO(data)
    f.seek(5)
    assert sha256_of(f) == hashlib.sha256(data).hexdigest()
    assert f.tell() == 0


def test_pool_results_are_deduplicated_and_queued_per_pool() -> None:
    c = make()
    for rid, pool in (("r1", "p1"), ("r2", "p2"), ("r1", "p1"), ("r3", "p1")):
        c._on_pool_result({"result_id": rid, "pool_id": pool})
    c._on_pool_result("junk")
    assert [r["result_id"] for r in c.results_received] == ["r1", "r2", "r3"]
    assert c.duplicate_results == 1
    assert c.wait_result("p1", 0.1)["result_id"] == "r1"
    assert c.wait_result("p1", 0.1)["result_id"] == "r3"
    with pytest.raises(TimeoutError):
        c.wait_result("p1", 0.05)


def test_wait_result_wakes_on_event() -> None:
    c = make()
    threading.Timer(0.05, c._on_pool_result, args=({"result_id": "r9", "pool_id": "p"},)).start()
    assert c.wait_result("p", 5)["result_id"] == "r9"


def test_wait_status() -> None:
    c = make()
    c._on_file_status({"file_id": "f1", "status": "cached"})
    assert c.wait_status("f1", "cached", 0.1)["status"] == "cached"
    later = {"file_id": "f1", "status": "uploaded_successfully"}
    threading.Timer(0.05, c._on_file_status, args=(later,)).start()
    assert c.wait_status("f1", "uploaded_successfully", 5)["status"] == "uploaded_successfully"
    # a later status satisfies an earlier wait
    c._on_file_status({"file_id": "f2", "status": "uploaded_successfully"})
    assert c.wait_status("f2", "cached", 0.1)["status"] == "uploaded_successfully"
    c._on_file_status({"file_id": "f3", "status": "retrying", "attempt": 2})
    c._on_file_status({"file_id": "f3", "status": "upload_failed", "reason": "store down"})
    with pytest.raises(UploadFailed):
        c.wait_status("f3", "uploaded_successfully", 0.1)
    assert c.wait_status("f3", "upload_failed", 0.1)["reason"] == "store down"
    with pytest.raises(TimeoutError):
        c.wait_status("nope", "cached", 0.05, check_history=False)


def test_calls_need_a_connection_and_a_token() -> None:
    c = make()
    with pytest.raises(DropboxError) as info:
        c.call("alive")
    assert info.value.code == "not_connected"
    with pytest.raises(DropboxError) as info:
        c.connect()
    assert info.value.code == "unauthorized"


def test_cli_parsing_and_safe_names() -> None:
    args = parser().parse_args(["--gateway", "http://g:1", "upload", "f.bin", "--pool", "p1", "--timestamp",
                                "2024-01-01T00:00:00Z"])
    assert (args.command, args.file, args.pool, args.gateway) == ("upload", "f.bin", "p1", "http://g:1")
    args = parser().parse_args(["listen", "p1", "--out", "d", "--count", "2"])
    assert (args.pool, args.out, args.count) == ("p1", "d", 2)
    assert _safe_name("../../etc/passwd", "r1") == "passwd"
    assert _safe_name("..", "r1") == "r1"
    assert _safe_name("", "r1") == "r1"


class _Answer:
    def __init__(self, status: int, body: dict | None = None) -> None:
        self.status_code = status
        self._body = body or {}

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(self.status_code)

    def json(self) -> dict:
        return self._body


def test_without_config_json_every_service_is_on_the_gateway_origin() -> None:
    # Behind the production ingress /config.json is not routed: 404 means "all on this origin".
    c = DropboxClient("https://dropbox.example.com/")
    c.http.get = lambda url, timeout: _Answer(404)  # type: ignore[method-assign]
    assert (c.auth_url, c.fsm_url, c.aggregator_url) == ("https://dropbox.example.com",) * 3
    served = DropboxClient("http://127.0.0.1:1")
    served.http.get = lambda url, timeout: _Answer(200, {"auth_url": "http://a:1"})  # type: ignore[method-assign]
    assert served.auth_url == "http://a:1"
    broken = DropboxClient("http://127.0.0.1:1")
    broken.http.get = lambda url, timeout: _Answer(503)  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        _ = broken.auth_url
