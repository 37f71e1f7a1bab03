"""A leader lease with a fencing token: one process of N does a singleton job (a ticker).

The lease lives in a shared store (``LeaseStore``; pool_aggregator keeps it in
MongoDB). Whoever takes it over gets the next **term**, a number that only
ever grows (the fencing token). The holder renews it in the background every
``ttl / 3`` (each renewal bumps the lease's ``version``); a holder that dies
stops renewing and another process takes over once it has seen the same
version for ``ttl`` of its own monotonic clock (quick: ``ttl`` is seconds, env
configurable). A graceful stop releases it, so the takeover is immediate.

No wall clocks are compared: expiry is not "the holder's clock + ttl against
the contender's clock" (machines' clocks differ by seconds, and a contender
whose clock ran ahead would take over early), but "nothing changed for ttl" as
measured by the contender alone, in the way Kubernetes' leader election does
(its observed time). The wall clock is only recorded in the store for people.

Two guards, because a lease alone is not enough (a process paused by GC or
SIGSTOP past its lease wakes up believing it leads):

- locally, ``term()`` answers the term only until ``ttl`` minus a margin after
  the renewal *began* (a monotonic clock, so a wall-clock jump does not extend
  it); past that, the process acts as a follower until a renewal succeeds. A
  contender waits ``ttl`` after it *saw* that renewal's version, which was
  written after the renewal began: the holder stops trusting first;
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

# The share of the lease a holder trusts locally: a contender takes over only after seeing the
# lease unchanged for ttl (its monotonic clock), the holder trusts it (1 - MARGIN) * ttl from
# *before* it renewed (its own), so clock rates that differ by less than this between processes
# cannot make two leaders act.
MARGIN = 0.2


@dataclass(frozen=True)
class LeaseState:
    """A lease as a contender sees it. ``version`` changes with every renewal, takeover and
    release, so "the same state for ttl" means "its holder stopped renewing". ``renewed`` (the
    renewer's wall clock) is only compared for equality: a replica of the previous version,
    during a rolling update, renews without a version but with a new ``renewed``."""

    holder: str
    term: int
    version: int
    released: bool = False
    renewed: float | None = None


class LeaseStore(Protocol):
    """A named lease in a store shared by every replica. Every change is one conditional write;
    ``now`` (wall-clock epoch seconds) is only recorded for people, never compared."""

    def read(self, name: str) -> LeaseState | None:
        """The lease as it is, or None when there never was one."""
        ...

    def renew(self, name: str, holder: str, term: int, now: float, ttl: float) -> bool:
        """Bump the version of the lease ``holder`` holds with ``term`` (not released); whether it
        did. (``ttl``: a store may record ``now + ttl`` for replicas of an older version.)"""
        ...

    def take(self, name: str, holder: str, seen: LeaseState | None, now: float, ttl: float) -> int | None:
        """Take the lease over with the next term, only if it is still exactly ``seen`` (same
        state; None: only if there is no lease yet, which gets term 1). The new term, or None
        when it changed meanwhile (another process renewed or took it)."""
        ...

    def release(self, name: str, holder: str, term: int) -> None:
        """Let the lease go now (a contender takes it at once), if ``holder`` still holds it with ``term``."""
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
        self.wall = wall  # recorded in the store for people, never compared
        self.monotonic = monotonic
        self.on_change = on_change
        self._held: _Held | None = None
        self._last_term: int | None = None  # the term last held, renewed by it (None: never held)
        # Another holder's lease as last seen changing, and when (monotonic): it expires for this
        # process ttl after that, whatever any wall clock says.
        self._seen: LeaseState | None = None
        self._seen_at = 0.0
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
                term = self._attempt(started)
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

    def _attempt(self, started: float) -> int | None:
        """Renew the term held last; else take the lease over if it was released, never existed,
        or has not changed for ttl since this process first saw it so; else None."""
        if self._last_term is not None and self.store.renew(self.name, self.holder, self._last_term, self.wall(),
                                                                self.ttl):
            return self._last_term
        state = self.store.read(self.name)
        if state is None or state.released:
            return self.store.take(self.name, self.holder, state, self.wall(), self.ttl)
        if state != self._seen:
            # It changed: its holder is alive. Timed from after the read (not from ``started``),
            # so the wait never begins before the holder's renewal that wrote this version.
            self._seen, self._seen_at = state, self.monotonic()
            return None
        if started - self._seen_at >= self.ttl:
            return self.store.take(self.name, self.holder, state, self.wall(), self.ttl)
        return None

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
        self._leases: dict[str, LeaseState] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> LeaseState | None:
        with self._lock:
            return self._leases.get(name)

    def renew(self, name: str, holder: str, term: int, now: float, ttl: float) -> bool:
        with self._lock:
            current = self._leases.get(name)
            if current is None or (current.holder, current.term, current.released) != (holder, term, False):
                return False
            self._leases[name] = LeaseState(holder, term, current.version + 1, renewed=now)
            return True

    def take(self, name: str, holder: str, seen: LeaseState | None, now: float, ttl: float) -> int | None:
        with self._lock:
            current = self._leases.get(name)
            if current != seen:
                return None
            term = current.term + 1 if current is not None else 1
            self._leases[name] = LeaseState(holder, term, 0, renewed=now)
            return term

    def release(self, name: str, holder: str, term: int) -> None:
        with self._lock:
            current = self._leases.get(name)
            if current is not None and (current.holder, current.term) == (holder, term):
                self._leases[name] = LeaseState(holder, term, current.version + 1, True, current.renewed)

    def peek(self, name: str) -> LeaseState | None:
        """The lease as stored, for tests and diagnostics."""
        return self.read(name)
