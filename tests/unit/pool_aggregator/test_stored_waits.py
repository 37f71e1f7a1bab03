"""A result post waits for its result to be numbered: woken by this process's consumer, or
(numbered by another replica) finding it by reading the store now and then."""

from __future__ import annotations

import dataclasses
import io
import threading

from services.pool_aggregator import results
from services.pool_aggregator.stored_waits import POLL_SECONDS, StoredWaits

from .conftest import POOL, Kit
from .test_results_and_groups import _ready_group


def test_a_post_is_woken_by_this_processs_consumer_and_never_polls_the_store(kit: Kit) -> None:
    gid = _ready_group(kit)
    deps = dataclasses.replace(kit.deps, settings=dataclasses.replace(kit.deps.settings,
                                                                      result_store_wait_seconds=30.0))
    poster = threading.get_ident()
    reads_by_post: list[str] = []
    real_get_result = kit.store.get_result

    def get_result(result_id: str):  # type: ignore[no-untyped-def]
        if threading.get_ident() == poster:
            reads_by_post.append(result_id)
        return real_get_result(result_id)

    kit.store.get_result = get_result  # type: ignore[method-assign]
    consumers: list[threading.Thread] = []

    def stored_soon(file_id: str) -> None:
        # The FileStored is consumed on another thread a little after the complete, as it is
        # with RabbitMQ; the post waits meanwhile (under POLL_SECONDS: a poll would be a bug).
        timer = threading.Timer(POLL_SECONDS / 2, kit.store_result, args=(file_id,))
        consumers.append(timer)
        timer.start()

    kit.uploader.on_complete = stored_soon
    posted = results.post_result(deps, POOL, gid, "processor", results.ResultRequest("r.bin", 6, None),
                                 io.BytesIO(b"result"))
    for timer in consumers:
        timer.join(10)
    assert posted["seq"] == 1 and kit.store.get(gid)["status"] == "done"
    # The consumer handed the numbered result over; the post never read the results (it read
    # them every 10-200 ms before, ~4 reads for a result stored in 0.1 s).
    assert reads_by_post == []
    assert len(deps.stored_waits) == 0


def test_a_result_another_replica_numbered_is_found_by_reading() -> None:
    waits = StoredWaits()
    answers = iter([None, {"_id": "r1", "seq": None}, {"_id": "r1", "seq": 7}])
    reads: list[int] = []

    def read() -> dict | None:
        reads.append(1)
        return next(answers)

    waits.expect("r1")
    found = waits.wait("r1", 30.0, read)
    assert found == {"_id": "r1", "seq": 7} and len(reads) == 3
    assert len(waits) == 0  # the entry goes with its post: bounded by the posts in flight


def test_a_wake_before_the_wait_is_kept_and_a_wait_ends_at_its_deadline() -> None:
    waits = StoredWaits()
    waits.expect("r1")
    waits.arrived("r1", {"_id": "r1", "seq": 1})  # consumed before the post began to wait
    assert waits.wait("r1", 30.0, lambda: None) == {"_id": "r1", "seq": 1}
    waits.arrived("nobody", {"_id": "nobody", "seq": 2})  # no post waits: nothing is kept
    assert len(waits) == 0
    reads: list[int] = []
    assert waits.wait("r2", 0.01, lambda: reads.append(1)) is None  # type: ignore[func-returns-value]
    assert reads == [1] and len(waits) == 0  # one last look at the deadline, then forgotten

