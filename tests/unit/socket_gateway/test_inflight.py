"""The gateway bounds the events it handles at once, per socket and in all (no network)."""

from __future__ import annotations

from services.socket_gateway.app import create_app
from services.socket_gateway.config import Settings


def make_gateway(**env: str):
    # async_mode threading: no eventlet hub needed; nothing connects until an event needs it.
    return create_app(Settings.from_env(env), async_mode="threading").gateway


def test_settings() -> None:
    s = Settings.from_env({})
    assert (s.max_inflight_per_socket, s.max_inflight) == (64, 2048)
    s = Settings.from_env({"GATEWAY_MAX_INFLIGHT_PER_SOCKET": "3", "GATEWAY_MAX_INFLIGHT": "9"})
    assert (s.max_inflight_per_socket, s.max_inflight) == (3, 9)


def test_per_socket_and_total_limits() -> None:
    gw = make_gateway(GATEWAY_MAX_INFLIGHT_PER_SOCKET="2", GATEWAY_MAX_INFLIGHT="3")
    assert gw._enter("a") and gw._enter("a")
    assert not gw._enter("a")  # a's third event at once
    assert gw._enter("b")
    assert not gw._enter("c")  # three in all
    gw._leave("a")
    assert gw._enter("c")
    for sid in ("a", "b", "c"):
        gw._leave(sid)
    assert gw.inflight == {} and gw.inflight_total == 0


def test_event_over_the_limit_is_answered_overloaded_without_work() -> None:
    gw = make_gateway(GATEWAY_MAX_INFLIGHT_PER_SOCKET="1")
    calls = []
    wrapped = gw._answer("alive", lambda sid, data: calls.append(sid) or {"ok": True})
    assert gw._enter("s")  # one event of socket s is being handled
    ack = wrapped("s", {})
    assert ack["error"]["code"] == "overloaded" and ack["error"]["retry_after"] == 1
    assert calls == []
    gw._leave("s")
    assert wrapped("s", {}) == {"ok": True} and calls == ["s"]
    assert gw.inflight == {} and gw.inflight_total == 0
