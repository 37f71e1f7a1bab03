"""A stored pool file whose group never becomes known is announced again (regrouping): with
backoff, by one pass of two, never for a grouped, deleted or pool-less file, and given up after
MAX_REGROUPS unanswered announcements."""

from __future__ import annotations

from services.common.contracts import FileGrouped, FilesGrouped, FileStored, GroupedFiles
from services.file_service_manager import handlers, regrouping, storing

from .conftest import command


def _stored(deps, **kwargs):
    msg = command(deps, b"0123456789", **kwargs)
    storing.store_upload(deps, msg)
    deps.broker.published.clear()
    deps.auth.pools["p1"] = {"pool_id": "p1"}  # auth knows the pool (after the store: its backend is the default)
    return msg


def _deliver(deps, message) -> None:
    deps.broker.publish(message)
    deps.broker.deliver(handlers.consumers(deps))


def test_announced_again_after_the_delay_with_backoff_then_given_up(deps) -> None:
    _stored(deps)
    after = deps.settings.regroup_after_seconds
    assert regrouping.regroup_pass(deps) == 0, "not due yet"
    deps.clock.advance(after)
    assert regrouping.regroup_pass(deps) == 1
    [again] = deps.broker.of_type(FileStored)
    record = deps.index.record("u1")
    assert (again.file_id, again.pool_id, again.upload_id, again.size, again.sha256, again.created, again.kind) == (
        "u1", "p1", "u1", 10, record["sha256"], record["created"], "file")
    assert regrouping.regroup_pass(deps) == 0, "the next announcement waits its backoff"
    deps.clock.advance(after * 2)
    assert regrouping.regroup_pass(deps) == 1
    for attempt in range(3, regrouping.MAX_REGROUPS + 1):
        deps.clock.advance(regrouping.MAX_BACKOFF_SECONDS)
        assert regrouping.regroup_pass(deps) == 1, attempt
    assert len(deps.broker.of_type(FileStored)) == regrouping.MAX_REGROUPS
    deps.clock.advance(regrouping.MAX_BACKOFF_SECONDS)
    assert regrouping.regroup_pass(deps) == 0, "given up"
    assert deps.index.record("u1")["never_grouped"] is True and "regroup_at" not in deps.index.record("u1")
    assert deps.metrics.never_grouped._value.get() == 1


def test_a_grouped_file_is_not_announced_again(deps) -> None:
    _stored(deps)
    _deliver(deps, FileGrouped(file_id="u1", pool_id="p1", group_id="g1", late=False))
    deps.clock.advance(10 * deps.settings.regroup_after_seconds)
    assert regrouping.regroup_pass(deps) == 0 and deps.broker.of_type(FileStored) == []


def test_a_batch_grouped_in_one_message_is_not_announced_again_but_its_missing_item_is(deps) -> None:
    _stored(deps, items=[(0, 5), (5, 5)])
    _deliver(deps, FilesGrouped(pool_id="p1", upload_id="u1",
                                groups=(GroupedFiles(group_id="g1", late=False, file_ids=("u1-0000",)),)))
    deps.clock.advance(deps.settings.regroup_after_seconds)
    assert regrouping.regroup_pass(deps) == 1
    assert [m.file_id for m in deps.broker.of_type(FileStored)] == ["u1-0001"]


def test_results_deleted_files_and_pool_less_files_are_never_announced_again(deps) -> None:
    _stored(deps, kind="result")
    deps.clock.advance(10 * deps.settings.regroup_after_seconds)
    assert regrouping.regroup_pass(deps) == 0
    deps.index.records.clear()
    _stored(deps)
    deps.index.mark_deleted("u1", "7")
    deps.clock.advance(10 * deps.settings.regroup_after_seconds)
    assert regrouping.regroup_pass(deps) == 0


def test_of_two_passes_at_once_one_announces(deps) -> None:
    _stored(deps)
    deps.clock.advance(deps.settings.regroup_after_seconds)
    index, real = deps.index, deps.index.reschedule_regroup

    def the_other_replica_first(file_id, seen, next_at):
        real(file_id, seen, seen + 60)  # another replica's pass, between this pass's read and its claim
        return real(file_id, seen, next_at)

    index.reschedule_regroup = the_other_replica_first
    assert regrouping.regroup_pass(deps) == 0 and deps.broker.of_type(FileStored) == []
    assert index.record("u1")["regroups"] == 1, "counted once, by the replica that announced"


def test_a_file_of_a_pool_deleted_since_is_given_up_quietly(deps) -> None:
    """pool_aggregator drops a deleted pool's files unanswered: no announcement, no alert."""
    _stored(deps)
    del deps.auth.pools["p1"]
    deps.clock.advance(deps.settings.regroup_after_seconds)
    assert regrouping.regroup_pass(deps) == 0 and deps.broker.of_type(FileStored) == []
    assert "regroup_at" not in deps.index.record("u1")
    assert deps.metrics.never_grouped._value.get() == 0


def test_during_a_rolling_upgrade_it_is_announced_on_the_unsharded_key(deps) -> None:
    """ANNOUNCE_BATCHES=false: a pool_aggregator older than the shards consumes only the legacy key."""
    import dataclasses

    deps = dataclasses.replace(deps, settings=dataclasses.replace(deps.settings, announce_batches=False))
    _stored(deps)
    deps.broker.published.clear()
    deps.clock.advance(deps.settings.regroup_after_seconds)
    assert regrouping.regroup_pass(deps) == 1
    assert [p.routing_key for p in deps.broker.published] == ["file.stored"]
