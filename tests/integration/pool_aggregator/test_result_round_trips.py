"""What a result costs the database, on a real MongoDB-wire server (secantusdb), counted per command.

secantusdb answers ``findAndModify`` by scanning the whole collection (8 ms of its CPU at 1,000
groups, 36 ms at 5,000: README "Result rate"), so a result that took six of them got slower as
its pool's groups and results piled up (~4 a second at 2,500). The result path now writes with
conditional updates by ``_id`` and reads by ``_id``; this counts the commands, no clock.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pymongo
import pytest
from pymongo import monitoring

from services.pool_aggregator import core
from services.pool_aggregator.store import MongoGroupStore

POOL = "rt-pool"


class Commands(monitoring.CommandListener):
    """The commands sent, by name (and by collection), from the moment ``counting`` is set."""

    def __init__(self) -> None:
        self.names: Counter[str] = Counter()
        self.on: Counter[tuple[str, str]] = Counter()  # (command, collection)
        self.counting = False
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.counting:
            with self._lock:
                self.names[event.command_name] += 1
                self.on[(event.command_name, str(event.command.get(event.command_name)))] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def watched(mongo_uri: str) -> Iterator[tuple[MongoGroupStore, Commands]]:
    commands = Commands()
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, event_listeners=[commands], retryWrites=False)
    db = client[f"test_{uuid.uuid4().hex[:12]}"]
    store = MongoGroupStore(db)
    store.ensure_indexes()
    yield store, commands
    client.drop_database(db.name)
    client.close()


def _ready_groups(store: MongoGroupStore, count: int) -> list[str]:
    gids = [core.group_id(POOL, 1000 + n) for n in range(count)]
    store.groups.insert_many([{"_id": gid, "pool_id": POOL, "window_start": 1000 + n, "window_end": 1001 + n,
                               "status": core.READY, "file_count": 1, "fence": 1} for n, gid in enumerate(gids)])
    return gids


def _post_and_number(store: MongoGroupStore, gid: str, now: float) -> dict:
    """The database's part of a result, in the order the post and the FileStored consumer do it."""
    assert store.get(gid) is not None  # check_group
    assert store.lease(gid, now, 300) is not None  # a post straight on a ready group leases it
    claim = uuid.uuid4().hex
    group = store.claim_result(gid, claim, now)
    assert group is not None and group["window_start"] >= 1000  # what a post reads of it
    rid = uuid.uuid4().hex
    store.insert_result({"result_id": rid, "pool_id": POOL, "group_id": gid, "created_ts": now, "stored": False,
                         "published": False, "claim": claim})
    # ... the bytes are stored; the consumer:
    assert store.get_result(rid) is not None and store.get(gid) is not None
    marked = store.mark_result_stored(rid, now, 1, "0" * 64)
    numbered = store.assign_seq(rid, known=marked)
    assert numbered is not None
    finished = store.finish_group(gid, rid, now)
    assert finished is not None and finished["status"] == core.DONE and finished["result_id"] == rid
    store.mark_result_published(rid)
    return numbered


def test_a_result_sends_no_find_and_modify_and_few_commands(watched) -> None:
    store, commands = watched
    gids = _ready_groups(store, 12)
    _post_and_number(store, gids[0], 1.0)  # the pool's counter is created: not counted
    commands.counting = True
    seqs = [_post_and_number(store, gid, 2.0 + n)["seq"] for n, gid in enumerate(gids[1:])]
    commands.counting = False
    assert seqs == list(range(2, 13))
    per_result = {name: count / len(seqs) for name, count in commands.names.items()}
    # findAndModify scans the collection on secantusdb: none on the way of a result.
    assert "findAndModify" not in per_result, per_result
    # get, lease + its adoption (fence read), claim, insert, get x2, stored, numbering (counter,
    # compare-and-set, result, release: the previous created_max remembered), finish, published.
    assert sum(per_result.values()) <= 22, per_result


def test_threads_of_one_process_number_a_pool_gapless_and_in_turn(watched) -> None:
    """Eight posts' consumers at once in one process: seq 1..N, each once; the counter's
    compare-and-set is never lost inside the process (they take turns), so each result costs
    exactly one counter take."""
    store, commands = watched
    gids = _ready_groups(store, 40)
    barrier = threading.Barrier(8)
    numbered: list[int] = []
    errors: list[BaseException] = []

    def consumer(mine: list[str]) -> None:
        barrier.wait()
        try:
            for gid in mine:
                numbered.append(_post_and_number(store, gid, 5.0)["seq"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=consumer, args=(gids[n::8],)) for n in range(8)]
    commands.counting = True
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    commands.counting = False
    assert errors == []
    assert sorted(numbered) == list(range(1, 41))
    # Per result: the counter read (an upsert that creates it once), its compare-and-set, its
    # release. A lost compare-and-set would cost more (read again, roll the winner forward).
    assert commands.on[("update", "result_counters")] == 3 * 40, commands.on
    assert store.counters.find_one({"_id": POOL}) == {"_id": POOL, "seq": 40, "pending": None}
