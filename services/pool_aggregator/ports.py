"""What pool_aggregator's use cases and handlers need from the outside, as small Protocols.

``store.MongoGroupStore`` (MongoDB) is the real ``GroupStore``;
``services.common.testing.pool_aggregator`` has an in-memory one for fast
tests. ``upstream.Uploader`` / ``upstream.FileSource`` are the real
``ResultUploader`` / ``FileReader`` (HTTP to file_uploader and
file_service_manager); ``announcing.Announcer`` the real ``Announcer``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from . import core

# What ``GroupStore.add_files`` did: put the files in, or found the group no longer
# accepting files (they go late to a later window).
ADDED, CLOSED = "added", "closed"
# In ``add_files``'s ``present``: a file another slice inserted but has not counted yet (in flight,
# or left by a crash). It was not added; its delivery waits for it (``memberships``) outside the slice.
UNSETTLED = "unsettled"

Doc = dict[str, Any]


class GroupStore(Protocol):
    """Groups, their files and results. Every transition is conditional on the state it leaves:
    of two processes racing for one transition exactly one gets a document back."""

    def ping(self) -> bool: ...

    def ensure_indexes(self) -> None: ...

    # --- files into groups
    def memberships(self, pool_id: str, file_ids: list[str], now: float) -> dict[str, Doc]:
        """``{file_id: {group_id, late}}`` for those of ``file_ids`` already in a group (redeliveries)."""
        ...

    def add_files(self, *, pool_id: str, window: core.Window, close_grace_seconds: float,
                  min_contributors: int | None, entries: list[Doc],
                  now: float) -> tuple[str, Doc | None, dict[str, Doc]]:
        """Files not yet in any group into the group of ``window``, counted once each:
        (ADDED, group, present) or (CLOSED, group, {}); ``present`` names the entries a
        concurrent delivery grouped first (their memberships), which were not added, and those
        another slice holds uncounted (``{UNSETTLED: True}``: wait with ``memberships``)."""
        ...

    # --- reading (group documents never carry their files: ``files_of`` reads those)
    def get(self, gid: str) -> Doc | None: ...

    def files_of(self, gid: str) -> list[Doc]:
        """The group's file entries, oldest timestamp first (ties by file_id)."""
        ...

    def list_groups(self, pool_id: str, status: str | None = None, limit: int = 1000,
                    after: int | None = None) -> list[Doc]:
        """Oldest window first; only windows starting after ``after`` (the paging cursor)."""
        ...

    def open_groups(self, limit: int = 10000) -> list[Doc]: ...

    def expired_leases(self, now: float, limit: int = 10000) -> list[Doc]: ...

    def count_by_status(self) -> dict[str, int]: ...

    # --- transitions (``fence``: the leader's term on the ticker's writes; a write whose term
    # is lower than one that wrote or stamped the group, or on a group not adopted yet, is
    # refused, answering None; see store.py "Fencing")
    def mark_ready(self, gid: str, now: float, short: bool = False, fence: int | None = None) -> Doc | None: ...

    def mark_failed(self, gid: str, now: float, reason: str,
                    from_statuses: tuple[str, ...] = ..., fence: int | None = None) -> Doc | None: ...

    def fence_live(self, term: int) -> int:
        """A new leader's takeover stamp: its term becomes the one new groups are adopted with,
        then it is stamped on every group a ticker may still move (open, processing)."""
        ...

    def adopt_pending(self) -> int:
        """The leader's sweep: groups created (or leased) but not adopted, because their writer
        died in between, get the current term; a bounded batch per call. How many."""
        ...

    def retry(self, gid: str, now: float) -> Doc | None: ...

    def extend_lease(self, gid: str, now: float, timeout_seconds: float) -> Doc | None: ...

    def lease(self, gid: str, now: float, timeout_seconds: float) -> Doc | None:
        """ready -> processing; the group enters the ticker's reach, so it is adopted with the
        current term (like a new group) before this returns, or left to ``adopt_pending``."""
        ...

    def expire_lease(self, gid: str, lease_id: str | None, target: str, expiries: int,
                     now: float, fence: int | None = None) -> Doc | None: ...

    def claim_result(self, gid: str, claim: str, now: float) -> Doc | None:
        """A processing group held for one post (status unchanged); the group (its window is what
        callers read: the same before and after the claim), or None."""
        ...

    def revert_claim(self, gid: str, claim: str, now: float) -> bool: ...

    def finish_group(self, gid: str, result_id: str, now: float) -> Doc | None:
        """processing|ready -> done with ``result_id`` (once); the group after, or None."""
        ...

    # --- results
    def insert_result(self, doc: Doc) -> None: ...

    def delete_result(self, result_id: str) -> bool:
        """Deletes a result not yet stored; False when there was none such."""
        ...

    def get_result(self, result_id: str) -> Doc | None: ...

    def mark_result_stored(self, result_id: str, now: float, size: int, sha256: str) -> Doc | None: ...

    def mark_result_published(self, result_id: str) -> None: ...

    def assign_seq(self, result_id: str, known: Doc | None = None) -> Doc | None:
        """The result with its pool's next seq (its own if it had one), gapless and atomic.
        ``known``: the result as just read or written (spares reading it first)."""
        ...

    def unnumbered_results(self, limit: int = 100000) -> list[Doc]: ...

    def result_pools(self, limit: int = 100000) -> list[str]:
        """Every pool that numbered a result."""
        ...

    def backfill_created_max(self, pool_id: str, limit: int = 1000000) -> int:
        """The pool's results without ``created_max`` (numbered before it existed) get theirs."""
        ...

    def list_results(self, pool_id: str, *, since: float | None = None, after_seq: int = 0,
                     limit: int = 100) -> list[Doc]:
        """Stored, numbered results with seq > after_seq (and created_ts > since), the first
        ``limit`` in seq order."""
        ...

    def last_seq(self, pool_id: str) -> int:
        """The highest seq a reader can see in the pool (0 before its first result)."""
        ...

    # --- acks (the feed: what each member has acknowledged, durably)
    def ack(self, pool_id: str, user_id: str, seq: int, now: float) -> int:
        """The member's ack moved forward to ``seq`` (never back); the ack after the write."""
        ...

    def acked(self, pool_id: str, user_id: str) -> int | None:
        """The member's acknowledged seq; None when it never acknowledged one."""
        ...


class ResultUploader(Protocol):
    """file_uploader's internal upload routes: a result is stored like any other file.

    Its errors are ``ApiError``s already shaped for the processor (4xx passed on, else 502)."""

    def start(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, writer: str) -> Any: ...

    def complete(self, file_id: str, *, owner_id: str, writer: str) -> Any: ...

    def release(self, file_id: str, *, writer: str) -> None:
        """Best effort: never raises (the session expires on its own)."""
        ...


class FileReader(Protocol):
    """Stored files' bytes (file_service_manager), read with the processor's own key."""

    def chunks(self, file_id: str, api_key: str) -> Iterator[bytes]: ...


class Announcer(Protocol):
    """Tells a pool's processor_url that a group is ready (a hint: the processor also polls)."""

    def announce(self, pool: Doc | None, group: Doc) -> object: ...


class StagingReader(Protocol):
    """A result's staging status (file_service_manager, which delivers results to pools' targets):
    SPEC's ``{targets: [{kind, status, attempts, location?, error?}]}``. Its failures are ``ApiError``s
    (502 ``upstream_failed``)."""

    def status(self, result_id: str) -> dict[str, Any]: ...
