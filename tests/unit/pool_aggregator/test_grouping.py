"""FileStored handling and the time-driven transitions, on the in-memory store and broker."""

from __future__ import annotations

import pytest

from services.common import topology
from services.common.contracts import FileGrouped, FileStored, GroupChanged, PoolDeleted, UploadStored
from services.common.handlers import UnhandledMessage
from services.pool_aggregator import core, handlers, ticking

from .conftest import KEY, POOL, Kit, W


def test_files_go_to_the_group_of_their_window(kit: Kit) -> None:
    start = kit.window_start()
    kit.deliver(kit.stored("f1", ts=start + 5, size=100))
    kit.deliver(kit.stored("f2", ts=start + 59.9, owner="u2", size=50))
    kit.deliver(kit.stored("f3", ts=start + 60, size=7))  # the next window
    gid, nxt = core.group_id(POOL, start), core.group_id(POOL, start + W)
    group = kit.store.get(gid)
    assert (group["status"], group["file_count"], group["bytes"], sorted(group["contributors"])) == (
        "open", 2, 150, ["u1", "u2"])
    assert [e["file_id"] for e in kit.store.files_of(gid)] == ["f1", "f2"]
    assert [(m.file_id, m.group_id, m.late) for m in kit.broker.of_type(FileGrouped)] == [
        ("f1", gid, False), ("f2", gid, False), ("f3", nxt, False)]


def test_a_redelivered_file_counts_once_and_is_announced_again(kit: Kit) -> None:
    start = kit.window_start()
    message = kit.stored("f1", ts=start + 1, size=100)
    for _ in range(3):
        kit.deliver(message)
    gid = core.group_id(POOL, start)
    assert (kit.store.get(gid)["file_count"], kit.store.get(gid)["bytes"], len(kit.store.files_of(gid))) == (
        1, 100, 1)
    assert len(kit.broker.of_type(FileGrouped)) == 3  # so the index catches up after a crash


def test_late_file_goes_late_to_the_current_window_and_stays_there(kit: Kit) -> None:
    start = kit.window_start()
    gid = core.group_id(POOL, start)
    kit.deliver(kit.stored("f1", ts=start + 1))
    kit.clock.advance(3 * W)
    ticking.promote_ready(kit.deps)
    assert kit.store.lease(gid, kit.clock.time(), 30) is not None  # its window is processing now
    kit.deliver(kit.stored("f-late", ts=start + 2))
    current = core.group_id(POOL, start + 3 * W)
    assert [(e["file_id"], e["late"]) for e in kit.store.files_of(current)] == [("f-late", True)]
    assert (kit.store.get(gid)["file_count"], kit.store.get(current)["late_count"]) == (1, 1)
    kit.deliver(kit.stored("f-late", ts=start + 2))  # redelivered: the late assignment stands
    assert kit.store.get(current)["file_count"] == 1
    late = [m for m in kit.broker.of_type(FileGrouped) if m.file_id == "f-late"]
    assert [(m.group_id, m.late) for m in late] == [(current, True), (current, True)]


def test_a_ready_group_still_takes_files_on_time(kit: Kit) -> None:
    start = kit.window_start()
    gid = core.group_id(POOL, start)
    kit.deliver(kit.stored("f1", ts=start + 1))
    kit.store.mark_ready(gid, kit.clock.time())
    kit.deliver(kit.stored("f2", ts=start + 2))
    assert kit.store.get(gid)["file_count"] == 2
    assert not kit.broker.of_type(FileGrouped)[-1].late


def test_private_files_and_unknown_pools_are_not_grouped(kit: Kit) -> None:
    kit.deliver(kit.stored("f1", ts=kit.clock.time(), pool_id=None))
    kit.deliver(kit.stored("f2", ts=kit.clock.time(), pool_id="nope"))
    assert kit.store.groups == {} and kit.broker.of_type(FileGrouped) == []


def test_auth_down_requeues_the_file(kit: Kit) -> None:
    kit.auth.down = True
    with pytest.raises(Exception, match="FakeAuth.down"):
        kit.deliver(kit.stored("f1", ts=kit.clock.time()))
    assert kit.store.groups == {}


def test_each_queue_handles_its_own_messages_only(kit: Kit) -> None:
    *stored, pools = handlers.consumers(kit.deps)
    assert [s.queue for s in stored] == [*topology.AGGREGATOR_SHARD_QUEUES, topology.AGGREGATOR_QUEUE]
    assert all(set(s.handlers) == {FileStored, UploadStored} for s in stored) and set(pools.handlers) == {PoolDeleted}
    for spec in (*stored, pools):
        with pytest.raises(UnhandledMessage):
            spec.dispatch(GroupChanged(pool_id=POOL, group_id="g", status="ready", window_start="a", window_end="b"))


def test_grouping_consumers_are_spread_over_the_pool_shards(kit: Kit) -> None:
    """GROUPING_CONSUMERS spread over the shard queues (rounded up), as many on the legacy queue:
    a backlog of one pool holds only its shard's consumers (issue 10)."""
    *stored, _ = handlers.consumers(kit.deps)
    per_shard = -(-kit.deps.settings.grouping_consumers // topology.STORED_SHARDS)
    assert [(s.count, s.prefetch) for s in stored] == [(per_shard, 2)] * (topology.STORED_SHARDS + 1)
    assert kit.deps.settings.grouping_consumers == 48 and per_shard == 6


def test_ready_by_time_after_window_and_grace(kit: Kit) -> None:
    kit.auth.pools[POOL]["close_grace_seconds"] = 10
    start = kit.window_start()
    gid = core.group_id(POOL, start)
    kit.deliver(kit.stored("f1", ts=start + 1))
    kit.clock.advance(start + W + 9.9 - kit.clock.time())
    ticking.tick(kit.deps)
    assert kit.store.get(gid)["status"] == "open"
    kit.clock.advance(0.1)
    ticking.tick(kit.deps)
    ticking.tick(kit.deps)  # a second tick changes nothing
    assert kit.store.get(gid)["status"] == "ready"
    assert [(m.group_id, m.status) for m in kit.broker.of_type(GroupChanged)] == [(gid, "ready")]
    assert kit.announcer.announced == [("http://processor.example/hook", gid)]
    assert kit.deps.metrics.groups.labels("ready")._value.get() == 1


def test_ready_by_min_contributors_on_arrival(kit: Kit) -> None:
    kit.auth.pools[POOL]["min_contributors"] = 2
    start = kit.window_start()
    gid = core.group_id(POOL, start)
    kit.deliver(kit.stored("f1", ts=start + 1, owner="u1"))
    kit.deliver(kit.stored("f2", ts=start + 2, owner="u1"))
    assert kit.store.get(gid)["status"] == "open"  # one contributor, twice
    kit.deliver(kit.stored("f3", ts=start + 3, owner="u2"))
    assert kit.store.get(gid)["status"] == "ready"
    assert [m.status for m in kit.broker.of_type(GroupChanged)] == ["ready"]


def test_lease_expiry_back_to_ready_then_failed_at_the_max(kit: Kit) -> None:
    start = kit.window_start()
    gid = core.group_id(POOL, start)
    kit.deliver(kit.stored("f1", ts=start + 1))
    kit.clock.advance(W)
    ticking.tick(kit.deps)
    for expiry in (1, 2, 3):
        assert kit.store.lease(gid, kit.clock.time(), 30) is not None
        kit.clock.advance(29.9)
        ticking.tick(kit.deps)
        assert kit.store.get(gid)["status"] == "processing"
        kit.clock.advance(0.1)
        ticking.tick(kit.deps)
        group = kit.store.get(gid)
        assert (group["lease_expiries"], group["status"]) == (expiry, "failed" if expiry == 3 else "ready")
        assert "lease_id" not in group
    assert [m.status for m in kit.broker.of_type(GroupChanged)] == ["ready", "ready", "ready", "failed"]
    assert len(kit.announcer.announced) == 3  # ready, then ready again twice; never for failed
    assert kit.store.lease(gid, kit.clock.time(), 30) is None  # failed is final


def test_a_failing_tick_step_does_not_stop_the_others(kit: Kit, monkeypatch) -> None:
    start = kit.window_start()
    kit.deliver(kit.stored("f1", ts=start + 1))
    kit.clock.advance(W)

    def broken(limit: int = 0) -> list:
        raise RuntimeError("mongo blip")

    monkeypatch.setattr(kit.store, "open_groups", broken)
    ticking.tick(kit.deps)
    assert kit.deps.metrics.groups.labels("open")._value.get() == 1  # the gauges still ran


def test_a_stored_group_of_year_9999_is_listed_not_a_500(kit: Kit) -> None:
    last = core.window_for(253402300799.0, W)  # the last window of year 9999 ends in year 10000
    kit.store.add_files(pool_id=POOL, window=last, close_grace_seconds=0, min_contributors=None,
                        entries=[{"file_id": "far", "owner_id": "u1", "timestamp": "9999-12-31T23:59:59Z",
                                  "ts": 253402300799.0, "size": 1, "sha256": "0" * 64, "file_name": "f"}],
                        now=kit.clock.time())
    client = kit.app.test_client()
    answer = client.get(f"/pools/{POOL}/groups", headers={"X-API-Key": KEY})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    [group] = answer.get_json()["groups"]
    assert (group["window_start"], group["window_end"]) == ("9999-12-31T23:59:00.000Z", "9999-12-31T23:59:59.999Z")
    assert client.get(f"/pools/{POOL}/groups/{group['group_id']}", headers={"X-API-Key": KEY}).status_code == 200


def test_a_far_future_timestamp_is_grouped_by_its_storing_time(kit: Kit) -> None:
    now = kit.clock.time()
    kit.deliver(kit.stored("far", ts=253402300799.0))  # year 9999, stored now
    kit.deliver(kit.stored("skewed", ts=now + 299))  # within the clock skew: its own window
    [far] = [m for m in kit.broker.of_type(FileGrouped) if m.file_id == "far"]
    assert far.group_id == core.group_id(POOL, core.window_for(now, W).start)
    [skewed] = [m for m in kit.broker.of_type(FileGrouped) if m.file_id == "skewed"]
    assert skewed.group_id == core.group_id(POOL, core.window_for(now + 299, W).start)


@pytest.mark.parametrize("ts, shown", [
    (253402300800.0, "9999-12-31T23:59:59.999Z"), (1e300, "9999-12-31T23:59:59.999Z"),
    (float("inf"), "9999-12-31T23:59:59.999Z"), (-1e300, "0001-01-01T00:00:00.000Z"),
    (0.0, "1970-01-01T00:00:00.000Z"), (1_700_000_000.5, "2023-11-14T22:13:20.500Z")])
def test_epoch_iso_clamps_to_what_iso_can_show(ts: float, shown: str) -> None:
    assert core.epoch_iso(ts) == shown


def test_a_file_another_slice_holds_uncounted_is_waited_for_outside_the_slice(kit: Kit) -> None:
    """add_files answered the file UNSETTLED (another slice's membership, not counted yet): the
    delivery asks ``memberships`` (which waits) and announces what it finds; if the leftover was
    dropped meanwhile, it groups the file again."""
    from services.pool_aggregator.ports import ADDED, UNSETTLED

    start = kit.window_start()
    gid = core.group_id(POOL, start)
    real_add, real_members = kit.store.add_files, kit.store.memberships
    calls: list[str] = []

    def first_unsettled(**kwargs):
        calls.append("add")
        if len(calls) == 1:
            group = real_add(**{**kwargs, "entries": []})[1]
            return ADDED, group, {e["file_id"]: {"group_id": None, "late": False, UNSETTLED: True}
                                  for e in kwargs["entries"]}
        return real_add(**kwargs)

    def leftover_dropped(pool_id, file_ids, now):
        calls.append("wait")
        return real_members(pool_id, file_ids, now)  # nothing there: dropped as a leftover

    kit.store.add_files, kit.store.memberships = first_unsettled, leftover_dropped
    kit.deliver(kit.stored("f1", ts=start + 1, size=100))
    # (the fake's own add_files asks memberships too: only the order of the first two and the
    # second slice matter)
    assert calls[:2] == ["add", "wait"] and calls.count("add") == 2
    assert kit.store.get(gid)["file_count"] == 1
    assert [(m.file_id, m.group_id) for m in kit.broker.of_type(FileGrouped)] == [("f1", gid)]
