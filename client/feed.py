"""The client's side of a pool's gapless result feed (SPEC: ``seq``, ``get-results`` with
``after_seq``, ``ack-result``).

Every result of a pool carries ``seq`` 1, 2, 3, ... with no gaps. ``ResultFeed``
remembers, per pool, the last ``seq`` handed to the application, on disk beside
the offline spool, so a member sees each result exactly once across reconnects,
gateways and restarts of its own process:

- a result at ``last + 1`` is delivered, and ``last`` moves on (and is saved);
- a result at or below ``last`` is a duplicate (a redelivery, another gateway's copy): dropped;
- a result above ``last + 1`` shows a gap: it waits, and the caller fetches the
  missing ones with ``get-results {pool_id, after_seq: last}`` and feeds them in.

Memory is bounded: one integer per pool, plus at most ``max_waiting`` results
held back per pool while a gap is filled (past that they are dropped: the fetch
that fills the gap returns them again, in order).

With ``confirm=True`` the state on disk (and what the client acknowledges) is what the
application said it finished (``done``), not what was handed to it: a result handed over
but not yet finished (a download under way) when the process dies comes again after a
restart, since the feed starts from the finished seq and the gateway re-sends after the
acknowledged one.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NEW, DUPLICATE, GAP = "new", "duplicate", "gap"


class ResultFeed:
    def __init__(self, state_file: str | os.PathLike | None = None, *, max_waiting: int = 1000,
                 save_every: int = 100, save_seconds: float = 1.0, confirm: bool = False) -> None:
        self.path = Path(state_file) if state_file is not None else None
        self.max_waiting = max_waiting  # held-back results per pool while a gap is filled
        # An fsync per result would cap a 10,000-result catch-up at the disk's fsync rate: the state
        # is saved every ``save_every`` results or ``save_seconds``, and by flush(). A crash loses at
        # most that much state, and those results come again (the sink must be idempotent: ``listen``
        # names files by seq).
        self.save_every, self.save_seconds = save_every, save_seconds
        self._unsaved, self._saved_at = 0, time.monotonic()
        self._lock = threading.Lock()
        self._last: dict[str, int] = self._load()  # handed to the application, per pool
        # Finished by the application (saved, acknowledged): ``_last`` unless ``confirm``.
        self.confirm = confirm
        self._done: dict[str, int] = dict(self._last)
        self._waiting: dict[str, dict[int, dict[str, Any]]] = {}
        self.duplicates = 0

    # --- state on disk ---------------------------------------------------------------------

    def _load(self) -> dict[str, int]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # a torn or foreign file: start over; the gateway re-sends from the last ack
        if not isinstance(data, dict):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, int) and v >= 0}

    def _save(self) -> None:
        self._unsaved, self._saved_at = 0, time.monotonic()
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Temporary name, fsync, rename: a crash leaves the old state or the new, never half of one.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".feed-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._done, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # --- the feed ----------------------------------------------------------------------------

    def last_seq(self, pool_id: str) -> int:
        with self._lock:
            return self._last.get(pool_id, 0)

    def offer(self, result: dict[str, Any], deliver: Callable[[dict[str, Any]], None]) -> str:
        """Take one ``pool-result`` (live or fetched); ``deliver`` is called, in ``seq`` order, for
        it and for any held-back results it unblocks. Answers NEW, DUPLICATE or GAP (the caller
        then fetches after ``last_seq(pool_id)``).

        One lock covers the decision, the delivery and the save: two threads offering seq N and
        N+1 at once must not deliver them out of order or both take N. ``deliver`` must be quick
        and must not call ``offer``.
        """
        pool_id, seq = str(result.get("pool_id")), result.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"a result without a valid seq: {result!r:.200}")
        with self._lock:
            last = self._last.get(pool_id, 0)
            if seq <= last:
                self.duplicates += 1
                return DUPLICATE
            waiting = self._waiting.setdefault(pool_id, {})
            if seq > last + 1:
                if seq not in waiting and len(waiting) < self.max_waiting:
                    waiting[seq] = result
                return GAP
            ready = [result]
            last = seq
            while last + 1 in waiting:
                last += 1
                ready.append(waiting.pop(last))
            for stale in [s for s in waiting if s <= last]:
                del waiting[stale]
            # Deliver, then save: a crash in between delivers those again after a restart (the
            # gateway re-sends after the saved seq); it never skips one.
            for item in ready:
                deliver(item)
            self._last[pool_id] = last
            if not self.confirm:
                self._done[pool_id] = last
                self._count_unsaved(len(ready))
            return NEW

    def _count_unsaved(self, count: int) -> None:
        self._unsaved += count
        if self._unsaved >= self.save_every or time.monotonic() - self._saved_at >= self.save_seconds:
            self._save()

    def done(self, pool_id: str, seq: int) -> None:
        """(``confirm``) The application finished every result of ``pool_id`` up to ``seq``."""
        with self._lock:
            seq = min(seq, self._last.get(pool_id, 0))  # never past what was handed over
            if seq > self._done.get(pool_id, 0):
                self._done[pool_id] = seq
                self._count_unsaved(1)

    def done_seqs(self) -> dict[str, int]:
        """The finished seq per pool (what the client may acknowledge)."""
        with self._lock:
            return dict(self._done)

    def last_seqs(self) -> dict[str, int]:
        """The last seq handed to the application per pool (what a connect says it has)."""
        with self._lock:
            return dict(self._last)

    def gaps(self) -> dict[str, int]:
        """Pools with results held back behind a gap: ``{pool_id: last seq handed over}``."""
        with self._lock:
            return {pool: self._last.get(pool, 0) for pool, waiting in self._waiting.items() if waiting}

    def flush(self) -> dict[str, int]:
        """Save now; answers the saved last ``seq`` per pool (what the client may ``ack-result``)."""
        with self._lock:
            if self._unsaved:
                self._save()
            return dict(self._done)

    def seed(self, pool_id: str, last_seq: int) -> None:
        """Start a pool's feed at ``last_seq`` (e.g. a member that only wants results from now on)."""
        with self._lock:
            if last_seq > self._last.get(pool_id, 0):
                self._last[pool_id] = last_seq
                self._done[pool_id] = max(last_seq, self._done.get(pool_id, 0))
                self._save()
            self._waiting.pop(pool_id, None)
