"""Every socket event's use case against in-memory stand-ins (no network, no eventlet)."""

from __future__ import annotations

import time
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


# --- catch-up on connect ----------------------------------------------------------------------


def sent_seqs(deps: Deps, sid: str = "s1", pool_id: str | None = None) -> list[int]:
    return [e.data["seq"] for e in deps.sockets.to(sid)  # type: ignore[attr-defined]
            if e.event == "pool-result" and (pool_id is None or e.data["pool_id"] == pool_id)]


def test_catch_up_sends_every_result_after_the_ack_in_pages_and_in_order(deps: Deps, broker) -> None:
    deps.results.add("p1", 450)  # type: ignore[attr-defined]
    deps.results.acks[("p1", "7")] = 20  # type: ignore[attr-defined]
    connect(deps)
    # Started and not finished: the gauge the pool benchmark waits on (bench/pool_bench.py).
    assert deps.metrics.catchups._value.get() == 1
    assert deps.sockets.run_background() == [430]  # type: ignore[attr-defined]
    assert deps.metrics.catchups._value.get() == 0
    assert sent_seqs(deps, pool_id="p1") == list(range(21, 451))  # all of them: no cap, in seq order
    # One page at a time (GATEWAY_CATCHUP_PAGE = 200 here), each from where the last ended.
    assert [(a, n) for pool, _, a, n in deps.results.pages if pool == "p1"] == [  # type: ignore[attr-defined]
        (20, 200), (220, 200), (420, 200)]
    # Only this socket gets them, without the message queue; the payload is SPEC's pool-result.
    assert {e.to for e in deps.sockets.local} == {"s1"}  # type: ignore[attr-defined]
    first = deps.sockets.local[0].data  # type: ignore[attr-defined]
    assert set(core.RESULT_EVENT_KEYS) <= set(first) and first["seq"] == 21
    audits = [a for a in broker.of_type(AuditRecorded) if a.action == "result_delivered"]
    assert [(a.detail["first_seq"], a.detail["last_seq"]) for a in audits] == [(21, 220), (221, 420), (421, 450)]


def test_a_member_that_never_acked_gets_what_came_since_it_joined(deps: Deps) -> None:
    joined = timeutil.parse("2024-06-01T00:00:00Z").timestamp()
    deps.auth.add_user("tok-new", "8", "newbie", pools={"p1": "listener", "p2": "listener"},  # type: ignore[attr-defined]
                       joined={"p1": joined})
    deps.results.add("p1", 2, created="2024-05-01T00:00:00.000Z")  # type: ignore[attr-defined]  # before joining
    deps.results.add("p1", 3, created="2024-07-01T00:00:00.000Z")  # type: ignore[attr-defined]
    deps.results.add("p2", 2)  # type: ignore[attr-defined]  # auth does not say when it joined p2: all
    connect(deps, token="tok-new")
    deps.sockets.run_background()  # type: ignore[attr-defined]
    assert sent_seqs(deps, pool_id="p1") == [3, 4, 5] and sent_seqs(deps, pool_id="p2") == [1, 2]


def test_the_clients_results_after_shortens_the_catch_up_never_lengthens_it(deps: Deps) -> None:
    deps.results.add("p1", 10)  # type: ignore[attr-defined]
    deps.results.add("p2", 10)  # type: ignore[attr-defined]
    deps.results.acks[("p1", "7")] = 5  # type: ignore[attr-defined]
    deps.results.acks[("p2", "7")] = 8  # type: ignore[attr-defined]
    connect(deps, results_after={"p1": 7, "p2": 2, "p9": 1})
    deps.sockets.run_background()  # type: ignore[attr-defined]
    assert sent_seqs(deps, pool_id="p1") == [8, 9, 10] and sent_seqs(deps, pool_id="p2") == [9, 10]


def test_acks_unreadable_skip_the_pool_unless_the_client_says_where_it_is(deps: Deps) -> None:
    deps.results.add("p1", 3)  # type: ignore[attr-defined]
    deps.results.add("p2", 3)  # type: ignore[attr-defined]
    deps.results.fail_next(core.unavailable("pool_aggregator"), times=2)  # type: ignore[attr-defined]
    connect(deps, results_after={"p2": 1})
    assert deps.sockets.run_background() == [2]  # type: ignore[attr-defined]
    assert sent_seqs(deps, pool_id="p1") == [] and sent_seqs(deps, pool_id="p2") == [2, 3]


def test_a_failing_page_stops_that_pools_catch_up_only(deps: Deps) -> None:
    deps.results.add("p1", 3)  # type: ignore[attr-defined]
    deps.results.add("p2", 3)  # type: ignore[attr-defined]
    calls = 0
    real = deps.results.results

    def flaky(pool_id: str, *args: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if pool_id == "p1":
            raise core.unavailable("pool_aggregator")
        return real(pool_id, *args)

    deps.results.results = flaky  # type: ignore[method-assign]
    connect(deps)
    assert deps.sockets.run_background() == [3]  # type: ignore[attr-defined]
    assert sent_seqs(deps, pool_id="p2") == [1, 2, 3] and calls == 2


def test_the_next_page_waits_for_the_socket_to_drain_and_a_stuck_socket_ends_it(deps: Deps) -> None:
    fake = deps.sockets
    deps.results.add("p1", 500)  # type: ignore[attr-defined]
    connect(deps)
    fake.queued["s1"] = 10_000  # type: ignore[attr-defined]  # the client reads nothing
    drains = 0

    def drain() -> None:
        nonlocal drains
        drains += 1
        if drains == 3:
            fake.queued["s1"] = 0  # type: ignore[attr-defined]  # it read them all

    fake.on_sleep = drain  # type: ignore[attr-defined]
    assert fake.run_background() == [500]  # type: ignore[attr-defined]
    assert drains >= 3 and sent_seqs(deps) == list(range(1, 501))
    # A socket that never drains: the catch-up ends after catchup_drain_seconds (bounded queue).
    fake.emitted.clear()  # type: ignore[attr-defined]
    deps.local.gone("s1")
    object.__setattr__(deps.settings, "catchup_drain_seconds", 0.05)
    connect(deps, "s2")
    fake.queued["s2"] = 10_000  # type: ignore[attr-defined]
    fake.on_sleep = lambda: time.sleep(0.01)  # type: ignore[attr-defined]
    assert fake.run_background() == [200]  # type: ignore[attr-defined]  # the first page, then no more


def test_catch_up_waits_for_the_handshake_and_gives_up_for_a_gone_socket(deps: Deps) -> None:
    fake = deps.sockets
    deps.results.add("p1", 1)  # type: ignore[attr-defined]
    sockets.connect(deps, Session("s1"), {"token": "tok-alice"})
    fake.on_sleep = lambda: fake.add("s1")  # type: ignore[attr-defined]  # CONNECT goes out meanwhile
    assert fake.run_background() == [1]  # type: ignore[attr-defined]
    assert fake.slept > 0 and [e.to for e in fake.emitted] == ["s1"]  # type: ignore[attr-defined]
    sockets.connect(deps, Session("s2"), {"token": "tok-alice"})
    deps.local.gone("s2")  # went away before its CONNECT was sent: nothing to deliver to
    fake.on_sleep = None  # type: ignore[attr-defined]
    assert fake.run_background() == [0]  # type: ignore[attr-defined]
    assert fake.to("s2") == []  # type: ignore[attr-defined]


def test_a_newer_catch_up_of_the_socket_stops_the_older_one(deps: Deps) -> None:
    deps.results.add("p1", 5)  # type: ignore[attr-defined]
    connect(deps)
    older = deps.local.catchups["s1"]
    deps.local.catch_up_started("s1")  # e.g. a reauth after an expiry
    assert not deps.local.may_catch_up("s1", older)
    [(task, args)] = deps.sockets.background  # type: ignore[attr-defined]
    assert task(*args) == 0 and sent_seqs(deps) == []


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
    assert not deps.local.holds("s1")


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
    deps.results.add("p9", 1)  # type: ignore[attr-defined]
    assert code(emit(deps, "get-results", {"pool_id": "p9"})) == "forbidden"
    assert code(emit(deps, "get-results", {"since": "x"})) == "bad_request"
    # Joined p9 after connect: auth says so now.
    deps.auth.tokens["tok-alice"].pools["p9"] = "listener"  # type: ignore[attr-defined]
    assert [r["result_id"] for r in emit(deps, "get-results", {"pool_id": "p9"})["results"]] == ["p9-r1"]


def test_get_results_pages_by_after_seq(deps: Deps) -> None:
    connect(deps)
    deps.results.add("p1", 250)  # type: ignore[attr-defined]
    first = emit(deps, "get-results", {"pool_id": "p1"})
    assert [r["seq"] for r in first["results"]] == list(range(1, 101))  # SPEC's default limit: 100
    assert first["next_seq"] == 100 and first["more"] is True
    last = emit(deps, "get-results", {"pool_id": "p1", "after_seq": 200, "limit": 1000})
    assert [r["seq"] for r in last["results"]] == list(range(201, 251)) and last["more"] is False
    assert emit(deps, "get-results", {"pool_id": "p1", "after_seq": 250}) == {
        "results": [], "next_seq": 250, "more": False}
    for bad in ({"after_seq": -1}, {"after_seq": "3"}, {"after_seq": True}, {"limit": 0}, {"limit": 1001},
                {"limit": 2.5}):
        assert code(emit(deps, "get-results", {"pool_id": "p1", **bad})) == "bad_request", bad


def test_ack_result_moves_the_members_ack_forward_only(deps: Deps) -> None:
    connect(deps)
    deps.results.add("p1", 5)  # type: ignore[attr-defined]
    assert emit(deps, "ack-result", {"pool_id": "p1", "seq": 3}) == {"pool_id": "p1", "acked_seq": 3}
    assert emit(deps, "ack-result", {"pool_id": "p1", "seq": 2}) == {"pool_id": "p1", "acked_seq": 3}
    assert deps.results.acks == {("p1", "7"): 3}  # type: ignore[attr-defined]  # the user from the session
    assert code(emit(deps, "ack-result", {"pool_id": "p1", "seq": 6})) == "bad_request"  # past the last
    assert code(emit(deps, "ack-result", {"pool_id": "p9", "seq": 1})) == "forbidden"
    for bad in ({"pool_id": "p1"}, {"pool_id": "p1", "seq": -1}, {"pool_id": "p1", "seq": "1"}, {"seq": 1},
                {"pool_id": "p1", "seq": 10**18}):
        assert code(emit(deps, "ack-result", bad)) == "bad_request", bad
    # The next connect starts after the ack.
    sockets.disconnect(deps, Session("s1", deps.sockets.get_session("s1")))
    deps.sockets.background.clear()  # type: ignore[attr-defined]
    connect(deps, "s2")
    deps.sockets.run_background()  # type: ignore[attr-defined]
    assert sent_seqs(deps, "s2", "p1") == [4, 5]


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


def test_catch_ups_take_turns(deps: Deps) -> None:
    import threading

    deps.results.add("p1", 1)  # type: ignore[attr-defined]
    connect(deps)
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
