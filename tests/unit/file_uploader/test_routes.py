"""file_uploader's routes through Flask's test client, wired by create_app on the in-memory stand-ins."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from datetime import timedelta

import pytest

from services.common import contracts, timeutil
from services.common.contracts import FileStatusChanged, StoreUpload
from services.common.testing import FakeAuth
from services.file_uploader.app import create_app

from .conftest import CHUNK

KEY = "k" * 32
H = {"X-Internal-Key": KEY}


@pytest.fixture
def auth() -> FakeAuth:
    fake = FakeAuth()
    fake.add_user("tok", "9", "bob", pools={"p1": "contributor", "p2": "listener"})
    return fake


@pytest.fixture
def client(settings, cache, broker, auth):
    app = create_app(settings, store=cache, broker=broker, auth=auth)
    assert app.extensions["runtime"].periodic == []  # nothing to sweep in memory
    return app.test_client()


def start(client, **body):
    return client.post("/uploads", json={"owner_id": "7", "owner_name": "alice", "writer": "w1", **body},
                       headers=H)


def put(client, file_id, index, data, owner="7", writer="w1", **headers):
    return client.put(f"/uploads/{file_id}/chunks/{index}", data=data,
                      headers={**H, "X-Owner-Id": owner, "X-Writer": writer, **headers})


def error(response) -> tuple[int, str]:
    body = response.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return response.status_code, body["error"]["code"]


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/uploads"), ("put", "/uploads/abc/chunks/0"), ("post", "/uploads/abc/complete"),
    ("post", "/uploads/abc/release"), ("post", "/uploads/abc/cancel"), ("get", "/uploads/abc"),
    ("put", "/file/update/status"),
])
def test_internal_routes_need_the_key(client, cache, method, path) -> None:
    for headers in ({}, {"X-Internal-Key": "wrong"}):
        response = getattr(client, method)(path, json={"file_name": "a", "size": 1}, headers=headers)
        assert error(response) == (401, "unauthorized")
    assert not cache.uploads


def test_a_whole_upload_through_the_internal_routes(client, cache, broker) -> None:
    data = bytes(range(20))
    r = start(client, file_name="a.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert r.status_code == 201 and r.get_json()["chunk_size"] == CHUNK
    file_id = r.get_json()["file_id"]
    for i in range(3):
        r = put(client, file_id, i, data[i * CHUNK:(i + 1) * CHUNK],
                **{"X-Chunk-Sha256": hashlib.sha256(data[i * CHUNK:(i + 1) * CHUNK]).hexdigest()})
        assert r.get_json() == {"file_id": file_id, "index": i, "received": i + 1}
    r = client.get(f"/uploads/{file_id}?owner_id=7", headers=H)
    assert r.get_json()["missing"] == [] and r.get_json()["received"] == [0, 1, 2]
    r = client.post(f"/uploads/{file_id}/complete", json={"owner_id": "7", "writer": "w1"}, headers=H)
    assert r.get_json() == {"file_id": file_id, "status": "cached"}
    assert [c.sha256 for c in broker.of_type(StoreUpload)] == [hashlib.sha256(data).hexdigest()]


def test_refusals_answer_the_error_shape(client, cache) -> None:
    assert error(start(client, file_name="x.exe", size=4)) == (415, "forbidden_type")
    assert error(start(client, file_name="x.bin", size=0)) == (400, "empty_file")
    assert error(start(client, file_name="x.bin", size=10 ** 9)) == (413, "too_large")
    assert error(client.post("/uploads", data="[1]", content_type="application/json", headers=H)) == (
        400, "bad_request")
    file_id = start(client, file_name="x.bin", size=20).get_json()["file_id"]
    assert error(put(client, file_id, 0, b"a" * (CHUNK + 1))) == (413, "too_large")
    assert error(put(client, file_id, "zero", b"a" * CHUNK)) == (400, "bad_request")
    assert error(put(client, file_id, 0, b"a" * CHUNK, writer="w2")) == (409, "conflict")
    assert error(put(client, file_id, 0, b"a" * CHUNK, owner="8")) == (404, "not_found")
    assert error(put(client, file_id, 0, b"a" * CHUNK, **{"X-Chunk-Sha256": "0" * 64})) == (400, "bad_request")
    r = client.post(f"/uploads/{file_id}/complete", json={"owner_id": "7", "writer": "w1"}, headers=H)
    assert error(r) == (409, "conflict") and r.get_json()["error"]["missing"] == [0, 1, 2]
    assert not cache.uploads[file_id].chunks


def test_overloaded_answers_429_with_retry_after(client, cache, settings) -> None:
    client.application.extensions["deps"].uploads.load.interval = 0
    cache.memory = settings.max_redis_memory_bytes
    r = start(client, file_name="x.bin", size=4)
    assert error(r) == (429, "overloaded")
    assert r.get_json()["error"]["retry_after"] == settings.overload_retry_after
    assert r.headers["Retry-After"] == str(settings.overload_retry_after)


def test_quota_exceeded_answers_413(client, settings) -> None:
    uploads = client.application.extensions["deps"].uploads
    uploads.settings = dataclasses.replace(settings, user_quota_bytes=10)
    r = start(client, file_name="x.bin", size=11)
    assert error(r) == (413, "quota_exceeded") and r.get_json()["error"]["quota"] == 10
    assert start(client, file_name="x.bin", size=10).status_code == 201


def test_release_then_resume_by_the_new_connection(client, cache) -> None:
    file_id = start(client, file_name="x.bin", size=20).get_json()["file_id"]
    put(client, file_id, 0, b"a" * CHUNK)
    r = client.post(f"/uploads/{file_id}/release", json={"writer": "w1"}, headers=H)
    assert r.get_json() == {"file_id": file_id, "released": True}
    r = client.post(f"/uploads/{file_id}/release", json={"writer": "w1"}, headers=H)
    assert r.get_json()["released"] is False
    r = start(client, file_id=file_id, writer="w2")
    assert r.status_code == 200 and r.get_json()["missing"] == [1, 2]
    assert cache.writer(file_id) == "w2"


def test_cancel(client, cache) -> None:
    file_id = start(client, file_name="x.bin", size=20).get_json()["file_id"]
    r = client.post(f"/uploads/{file_id}/cancel", json={"owner_id": "8"}, headers=H)
    assert error(r) == (404, "not_found") and file_id in cache.uploads
    r = client.post(f"/uploads/{file_id}/cancel", json={"owner_id": "7"}, headers=H)
    assert r.get_json() == {"file_id": file_id, "status": "cancelled"} and file_id not in cache.uploads


def test_describe_hides_other_owners_uploads(client) -> None:
    file_id = start(client, file_name="x.bin", size=20).get_json()["file_id"]
    assert error(client.get(f"/uploads/{file_id}?owner_id=8", headers=H)) == (404, "not_found")
    assert client.get(f"/uploads/{file_id}?owner_id=7", headers=H).get_json()["missing"] == [0, 1, 2]


def multipart(client, headers, body=b"hello", name="h.txt", **fields):
    return client.post("/file/upload", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(body), name), **fields})


def test_http_upload_with_a_bearer(client, broker) -> None:
    data = bytes(range(19))
    r = multipart(client, {"Authorization": "Bearer tok"}, body=data, name="dir/h.bin", pool_id="p1",
                  metadata='{"k": 1}')
    assert r.status_code == 201, r.get_json()
    [command] = broker.of_type(StoreUpload)
    assert command.upload_id == r.get_json()["file_id"] and command.file_name == "h.bin"
    assert (command.owner_id, command.owner_name, command.pool_id) == ("9", "bob", "p1")
    assert command.metadata == {"k": 1} and command.sha256 == hashlib.sha256(data).hexdigest()


def test_http_upload_refusals(client, cache, broker, auth) -> None:
    bearer = {"Authorization": "Bearer tok"}
    assert error(multipart(client, {})) == (401, "unauthorized")
    assert error(multipart(client, {"Authorization": "Bearer nope"})) == (401, "unauthorized")
    assert error(multipart(client, bearer, pool_id="p2")) == (403, "forbidden")
    assert error(multipart(client, bearer, body=b"")) == (400, "empty_file")
    assert error(multipart(client, bearer, body=b"MZ\x90\x00rest")) == (415, "forbidden_type")
    assert error(multipart(client, bearer, name="x.exe")) == (415, "forbidden_type")
    assert error(multipart(client, {"X-Internal-Key": KEY})) == (400, "bad_request")  # no user_id
    assert error(multipart(client, {"X-Internal-Key": "wrong"}, user_id="svc")) == (401, "unauthorized")
    assert error(client.post("/file/upload", headers=bearer, data={})) == (400, "bad_request")
    auth.down = True
    assert multipart(client, bearer).status_code == 503
    assert not cache.uploads and not broker.of_type(StoreUpload)
    assert multipart(client, {"X-Internal-Key": KEY}, user_id="svc").status_code == 201


def test_update_status(client, broker) -> None:
    file_id = start(client, file_name="x.bin", size=4).get_json()["file_id"]
    put(client, file_id, 0, b"abcd")
    client.post(f"/uploads/{file_id}/complete", json={"owner_id": "7", "writer": "w1"}, headers=H)
    r = client.put("/file/update/status", json={"file_id": file_id, "status": contracts.UPLOADED}, headers=H)
    assert r.get_json() == {"file_id": file_id, "status": contracts.UPLOADED}
    assert broker.of_type(FileStatusChanged)[-1].status == contracts.UPLOADED
    assert error(client.put("/file/update/status", json={"file_id": file_id, "status": "cached"},
                            headers=H)) == (400, "bad_request")
    assert error(client.put("/file/update/status", json={"file_id": "f" * 32, "status": contracts.FAILED},
                            headers=H)) == (404, "not_found")


def test_internal_routes_accept_the_previous_key_during_a_rotation(settings, cache, broker, auth) -> None:
    old = "o" * 32
    rotating = dataclasses.replace(settings, common=dataclasses.replace(settings.common,
                                                                        internal_api_key_previous=old))
    client = create_app(rotating, store=cache, broker=broker, auth=auth).test_client()
    body = {"owner_id": "7", "owner_name": "alice", "writer": "w1", "file_name": "a", "size": 1}
    assert client.post("/uploads", json=body, headers={"X-Internal-Key": old}).status_code == 201
    assert client.post("/uploads", json={**body, "writer": "w2"}, headers=H).status_code == 201
    assert error(client.post("/uploads", json=body, headers={"X-Internal-Key": "p" * 32})) == (401, "unauthorized")


def test_http_upload_older_than_the_pools_max_late_is_400(client, cache, broker, auth) -> None:
    # create_app wires the pool rule to auth's pool route: p1 accepts updates up to a minute old.
    auth.pools["p1"] = {"pool_id": "p1", "max_late_seconds": 60}
    bearer = {"Authorization": "Bearer tok"}
    old = timeutil.iso(timeutil.now() - timedelta(seconds=120))
    r = multipart(client, bearer, pool_id="p1", timestamp=old)
    assert error(r) == (400, "bad_request") and "max_late_seconds" in r.get_json()["error"]["message"]
    ahead = timeutil.iso(timeutil.now() + timedelta(seconds=400))  # past MAX_CLOCK_SKEW_SECONDS (300)
    assert error(multipart(client, bearer, pool_id="p1", timestamp=ahead)) == (400, "bad_request")
    assert not cache.uploads and not broker.of_type(StoreUpload)
    fresh = timeutil.iso(timeutil.now() - timedelta(seconds=30))
    assert multipart(client, bearer, pool_id="p1", timestamp=fresh).status_code == 201
