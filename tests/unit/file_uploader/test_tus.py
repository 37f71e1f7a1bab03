"""The tus door (/files/) through Flask's test client, on the in-memory cache, broker and auth.

Chunks are 8 bytes (conftest): PATCHes of 3, 5 and 13 bytes end mid-chunk, so the
partial tail is exercised on every test that appends.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import timedelta

import pytest

from services.common import contracts, timeutil
from services.common.contracts import FileStatusChanged, StoreUpload
from services.common.testing import FakeAuth
from services.file_uploader import tus
from services.file_uploader.app import create_app

from .conftest import CHUNK, start

V = {"Tus-Resumable": "1.0.0"}
BOB = {**V, "Authorization": "Bearer tok"}
EVE = {**V, "Authorization": "Bearer eve"}
OCTETS = "application/offset+octet-stream"


@pytest.fixture
def auth() -> FakeAuth:
    fake = FakeAuth()
    fake.add_user("tok", "9", "bob", pools={"p1": "contributor", "p2": "listener"})
    fake.add_user("eve", "10", "eve")
    return fake


@pytest.fixture
def client(settings, cache, broker, auth):
    return create_app(settings, store=cache, broker=broker, auth=auth).test_client()


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(client, length: int, headers=None, data: bytes | None = None, **values: str):
    values = values or {"filename": "a.bin"}
    extra = {"Content-Type": OCTETS} if data is not None else {}
    return client.post("/files/", data=data, headers={**(headers or BOB), "Upload-Length": str(length),
                                                      "Upload-Metadata": meta(**values), **extra})


def created(client, length: int, **values: str) -> str:
    response = create(client, length, **values)
    assert response.status_code == 201, response.get_json()
    return response.headers["Location"].rsplit("/", 1)[1]


def patch(client, file_id: str, offset: int, data: bytes, headers=None, **extra: str):
    return client.patch(f"/files/{file_id}", data=data,
                        headers={**(headers or BOB), "Content-Type": OCTETS, "Upload-Offset": str(offset), **extra})


def head(client, file_id: str, headers=None):
    return client.head(f"/files/{file_id}", headers=headers or BOB)


def code(response) -> tuple[int, str]:
    body = response.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return response.status_code, body["error"]["code"]


def test_options_discovery_needs_no_auth_and_names_the_extensions(client, settings) -> None:
    response = client.options("/files/")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation", "creation-with-upload", "termination", "checksum", "expiration"}
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256"}
    assert response.headers["Tus-Max-Size"] == str(settings.limits.max_file_size)
    assert response.headers["Tus-Resumable"] == "1.0.0"


def test_an_upload_in_odd_pieces_is_cached_whole_with_its_sha256(client, cache, broker) -> None:
    data = bytes(range(65, 65 + 29))  # 3 full chunks + 5 bytes
    file_id = created(client, len(data), filename="notes.txt", pool_id="p1")
    assert head(client, file_id).headers["Upload-Offset"] == "0"
    offset = 0
    for size in (3, 5, 13, 8):
        response = patch(client, file_id, offset, data[offset:offset + size])
        assert response.status_code == 204, response.get_json()
        offset += size
        assert response.headers["Upload-Offset"] == str(offset)
        assert response.headers["Tus-Resumable"] == "1.0.0"
        if offset < len(data):
            assert head(client, file_id).headers["Upload-Offset"] == str(offset)
    [command] = broker.of_type(StoreUpload)
    assert command.upload_id == file_id and command.sha256 == hashlib.sha256(data).hexdigest()
    assert command.pool_id == "p1" and command.file_name == "notes.txt" and command.size == len(data)
    stored = b"".join(cache.read_chunk(file_id, i) or b"" for i in range(command.chunk_count))
    assert stored == data
    assert [e.status for e in broker.of_type(FileStatusChanged) if e.file_id == file_id] == [contracts.CACHED]
    done = head(client, file_id)
    assert done.headers["Upload-Offset"] == done.headers["Upload-Length"] == str(len(data))


def test_head_answers_offset_length_expiry_and_no_store(client) -> None:
    file_id = created(client, 20)
    patch(client, file_id, 0, b"abcde")
    response = head(client, file_id)
    assert response.status_code == 200
    assert (response.headers["Upload-Offset"], response.headers["Upload-Length"]) == ("5", "20")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Upload-Expires"].endswith("GMT")


def test_creation_with_upload_keeps_the_first_body(client, broker) -> None:
    response = create(client, 10, data=b"0123456789")
    assert response.status_code == 201, response.get_json()
    assert response.headers["Upload-Offset"] == "10"
    [command] = broker.of_type(StoreUpload)
    assert command.sha256 == hashlib.sha256(b"0123456789").hexdigest()


def test_a_wrong_offset_is_409_and_changes_nothing(client) -> None:
    file_id = created(client, 20)
    patch(client, file_id, 0, b"abc")
    assert code(patch(client, file_id, 2, b"xyz")) == (409, "conflict")
    assert code(patch(client, file_id, 4, b"xyz")) == (409, "conflict")
    assert head(client, file_id).headers["Upload-Offset"] == "3"


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksum_is_verified_per_patch_and_a_mismatch_keeps_nothing(client, algorithm) -> None:
    file_id = created(client, 20)
    patch(client, file_id, 0, b"abc")
    body = b"defghijklmn"  # completes chunk 0 and starts chunk 1
    good = base64.b64encode(hashlib.new(algorithm, body).digest()).decode()
    bad = base64.b64encode(hashlib.new(algorithm, b"other").digest()).decode()
    response = patch(client, file_id, 3, body, **{"Upload-Checksum": f"{algorithm} {bad}"})
    assert code(response) == (460, "checksum_mismatch")
    assert head(client, file_id).headers["Upload-Offset"] == "3"
    response = patch(client, file_id, 3, body, **{"Upload-Checksum": f"{algorithm} {good}"})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "14"


def test_an_unknown_checksum_algorithm_is_400(client) -> None:
    file_id = created(client, 20)
    assert code(patch(client, file_id, 0, b"abc", **{"Upload-Checksum": "md5 AAAA"}))[0] == 400
    assert head(client, file_id).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0"])
def test_a_wrong_protocol_version_is_412(client, version) -> None:
    headers = {"Authorization": "Bearer tok", **({"Tus-Resumable": version} if version else {})}
    response = create(client, 10, headers=headers)
    assert code(response) == (412, "precondition_failed")
    assert response.headers["Tus-Version"] == "1.0.0"


def test_over_tus_max_size_is_413(client, settings, cache) -> None:
    assert code(create(client, settings.limits.max_file_size + 1)) == (413, "too_large")
    assert cache.uploads == {}


def test_a_body_past_upload_length_is_413(client) -> None:
    file_id = created(client, 4)
    assert code(patch(client, file_id, 0, b"abcdef"))[0] == 413
    assert head(client, file_id).headers["Upload-Offset"] == "0"


def test_an_unknown_upload_is_404(client) -> None:
    assert head(client, "0" * 32).status_code == 404
    assert code(patch(client, "0" * 32, 0, b"x")) == (404, "not_found")
    assert code(client.delete(f"/files/{'0' * 32}", headers=BOB)) == (404, "not_found")


def test_someone_elses_upload_is_the_same_404_as_an_unknown_one(client) -> None:
    file_id = created(client, 10)
    assert head(client, file_id, headers=EVE).status_code == 404  # no probing ids for existence
    assert code(patch(client, file_id, 0, b"abc", headers=EVE)) == (404, "not_found")
    assert code(client.delete(f"/files/{file_id}", headers=EVE)) == (404, "not_found")
    assert head(client, file_id).headers["Upload-Offset"] == "0"


def test_no_or_a_bad_token_is_401(client, cache) -> None:
    assert code(create(client, 10, headers=V)) == (401, "unauthorized")
    assert code(create(client, 10, headers={**V, "Authorization": "Bearer nope"})) == (401, "unauthorized")
    assert cache.uploads == {}


def test_an_expired_upload_is_410(client, cache) -> None:
    file_id = created(client, 10)
    patch(client, file_id, 0, b"abc")
    cache.expire_session(file_id)
    assert head(client, file_id).status_code == 410
    assert code(patch(client, file_id, 3, b"def")) == (410, "gone")


@pytest.mark.parametrize("header", [
    "filename",  # no value: filename is required and empty
    "filename not*base64",
    "filename " + base64.b64encode(b"\xff\xfe").decode(),  # not UTF-8
    "filename YQ==,filename YQ==",  # a key twice
    "file name YQ==",
    "content_type dGV4dC9wbGFpbg==",  # no filename
    ",".join(f"k{i} YQ==" for i in range(100)) + ",filename YQ==",  # too many pairs
    "filename " + base64.b64encode(b"a" * 20000).decode(),  # longer than MAX_METADATA_BYTES
])
def test_bad_metadata_is_400_and_creates_nothing(client, cache, header) -> None:
    response = client.post("/files/", headers={**BOB, "Upload-Length": "10", "Upload-Metadata": header})
    assert code(response) == (400, "bad_request")
    assert cache.uploads == {}


def test_metadata_goes_through_the_start_checks(client, cache) -> None:
    assert code(create(client, 10, filename="x.exe"))[0] == 415
    assert code(create(client, 10, filename="a.bin", pool_id="p2")) == (403, "forbidden")
    assert code(create(client, 0, filename="a.bin"))[0] == 400
    assert cache.uploads == {}


def test_a_tus_timestamp_older_than_the_pools_max_late_is_400(client, cache, auth) -> None:
    auth.pools["p1"] = {"pool_id": "p1", "max_late_seconds": 60}
    old = timeutil.iso(timeutil.now() - timedelta(seconds=120))
    assert code(create(client, 10, filename="a.bin", pool_id="p1", timestamp=old)) == (400, "bad_request")
    assert cache.uploads == {}
    fresh = timeutil.iso(timeutil.now() - timedelta(seconds=5))
    assert created(client, 10, filename="a.bin", pool_id="p1", timestamp=fresh)


def test_termination_drops_the_bytes(client, cache) -> None:
    file_id = created(client, 20)
    patch(client, file_id, 0, b"0123456789")
    response = client.delete(f"/files/{file_id}", headers=BOB)
    assert response.status_code == 204 and response.headers["Tus-Resumable"] == "1.0.0"
    assert cache.session(file_id) is None
    assert head(client, file_id).status_code == 410


def test_a_patch_while_another_holds_the_lock_is_423(client, cache) -> None:
    file_id = created(client, 20)
    assert cache.acquire_writer(file_id, "someone")
    assert code(patch(client, file_id, 0, b"abc")) == (423, "locked")
    cache.release_writer(file_id, "someone")
    assert patch(client, file_id, 0, b"abc").status_code == 204


def test_patch_needs_the_offset_content_type(client) -> None:
    file_id = created(client, 10)
    response = client.patch(f"/files/{file_id}", data=b"abc",
                            headers={**BOB, "Content-Type": "text/plain", "Upload-Offset": "0"})
    assert code(response)[0] == 415
    assert head(client, file_id).headers["Upload-Offset"] == "0"


def test_a_declared_sha256_that_does_not_match_fails_the_upload(client, broker) -> None:
    file_id = created(client, 5, filename="a.bin", sha256="0" * 64)
    assert code(patch(client, file_id, 0, b"abcde"))[0] == 400
    assert broker.of_type(StoreUpload) == []


def test_method_override_patch_works(client) -> None:
    file_id = created(client, 6)
    response = client.post(f"/files/{file_id}", data=b"abc", headers={
        **BOB, "Content-Type": OCTETS, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "3"


def test_parse_metadata_decodes_values_and_empty_ones() -> None:
    assert tus.parse_metadata("filename YS5iaW4=,is_confidential", 1024) == {"filename": "a.bin",
                                                                           "is_confidential": ""}


def test_chunk_size_sanity() -> None:
    assert CHUNK == 8  # the odd PATCH sizes above are chosen around 8-byte chunks


@pytest.mark.parametrize("pieces", [[b"\x7fELF"], [b"\x7f", b"EL", b"F..."]])
def test_an_executable_head_is_refused_before_a_whole_chunk_exists(client, cache, pieces) -> None:
    file_id = created(client, 20)
    offset = 0
    responses = []
    for piece in pieces:
        responses.append(patch(client, file_id, offset, piece))
        offset += len(piece)
    assert code(responses[-1]) == (415, "forbidden_type")
    assert all(r.status_code == 204 for r in responses[:-1])
    assert cache.session(file_id) is None  # dropped: not even a partial chunk is kept


def test_each_patch_appends_only_its_own_bytes_to_the_tail(client, cache) -> None:
    file_id = created(client, 20)
    for offset, piece in ((0, b"ab"), (2, b"cd"), (4, b"e")):
        assert patch(client, file_id, offset, piece).status_code == 204
    assert cache.read_tail(file_id, 0) == b"abcde"
    assert patch(client, file_id, 5, b"fghij").status_code == 204
    assert cache.read_chunk(file_id, 0) == b"abcdefgh"
    assert cache.read_tail(file_id, 0) is None and cache.read_tail(file_id, 1) == b"ij"


def test_a_tail_that_moved_under_a_late_writer_is_refused(cache, uploads) -> None:
    file_id = start(uploads, 20)
    assert cache.append_tail(file_id, 0, b"abc", "sid-1", 0) == "ok"
    assert cache.append_tail(file_id, 0, b"abc", "sid-1", 0) == "moved"  # would double the bytes
    assert cache.append_tail(file_id, 0, b"d", "other", 3) == "locked"
    assert cache.read_tail(file_id, 0) == b"abc"


def test_creation_answers_an_expiry(client) -> None:
    response = create(client, 10)
    assert response.headers["Upload-Offset"] == "0" and response.headers["Upload-Expires"].endswith("GMT")


def test_cors_lets_the_dashboard_use_tus(settings, cache, broker, auth) -> None:
    origin = "http://dash.example"
    cors = dataclasses.replace(settings, common=dataclasses.replace(settings.common, cors_origins=(origin,)))
    client = create_app(cors, store=cache, broker=broker, auth=auth).test_client()
    preflight = client.options("/files/", headers={
        "Origin": origin, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,tus-resumable,upload-offset,content-type"})
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert "upload-offset" in preflight.headers["Access-Control-Allow-Headers"].lower()
    response = client.post("/files/", headers={**BOB, "Origin": origin, "Upload-Length": "5",
                                               "Upload-Metadata": meta(filename="a.bin")})
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"location", "upload-offset", "upload-expires", "tus-resumable"} <= exposed
    other = client.options("/files/", headers={"Origin": "http://evil.example",
                                               "Access-Control-Request-Method": "PATCH"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_a_contributor_removed_mid_upload_cannot_patch_on(client, auth) -> None:
    # Without the app's 2-s identity memory: the test changes the membership at once.
    client.application.extensions["deps"].tus.auth = auth
    file_id = created(client, 20, filename="a.bin", pool_id="p1")
    assert patch(client, file_id, 0, b"0123456789").status_code == 204
    auth.add_user("tok", "9", "bob", pools={"p2": "listener"})  # removed from p1
    assert code(patch(client, file_id, 10, b"0123456789")) == (403, "forbidden")


def test_the_runtime_starts_the_audit_trail_uploads_record_into(client) -> None:
    from services.common.runtime import runtime_of

    app = client.application
    assert runtime_of(app).audit is app.extensions["deps"].uploads.audit
