"""A leader lease with a fencing token: one process of N does a singleton job (a ticker).

The lease lives in a shared store (``LeaseStore``; pool_aggregator keeps it in
MongoDB). Whoever takes it over gets the next **term**, a number that only
ever grows (the fencing token). The holder renews it in the background every
``ttl / 3``; a holder that dies stops renewing and another process takes over
once the lease's ``ttl`` has run out (quick: ``ttl`` is seconds, env
configurable). A graceful stop releases it, so the takeover is immediate.

Two guards, because a lease alone is not enough (a process paused by GC or
SIGSTOP past its lease wakes up believing it leads):

- locally, ``term()`` answers the term only until ``ttl`` minus a margin after
  the renewal *began* (a monotonic clock, so a wall-clock jump does not extend
  it); past that, the process acts as a follower until a renewal succeeds;
- in the store, every write the leader makes carries its term and is refused
  when a higher term has been seen (the callers' conditional updates compare
  it): an old leader that passed the local check and was then paused cannot
  write after a new leader took over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# The share of the lease a holder trusts locally: the store keeps the lease ttl from the
# holder's write, the holder trusts it (1 - MARGIN) * ttl from *before* it asked, so
# clock rates that differ by less than this between processes cannot make two leaders act.
MARGIN = 0.2


class LeaseStore(Protocol):
    """A named lease in a store shared by every replica; ``now`` is wall-clock epoch seconds."""

    def acquire(self, name: str, holder: str, term: int | None, now: float, ttl: float) -> int | None:
        """Renew the lease (held by ``holder`` with ``term``: same term) or take it over when
        it expired or never existed (the next term). The term held after the call, or None
        when another holder's lease is still running."""
        ...

    def release(self, name: str, holder: str, term: int) -> None:
        """Let the lease expire now, if ``holder`` still holds it with ``term``."""
        ...


def holder_id() -> str:
    """This process, readable in the lease document: host, pid, and a nonce (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Held:
    term: int
    trusted_until: float  # monotonic


class LeaderLease:
    """One process's view of one lease: ``term()`` while it leads, None otherwise.

    ``start`` runs the renewal thread (the runtime's ``services`` hook: it returns
    ``stop``, which releases the lease). Without that thread (a test, a one-off
    call) ``term()`` renews on demand once the lease is due.
    """

    def __init__(self, store: LeaseStore, name: str, *, ttl: float = 10.0, holder: str | None = None,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 on_change: Callable[[int | None], None] | None = None) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.store = store
        self.name = name
        self.ttl = ttl
        self.holder = holder or holder_id()
        self.wall = wall
        self.monotonic = monotonic
        self.on_change = on_change
        self._held: _Held | None = None
        self._last_term: int | None = None  # the term last held, renewed by it (None: never held)
        self._next_step = 0.0  # monotonic time of the next on-demand renewal
        self._lock = threading.Lock()  # one renewal at a time (thread and on-demand callers)
        self._thread: threading.Thread | None = None

    @property
    def interval(self) -> float:
        return self.ttl / 3

    def term(self) -> int | None:
        """The term while this process leads and its lease is trusted locally; else None."""
        if self._thread is None and self.monotonic() >= self._next_step:
            self.step()
        held = self._held
        if held is None or self.monotonic() >= held.trusted_until:
            return None
        return held.term

    def step(self) -> int | None:
        """One renewal (or takeover) attempt; the term held after it. A store error counts as
        not leading (logged): the lease may be someone else's by the time the store is back."""
        with self._lock:
            started = self.monotonic()
            self._next_step = started + self.interval
            try:
                term = self.store.acquire(self.name, self.holder, self._last_term, self.wall(), self.ttl)
            except Exception as exc:  # noqa: BLE001 - the store is down: stop acting, try again later
                log.warning("lease_renewal_failed", extra={"lease": self.name, "error": repr(exc)})
                term = None
            before = self._held.term if self._held is not None else None
            if term is None:
                self._held = None
            else:
                self._held = _Held(term, started + self.ttl * (1 - MARGIN))
                self._last_term = term
        if term != before:
            log.warning("leadership_changed", extra={"lease": self.name, "holder": self.holder,
                                                      "term": term, "previous": before})
            if self.on_change is not None:
                self.on_change(term)
        return term

    def start(self) -> Callable[[], None]:
        """Renew every ``ttl / 3`` in a daemon thread; returns ``stop`` (ends it, releases)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                self.step()
                stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

        def halt() -> None:
            stop.set()
            if self._thread is not None:
                self._thread.join(timeout=self.interval + 5)  # bounded: one store call's timeout
            self.release()

        return halt

    def release(self) -> None:
        """Give the lease up now (a graceful stop), so the next leader need not wait out the ttl."""
        with self._lock:
            held, self._held = self._held, None
        if held is None:
            return
        try:
            self.store.release(self.name, self.holder, held.term)
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            log.warning("lease_release_failed", extra={"lease": self.name, "error": repr(exc)})


class LocalLeaseStore:
    """A ``LeaseStore`` in this process's memory: correct for one process (a single replica,
    tests); replicas need a shared one."""

    def __init__(self) -> None:
        self._leases: dict[str, tuple[str, int, float]] = {}  # name -> (holder, term, expires_at)
        self._lock = threading.Lock()

    def acquire(self, name: str, holder: str, term: int | None, now: float, ttl: float) -> int | None:
        with self._lock:
            current = self._leases.get(name)
            if current is None:
                self._leases[name] = (holder, 1, now + ttl)
                return 1
            owner, last, expires_at = current
            if owner == holder and last == term:
                self._leases[name] = (holder, last, now + ttl)
                return last
            if expires_at <= now:
                self._leases[name] = (holder, last + 1, now + ttl)
                return last + 1
            return None

    def release(self, name: str, holder: str, term: int) -> None:
        with self._lock:
            current = self._leases.get(name)
            if current is not None and current[:2] == (holder, term):
                self._leases[name] = (holder, term, 0.0)

    def peek(self, name: str) -> tuple[str, int, float] | None:
        """(holder, term, expires_at) of a lease, for tests and diagnostics."""
        with self._lock:
            return self._leases.get(name)
