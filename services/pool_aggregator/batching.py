"""Group commit for the FileStored/UploadStored consumers: concurrent deliveries grouped in one slice.

The shared consumer hands one message at a time to a handler and acks it when
the handler returns, so bulk writes need several deliveries in flight at once:
pool_aggregator runs ``grouping_consumers`` competing consumers (threads), and
each hands its message to ``SliceRunner.run`` and waits. Messages run in
lanes (``lane``: a message's pool): one slice per lane at a time, and up to
``max_leaders`` lanes at once. A waiting thread whose message no slice has taken
becomes its lane's leader when that lane is idle and a leader slot is free: it
takes the lane's pending messages not yet taken (oldest first, their ``weight``,
i.e. their files, at most ``max_slice``; a batch upload's one message heavier than
that is a slice of its own), runs the work once for all of them (a few bulk writes
per window instead of several round trips per file), hands each thread its own answer, and steps
down; the next leader takes what arrived meanwhile. No extra thread, no timer: a
lone message is handled at once, and under load slices fill up by themselves.

Why lanes (measured with bench/grouping_bench.py on a loaded 2-core machine, README):
with one slice at a time for everything, another pool's file waited behind every
slice of a big batch; with several slices of one pool at once, the batch was cut
into small slices (more round trips in all) and got slower. One slice per pool
keeps a busy pool's slices large and lets another pool's file through at once.
Concurrent slices of different pools are as safe as concurrent pool_aggregator
processes, which the store's conditional writes serve anyway.

Poison isolation: when a slice of several fails, every message in it is run
again alone (by its own thread), so one bad message fails only itself (and
goes to the dead-letter queue after its retries), never its slice-mates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Work = Callable[[Sequence[T]], dict[Any, Any]]


@dataclass
class _Ticket(Generic[T]):
    item: T
    done: bool = False
    alone: bool = False  # its slice failed: run it again by itself
    result: Any = None
    error: BaseException | None = None
    taken: bool = field(default=False)
    lane: Hashable = None


class SliceRunner(Generic[T]):
    """Runs ``work(items) -> {key(item): result}`` over slices of concurrently submitted items.

    Every caller passes the same ``work``; the leader of a slice runs its own.
    """

    def __init__(self, key: Callable[[T], Hashable], *, max_slice: int = 64, max_leaders: int = 4,
                 lane: Callable[[T], Hashable] = lambda item: None,
                 weight: Callable[[T], int] = lambda item: 1) -> None:
        self.key = key
        self.lane = lane
        # An item's share of a slice (pool_aggregator: its files; a batch upload's message weighs
        # its item count). A slice takes items until the next would pass max_slice, and always
        # at least one: a batch heavier than max_slice is a slice of its own (bounded by MAX_ITEMS).
        self.weight = weight
        self.max_slice = max(1, max_slice)  # bounds one slice's writes and its wait (in weight)
        # Slices running at once: bounds the concurrent writes (and MongoDB connections) of grouping.
        self.max_leaders = max(1, max_leaders)
        self._cond = threading.Condition()
        # Bounded by the number of submitting threads (the consumers): each waits for its ticket.
        self._pending: list[_Ticket[T]] = []
        self._leaders = 0
        self._busy_lanes: set[Hashable] = set()  # at most max_leaders lanes
        self.slices = 0  # slices run (for tests and the benchmark)
        self.most_leaders = 0  # the most slices seen running at once (for tests and the benchmark)

    def run(self, item: T, work: Work[T]) -> Any:
        ticket = _Ticket(item, lane=self.lane(item))
        with self._cond:
            self._pending.append(ticket)
        while True:
            with self._cond:
                # Wait while a slice holds this ticket, its lane has a slice running, or every
                # leader slot is taken.
                while not ticket.done and not ticket.alone and (
                        ticket.taken or ticket.lane in self._busy_lanes or self._leaders >= self.max_leaders):
                    self._cond.wait()
                if ticket.done:
                    if ticket.error is not None:
                        raise ticket.error
                    return ticket.result
                if ticket.alone:
                    break
                self._leaders += 1
                self._busy_lanes.add(ticket.lane)
                self.most_leaders = max(self.most_leaders, self._leaders)
                batch = self._take(ticket.lane)
            self._lead(batch, work, ticket.lane)
        return work([item]).get(self.key(item))  # its slice failed: alone, errors raise as they are

    def _take(self, lane: Hashable) -> list[_Ticket[T]]:
        batch: list[_Ticket[T]] = []
        total = 0
        for ticket in self._pending:  # oldest first
            if ticket.taken or ticket.lane != lane:
                continue
            heft = max(1, self.weight(ticket.item))
            if batch and total + heft > self.max_slice:
                break
            batch.append(ticket)
            total += heft
        for ticket in batch:
            ticket.taken = True
        return batch

    def _lead(self, batch: list[_Ticket[T]], work: Work[T], lane: Hashable) -> None:
        try:
            results = work([t.item for t in batch])
            outcome: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - handed to the waiting threads below
            results, outcome = {}, exc
        with self._cond:
            self.slices += 1
            for ticket in batch:
                self._pending.remove(ticket)
                if outcome is None:
                    ticket.done, ticket.result = True, results.get(self.key(ticket.item))
                elif len(batch) == 1:
                    ticket.done, ticket.error = True, outcome
                else:
                    ticket.alone = True
            self._leaders -= 1
            self._busy_lanes.discard(lane)
            self._cond.notify_all()
