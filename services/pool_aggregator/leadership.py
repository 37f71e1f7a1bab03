"""Which replica ticks: the ticker's leader lease, and the term its writes are fenced with.

Every replica consumes and serves HTTP; only the holder of the ``pool_aggregator.ticker``
lease (``services.common.leader``, kept in MongoDB by ``store.MongoLeaseStore``) runs the
time-driven transitions and their announcements (``ticking.tick``). Its term is the
fencing token: a new leader first records its term as the one new groups are adopted with
and stamps it on every group a ticker may move (``GroupStore.fence_live``), and each of its
writes carries the term, so the writes of an old leader that was paused past its lease are
refused by the store, on the groups that existed at the takeover and on those created (or
leased) after it alike (``store.py``, "Fencing").
"""

from __future__ import annotations

import threading

from services.common.leader import LeaderLease

from .ports import GroupStore

LEASE_NAME = "pool_aggregator.ticker"


class Leadership:
    """``term()``: the term to fence the ticker's writes with, or None on a follower."""

    def __init__(self, lease: LeaderLease, store: GroupStore) -> None:
        self.lease = lease
        self.store = store
        self._stamped: int | None = None  # the term whose takeover stamp is written
        self._lock = threading.Lock()  # the ticker and a test may ask at once; one stamp per term

    def term(self) -> int | None:
        """The current term once its takeover stamp is in the store; a store error propagates
        (the tick is skipped and the stamp is tried again at the next one)."""
        term = self.lease.term()
        if term is None:
            return None
        with self._lock:
            if self._stamped != term:
                self.store.fence_live(term)
                self._stamped = term
        return term

    def still(self, term: int) -> bool:
        """Whether this process still leads with ``term`` (checked locally before each write)."""
        return self.lease.term() == term
