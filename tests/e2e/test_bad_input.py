"""Issue 2 bad input: every case answers SPEC's error shape and stores nothing."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import jwt
import pytest
import redis
import requests
import socketio

from services.common.settings import DEV_SECRETS

from .helpers import RawSocket, assert_error, bearer, signup, unique_name

pytestmark = pytest.mark.e2e


def _redis_keys(fleet, file_id: str) -> list[bytes]:
    """The upload's session and chunk keys. The small `:status` tombstone (owner, final
    status; it expires by itself) is what keeps a repeated request idempotent, not data."""
    client = redis.Redis.from_url(fleet.env["REDIS_URL"])
    try:
        return [k for k in client.scan_iter(f"{fleet.env['REDIS_PREFIX']}:upload:{file_id}*")
                if not k.endswith(b":status")]
    finally:
        client.close()


def _history_ids(sock: RawSocket) -> set[str]:
    return {f["file_id"] for f in sock.call("get-history", {})["files"]}


@pytest.fixture
def user(fleet):
    return signup(fleet.urls["auth"])


@pytest.fixture
def sock(fleet, user):
    s = RawSocket(fleet.gateway, user["access_token"])
    yield s
    s.close()


def test_wrong_password_and_unknown_user_get_the_same_401(fleet, user):
    auth = fleet.urls["auth"]
    wrong = requests.put(f"{auth}/auth/login/{user['user_name']}", json={"password": "not-the-password"}, timeout=10)
    unknown = requests.put(f"{auth}/auth/login/{unique_name('ghost')}", json={"password": "whatever-123"}, timeout=10)
    assert assert_error(wrong, 401)["message"] == assert_error(unknown, 401)["message"]


def _refused(gateway: str, token: str) -> bool:
    client = socketio.Client(reconnection=False)
    try:
        client.connect(gateway, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        return True
    client.disconnect()
    return False


def test_expired_forged_and_revoked_tokens_are_refused(fleet, user):
    auth, fsm = fleet.urls["auth"], fleet.urls["file_service_manager"]
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    expired = jwt.encode({**claims, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600,
                          "jti": uuid.uuid4().hex}, DEV_SECRETS["JWT_SECRET"], algorithm="HS256")
    forged = jwt.encode({**claims, "role": "admin"}, "not-the-secret-" * 3, algorithm="HS256")
    for token in (expired, forged, "garbage"):
        assert _refused(fleet.gateway, token)
        assert_error(requests.get(f"{auth}/auth/validate", headers=bearer(token), timeout=10), 401)
        assert_error(requests.get(f"{fsm}/files", headers=bearer(token), timeout=10), 401)

    # revoked: a connected socket is disconnected, and the token is refused everywhere
    live = RawSocket(fleet.gateway, user["access_token"])
    try:
        out = requests.put(f"{auth}/auth/logout/{user['user_name']}", headers=bearer(user["access_token"]),
                           timeout=10)
        assert out.status_code == 200
        deadline = time.monotonic() + 10
        while live.sio.connected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not live.sio.connected, "the gateway must disconnect sockets of a revoked token"
    finally:
        live.close()
    assert _refused(fleet.gateway, user["access_token"])
    assert_error(requests.get(f"{auth}/auth/validate", headers=bearer(user["access_token"]), timeout=10), 401)
    assert_error(requests.get(f"{fsm}/files", headers=bearer(user["access_token"]), timeout=10), 401)


def test_forbidden_type_by_extension_and_by_content(fleet, sock):
    ack = sock.call("start-transfer", {"file_name": "setup.EXE", "size": 200_000})
    assert ack["error"]["code"] == "forbidden_type"
    # a harmless name, but the bytes are an ELF executable
    payload = b"\x7fELF" + os.urandom(200_000)
    ack = sock.call("start-transfer", {"file_name": "innocent.dat", "size": len(payload)})
    if "error" in ack:
        assert ack["error"]["code"] == "forbidden_type"
    else:
        answer = sock.call("write-chunk", {"file_id": ack["file_id"], "index": 0,
                                           "data": payload[:ack["chunk_size"]]})
        assert answer["error"]["code"] == "forbidden_type", answer
        assert _redis_keys(fleet, ack["file_id"]) == []
        assert ack["file_id"] not in _history_ids(sock)


def test_empty_file_is_refused(sock):
    ack = sock.call("start-transfer", {"file_name": "empty.txt", "size": 0})
    assert ack["error"]["code"] == "empty_file"


def test_bad_chunks_and_incomplete_uploads(fleet, sock):
    data = os.urandom(9_000_000)  # three chunks at the default 4 MiB chunk size
    ack = sock.call("start-transfer", {"file_name": "three-chunks.bin", "size": len(data),
                                       "sha256": hashlib.sha256(data).hexdigest()})
    file_id, chunk = ack["file_id"], ack["chunk_size"]
    assert len(data) > 2 * chunk, "the test needs an upload of several chunks"

    too_big = sock.call("write-chunk", {"file_id": file_id, "index": 0, "data": os.urandom(chunk + 1)})
    assert too_big["error"]["code"] in ("too_large", "bad_request"), too_big
    out_of_range = sock.call("write-chunk", {"file_id": file_id, "index": 999, "data": data[:chunk]})
    assert out_of_range["error"]["code"] == "bad_request", out_of_range
    not_bytes = sock.call("write-chunk", {"file_id": file_id, "index": 0, "data": "a string"})
    assert not_bytes["error"]["code"] == "bad_request", not_bytes

    first = sock.call("write-chunk", {"file_id": file_id, "index": 0, "data": data[:chunk]})
    assert first["received"] >= 1
    again = sock.call("write-chunk", {"file_id": file_id, "index": 0, "data": data[:chunk]})
    assert "error" not in again, "writing the same chunk twice is harmless"

    missing = sock.call("complete-upload", {"file_id": file_id})
    assert missing["error"]["code"] in ("conflict", "bad_request"), missing
    assert file_id not in _history_ids(sock)

    unknown = sock.call("write-chunk", {"file_id": uuid.uuid4().hex, "index": 0, "data": b"x"})
    assert unknown["error"]["code"] == "not_found"


def test_size_mismatch_and_sha256_mismatch_store_nothing(fleet, sock):
    data = os.urandom(300_000)
    # declared size larger than what is sent: the last chunk is short
    ack = sock.call("start-transfer", {"file_name": "short.bin", "size": len(data) + 10})
    answer = sock.call("write-chunk", {"file_id": ack["file_id"], "index": 0, "data": data})
    if "error" not in answer:
        done = sock.call("complete-upload", {"file_id": ack["file_id"]})
        assert "error" in done, done
    else:
        assert answer["error"]["code"] == "bad_request"

    ack = sock.call("start-transfer", {"file_name": "corrupt.bin", "size": len(data), "sha256": "0" * 64})
    assert "error" not in ack
    assert "error" not in sock.call("write-chunk", {"file_id": ack["file_id"], "index": 0, "data": data})
    done = sock.call("complete-upload", {"file_id": ack["file_id"]})
    assert done["error"]["code"] == "bad_request" and "sha256" in done["error"]["message"], done
    time.sleep(1)
    assert ack["file_id"] not in _history_ids(sock)
    assert _redis_keys(fleet, ack["file_id"]) == []


def test_http_upload_shares_the_pipeline_and_checks(fleet, user):
    uploader = fleet.urls["file_uploader"]
    data = os.urandom(150_000)
    r = requests.post(f"{uploader}/file/upload", headers=bearer(user["access_token"]),
                      files={"file": ("report.csv", data)}, timeout=30)
    assert r.status_code == 201, r.text
    file_id = r.json()["file_id"]
    r = requests.post(f"{uploader}/file/upload", headers=bearer(user["access_token"]),
                      files={"file": ("run.sh", b"#!/bin/sh\necho hi\n" + b"x" * 200_000)}, timeout=30)
    assert_error(r, 415, "forbidden_type")
    r = requests.post(f"{uploader}/file/upload", files={"file": ("a.csv", data)}, timeout=30)
    assert_error(r, 401, "unauthorized")

    fsm = fleet.urls["file_service_manager"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        files = requests.get(f"{fsm}/files", headers=bearer(user["access_token"]), timeout=10).json()["files"]
        record = next((f for f in files if f["file_id"] == file_id), None)
        if record and record["status"] == "uploaded_successfully":
            break
        time.sleep(0.3)
    assert record and record["sha256"] == hashlib.sha256(data).hexdigest(), record
