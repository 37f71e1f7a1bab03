"""What pool files' ``FileStored`` and ``UploadStored`` messages do: each file goes into the group of its window.

decode -> core (window, late rule) -> store (bulk writes per window) -> publish.
Concurrent deliveries are grouped together in one slice (``batching``), per
pool, then per window: one ``add_files`` per window (a few writes whatever the
number of files). A batch upload arrives as one ``UploadStored`` holding all its
files (up to ``MAX_ITEMS``): a slice of its own, answered by one ``FilesGrouped``;
a single file (``FileStored``, also every one an older file_service_manager
published per item) is answered by its ``FileGrouped``. Idempotent under
redelivery: a file already in a group is found by its id (the store's insert
clashes on it; no look-up before) and only its answer is published again.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from services.common.contracts import FileGrouped, FilesGrouped, FileStored, GroupedFiles, UploadStored
from services.common.timeutil import BadTimestamp, parse

from . import core, ticking
from .batching import SliceRunner
from .deps import Deps
from .ports import CLOSED, UNSETTLED

log = logging.getLogger(__name__)

MAX_LATE_STEPS = 16  # windows ahead a late file may be pushed before we give up (requeue)


Stored = FileStored | UploadStored  # what the grouping consumers hand to the slice runner


def message_key(msg: Stored) -> Hashable:
    """A delivery's key in its slice's answers: a file's id, or (a batch) its upload's."""
    return msg.file_id if isinstance(msg, FileStored) else ("upload", msg.upload_id)


def message_weight(msg: Stored) -> int:
    """A delivery's share of a slice: its files."""
    return len(msg.items) if isinstance(msg, UploadStored) else 1


def slice_runner(max_slice: int, max_leaders: int) -> SliceRunner[Stored]:
    """The grouping consumers' SliceRunner: lanes by pool, slices bounded by files."""
    return SliceRunner(message_key, max_slice=max_slice, max_leaders=max_leaders,
                       lane=lambda msg: str(msg.pool_id), weight=message_weight)


# Rounds of "wait for another slice's uncounted membership, then group again" per delivery. Each
# round's wait ends with the membership counted (found) or dropped as a leftover (then this
# delivery inserts it: only a new duplicate in flight could make it unsettled again).
SETTLE_ROUNDS = 3


def group_file(deps: Deps, msg: FileStored) -> None:
    """One pool file into its group, in a slice with whatever other deliveries are in flight;
    then its ``FileGrouped`` (each delivery re-announces, so the index catches up after a crash)."""
    member = _grouped(deps, msg).get(msg.file_id)
    if member is not None:
        publish_grouped(deps, msg, member["group_id"], bool(member.get("late")))


def group_upload(deps: Deps, msg: UploadStored) -> None:
    """A batch upload's pool files into their groups, in one slice (with whatever else of its
    pool is in flight and fits); then one ``FilesGrouped`` for all of them (each delivery
    re-announces, so the index catches up after a crash)."""
    publish_upload_grouped(deps, msg, _grouped(deps, msg))


def _grouped(deps: Deps, msg: Stored) -> dict[str, dict[str, Any]]:
    """``{file_id: membership}`` of the delivery's files, through the slice runner. A file another
    slice holds uncounted (UNSETTLED: a duplicate in flight, or a crashed replica's leftover) is
    waited for here, after the slice and outside its pool's lane (``store.memberships``: until
    counted, or dropped as a leftover), then grouped again."""
    run = functools.partial(group_messages, deps)
    members: dict[str, dict[str, Any]] = {}
    for _ in range(SETTLE_ROUNDS):
        answer = deps.grouper.run(msg, run)
        answered = ({msg.file_id: answer} if answer is not None else {}) if isinstance(msg, FileStored) \
            else dict(answer or {})
        members.update({f: m for f, m in answered.items() if not m.get(UNSETTLED)})
        unsettled = [f for f, m in answered.items() if m.get(UNSETTLED)]
        if not unsettled:
            return members
        log.info("waiting_for_unsettled", extra={"files": len(unsettled), "file_ids": logged_ids(unsettled)})
        found = deps.store.memberships(str(msg.pool_id), unsettled, deps.clock.time())
        members.update(found)
        if all(f in found for f in unsettled):
            return members
    raise RuntimeError(f"{msg.pool_id}: files still held uncounted by another slice after {SETTLE_ROUNDS} rounds")


def group_messages(deps: Deps, messages: Sequence[Stored]) -> dict[Hashable, Any]:
    """A slice's deliveries into groups: ``{message_key: answer}``, the answer being a file's
    membership (FileStored; None for an unknown pool's file) or a batch's ``{file_id: membership}``.
    Any failure raises (the slice's messages are retried, each alone)."""
    files = [f for msg in messages for f in (msg.files() if isinstance(msg, UploadStored) else [msg])]
    members = group_files(deps, files)
    answers: dict[Hashable, Any] = {}
    for msg in messages:
        if isinstance(msg, UploadStored):
            answers[message_key(msg)] = {i.file_id: members[i.file_id] for i in msg.items if i.file_id in members}
        else:
            answers[message_key(msg)] = members.get(msg.file_id)
    return answers


def group_files(deps: Deps, messages: Sequence[FileStored]) -> dict[str, dict[str, Any]]:
    """Pool files into groups: ``{file_id: {group_id, late}}`` (none for an unknown pool's files).

    Any failure raises (the slice's messages are retried, each alone).
    """
    by_pool: dict[str, list[FileStored]] = defaultdict(list)
    for msg in messages:
        by_pool[str(msg.pool_id)].append(msg)
    members: dict[str, dict[str, Any]] = {}
    for pool_id, pool_messages in by_pool.items():
        members.update(group_pool_files(deps, pool_id, pool_messages))
    return members


def group_pool_files(deps: Deps, pool_id: str, messages: list[FileStored]) -> dict[str, dict[str, Any]]:
    pool = deps.pools.get(pool_id)  # AuthUnavailable -> raise -> requeued
    if pool is None:
        log.warning("files_of_unknown_pool_dropped", extra={"pool_id": pool_id, "files": len(messages),
                                                            "file_ids": logged_ids(m.file_id for m in messages)})
        return {}
    unique = {msg.file_id: msg for msg in messages}  # a duplicate in one batch is grouped once
    # No membership look-up first: add_files answers a file grouped before (a redelivery) by
    # its membership's key, so a slice of new files costs one round trip less.
    known: dict[str, dict[str, Any]] = {}
    by_window: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for msg in unique.values():
        entry = file_entry(deps, msg)
        by_window[core.window_for(entry["ts"], int(pool["window_seconds"])).start].append(entry)
    for entries in by_window.values():
        known.update(place(deps, pool_id, pool, entries))
    return known


def file_timestamp(deps: Deps, msg: FileStored) -> float:
    try:
        stored_at = parse(msg.created).timestamp() if msg.created else deps.clock.time()
    except BadTimestamp:
        stored_at = deps.clock.time()
    try:
        return core.grouping_time(parse(msg.timestamp).timestamp(), stored_at,
                                  deps.settings.common.max_clock_skew_seconds)
    except BadTimestamp:
        # The uploader validated it; a broken one falls back to the storing time.
        return stored_at


def file_entry(deps: Deps, msg: FileStored) -> dict[str, Any]:
    return {"file_id": msg.file_id, "owner_id": msg.owner_id, "timestamp": msg.timestamp,
            "ts": file_timestamp(deps, msg), "size": int(msg.size), "sha256": msg.sha256,
            "file_name": msg.file_name, "late": False}


def place(deps: Deps, pool_id: str, pool: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Files of one window into its group, or (that group closed) late into a later one.

    Returns every entry's membership ``{group_id, late}``.
    """
    window_seconds = int(pool["window_seconds"])
    grace = float(pool.get("close_grace_seconds") or 0)
    minimum = pool.get("min_contributors") or None
    ts = entries[0]["ts"]  # every entry is in this window: the late rule gives them one target
    window = core.window_for(ts, window_seconds)
    late = False
    for step in range(MAX_LATE_STEPS + 1):
        outcome, group, present = deps.store.add_files(
            pool_id=pool_id, window=window, close_grace_seconds=grace, min_contributors=minimum,
            entries=[{**e, "late": late} for e in entries], now=deps.clock.time())
        if outcome != CLOSED:
            added = [e for e in entries if e["file_id"] not in present]
            if group is None and added:  # files added return their group; never act on a guess
                raise RuntimeError(f"no group document for {len(entries)} files")
            # (None when nothing was added: every file is another slice's, maybe not counted yet,
            # so maybe before the window's group exists: a killed replica's first slice.)
            counted(deps, pool, group or {}, added, late)
            members = {e["file_id"]: {"group_id": (group or {}).get("_id"), "late": late} for e in added}
            return {**members, **present}
        # Its window is processing/done/failed: SPEC sends it to the current window, late.
        late = True
        window = core.late_window(ts, deps.clock.time(), window_seconds, step)
    raise RuntimeError(f"no accepting window found for {len(entries)} files of {pool_id}")


LOGGED_IDS = 64  # file ids in one log line (a batch's slice holds up to MAX_ITEMS: ~35 KB of ids)


def logged_ids(file_ids: Iterable[str]) -> list[str]:
    """At most LOGGED_IDS of ``file_ids`` (the line's ``files`` says how many in all)."""
    return list(itertools.islice(file_ids, LOGGED_IDS))


def counted(deps: Deps, pool: dict[str, Any], group: dict[str, Any], added: list[dict[str, Any]],
            late: bool) -> None:
    """Metrics and log for files just added, and readiness by arrival (min_contributors)."""
    if not added:
        return
    deps.metrics.files_grouped.inc(len(added))
    if late:
        deps.metrics.late_files.inc(len(added))
    # The file ids too (at most LOGGED_IDS): a file missing from its group
    # is traced by its id through the fleet's logs.
    log.info("files_grouped", extra={"group_id": group["_id"], "late": late, "files": len(added),
                                     "file_ids": logged_ids(e["file_id"] for e in added)})
    if group.get("status") == core.OPEN:
        ticking.settle(deps, group, pool)


def publish_grouped(deps: Deps, msg: FileStored, gid: str, late: bool) -> None:
    deps.broker.publish(FileGrouped(file_id=msg.file_id, pool_id=str(msg.pool_id), group_id=gid, late=late))


def publish_upload_grouped(deps: Deps, msg: UploadStored, members: dict[str, dict[str, Any]]) -> None:
    """One confirmed publish for a whole batch (not one per file): its files by (group, late)."""
    parts: dict[tuple[str, bool], dict[str, None]] = defaultdict(dict)  # ordered sets of file ids
    for item in msg.items:
        member = members.get(item.file_id)
        if member is not None:
            parts[(member["group_id"], bool(member.get("late")))][item.file_id] = None
    if not parts:
        return  # an unknown pool's files: nothing grouped, nothing to announce (logged by group_pool_files)
    deps.broker.publish(FilesGrouped(pool_id=str(msg.pool_id), upload_id=msg.upload_id, groups=tuple(
        GroupedFiles(group_id=gid, late=late, file_ids=tuple(ids)) for (gid, late), ids in parts.items())))
