"""Every socket event's use case against in-memory stand-ins (no network, no eventlet)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.common import errors, timeutil
from services.common.contracts import AuditRecorded
from services.socket_gateway import core, events, sockets
from services.socket_gateway.deps import Deps
from services.socket_gateway.sockets import ConnectRefused, Session


def connect(deps: Deps, sid: str = "s1", token: str = "tok-alice", **auth: Any) -> None:
    sockets.connect(deps, Session(sid), {"token": token, **auth})
    deps.sockets.add(sid)  # type: ignore[attr-defined]  # python-socketio sent CONNECT


def emit(deps: Deps, name: str, payload: Any = None, sid: str = "s1") -> dict[str, Any]:
    """As python-socketio calls a registered event: through the in-flight bounds and the ack."""
    return events._handler(deps, name, events.EVENTS[name])(sid, payload)


def code(ack: dict[str, Any]) -> str | None:
    return ack.get("error", {}).get("code")


# --- connect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, {}, {"token": ""}, {"token": 5}, "tok-alice"])
def test_connect_without_a_token_is_refused(deps: Deps, auth: Any) -> None:
    with pytest.raises(ConnectRefused) as refused:
        sockets.connect(deps, Session("s1"), auth)
    assert refused.value.data["code"] == "unauthorized"
    assert deps.sockets.sessions == {} and not deps.local.holds("s1")  # type: ignore[attr-defined]


def test_connect_with_an_unknown_token_is_refused(deps: Deps) -> None:
    with pytest.raises(ConnectRefused) as refused:
        sockets.connect(deps, Session("s1"), {"token": "stolen"})
    assert refused.value.data["code"] == "unauthorized"
    assert deps.sockets.rooms == {}  # type: ignore[attr-defined]


def test_connect_while_auth_is_down_is_overloaded(deps: Deps) -> None:
    deps.auth.down = True  # type: ignore[attr-defined]
    with pytest.raises(ConnectRefused) as refused:
        sockets.connect(deps, Session("s1"), {"token": "tok-alice"})
    assert refused.value.data == {"code": "overloaded", "message": "auth is unavailable; try again",
                                  "retry_after": 2}


def test_connect_saves_identity_and_joins_rooms(deps: Deps) -> None:
    connect(deps)
    fake = deps.sockets
    assert fake.get_session("s1")["user_id"] == "7" and fake.get_session("s1")["token"] == "tok-alice"
    assert fake.rooms_of("s1") == {"user:7", "token:jti-a", "pool:p1", "pool:p2"}  # type: ignore[attr-defined]
    connect(deps, "s2", "tok-admin")
    assert "admins" in fake.rooms_of("s2")  # type: ignore[attr-defined]
    assert deps.local.holds("s1") and deps.local.holds("s2")


# --- offline delivery ------------------------------------------------------------------------


def result(pool_id: str, n: int, created: str) -> dict[str, Any]:
    return {"result_id": f"r{n}", "pool_id": pool_id, "group_id": "g", "file_name": f"r{n}.bin", "size": 3,
            "sha256": "a" * 64, "download_url": f"/file/r{n}", "created": created}


def test_missed_results_are_delivered_on_connect(deps: Deps, broker) -> None:
    now = timeutil.now()
    last = now - timedelta(minutes=10)
    deps.seen.touch("7", ["p1"], last)
    margin = deps.settings.redelivery_margin_seconds  # 10 s
    deps.results.by_pool["p1"] = [result("p1", 1, timeutil.iso(last - timedelta(seconds=margin + 5))),  # type: ignore[attr-defined]
                                  result("p1", 2, timeutil.iso(last - timedelta(seconds=margin - 5))),
                                  result("p1", 3, timeutil.iso(now - timedelta(minutes=1)))]
    connect(deps)
    assert deps.sockets.run_background() == [2]  # type: ignore[attr-defined]
    sent = [e.data["result_id"] for e in deps.sockets.to("s1") if e.event == "pool-result"]  # type: ignore[attr-defined]
    assert sent == ["r2", "r3"]  # what came after last-seen minus the margin
    assert deps.seen.seen[("7", "p1")] > last  # type: ignore[attr-defined]
    # p2 was never seen and the client names no since: nothing re-sent, but it is seen from now on.
    assert ("7", "p2") in deps.seen.seen  # type: ignore[attr-defined]
    assert [a.file_id for a in broker.of_type(AuditRecorded) if a.action == "result_delivered"] == ["r2", "r3"]


def test_the_clients_own_since_wins(deps: Deps) -> None:
    t0 = timeutil.now() - timedelta(hours=1)
    deps.results.by_pool["p2"] = [result("p2", 1, timeutil.iso(t0)),  # type: ignore[attr-defined]
                                  result("p2", 2, timeutil.iso(t0 + timedelta(minutes=5)))]
    connect(deps, results_since={"p2": timeutil.iso(t0 + timedelta(minutes=1)), "p9": "2020-01-01T00:00:00Z"})
    assert deps.sockets.run_background() == [1]  # type: ignore[attr-defined]
    assert [e.data["result_id"] for e in deps.sockets.to("s1")] == ["r2"]  # type: ignore[attr-defined]


def test_a_pool_whose_delivery_failed_keeps_its_last_seen(deps: Deps) -> None:
    last = timeutil.now() - timedelta(minutes=10)
    deps.seen.touch("7", ["p1", "p2"], last)
    deps.results.fail_next(core.unavailable("pool_aggregator"))  # type: ignore[attr-defined]  # p1 fails
    connect(deps)
    deps.sockets.run_background()  # type: ignore[attr-defined]
    assert deps.seen.seen[("7", "p1")] == last and deps.seen.seen[("7", "p2")] > last  # type: ignore[attr-defined]
    sockets.disconnect(deps, Session("s1", deps.sockets.get_session("s1")), "client")
    # Disconnect must not move p1 on either: its missed results are re-sent next time.
    assert deps.seen.seen[("7", "p1")] == last  # type: ignore[attr-defined]


def test_delivery_waits_for_the_handshake_and_gives_up_for_a_gone_socket(deps: Deps) -> None:
    fake = deps.sockets
    deps.results.by_pool["p1"] = [result("p1", 1, timeutil.now_iso())]  # type: ignore[attr-defined]
    sockets.connect(deps, Session("s1"), {"token": "tok-alice", "results_since": "2020-01-01T00:00:00Z"})
    fake.on_sleep = lambda: fake.add("s1")  # type: ignore[attr-defined]  # CONNECT goes out meanwhile
    assert fake.run_background() == [1]  # type: ignore[attr-defined]
    assert fake.slept > 0 and [e.to for e in fake.emitted] == ["s1"]  # type: ignore[attr-defined]
    sockets.connect(deps, Session("s2"), {"token": "tok-alice", "results_since": "2020-01-01T00:00:00Z"})
    deps.local.gone("s2")  # went away before its CONNECT was sent: nothing to deliver to
    fake.on_sleep = None  # type: ignore[attr-defined]
    assert fake.run_background() == [0]  # type: ignore[attr-defined]
    assert fake.to("s2") == []  # type: ignore[attr-defined]


def test_last_seen_down_means_no_delivery_and_no_crash(deps: Deps) -> None:
    deps.seen.down = True  # type: ignore[attr-defined]
    connect(deps)
    assert deps.sockets.run_background() == [0]  # type: ignore[attr-defined]
    sockets.disconnect(deps, Session("s1", deps.sockets.get_session("s1")))
    assert not deps.local.holds("s1")


# --- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(events.EVENTS))
def test_every_event_needs_an_identity(deps: Deps, name: str) -> None:
    assert code(emit(deps, name, {}, sid="stranger")) == "unauthorized"


def test_private_upload_takes_the_owner_from_the_session(deps: Deps) -> None:
    connect(deps)
    ack = emit(deps, "start-transfer", {"file_name": "a.bin", "size": 3, "owner_id": "1", "writer": "x"})
    assert ack == {"file_id": "up-1", "chunk_size": 4}
    body = deps.uploader.started[0]  # type: ignore[attr-defined]
    assert (body["owner_id"], body["owner_name"], body["writer"], body["is_admin"]) == ("7", "alice", "s1", False)
    assert code(emit(deps, "start-transfer", {"file_name": "", "size": 3})) == "bad_request"


def test_pool_upload_needs_a_fresh_contributor_membership(deps: Deps) -> None:
    connect(deps)
    assert code(emit(deps, "start-transfer", {"file_name": "a", "size": 1, "pool_id": "p2"})) == "forbidden"
    assert code(emit(deps, "start-transfer", {"file_name": "a", "size": 1, "pool_id": "p1"})) is None
    # Removed from p1 since connect: auth's answer of now wins over the session's.
    deps.auth.tokens["tok-alice"] = deps.auth.tokens["tok-alice"].__class__(  # type: ignore[attr-defined]
        "7", "alice", "user", {}, "jti-a")
    assert code(emit(deps, "start-transfer", {"file_name": "a", "size": 1, "pool_id": "p1"})) == "forbidden"
    deps.auth.down = True  # type: ignore[attr-defined]
    ack = emit(deps, "start-transfer", {"file_name": "a", "size": 1, "pool_id": "p1"})
    assert code(ack) == "overloaded" and ack["error"]["retry_after"] == 2
    del deps.auth.tokens["tok-alice"]  # type: ignore[attr-defined]
    deps.auth.down = False  # type: ignore[attr-defined]
    assert code(emit(deps, "start-transfer", {"file_name": "a", "size": 1, "pool_id": "p1"})) == "unauthorized"


def test_chunks_and_complete_and_release_on_disconnect(deps: Deps) -> None:
    connect(deps)
    assert emit(deps, "write-chunk", {"file_id": "f1", "index": 0, "data": b"abcd"})["received"] == 1
    assert emit(deps, "write-chunk", {"file_id": "f2", "index": 0, "data": bytearray(b"ab")})["received"] == 1
    assert deps.uploader.chunks[("f1", 0)] == b"abcd"  # type: ignore[attr-defined]
    assert code(emit(deps, "write-chunk", {"file_id": "f1", "index": 1, "data": "text"})) == "bad_request"
    assert code(emit(deps, "write-chunk", {"file_id": "f1", "index": 1, "data": b"x" * 1025})) == "too_large"
    assert emit(deps, "complete-upload", {"file_id": "f1"}) == {"file_id": "f1", "status": "cached"}
    assert deps.uploader.calls[-1] == ("complete", ("f1", "7", "s1"))  # type: ignore[attr-defined]
    sockets.disconnect(deps, Session("s1", deps.sockets.get_session("s1")))
    # f1 is complete: only the unfinished f2's writer lock is released.
    assert deps.uploader.released == [("f2", "s1")]  # type: ignore[attr-defined]
    assert not deps.local.holds("s1")


def test_a_failed_release_does_not_stop_the_disconnect(deps: Deps) -> None:
    connect(deps)
    deps.sockets.run_background()  # type: ignore[attr-defined]
    emit(deps, "write-chunk", {"file_id": "f1", "index": 0, "data": b"a"})
    deps.uploader.fail_next(errors.not_found("gone"))  # type: ignore[attr-defined]
    sockets.disconnect(deps, Session("s1", deps.sockets.get_session("s1")))
    assert ("7", "p1") in deps.seen.seen  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_of_a_service_reaches_the_socket_as_overloaded(deps: Deps, status: int) -> None:
    connect(deps)
    deps.uploader.fail_next(core.error_from_http(status, {"error": {"code": "internal_error",  # type: ignore[attr-defined]
                                                                    "message": "Traceback ..."}}, "file_uploader"))
    ack = emit(deps, "write-chunk", {"file_id": "f1", "index": 0, "data": b"a"})
    assert code(ack) == "overloaded" and ack["error"]["retry_after"] >= 1
    assert "Traceback" not in ack["error"]["message"]


def test_a_4xx_of_a_service_keeps_its_code(deps: Deps) -> None:
    connect(deps)
    deps.uploader.described["f1"] = None  # type: ignore[attr-defined]
    deps.uploader.fail_next(core.error_from_http(409, {"error": {"code": "conflict", "message": "other writer"}},  # type: ignore[attr-defined]
                                                 "file_uploader"))
    assert emit(deps, "complete-upload", {"file_id": "f1"})["error"] == {"code": "conflict",
                                                                        "message": "other writer"}


def test_an_unexpected_failure_is_overloaded_and_frees_the_slot(deps: Deps) -> None:
    connect(deps)

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("bug")

    deps.uploader.complete = broken  # type: ignore[method-assign]
    deps.uploader.described["f1"] = None  # type: ignore[attr-defined]
    assert code(emit(deps, "complete-upload", {"file_id": "f1"})) == "overloaded"
    assert deps.local.inflight == {} and deps.local.inflight_total == 0


def test_in_flight_limit_per_socket(deps: Deps) -> None:
    connect(deps)
    for _ in range(deps.settings.max_inflight_per_socket):
        assert deps.local.enter("s1")
    ack = emit(deps, "write-chunk", {"file_id": "f1", "index": 0, "data": b"a"})
    assert code(ack) == "overloaded" and deps.uploader.chunks == {}  # type: ignore[attr-defined]
    assert code(emit(deps, "alive", {}, sid="s1")) == "overloaded"


def test_history_by_the_sockets_token(deps: Deps) -> None:
    connect(deps)
    deps.history.by_token["tok-alice"] = [{"file_id": "f1"}]  # type: ignore[attr-defined]
    assert emit(deps, "get-history", {}) == {"files": [{"file_id": "f1"}]}


def test_results_only_for_members(deps: Deps) -> None:
    connect(deps)
    deps.results.by_pool["p9"] = [result("p9", 1, "2026-01-01T00:00:00Z")]  # type: ignore[attr-defined]
    assert code(emit(deps, "get-results", {"pool_id": "p9"})) == "forbidden"
    assert code(emit(deps, "get-results", {"since": "x"})) == "bad_request"
    # Joined p9 after connect: auth says so now.
    deps.auth.tokens["tok-alice"].pools["p9"] = "listener"  # type: ignore[attr-defined]
    assert [r["result_id"] for r in emit(deps, "get-results", {"pool_id": "p9"})["results"]] == ["r1"]


def test_alive(deps: Deps) -> None:
    connect(deps)
    ack = emit(deps, "alive", {})
    assert ack["ok"] is True and timeutil.parse(ack["server_time"])


def test_large_answers_count_as_bytes_in_flight(deps: Deps) -> None:
    connect(deps)
    reserve = sockets.ANSWER_RESERVE_BYTES["get-history"]
    limit = deps.settings.max_inflight_bytes_per_socket
    assert deps.local.enter("s1", limit - reserve + 1)  # this socket already holds nearly its share
    assert code(emit(deps, "get-history", {})) == "overloaded"
    assert code(emit(deps, "alive", {})) is None  # a small answer still fits
    deps.local.leave("s1", limit - reserve + 1)
    assert emit(deps, "get-history", {}) == {"files": []} and deps.local.inflight_bytes_total == 0


def test_offline_deliveries_take_turns(deps: Deps) -> None:
    import threading

    deps.results.by_pool["p1"] = [result("p1", 1, timeutil.now_iso())]  # type: ignore[attr-defined]
    connect(deps, results_since="2020-01-01T00:00:00Z")
    for _ in range(16):  # every turn taken by other deliveries
        assert deps.local.deliveries.acquire(blocking=False)
    outcome: list[int] = []
    waiting = threading.Thread(target=lambda: outcome.extend(deps.sockets.run_background()))  # type: ignore[attr-defined]
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive() and deps.sockets.emitted == []  # type: ignore[attr-defined]
    deps.local.gone("s1")  # the socket left while it waited: nothing is read for it
    deps.local.deliveries.release()
    waiting.join(5)
    assert outcome == [0] and deps.results.calls == []  # type: ignore[attr-defined]
    for _ in range(15):
        deps.local.deliveries.release()


# --- cancel-upload -------------------------------------------------------------------------------


def test_cancel_upload_drops_the_owners_upload(deps: Deps) -> None:
    connect(deps)
    file_id = emit(deps, "start-transfer", {"file_name": "a.bin", "size": 8})["file_id"]
    assert emit(deps, "cancel-upload", {"file_id": file_id}) == {"file_id": file_id, "status": "cancelled"}
    assert deps.uploader.calls[-1] == ("cancel", (file_id, "7"))  # type: ignore[attr-defined]  # owner = session
    assert not deps.local.is_writing("s1", file_id)
    sockets.disconnect(deps, Session("s1", deps.sockets.get_session("s1")))
    assert deps.uploader.released == []  # type: ignore[attr-defined]  # nothing left to release


def test_cancel_upload_of_someone_elses_upload_is_not_found(deps: Deps) -> None:
    connect(deps)
    deps.uploader.fail_next(core.error_from_http(404, {"error": {"code": "not_found",  # type: ignore[attr-defined]
                                                                 "message": "no such upload"}}, "file_uploader"))
    assert code(emit(deps, "cancel-upload", {"file_id": "theirs"})) == "not_found"


@pytest.mark.parametrize("payload", [None, {}, {"file_id": None}, {"file_id": "../x"}, "f1"])
def test_cancel_upload_needs_a_file_id(deps: Deps, payload: Any) -> None:
    connect(deps)
    assert code(emit(deps, "cancel-upload", payload)) == "bad_request"
    assert deps.uploader.cancelled == []  # type: ignore[attr-defined]
