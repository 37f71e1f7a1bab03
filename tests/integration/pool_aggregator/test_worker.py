"""The FileStored handler and the ticker against real MongoDB and RabbitMQ."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.common.contracts import FileGrouped, GroupChanged, ResultPublished
from services.pool_aggregator import core, ticking
from services.pool_aggregator.app import create_app
from services.pool_aggregator.config import Settings
from services.pool_aggregator.store import MongoGroupStore

from .conftest import POOL, Rig

W = 60


def _start(rig: Rig) -> float:
    """The start of the window holding the rig's clock."""
    return core.window_for(rig.clock(), W).start


def test_file_is_grouped_in_its_window(rig: Rig) -> None:
    start = _start(rig)
    rig.handle(rig.stored("f1", ts=start + 5, size=100))
    rig.handle(rig.stored("f2", ts=start + 59.9, owner="u2", size=50))
    rig.handle(rig.stored("f3", ts=start + 60, size=7))  # next window
    gid = core.group_id(POOL, int(start))
    group = rig.deps.store.get(gid)
    assert group["status"] == "open"
    assert (group["file_count"], group["bytes"]) == (2, 150)
    assert sorted(group["contributors"]) == ["u1", "u2"]
    assert [f["file_id"] for f in rig.deps.store.files_of(gid)] == ["f1", "f2"]
    assert (group["window_start"], group["window_end"]) == (start, start + W)
    grouped = rig.events.of(FileGrouped, count=3)
    assert {(m.file_id, m.group_id, m.late) for m in grouped} == {
        ("f1", gid, False), ("f2", gid, False), ("f3", core.group_id(POOL, int(start) + W), False)}


def test_redelivery_does_not_add_twice(rig: Rig) -> None:
    start = _start(rig)
    message = rig.stored("f1", ts=start + 1, size=100)
    for _ in range(3):
        rig.handle(message)
    gid = core.group_id(POOL, int(start))
    group = rig.deps.store.get(gid)
    assert (group["file_count"], group["bytes"], len(rig.deps.store.files_of(gid))) == (1, 100, 1)
    # Each delivery re-announces the (same) assignment, so the index catches up after a crash.
    assert len(rig.events.of(FileGrouped, count=3)) == 3


def test_private_files_and_unknown_pools_are_ignored(rig: Rig) -> None:
    rig.handle(rig.stored("f1", ts=rig.clock(), pool_id=None))
    rig.handle(rig.stored("f2", ts=rig.clock(), pool_id="nope"))
    assert rig.store.groups.count_documents({}) == 0


def test_late_file_goes_to_the_current_window(rig: Rig) -> None:
    start = _start(rig)
    rig.handle(rig.stored("f1", ts=start + 1))
    gid = core.group_id(POOL, int(start))
    rig.clock.advance(3 * W)  # three windows later
    ticking.promote_ready(rig.deps)
    assert rig.deps.store.lease(gid, rig.clock(), 300) is not None
    rig.handle(rig.stored("f-late", ts=start + 2))  # its own window is processing now
    current = core.group_id(POOL, int(start) + 3 * W)
    assert [(f["file_id"], f["late"]) for f in rig.deps.store.files_of(current)] == [("f-late", True)]
    assert rig.deps.store.get(gid)["file_count"] == 1
    assert rig.deps.store.get(current)["late_count"] == 1
    late = [m for m in rig.events.of(FileGrouped, count=2) if m.file_id == "f-late"]
    assert late and late[0].late and late[0].group_id == current
    # A redelivery of the late file keeps its late assignment.
    rig.handle(rig.stored("f-late", ts=start + 2))
    assert rig.deps.store.get(current)["file_count"] == 1
    again = [m for m in rig.events.of(FileGrouped, count=3) if m.file_id == "f-late"]
    assert len(again) == 2 and all(m.late and m.group_id == current for m in again)


def test_late_when_current_window_closed_too_goes_to_next(rig: Rig) -> None:
    rig.auth.set_pool(min_contributors=1)  # every group is ready at its first file
    start = _start(rig)
    rig.handle(rig.stored("f1", ts=start + 1))
    gid = core.group_id(POOL, int(start))
    assert rig.deps.store.get(gid)["status"] == "ready"
    rig.deps.store.lease(gid, rig.clock(), 300)
    rig.handle(rig.stored("f2", ts=start + 2))
    nxt = core.group_id(POOL, int(start) + W)
    assert [f["file_id"] for f in rig.deps.store.files_of(nxt)] == ["f2"]


def test_min_contributors_makes_ready_at_once(rig: Rig) -> None:
    rig.auth.set_pool(min_contributors=2)
    start = _start(rig)
    gid = core.group_id(POOL, int(start))
    rig.handle(rig.stored("f1", ts=start + 1, owner="u1"))
    rig.handle(rig.stored("f2", ts=start + 2, owner="u1"))
    assert rig.deps.store.get(gid)["status"] == "open"  # one contributor, twice
    rig.handle(rig.stored("f3", ts=start + 3, owner="u2"))
    assert rig.deps.store.get(gid)["status"] == "ready"
    changed = rig.events.of(GroupChanged)
    assert [(m.group_id, m.status) for m in changed] == [(gid, "ready")]
    # A ready group still takes files (not late).
    rig.handle(rig.stored("f4", ts=start + 4, owner="u3"))
    assert rig.deps.store.get(gid)["file_count"] == 4


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_ticker_closes_after_window_and_grace_and_announces(rig: Rig) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        rig.auth.set_pool(close_grace_seconds=10, processor_url=f"http://127.0.0.1:{hook.server_port}/hook")
        start = _start(rig)
        gid = core.group_id(POOL, int(start))
        rig.handle(rig.stored("f1", ts=start + 1))
        rig.clock.t = start + W + 9.9  # window over, grace not yet
        ticking.tick(rig.deps)
        assert rig.deps.store.get(gid)["status"] == "open"
        rig.clock.t = start + W + 10
        ticking.tick(rig.deps)
        assert rig.deps.store.get(gid)["status"] == "ready"
        ticking.tick(rig.deps)  # a second tick changes nothing
        assert [(m.group_id, m.status) for m in rig.events.of(GroupChanged)] == [(gid, "ready")]
        for _ in range(100):
            if _Hook.received:
                break
            threading.Event().wait(0.02)
        assert _Hook.received == [{"pool_id": POOL, "group_id": gid,
                                   "files_url": f"http://127.0.0.1:5004/pools/{POOL}/groups/{gid}/files"}]
        metrics = rig.app.test_client().get("/metrics").get_data(as_text=True)
        assert 'pool_groups{status="ready"} 1.0' in metrics
    finally:
        hook.shutdown()
        hook.server_close()


def test_announce_failure_is_counted_not_fatal(rig: Rig) -> None:
    rig.auth.set_pool(processor_url="http://127.0.0.1:9/nothing-listens")
    start = _start(rig)
    rig.handle(rig.stored("f1", ts=start + 1))
    rig.clock.t = start + W
    ticking.promote_ready(rig.deps)
    metrics = rig.deps.metrics
    for _ in range(200):
        if metrics.announce_failures._value.get() >= 1:
            break
        threading.Event().wait(0.02)
    assert metrics.announce_failures._value.get() == 1
    assert rig.deps.store.get(core.group_id(POOL, int(start)))["status"] == "ready"


def test_lease_expiry_back_to_ready_then_failed_after_max(rig: Rig) -> None:
    rig.auth.set_pool(processing_timeout_seconds=30)
    start = _start(rig)
    gid = core.group_id(POOL, int(start))
    rig.handle(rig.stored("f1", ts=start + 1))
    rig.clock.t = start + W
    ticking.tick(rig.deps)
    for expiry in (1, 2, 3):
        assert rig.deps.store.lease(gid, rig.clock(), 30) is not None
        rig.clock.advance(29.9)
        ticking.tick(rig.deps)
        assert rig.deps.store.get(gid)["status"] == "processing"
        rig.clock.advance(0.1)
        ticking.tick(rig.deps)
        group = rig.deps.store.get(gid)
        assert group["lease_expiries"] == expiry
        assert group["status"] == ("failed" if expiry == 3 else "ready")
    statuses = [m.status for m in rig.events.of(GroupChanged, count=4)]
    assert statuses == ["ready", "ready", "ready", "failed"]
    assert rig.deps.store.lease(gid, rig.clock(), 30) is None  # failed is final


def test_two_tickers_one_transition(rig: Rig, mongo_db) -> None:
    """Two aggregator processes share the collections: each transition happens once."""
    other = create_app(Settings.from_env({"AMQP_URL": rig.amqp_url, "POOL_CACHE_SECONDS": "0"}),
                       store=MongoGroupStore(mongo_db), broker=rig.deps.broker, auth=rig.auth, clock=rig.clock)
    other_deps = other.extensions["deps"]
    start = _start(rig)
    for i in range(5):
        rig.handle(rig.stored(f"f{i}", ts=start + i))
    rig.clock.t = start + W
    moved = []
    barrier = threading.Barrier(2)

    def run(deps) -> None:
        barrier.wait()
        moved.append(ticking.promote_ready(deps))

    threads = [threading.Thread(target=run, args=(d,)) for d in (rig.deps, other_deps)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(moved) == [0, 1]
    rig.events.settle()
    assert len(rig.events.of(GroupChanged)) == 1


def test_concurrent_claims_exactly_one_wins(rig: Rig) -> None:
    start = _start(rig)
    gid = core.group_id(POOL, int(start))
    rig.handle(rig.stored("f1", ts=start + 1))
    rig.clock.t = start + W
    ticking.promote_ready(rig.deps)
    for attempt in range(5):
        results: list = []
        barrier = threading.Barrier(8)

        def lease(barrier: threading.Barrier = barrier, results: list = results) -> None:
            barrier.wait()
            results.append(rig.deps.store.lease(gid, rig.clock(), 30))

        threads = [threading.Thread(target=lease) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is not None for r in results) == 1, attempt
        rig.store.groups.update_one({"_id": gid}, {"$set": {"status": "ready"}})
    # And the result claim: of many concurrent posts exactly one claims the group.
    rig.deps.store.lease(gid, rig.clock(), 30)
    claims: list = []
    barrier = threading.Barrier(8)

    def claim(n: int) -> None:
        barrier.wait()
        claims.append(rig.deps.store.claim_result(gid, f"c{n}", rig.clock()))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c is not None for c in claims) == 1
    # The claim holds the group for one post; it stays processing until the result is recorded.
    group = rig.deps.store.get(gid)
    assert group["status"] == "processing" and group["result_claim"] in {f"c{n}" for n in range(8)}


def test_concurrent_adds_of_one_new_group(rig: Rig) -> None:
    """Many consumers creating the same group at once: every file lands in it, once."""
    start = _start(rig)
    barrier = threading.Barrier(10)
    errors: list = []

    def add(i: int) -> None:
        barrier.wait()
        try:
            rig.handle(rig.stored(f"f{i}", ts=start + 1, owner=f"u{i}", size=10))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    group = rig.deps.store.get(core.group_id(POOL, int(start)))
    assert (group["file_count"], group["bytes"], len(group["contributors"])) == (10, 100, 10)


def test_stored_result_is_published_once(rig: Rig) -> None:
    rig.deps.store.insert_result({
        "result_id": "r1", "pool_id": POOL, "group_id": "g", "window_start": "a", "window_end": "b",
        "file_name": "mean.f64", "size": 8, "sha256": "s", "created": "2026-01-01T00:00:00.000Z",
        "created_ts": 1.0, "download_url": "http://files.example/file/r1", "stored": False,
        "published": False})
    message = rig.stored("r1", ts=rig.clock(), kind="result", group_id="g", size=8)
    rig.handle(message)
    rig.handle(message)  # redelivered
    rig.events.settle()
    published = rig.events.of(ResultPublished)
    assert len(published) == 1
    assert published[0].download_url == "http://files.example/file/r1"
    assert rig.deps.store.get_result("r1")["stored"] is True
    rig.handle(rig.stored("unknown", ts=rig.clock(), kind="result", group_id="g"))  # ignored
