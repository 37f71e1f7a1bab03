"""The gateway's consumed messages, through the real topology and handler tables (InMemoryBroker)."""

from __future__ import annotations

from services.common.contracts import (
    AuditRecorded,
    FileStatusChanged,
    GroupChanged,
    MembershipChanged,
    ResultPublished,
    TokenRevoked,
)
from services.common.testing import InMemoryBroker
from services.socket_gateway import handlers, sockets
from services.socket_gateway.deps import Deps


def connect(deps: Deps, sid: str, token: str) -> None:
    sockets.connect(deps, sockets.Session(sid), {"token": token})


def deliver(deps: Deps, broker: InMemoryBroker, *messages) -> int:
    for message in messages:
        broker.publish(message)
    return broker.deliver(handlers.consumers(deps))


def test_file_status_goes_to_the_owner_and_admins_only(deps: Deps, broker: InMemoryBroker) -> None:
    deliver(deps, broker, FileStatusChanged("f1", "7", "cached", pool_id="p1", file_name="a.bin"))
    [emitted] = deps.sockets.emitted  # type: ignore[attr-defined]
    assert emitted.event == "file-status" and set(emitted.to) == {"user:7", "admins"}
    assert emitted.data == {"file_id": "f1", "status": "cached", "pool_id": "p1", "file_name": "a.bin"}


def test_a_result_goes_to_the_pool_room_and_is_audited(deps: Deps, broker: InMemoryBroker) -> None:
    deliver(deps, broker, ResultPublished("r1", "p1", "g1", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z",
                                          "r.bin", 3, "a" * 64, "2026-01-01T00:02:00Z", "/file/r1"))
    [emitted] = deps.sockets.emitted  # type: ignore[attr-defined]
    assert (emitted.event, emitted.to, emitted.data["result_id"]) == ("pool-result", "pool:p1", "r1")
    [audit] = [a for a in broker.of_type(AuditRecorded) if a.action == "result_delivered"]
    assert (audit.file_id, audit.detail["delivery"]) == ("r1", "live")


def test_group_status_goes_to_the_pool_and_the_admins(deps: Deps, broker: InMemoryBroker) -> None:
    connect(deps, "s1", "tok-alice")  # member of p1
    connect(deps, "s2", "tok-admin")
    assert deliver(deps, broker, GroupChanged("p1", "g1", "ready", "2026-01-01T00:00:00Z",
                                              "2026-01-01T00:01:00Z")) == 1
    [emitted] = [e for e in deps.sockets.emitted if e.event == "group-status"]  # type: ignore[attr-defined]
    assert set(emitted.to) == {"pool:p1", "admins"}
    assert emitted.data == {"pool_id": "p1", "group_id": "g1", "status": "ready"}
    assert deps.sockets.local_sids("pool:p1") == ["s1"] and deps.sockets.local_sids("admins") == ["s2"]


def test_group_status_carries_reason_and_short(deps: Deps, broker: InMemoryBroker) -> None:
    deliver(deps, broker, GroupChanged("p2", "g2", "failed", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z",
                                       reason="quorum_not_met"),
            GroupChanged("p2", "g3", "ready", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z", short=True))
    assert [e.data for e in deps.sockets.emitted] == [  # type: ignore[attr-defined]
        {"pool_id": "p2", "group_id": "g2", "status": "failed", "reason": "quorum_not_met"},
        {"pool_id": "p2", "group_id": "g3", "status": "ready", "short": True}]


def test_a_revoked_token_disconnects_its_sockets_only(deps: Deps, broker: InMemoryBroker) -> None:
    connect(deps, "s1", "tok-alice")
    connect(deps, "s2", "tok-admin")
    deliver(deps, broker, TokenRevoked("jti-a", "7"))
    assert deps.sockets.disconnected == ["s1"]  # type: ignore[attr-defined]


def test_membership_changes_move_sockets_between_rooms(deps: Deps, broker: InMemoryBroker) -> None:
    connect(deps, "s1", "tok-alice")
    deliver(deps, broker, MembershipChanged("p3", "7", "alice", "listener"))
    assert "pool:p3" in deps.sockets.rooms_of("s1")  # type: ignore[attr-defined]
    assert deps.sockets.get_session("s1")["pools"]["p3"] == "listener"
    deliver(deps, broker, MembershipChanged("p1", "7", "alice", None))
    assert "pool:p1" not in deps.sockets.rooms_of("s1")  # type: ignore[attr-defined]
    assert "p1" not in deps.sockets.get_session("s1")["pools"]


def test_every_message_bound_to_our_queues_has_a_handler() -> None:
    assert set(handlers.NOTIFICATION_HANDLERS) == {FileStatusChanged, ResultPublished, GroupChanged}
    assert set(handlers.CONTROL_HANDLERS) == {TokenRevoked, MembershipChanged}


def test_upload_outcomes_and_results_are_emitted_once_though_their_message_comes_twice(
        deps: Deps, broker: InMemoryBroker) -> None:
    """A message redelivered after a gateway replica died before its ack, or published twice
    upstream (a store redelivered after its announcement), reaches the sockets once."""
    from dataclasses import replace

    from services.common.testing.socket_gateway import FakeDeliveries

    deps = replace(deps, deliveries=FakeDeliveries())
    stored = FileStatusChanged("f1", "7", "uploaded_successfully", attempt=1, pool_id="p1", file_name="a.bin")
    result = ResultPublished("r1", "p1", "g1", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z",
                             "r.bin", 3, "a" * 64, "2026-01-01T00:02:00Z", "/file/r1")
    deliver(deps, broker, stored, stored, result, result,
            FileStatusChanged("f1", "7", "uploaded_successfully", attempt=2, pool_id="p1", file_name="a.bin"),
            FileStatusChanged("f2", "7", "cached"), FileStatusChanged("f2", "7", "cached"))
    emitted = [(e.event, e.data.get("file_id") or e.data.get("result_id"), e.data.get("status"))
               for e in deps.sockets.emitted]  # type: ignore[attr-defined]
    assert emitted == [("file-status", "f1", "uploaded_successfully"), ("pool-result", "r1", None),
                       ("file-status", "f1", "uploaded_successfully"),  # another attempt: its own outcome
                       ("file-status", "f2", "cached"), ("file-status", "f2", "cached")]  # not once-only
    assert len([a for a in broker.of_type(AuditRecorded) if a.action == "result_delivered"]) == 1
