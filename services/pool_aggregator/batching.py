"""Group commit for the FileStored consumers: concurrent deliveries grouped in one slice.

The shared consumer hands one message at a time to a handler and acks it when
the handler returns, so bulk writes need several deliveries in flight at once:
pool_aggregator runs ``grouping_consumers`` competing consumers (threads), and
each hands its message to ``SliceRunner.run`` and waits. A waiting thread whose
message no slice has taken becomes a leader when fewer than ``max_leaders``
slices are running: it takes every pending message not yet taken (at most
``max_slice``, oldest first), runs the work once for all of them (a few bulk
writes per pool and window instead of several round trips per file), hands each
thread its own answer, and steps down; the next leader takes what arrived
meanwhile. No extra thread, no timer: a lone message is handled at once, and
under load slices fill up by themselves.

Several slices at once (``max_leaders``, 4 by default): a slice's time is mostly
waiting on MongoDB round trips, so with one slice at a time the database sat idle
while the next slice's messages waited (measured with bench/grouping_bench.py:
one leader was busy the whole run). Concurrent slices are as safe as concurrent
pool_aggregator processes, which the store's conditional writes already serve
(a file counts once by its membership ``_id``; counters move by ``$inc``). It is
also what keeps pools fair: another pool's file waiting behind a big batch gets a
slice of its own as soon as a leader is free, not after the whole batch.

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


class SliceRunner(Generic[T]):
    """Runs ``work(items) -> {key(item): result}`` over slices of concurrently submitted items.

    Every caller passes the same ``work``; the leader of a slice runs its own.
    """

    def __init__(self, key: Callable[[T], Hashable], *, max_slice: int = 64, max_leaders: int = 4) -> None:
        self.key = key
        self.max_slice = max(1, max_slice)  # bounds one slice's writes and its wait
        # Slices running at once: bounds the concurrent writes (and MongoDB connections) of grouping.
        self.max_leaders = max(1, max_leaders)
        self._cond = threading.Condition()
        # Bounded by the number of submitting threads (the consumers): each waits for its ticket.
        self._pending: list[_Ticket[T]] = []
        self._leaders = 0
        self.slices = 0  # slices run (for tests and the benchmark)
        self.most_leaders = 0  # the most slices seen running at once (for tests and the benchmark)

    def run(self, item: T, work: Work[T]) -> Any:
        ticket = _Ticket(item)
        with self._cond:
            self._pending.append(ticket)
        while True:
            with self._cond:
                # Wait while another leader's slice holds this ticket, or every leader slot is taken.
                while not ticket.done and not ticket.alone and \
                        (ticket.taken or self._leaders >= self.max_leaders):
                    self._cond.wait()
                if ticket.done:
                    if ticket.error is not None:
                        raise ticket.error
                    return ticket.result
                if ticket.alone:
                    break
                self._leaders += 1
                self.most_leaders = max(self.most_leaders, self._leaders)
                batch = self._take()
            self._lead(batch, work)
        return work([item]).get(self.key(item))  # its slice failed: alone, errors raise as they are

    def _take(self) -> list[_Ticket[T]]:
        batch = [t for t in self._pending if not t.taken][: self.max_slice]
        for ticket in batch:
            ticket.taken = True
        return batch

    def _lead(self, batch: list[_Ticket[T]], work: Work[T]) -> None:
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
            self._cond.notify_all()
