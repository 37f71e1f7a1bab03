"""The aggregator's domain logic, pure: windows, group ids, readiness, the late rule, lease expiry.

The group transitions themselves are conditional updates in store.py (each
filter names the state it leaves, so of two racing processes exactly one wins).

No I/O here. Times are Unix epoch seconds (floats or ints) so the rules are
plain arithmetic; the store and the routes convert to and from ISO 8601.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.common import validation
from services.common.timeutil import iso

OPEN, READY, PROCESSING, DONE, FAILED = "open", "ready", "processing", "done", "failed"
STATUSES = (OPEN, READY, PROCESSING, DONE, FAILED)
# A file may still join a group in these states; later ones send it to a later window (late).
ACCEPTING = (OPEN, READY)
# A result may be posted for a group in these states (a processor may post without listing first).
RESULT_ACCEPTING = (PROCESSING, READY)

DEFAULT_LEASE_MAX_EXPIRIES = 3
MIN_WINDOW_SECONDS = 1
MAX_WINDOW_SECONDS = 366 * 24 * 3600


@dataclass(frozen=True)
class Window:
    start: int  # epoch seconds, inclusive
    end: int  # epoch seconds, exclusive

    def contains(self, ts: float) -> bool:
        return self.start <= ts < self.end


def check_window_seconds(window_seconds: int) -> int:
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, int):
        raise ValueError("window_seconds must be an integer")
    if not MIN_WINDOW_SECONDS <= window_seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"window_seconds must be in [{MIN_WINDOW_SECONDS}, {MAX_WINDOW_SECONDS}]")
    return window_seconds


def window_for(ts: float, window_seconds: int) -> Window:
    """The epoch-aligned window ``[start, end)`` holding ``ts``.

    Floor division (not int truncation) so a timestamp before 1970 lands in the
    window below it, like every other: -1 is in [-w, 0), not [0, w).
    """
    check_window_seconds(window_seconds)
    if not math.isfinite(ts):
        raise ValueError("timestamp must be finite")
    start = math.floor(ts / window_seconds) * window_seconds
    # Guard the float division for huge epochs: the result must hold ts.
    if ts < start:
        start -= window_seconds
    elif ts >= start + window_seconds:
        start += window_seconds
    return Window(int(start), int(start) + window_seconds)


def group_id(pool_id: str, window_start: int) -> str:
    """Deterministic, so every aggregator process derives the same id for one window."""
    return f"{pool_id}-{int(window_start)}"


# SPEC quorum: what a group still short of ``min_contributors`` does once its wait is over.
ON_SHORT_PROCESS, ON_SHORT_FAIL = "process", "fail"
QUORUM_NOT_MET, LEASE_EXPIRED = "quorum_not_met", "lease_expired"


@dataclass(frozen=True)
class Verdict:
    """What the ticker does with an open group now: nothing (``status`` None), ready, or failed."""

    status: str | None
    short: bool = False
    reason: str | None = None


def quorum_verdict(now: float, close_at: float, contributors: int, min_contributors: int | None,
                   quorum_wait_seconds: float, on_short: str) -> Verdict:
    """An open group's fate. Enough contributors: ready at once. Its window (plus grace) not
    yet over: wait. Over but short of the quorum: wait ``quorum_wait_seconds`` more, then
    ``on_short``: ``process`` -> ready with ``short``, ``fail`` -> failed (``quorum_not_met``)."""
    wanted = min_contributors if min_contributors is not None and min_contributors > 0 else None
    if wanted is not None and contributors >= wanted:
        return Verdict(READY)
    if now < close_at:
        return Verdict(None)
    if wanted is None:
        return Verdict(READY)
    if now < close_at + max(0.0, float(quorum_wait_seconds or 0)):
        return Verdict(None)
    if on_short == ON_SHORT_FAIL:
        return Verdict(FAILED, reason=QUORUM_NOT_MET)
    return Verdict(READY, short=True)


def pool_quorum(pool: dict[str, Any] | None) -> tuple[float, str]:
    """``(quorum_wait_seconds, on_short)`` of a pool, with SPEC's defaults when absent or odd
    (auth may not send them yet): no wait, ``process``."""
    pool = pool or {}
    wait = pool.get("quorum_wait_seconds")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
        wait = 0
    on_short = pool.get("on_short")
    return float(wait), (on_short if on_short in (ON_SHORT_PROCESS, ON_SHORT_FAIL) else ON_SHORT_PROCESS)


def contributor_count(group: dict[str, Any]) -> int:
    """How many distinct owners sent files to a group document."""
    return len(group.get("contributors") or ())


def late_window(ts: float, now: float, window_seconds: int, attempt: int = 0) -> Window:
    """Where a file goes when its own window's group no longer accepts files.

    SPEC: the group of the current window. That window is never earlier than the
    one after the file's own (a future-stamped file whose window closed early by
    ``min_contributors`` must not move backwards), and ``attempt`` > 0 steps
    further when that group too has stopped accepting (closed early as well).
    """
    own = window_for(ts, window_seconds)
    current = window_for(now, window_seconds)
    start = max(current.start, own.end) + attempt * window_seconds
    return Window(start, start + window_seconds)


def lease_expired(now: float, lease_expires_at: float | None) -> bool:
    return lease_expires_at is not None and now >= lease_expires_at


def after_lease_expiry(lease_expiries: int,
                       max_expiries: int = DEFAULT_LEASE_MAX_EXPIRIES) -> tuple[str, int]:
    """The status and the expiry count after one more lease expired: ready again, or failed at the max."""
    count = lease_expiries + 1
    return (FAILED if count >= max_expiries else READY), count


def check_status_filter(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if value not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    return value


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
sanitize_name = validation.safe_name


def member_name(timestamp_iso: str, file_id: str, file_name: str) -> str:
    """A tar member name: sortable by time, unique by file id, with the original (sanitised) name."""
    stamp = _UNSAFE.sub("-", timestamp_iso or "")
    return f"{stamp}_{sanitize_name(file_id, 64)}_{sanitize_name(file_name)}"


# What an ISO 8601 string (datetime) can show: 0001-01-01 .. 9999-12-31T23:59:59.999Z.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST, _LAST = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
MIN_SHOWN, MAX_SHOWN = (_FIRST - _EPOCH).total_seconds(), (_LAST - _EPOCH).total_seconds()
# SPEC's MAX_CLOCK_SKEW_SECONDS default (the value in force: CommonSettings.max_clock_skew_seconds):
# a timestamp further ahead of its storing time is refused on upload.
MAX_CLOCK_SKEW_SECONDS = validation.MAX_CLOCK_SKEW_SECONDS


def epoch_iso(ts: float) -> str:
    """ISO 8601 of an epoch time, clamped to what a datetime can show.

    A group of the last window of year 9999 ends in year 10000; a stored one must
    still be listed (clamped), not make every listing of its pool fail.
    """
    if math.isnan(ts) or ts >= MAX_SHOWN:
        return iso(_LAST)
    if ts <= MIN_SHOWN:
        return iso(_FIRST)
    return iso(_EPOCH + timedelta(seconds=ts))


def grouping_time(ts: float, stored_at: float, max_skew: float = MAX_CLOCK_SKEW_SECONDS) -> float:
    """The time a file is grouped by: its own timestamp, or its storing time when that one is
    further in the future than clocks can disagree (the uploader refuses those; one stored
    before that check must not open a group of a far-future window that never closes)."""
    return stored_at if ts > stored_at + max_skew else ts


# --- a catch-up "since" a time, over the seq index ---------------------------------------------
#
# A result's ``created_ts`` is taken when its post records it, its seq when its FileStored is
# handled (after the upload, the storage, the queue: seconds, or far longer after a crash between
# "stored" and "numbered", whose redelivery or next start's backfill numbers it late). So
# created_ts is not monotonic in seq, with no bound (in count or in time) a slack could trust.
# Each numbered result therefore carries ``created_max``: the highest created_ts of seqs 1..its
# own (the previous seq's created_max and its own created_ts, written with its seq). That IS
# monotonic, and "created_max(k) <= since" proves every seq <= k was created at or before since.

def first_seq_after(since: float, after_seq: int, last: int,
                    created_max: Callable[[int], float | None]) -> int:
    """The seq in (after_seq, last + 1] from which a catch-up ``since`` must read: every seq in
    (after_seq, answer) is proven created at or before ``since``.

    ``created_max(k)`` answers seq k's running maximum, or None when unknown (a result numbered
    before the field existed, a seq being numbered): unknown counts as "maybe after", which can
    only move the answer earlier (more read and filtered), never skip a result. A binary search:
    at most log2(last - after_seq) + 1 look-ups."""
    lo, hi = after_seq + 1, max(after_seq + 1, last + 1)
    while lo < hi:  # bounded: the interval halves each turn
        mid = (lo + hi) // 2
        high = created_max(mid)
        if high is not None and high <= since:
            lo = mid + 1  # seqs <= mid all created at or before since
        else:
            hi = mid
    return lo


def results_since(since: float, after_seq: int, limit: int, last: int,
                  created_max: Callable[[int], float | None],
                  read_range: Callable[[int, int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The first ``limit`` stored results with seq > after_seq and created_ts > since, in seq order
    (the open query's answer), read as bounded seq ranges of the (pool_id, seq) index from
    ``first_seq_after`` on, filtered, ``limit`` seqs a range (so at most two pages are held).

    ``last`` is the pool's counter, the highest seq given: seqs come from it only, so no result
    has a higher one, and the ranges go on up to it whatever gaps they meet (none are expected).
    ``read_range(low, high)`` answers the documents with seq in (low, high], in seq order."""
    low = first_seq_after(since, after_seq, last, created_max) - 1
    found: list[dict[str, Any]] = []
    width = max(1, limit)
    # Bounded: each turn moves ``width`` seqs on, and the one reaching ``last`` is the last.
    for _ in range(max(0, last - low) // width + 1):
        high = low + width
        found += [d for d in read_range(low, high) if d.get("stored") is True and _created_after(d, since)]
        if len(found) >= limit or high >= last:
            break
        low = high
    return found[:limit]


def _created_after(doc: dict[str, Any], since: float) -> bool:
    created = doc.get("created_ts")
    return isinstance(created, int | float) and not isinstance(created, bool) and created > since
