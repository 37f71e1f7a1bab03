"""The gateway's pure logic: rooms, payload checks, SPEC error mapping, where a catch-up starts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.authclient import Identity
from services.common.contracts import FileStatusChanged, ResultPublished
from services.common.errors import ApiError
from services.socket_gateway import core

ALICE = Identity(user_id="u1", user_name="alice", role="user", pools={"p1": "contributor", "p2": "listener"},
                 token_id="t1")
ADMIN = Identity(user_id="a1", user_name="admin", role="admin", pools={}, token_id="t9")


def test_rooms() -> None:
    assert core.rooms_for(ALICE) == ["user:u1", "token:t1", "pool:p1", "pool:p2"]
    assert core.rooms_for(ADMIN) == ["user:a1", "token:t9", "admins"]
    assert core.file_status_rooms("u7") == ["user:u7", "admins"]
    assert core.pool_room("p1") == "pool:p1"


def test_session_round_trip() -> None:
    session = core.identity_to_session(ALICE, "tok")
    assert session["token"] == "tok"
    assert core.identity_from_session(session) == ALICE


@pytest.mark.parametrize("status,body,code,extra", [
    (429, {"error": {"code": "overloaded", "message": "busy", "retry_after": 5}}, "overloaded",
     {"retry_after": 5}),
    (429, {}, "overloaded", {"retry_after": 1}),
    (415, {"error": {"code": "forbidden_type", "message": "no .exe"}}, "forbidden_type", {}),
    (400, {"error": {"code": "empty_file", "message": "empty"}}, "empty_file", {}),
    (404, "not json", "not_found", {}),
    (409, None, "conflict", {}),
    (413, {"error": {"code": "too_large", "message": "big"}}, "too_large", {}),
    (500, {"error": {"code": "internal_error", "message": "x"}}, "overloaded", {"retry_after": 2}),
    (503, None, "overloaded", {"retry_after": 2}),
    # a failing publish in file_uploader: its own code is not a SPEC socket code
    (503, {"error": {"code": "unavailable", "message": "broker down"}}, "overloaded", {"retry_after": 2}),
])
def test_error_from_http(status, body, code, extra) -> None:
    err = core.error_from_http(status, body, "file_uploader")
    ack = err.body()
    assert ack["error"]["code"] == code
    assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
    for key, value in extra.items():
        assert ack["error"][key] == value


def test_message_passes_through() -> None:
    ack = core.error_from_http(415, {"error": {"code": "forbidden_type", "message": "no .exe"}}, "x").body()
    assert ack == {"error": {"code": "forbidden_type", "message": "no .exe"}}


def test_start_transfer_takes_identity_from_session_not_payload() -> None:
    body = core.start_transfer_request(
        {"file_name": "a.txt", "size": 10, "owner_id": "evil", "writer": "evil", "is_admin": True,
         "pool_id": "p1", "timestamp": "2024-01-01T00:00:00Z", "sha256": "A" * 64, "items": [],
         "metadata": {"k": 1}, "unknown": 1}, ALICE, writer="sid1")
    assert body["owner_id"] == "u1" and body["owner_name"] == "alice"
    assert body["writer"] == "sid1" and body["is_admin"] is False
    assert body["sha256"] == "a" * 64
    assert "unknown" not in body and "file_id" not in body
    resume = core.start_transfer_request({"file_name": "a", "size": 1, "file_id": "abc123"}, ALICE, "s")
    assert resume["file_id"] == "abc123"


@pytest.mark.parametrize("payload", [
    None, [], {"size": 1}, {"file_name": "", "size": 1}, {"file_name": "a", "size": -1},
    {"file_name": "a", "size": True}, {"file_name": "a", "size": "5"},
    {"file_name": "a", "size": 1, "sha256": "zz"},
    {"file_name": "a", "size": 1, "pool_id": "../x"}, {"file_name": "a", "size": 1, "timestamp": "yesterday"},
    {"file_name": "a", "size": 1, "items": "x"}, {"file_name": "a", "size": 1, "metadata": []},
    {"file_name": "a", "size": 1, "file_id": "a/b"}, {"file_name": "x" * 256, "size": 1},
])
def test_start_transfer_refuses_bad_payloads(payload) -> None:
    with pytest.raises(ApiError) as info:
        core.start_transfer_request(payload, ALICE, "s")
    assert info.value.code == "bad_request"


def test_write_chunk_request() -> None:
    ok = core.write_chunk_request({"file_id": "f1", "index": 0, "data": b"abc"}, 10)
    assert ok == ("f1", 0, b"abc", None)
    payload = {"file_id": "f1", "index": 2, "data": bytearray(b"x"), "sha256": "B" * 64}
    assert core.write_chunk_request(payload, 10)[2:] == (b"x", "b" * 64)
    for bad in ({"file_id": "f1", "index": 0, "data": "text"}, {"file_id": "f1", "index": -1, "data": b""},
                {"file_id": "../f", "index": 0, "data": b""}, {"file_id": "f", "index": 0},
                {"file_id": "f", "index": 0, "data": b"", "sha256": 5}):
        with pytest.raises(ApiError) as info:
            core.write_chunk_request(bad, 10)
        assert info.value.code == "bad_request"
    with pytest.raises(ApiError) as info:
        core.write_chunk_request({"file_id": "f", "index": 0, "data": b"x" * 11}, 10)
    assert info.value.code == "too_large"


def test_results_request() -> None:
    assert core.results_request({"pool_id": "p1"}) == core.ResultsQuery("p1", None, None, 100)
    # the time is passed on in the one wire format, whatever ISO form the client sent
    assert core.results_request({"pool_id": 7, "since": "2024-01-01T02:00:00+02:00"}).since == \
        "2024-01-01T00:00:00.000Z"
    assert core.results_request({"pool_id": "p1", "after_seq": 0, "limit": 1000}) == core.ResultsQuery(
        "p1", None, 0, 1000)
    for bad in ({"pool_id": "p1", "since": "soon"}, {}, {"pool_id": "p1", "after_seq": -1},
                {"pool_id": "p1", "after_seq": 10**18}, {"pool_id": "p1", "limit": 1001},
                {"pool_id": "p1", "limit": False}):
        with pytest.raises(ApiError):
            core.results_request(bad)


def test_ack_request() -> None:
    assert core.ack_request({"pool_id": "p1", "seq": 0}) == ("p1", 0)
    for bad in ({"pool_id": "p1"}, {"seq": 1}, {"pool_id": "p1", "seq": 1.0}, {"pool_id": "p1", "seq": None},
                [1], "x"):
        with pytest.raises(ApiError):
            core.ack_request(bad)


def test_results_after_from_auth() -> None:
    pools = ["p1", "p2"]
    assert core.results_after_from_auth(None, pools) == {}
    assert core.results_after_from_auth({"token": "x", "results_after": 5}, pools) == {}
    # only the member's pools, only valid seqs
    assert core.results_after_from_auth({"results_after": {"p1": 4, "p2": "5", "p3": 1}}, pools) == {"p1": 4}
    assert core.results_after_from_auth({"results_after": {"p1": -1, "p2": True}}, pools) == {}


def test_catch_up_start() -> None:
    assert core.catch_up_start(7, None, 1.0) == core.CatchUpStart(7, None)
    assert core.catch_up_start(7, 9, None) == core.CatchUpStart(9, None)  # the client has more
    assert core.catch_up_start(7, 3, None) == core.CatchUpStart(7, None)  # never before the ack
    assert core.catch_up_start(None, 2, 1.0) == core.CatchUpStart(2, None)
    joined = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert core.catch_up_start(None, None, joined) == core.CatchUpStart(0, "2024-01-01T12:00:00.000Z")
    assert core.catch_up_start(None, None, None) == core.CatchUpStart(0, None)  # unknown start: all
    assert core.catch_up_start(None, None, 1e20) == core.CatchUpStart(0, None)


def test_event_payloads() -> None:
    status = core.file_status_event(FileStatusChanged(file_id="f", owner_id="u", status="retrying", attempt=2,
                                                      reason="boom"))
    assert status == {"file_id": "f", "status": "retrying", "attempt": 2, "reason": "boom"}
    assert core.file_status_event(FileStatusChanged(file_id="f", owner_id="u", status="cached")) == {
        "file_id": "f", "status": "cached"}
    event = ResultPublished(result_id="r", pool_id="p", group_id="g", window_start="a", window_end="b",
                            file_name="out.bin", size=3, sha256="s", created="c", download_url="http://x/file/r",
                            seq=4)
    payload = core.pool_result_event(event)
    spec = {"pool_id": "p", "group_id": "g", "result_id": "r", "seq": 4, "file_name": "out.bin", "size": 3,
            "sha256": "s", "download_url": "http://x/file/r"}
    assert {k: payload.get(k) for k in spec} == spec  # SPEC's keys with their values (extra keys are fine)
    assert core.pool_result_event(event.to_dict()) == payload
