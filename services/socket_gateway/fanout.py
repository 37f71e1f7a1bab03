"""Fair fan-out: one pool's big broadcast does not hold up another pool's (issue 10).

python-socketio's ``RedisManager`` takes each broadcast off the pub/sub channel and hands
it to ``Manager.emit``, which queues the packet for every socket of the room in one go,
on the one listener task. A result to a pool with 2,000 connections on this gateway held
the listener ~0.25 s; four such results in a row held it ~1 s, and a one-member pool's
result that arrived just after them waited the whole second (``bench/pool_bench.py
--fairness``: 0.96 s, against 0.01 s alone). First come, first served, by broadcast.

``FairRedisManager`` keeps the wire format and the channel, and changes only how a
gateway sends what it receives: the listener files each broadcast under its room (its
queue keeps their order, so a member still gets seq 5 before seq 6, and a file-status
after the one before it), and one task serves the rooms in turn, ``slice_size`` sockets
of a room's oldest broadcast per turn, yielding to the hub between turns so the sockets'
writer tasks run. A broadcast to a small room now waits for at most one slice of each
busy room, not for their whole fan-outs; a big room's fan-out is slowed only by the
turns of rooms that have something to send.

Bounds: at most ``max_queued`` broadcasts wait (10,000: each holds its encoded packet,
one result event is ~0.5 KB); past that the listener sends in place, as python-socketio
does (first come, first served again, nothing dropped), after sending what waits for the
same room so the room's order holds. A socket that left the room after its broadcast's
socket list was copied (a member removed, a token expired) is skipped at its turn. A room's socket list is copied
when its broadcast's turn first comes (one copy per room at a time: at most every local
socket once per room it is in). Broadcasts with an acknowledgement callback or binary
attachments (the gateway sends neither) keep python-socketio's path.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

log = logging.getLogger(__name__)

SLICE = 200  # sockets of one broadcast served per turn (~25 ms of sends on this machine)
MAX_QUEUED = 10_000  # broadcasts waiting for their turn; past it a broadcast is sent in place


class _Broadcast:
    __slots__ = ("namespace", "room", "packets", "skip", "targets", "sent")

    def __init__(self, namespace: str, room: Any, packets: list[Any], skip: list[Any]) -> None:
        self.namespace = namespace
        self.room = room
        self.packets = packets
        self.skip = skip
        self.targets: list[tuple[str, str]] | None = None  # (sid, eio_sid), copied at its first turn
        self.sent = 0


class FairRedisManager(socketio.RedisManager):
    name = "fair-redis"

    def __init__(self, *args: Any, slice_size: int = SLICE, max_queued: int = MAX_QUEUED, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slice_size = slice_size
        self.max_queued = max_queued
        self._lock = threading.Lock()  # the listener files, the sender takes (green under eventlet)
        self._rooms: OrderedDict[Any, deque[_Broadcast]] = OrderedDict()  # room -> its broadcasts, oldest first
        self._queued = 0
        self._wake: Any = None
        self.sender: Any = None

    def initialize(self) -> None:
        super().initialize()
        if not self.write_only:
            self._wake = self.server.eio.create_event()
            self.sender = self.server.start_background_task(self._serve)

    # --- the listener's side ---------------------------------------------------------------
    def _handle_emit(self, message: dict[str, Any]) -> None:
        namespace = message.get("namespace") or "/"
        if self._wake is None or message.get("callback") is not None or message.get("binary"):
            super()._handle_emit(message)
            return
        room = message.get("room")
        key = tuple(room) if isinstance(room, list) else room
        if self._queued >= self.max_queued:
            # Past the bound: sent in place, as python-socketio does -- after what waits for the
            # same room, sent in place first, so the room's order holds (seq 5 before seq 6).
            self._flush(key)
            super()._handle_emit(message)
            return
        if namespace not in self.rooms:
            return
        # The event's arguments exactly as PubSubManager._handle_emit and Manager.emit make them
        # from what was published: a one-element list is one argument (None: no argument).
        data = message.get("data")
        if isinstance(data, list):
            data = data[0] if len(data) == 1 else tuple(data)
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        encoded = self.server.packet_class(packet.EVENT, namespace=namespace,
                                           data=[message["event"], *args]).encode()
        packets = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in (encoded if isinstance(encoded, list)
                                                                         else [encoded])]
        skip = message.get("skip_sid")
        with self._lock:
            self._rooms.setdefault(key, deque()).append(
                _Broadcast(namespace, room, packets, skip if isinstance(skip, list) else [skip]))
            self._queued += 1
        self._wake.set()

    # --- the sender ------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            try:
                self._wake.clear()
                if not self.serve_turn():
                    self._wake.wait(timeout=1.0)
            except Exception:  # noqa: BLE001 - the sender must outlive any one failure, or every room stalls
                log.exception("fan-out turn failed")
                self.server.sleep(0.1)

    def serve_turn(self) -> bool:
        """One turn: a slice of the oldest broadcast of the room whose turn it is; False if idle."""
        with self._lock:
            if not self._rooms:
                return False
            key, queue = next(iter(self._rooms.items()))
            broadcast = queue[0]
        try:
            finished = self._send_slice(broadcast)
        except Exception:  # noqa: BLE001 - one broken broadcast must not stop every room's
            log.exception("broadcast dropped", extra={"room": str(key)[:80]})
            finished = True
        with self._lock:
            if finished and queue and queue[0] is broadcast:
                queue.popleft()
                self._queued -= 1
            if self._rooms.get(key) is queue:  # not flushed meanwhile (see _flush)
                if queue:
                    self._rooms.move_to_end(key)
                else:
                    del self._rooms[key]
        self.server.sleep(0)  # the sockets' writer tasks (and the listener) run between turns
        return True

    def _flush(self, key: Any) -> None:
        """Send what waits for ``key``'s room now, in order (the listener, past the bound)."""
        with self._lock:
            queue = self._rooms.pop(key, None)
            if queue:
                self._queued -= len(queue)
        for broadcast in queue or ():
            while not self._send_slice(broadcast):
                pass

    def _send_slice(self, broadcast: _Broadcast) -> bool:
        if broadcast.targets is None:
            skip = broadcast.skip
            broadcast.targets = [(sid, eio_sid) for sid, eio_sid in
                                 self.get_participants(broadcast.namespace, broadcast.room) if sid not in skip]
        end = min(len(broadcast.targets), broadcast.sent + self.slice_size)
        for sid, eio_sid in broadcast.targets[broadcast.sent:end]:
            # The list was copied at the broadcast's first turn; a socket that has left the room
            # since (a member removed, a token expired: guard.py leaves the rooms, then sends
            # token-expired) must not get it, as it would not have from python-socketio's one-go emit.
            if self._still_in(broadcast, sid):
                for p in broadcast.packets:
                    self.server._send_eio_packet(eio_sid, p)  # a socket gone meanwhile: engine.io skips it
        broadcast.sent = end
        return end >= len(broadcast.targets)

    def _still_in(self, broadcast: _Broadcast, sid: str) -> bool:
        rooms = self.rooms.get(broadcast.namespace, {})
        names = broadcast.room if isinstance(broadcast.room, list | tuple) else [broadcast.room]
        return any(sid in rooms.get(name, ()) for name in names)

    def queued(self) -> int:
        return self._queued
