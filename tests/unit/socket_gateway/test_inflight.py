"""The gateway bounds the events it handles at once, per socket and in all (no network)."""

from __future__ import annotations

from services.common.testing import FakeAuth
from services.socket_gateway import core, sockets
from services.socket_gateway.app import create_app, deps_of
from services.socket_gateway.config import Settings
from services.socket_gateway.deps import Deps


def make_deps(**env: str) -> Deps:
    # async_mode threading: no eventlet hub needed; nothing connects until an event needs it.
    auth = FakeAuth()
    auth.add_user("tok", "7", "alice")
    return deps_of(create_app(Settings.from_env(env), auth=auth, async_mode="threading"))


def test_settings() -> None:
    s = Settings.from_env({})
    assert (s.max_inflight_per_socket, s.max_inflight) == (64, 2048)
    s = Settings.from_env({"GATEWAY_MAX_INFLIGHT_PER_SOCKET": "3", "GATEWAY_MAX_INFLIGHT": "9"})
    assert (s.max_inflight_per_socket, s.max_inflight) == (3, 9)


def test_per_socket_and_total_limits() -> None:
    local = make_deps(GATEWAY_MAX_INFLIGHT_PER_SOCKET="2", GATEWAY_MAX_INFLIGHT="3").local
    assert local.enter("a") and local.enter("a")
    assert not local.enter("a")  # a's third event at once
    assert local.enter("b")
    assert not local.enter("c")  # three in all
    local.leave("a")
    assert local.enter("c")
    for sid in ("a", "b", "c"):
        local.leave(sid)
    assert local.inflight == {} and local.inflight_total == 0


def test_event_over_the_limit_is_answered_overloaded_without_work() -> None:
    deps = make_deps(GATEWAY_MAX_INFLIGHT_PER_SOCKET="1")
    calls = []

    def event(deps, session, data):
        calls.append(session.sid)
        return {"ok": True}

    identity = deps.auth.validate("tok")
    assert identity is not None
    session = sockets.Session("s", core.identity_to_session(identity, "tok"))

    def run() -> dict:
        return sockets.answer(deps, "alive", event, lambda: session, "s", {})

    assert deps.local.enter("s")  # one event of socket s is being handled
    ack = run()
    assert ack["error"]["code"] == "overloaded" and ack["error"]["retry_after"] == 1
    assert calls == []
    deps.local.leave("s")
    assert run() == {"ok": True} and calls == ["s"]
    assert deps.local.inflight == {} and deps.local.inflight_total == 0
