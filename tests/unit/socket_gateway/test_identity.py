"""Identity on every event (issue 10 item 3): expiry, revocation, token-expired and its grace,
pool membership on every pool event. In-memory stand-ins, no network."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from services.common.authclient import Identity
from services.common.testing import FakeRevocationStore
from services.socket_gateway import core, guard, sockets
from services.socket_gateway.deps import Deps
from services.socket_gateway.ports import SocketToken

from .test_sockets import code, connect, emit

ALICE_POOLS = {"p1": "contributor", "p2": "listener"}


def expiring_alice(deps: Deps, expires_at: float, token: str = "tok-exp") -> None:
    deps.auth.add_user(token, "7", "alice", pools=ALICE_POOLS, token_id=f"jti-{token}",  # type: ignore[attr-defined]
                       expires_at=expires_at)


def token_expired(deps: Deps, sid: str = "s1") -> int:
    return sum(1 for e in deps.sockets.to(sid) if e.event == "token-expired")  # type: ignore[attr-defined]


# --- expiry ---------------------------------------------------------------------------------------


def test_an_expired_token_is_refused_every_event_and_told_once(deps: Deps) -> None:
    expiring_alice(deps, time.time() + 0.2)
    connect(deps, token="tok-exp")
    assert emit(deps, "alive")["ok"] is True
    time.sleep(0.25)
    for name in ("alive", "get-history", "start-transfer"):
        assert code(emit(deps, name, {"file_name": "a", "size": 1})) == "unauthorized"
    assert token_expired(deps) == 1
    assert deps.sockets.rooms_of("s1") == set()  # type: ignore[attr-defined]  # no push reaches it
    assert deps.uploader.started == []  # type: ignore[attr-defined]


def test_the_grace_ends_in_a_disconnect_unless_reauth(deps: Deps) -> None:
    expiring_alice(deps, time.time() - 1)
    connect(deps, "s1", "tok-exp")
    connect(deps, "s2", "tok-exp")
    guard.sweep(deps)  # idle sockets are told too, without sending anything
    assert token_expired(deps, "s1") == 1 and token_expired(deps, "s2") == 1
    guard.sweep(deps)
    assert deps.sockets.disconnected == []  # type: ignore[attr-defined]  # the grace is not over
    assert deps.local.expired["s1"] > time.monotonic() + deps.settings.reauth_grace_seconds - 5
    deps.local.expired["s1"] = time.monotonic() - 0.1  # the grace ran out
    guard.sweep(deps)
    assert deps.sockets.disconnected == ["s1"]  # type: ignore[attr-defined]
    guard.sweep(deps)
    assert deps.sockets.disconnected == ["s1"]  # type: ignore[attr-defined]  # once


def test_a_token_without_expiry_is_not_expired(deps: Deps) -> None:
    connect(deps)
    guard.sweep(deps)
    assert emit(deps, "alive")["ok"] is True and token_expired(deps) == 0


# --- revocation -----------------------------------------------------------------------------------


def revocation_store(deps: Deps) -> FakeRevocationStore:
    store: FakeRevocationStore = deps.revocations.client  # type: ignore[attr-defined]
    return store


def test_a_revoked_token_is_refused_at_its_next_event(deps: Deps) -> None:
    connect(deps)
    assert emit(deps, "alive")["ok"] is True
    revocation_store(deps).revoke_token("jti-a")  # logout: auth's list written, its message lost
    assert code(emit(deps, "alive")) == "unauthorized"
    assert code(emit(deps, "get-history")) == "unauthorized"
    assert token_expired(deps) == 1


def test_a_disabled_user_is_refused_at_its_next_event(deps: Deps) -> None:
    connect(deps)
    assert emit(deps, "alive")["ok"] is True
    revocation_store(deps).not_before("7", 2**53)  # disabled: every token issued before now refused
    assert code(emit(deps, "alive")) == "unauthorized"


def test_redis_down_is_overloaded_never_served(deps: Deps) -> None:
    connect(deps)
    revocation_store(deps).down = True
    ack = emit(deps, "alive")
    assert code(ack) == "overloaded" and ack["error"]["retry_after"] >= 1


# --- pool membership on every pool event ----------------------------------------------------------


def removed_from_p1(deps: Deps) -> None:
    deps.auth.add_user("tok-alice", "7", "alice", pools={"p2": "listener"}, token_id="jti-a")  # type: ignore[attr-defined]


def test_a_removed_contributor_cannot_write_or_complete_its_pool_upload(deps: Deps) -> None:
    connect(deps)
    file_id = emit(deps, "start-transfer", {"file_name": "a.bin", "size": 8, "pool_id": "p1"})["file_id"]
    assert emit(deps, "write-chunk", {"file_id": file_id, "index": 0, "data": b"abcd"})["received"] == 1
    removed_from_p1(deps)
    assert code(emit(deps, "write-chunk", {"file_id": file_id, "index": 1, "data": b"efgh"})) == "forbidden"
    assert code(emit(deps, "complete-upload", {"file_id": file_id})) == "forbidden"
    assert deps.uploader.completed == [] and (file_id, 1) not in deps.uploader.chunks  # type: ignore[attr-defined]
    # a private upload of the same socket is not affected
    private = emit(deps, "start-transfer", {"file_name": "b.bin", "size": 4})["file_id"]
    assert emit(deps, "complete-upload", {"file_id": private})["status"] == "cached"


def test_a_removed_contributor_cannot_resume_without_naming_the_pool(deps: Deps) -> None:
    connect(deps)
    removed_from_p1(deps)
    deps.uploader.resume_pool = "p1"  # type: ignore[attr-defined]  # file_uploader's word
    ack = emit(deps, "start-transfer", {"file_name": "a.bin", "size": 8, "file_id": "up-9"})
    assert code(ack) == "forbidden"
    assert deps.uploader.released == [("up-9", "s1")]  # type: ignore[attr-defined]
    # nor complete it from a socket that did not resume it (its writer lock expired)
    deps.uploader.described["up-9"] = "p1"  # type: ignore[attr-defined]
    assert code(emit(deps, "complete-upload", {"file_id": "up-9"})) == "forbidden"
    assert deps.uploader.completed == []  # type: ignore[attr-defined]


def test_a_resume_answer_keeps_spec_shape(deps: Deps) -> None:
    connect(deps)
    deps.uploader.resume_pool = "p1"  # type: ignore[attr-defined]
    ack = emit(deps, "start-transfer", {"file_name": "a.bin", "size": 8, "file_id": "up-9"})
    assert set(ack) == {"file_id", "chunk_size", "missing"}
    assert deps.local.pool_of_upload("s1", "up-9") == "p1"


def test_complete_from_another_socket_asks_file_uploader_for_the_pool(deps: Deps) -> None:
    connect(deps)
    assert code(emit(deps, "complete-upload", {"file_id": "unknown"})) == "not_found"
    deps.uploader.described.update({"private": None, "pooled": "p1"})  # type: ignore[attr-defined]
    assert emit(deps, "complete-upload", {"file_id": "private"})["status"] == "cached"
    assert emit(deps, "complete-upload", {"file_id": "pooled"})["status"] == "cached"  # still a contributor
    assert deps.uploader.completed == ["private", "pooled"]  # type: ignore[attr-defined]


# --- the token's times ---------------------------------------------------------------------------


def jwt_like(claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"


@pytest.mark.parametrize(("token", "expected"), [
    (jwt_like({"iat": 1700000000}), 1700000000.0),
    (jwt_like({"iat": 1700000000, "iat_ms": 1700000000123}), 1700000000.123),
    (jwt_like({"iat": True}), None), (jwt_like([1]), None), ("tok-alice", None), ("a.%%%.b", None),
])
def test_issued_at_from_the_validated_token(token: str, expected: float | None) -> None:
    assert core.token_issued_at(token) == expected


def test_validate_answer_carries_expiry() -> None:
    doc = {"user_id": "7", "user_name": "a", "role": "user", "token_id": "j", "expires_at": 1700000900}
    assert Identity.from_validate(doc).expires_at == 1700000900
    assert Identity.from_validate({k: v for k, v in doc.items() if k != "expires_at"}).expires_at is None


class Unreadable:
    def is_revoked(self, claims: SocketToken) -> bool:
        raise RuntimeError("redis down")


def test_an_unreadable_revocation_list_is_overloaded_never_served(deps: Deps) -> None:
    connect(deps)
    object.__setattr__(deps, "revocations", Unreadable())
    ack = emit(deps, "alive")
    assert code(ack) == "overloaded" and ack["error"]["retry_after"] >= 1 and token_expired(deps) == 0


def test_the_session_keeps_what_the_shared_reader_reads(deps: Deps) -> None:
    deps.auth.tokens["tok-s"] = Identity("7", "alice", "user", token_id="j", session_id="login-1",  # type: ignore[attr-defined]
                                         issued_at=1700000000.5, expires_at=int(time.time()) + 60)
    connect(deps, token="tok-s")
    claims = guard.socket_token(deps.sockets.get_session("s1"))
    assert (claims.token_id, claims.user_id, claims.session_id, claims.issued_at) == ("j", "7", "login-1",
                                                                                       1700000000.5)


# --- reauth ---------------------------------------------------------------------------------------


def test_reauth_in_the_grace_restores_the_socket(deps: Deps) -> None:
    expiring_alice(deps, time.time() - 1)
    connect(deps, token="tok-exp")
    guard.sweep(deps)
    assert token_expired(deps) == 1 and deps.sockets.rooms_of("s1") == set()  # type: ignore[attr-defined]
    deps.sockets.background.clear()  # type: ignore[attr-defined]  # connect's own delivery
    expiring_alice(deps, time.time() + 600, token="tok-new")
    ack = emit(deps, "reauth", {"token": "tok-new"})
    assert ack["ok"] is True and 590 <= ack["expires_in"] <= 600
    assert deps.sockets.rooms_of("s1") == {"user:7", "token:jti-tok-new", "pool:p1", "pool:p2"}  # type: ignore[attr-defined]
    assert emit(deps, "alive")["ok"] is True
    deps.local.expired.clear()
    guard.sweep(deps)
    assert deps.sockets.disconnected == [] and not deps.local.is_expired("s1")  # type: ignore[attr-defined]
    assert deps.sockets.get_session("s1")["token"] == "tok-new"
    # what its pools published meanwhile is re-sent from its acks, as on connect
    [(task, args)] = deps.sockets.background  # type: ignore[attr-defined]
    assert task is sockets.catch_up and args[1] == "s1" and args[3:5] == ("7", ["p1", "p2"])
    assert deps.local.may_catch_up("s1", args[2])


def test_reauth_moves_rooms_with_the_new_membership(deps: Deps) -> None:
    connect(deps)
    deps.auth.add_user("tok-2", "7", "alice", pools={"p1": "contributor", "p3": "listener"},  # type: ignore[attr-defined]
                       token_id="jti-2")
    assert emit(deps, "reauth", {"token": "tok-2"})["ok"] is True
    assert deps.sockets.rooms_of("s1") == {"user:7", "token:jti-2", "pool:p1", "pool:p3"}  # type: ignore[attr-defined]


def test_reauth_of_another_user_is_forbidden_and_changes_nothing(deps: Deps) -> None:
    connect(deps)
    assert code(emit(deps, "reauth", {"token": "tok-admin"})) == "forbidden"
    assert deps.sockets.get_session("s1")["token"] == "tok-alice"
    assert "admins" not in deps.sockets.rooms_of("s1")  # type: ignore[attr-defined]


@pytest.mark.parametrize("payload", [None, {}, {"token": ""}, {"token": 5}, {"token": "x" * 9000}, ["tok"]])
def test_reauth_needs_a_token(deps: Deps, payload: Any) -> None:
    connect(deps)
    assert code(emit(deps, "reauth", payload)) == "bad_request"


def test_reauth_with_a_bad_token_keeps_the_grace(deps: Deps) -> None:
    expiring_alice(deps, time.time() - 1)
    connect(deps, token="tok-exp")
    guard.sweep(deps)
    assert code(emit(deps, "reauth", {"token": "stolen"})) == "unauthorized"
    assert code(emit(deps, "reauth", {"token": "tok-exp"})) == "unauthorized"  # expired itself
    assert deps.local.is_expired("s1")
