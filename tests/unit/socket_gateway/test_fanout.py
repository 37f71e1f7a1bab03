"""Fair fan-out (fanout.py): a small room's broadcast is not queued behind a big room's whole fan-out.

Run against python-socketio's own ``RedisManager`` (``MANAGERS`` below holds it for the
comparison), ``test_a_small_room_is_served_within_a_slice_of_a_big_one`` fails: the
one-member room's packet goes out after all 2 x 1,000 of the big room's.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import socketio
from socketio import packet

from services.socket_gateway.fanout import FairRedisManager

NS = "/"


class _Eio:
    def __init__(self) -> None:
        self.n = 0

    def generate_id(self) -> str:
        self.n += 1
        return f"sid{self.n}"

    def create_event(self) -> threading.Event:
        return threading.Event()


class _Server:
    """What a manager uses of ``socketio.Server``: packets, sends (recorded in order), sleep."""

    packet_class = packet.Packet

    def __init__(self) -> None:
        self.eio = _Eio()
        self.sent: list[tuple[str, str]] = []  # (eio_sid, encoded Socket.IO packet), in send order

    def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        self.sent.append((eio_sid, eio_pkt.data))

    def sleep(self, seconds: float = 0) -> None:
        pass


def _manager(cls: type = FairRedisManager, **kwargs: Any) -> tuple[Any, _Server]:
    manager = cls("redis://127.0.0.1:1/0", **kwargs)  # never connects: no initialize()
    server = _Server()
    manager.set_server(server)
    if isinstance(manager, FairRedisManager):
        manager._wake = threading.Event()  # what initialize() makes, without the listener/sender tasks
    return manager, server


def _room(manager: Any, room: str, count: int, prefix: str) -> list[str]:
    eio_sids = [f"{prefix}{n}" for n in range(count)]
    for eio_sid in eio_sids:
        sid = manager.connect(eio_sid, NS)
        manager.enter_room(sid, NS, room)
    return eio_sids


def _publish(manager: Any, room: Any, event: str, data: dict[str, Any], skip_sid: Any = None) -> None:
    """What the listener hands over for one message of the channel (PubSubManager's format)."""
    manager._handle_emit({"method": "emit", "event": event, "data": [data], "namespace": NS, "room": room,
                          "skip_sid": skip_sid, "callback": None, "host_id": "other"})


def _drain(manager: Any) -> None:
    if isinstance(manager, FairRedisManager):
        for _ in range(100_000):  # bound: far more turns than any test here needs
            if not manager.serve_turn():
                return
        raise AssertionError("the sender never went idle")


def _events(server: _Server, eio_sid: str) -> list[str]:
    return [data for sid, data in server.sent if sid == eio_sid]


def test_a_small_room_is_served_within_a_slice_of_a_big_one() -> None:
    manager, server = _manager(slice_size=100)
    big = _room(manager, "pool:A", 1000, "a")
    (small,) = _room(manager, "pool:B", 1, "b")
    _publish(manager, "pool:A", "pool-result", {"seq": 1})
    _publish(manager, "pool:A", "pool-result", {"seq": 2})
    _publish(manager, "pool:B", "pool-result", {"seq": 1})
    _drain(manager)
    order = [sid for sid, _ in server.sent]
    assert len(order) == 2 * len(big) + 1
    # B's one packet went out after one slice of A's first broadcast, not after A's 2,000.
    assert order.index(small) == 100
    assert manager.queued() == 0


def test_a_room_keeps_its_broadcasts_in_order_and_sends_each_once() -> None:
    manager, server = _manager(slice_size=7)
    big = _room(manager, "pool:A", 50, "a")
    other = _room(manager, "pool:B", 20, "b")
    for seq in range(1, 6):
        _publish(manager, "pool:A", "pool-result", {"seq": seq})
        _publish(manager, "pool:B", "pool-result", {"seq": seq})
    _drain(manager)
    for eio_sid in big + other:
        got = _events(server, eio_sid)
        assert got == [packet.Packet(packet.EVENT, namespace=NS,
                                     data=["pool-result", {"seq": seq}]).encode() for seq in range(1, 6)]


def test_skip_sid_a_room_list_and_a_socket_that_left() -> None:
    manager, server = _manager(slice_size=3)
    room_a = _room(manager, "user:1", 4, "u")
    room_b = _room(manager, "admins", 2, "x")
    skipped = manager.sid_from_eio_sid(room_a[0], NS)
    _publish(manager, ["user:1", "admins"], "file-status", {"status": "cached"}, skip_sid=skipped)
    _drain(manager)
    assert sorted(sid for sid, _ in server.sent) == sorted(room_a[1:] + room_b)
    # A broadcast whose room emptied before its turn sends nothing and is finished.
    leaving = manager.sid_from_eio_sid(room_b[0], NS)
    manager.leave_room(leaving, NS, "admins")
    manager.leave_room(manager.sid_from_eio_sid(room_b[1], NS), NS, "admins")
    server.sent.clear()
    _publish(manager, "admins", "file-status", {"status": "uploaded_successfully"})
    _drain(manager)
    assert server.sent == [] and manager.queued() == 0


def test_past_the_bound_a_broadcast_is_sent_in_place() -> None:
    manager, server = _manager(slice_size=10, max_queued=1)
    big = _room(manager, "pool:A", 30, "a")
    (small,) = _room(manager, "pool:B", 1, "b")
    _publish(manager, "pool:A", "pool-result", {"seq": 1})  # queued: the one slot
    _publish(manager, "pool:B", "pool-result", {"seq": 1})  # over the bound: sent at once
    assert [sid for sid, _ in server.sent] == [small]
    _drain(manager)
    assert sorted(sid for sid, _ in server.sent[1:]) == sorted(big)


@pytest.mark.parametrize("cls", [socketio.RedisManager])
def test_python_socketios_manager_is_first_come_first_served(cls: type) -> None:
    """The behaviour fanout.py replaces (pinned so a python-socketio upgrade that changes it is noticed)."""
    manager, server = _manager(cls)
    big = _room(manager, "pool:A", 300, "a")
    (small,) = _room(manager, "pool:B", 1, "b")
    _publish(manager, "pool:A", "pool-result", {"seq": 1})
    _publish(manager, "pool:B", "pool-result", {"seq": 1})
    assert [sid for sid, _ in server.sent].index(small) == len(big)


def _seqs(server: _Server, eio_sid: str) -> list[int]:
    return [json.loads(data[1:])[1]["seq"] for sid, data in server.sent if sid == eio_sid]


def test_past_the_bound_a_room_keeps_its_order() -> None:
    """A broadcast sent in place (over the bound) first sends what waits for its room."""
    manager, server = _manager(slice_size=10, max_queued=1)
    (member,) = _room(manager, "pool:A", 1, "a")
    _publish(manager, "pool:A", "pool-result", {"seq": 5})  # queued
    _publish(manager, "pool:A", "pool-result", {"seq": 6})  # over the bound: in place, after 5
    _drain(manager)
    assert _seqs(server, member) == [5, 6] and manager.queued() == 0


def test_a_socket_that_left_the_room_after_the_list_was_copied_is_skipped() -> None:
    """A member removed, or a token expired (guard.py leaves the rooms, then emits token-expired
    to the sid), between two turns of a broadcast: no pool-result after it (SPEC: no event is
    served for an expired token), as python-socketio's one-go emit would not have sent one."""
    manager, server = _manager(slice_size=10)
    members = _room(manager, "pool:A", 30, "a")
    _publish(manager, "pool:A", "pool-result", {"seq": 1})
    assert manager.serve_turn()  # the first 10 of 30
    late = members[-1]
    sid = manager.sid_from_eio_sid(late, NS)
    manager.leave_room(sid, NS, "pool:A")
    _publish(manager, sid, "token-expired", {})
    _drain(manager)
    assert [json.loads(data[1:])[0] for eio_sid, data in server.sent if eio_sid == late] == ["token-expired"]
    assert len(server.sent) == 29 + 1


def test_an_event_without_arguments_is_encoded_as_python_socketio_does() -> None:
    manager, server = _manager()
    (member,) = _room(manager, "r", 1, "a")
    _publish(manager, "r", "x", None)  # type: ignore[arg-type]  # PubSubManager publishes [None]
    _drain(manager)
    assert server.sent == [(member, '2["x"]')]
