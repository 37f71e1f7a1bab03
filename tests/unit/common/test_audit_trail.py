"""AuditTrail: records leave the request thread and travel in batches (issue 13).

The in-memory broker encodes and decodes every message, so what is counted here is what the
wire would carry. A long linger makes the batching deterministic: a batch goes when it is full
or when the trail stops, never because a slow test machine let 50 ms pass.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

from services.common import audit as audit_module
from services.common.audit import AuditTrail
from services.common.contracts import AUDIT_BATCH, AuditRecorded, AuditsRecorded
from services.common.runtime import Runtime
from services.common.runtime import start as runtime_start
from services.common.testing import InMemoryBroker

NEVER = 3600.0  # a linger no test waits out: only a full batch or the stop sends


class Count:
    """A stand-in for a prometheus counter: what ``lost_counter.inc(n)`` added up to."""

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


def records_of(broker: InMemoryBroker) -> list[AuditRecorded]:
    """Every record published, single or batched, in publishing order."""
    found: list[AuditRecorded] = []
    for p in broker.published:
        if isinstance(p.message, AuditsRecorded):
            found.extend(p.message.records)
        elif isinstance(p.message, AuditRecorded):
            found.append(p.message)
    return found


def wait_until(check, timeout: float = 5.0) -> None:
    """Poll (bounded) for what the trail's thread does on its own time."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.01)


@pytest.mark.parametrize("count", [1, 499, 500, 501, 1234, 2500])
def test_n_records_travel_in_ceil_n_over_500_messages(count: int) -> None:
    broker = InMemoryBroker()
    trail = AuditTrail(broker, "file_uploader", linger=NEVER)
    stop = trail.start()
    for n in range(count):
        trail.record("upload_started", actor="7", file_id=f"f{n}", size=n)
    # Full batches go while records still arrive (only the remainder waits for the stop).
    wait_until(lambda: len(records_of(broker)) == count // AUDIT_BATCH * AUDIT_BATCH)
    stop()
    assert len(broker.published) == math.ceil(count / AUDIT_BATCH)
    full, rest = divmod(count, AUDIT_BATCH)
    # A batch of one goes as the single record every file_service_manager understands.
    assert [type(p.message) for p in broker.published] == [AuditsRecorded] * full + (
        [AuditRecorded] if rest == 1 else [AuditsRecorded] if rest else [])
    assert all(len(p.message.records) == AUDIT_BATCH for p in broker.published[:full])
    found = records_of(broker)
    assert [r.file_id for r in found] == [f"f{n}" for n in range(count)], "each once, in order"
    assert all(r.service == "file_uploader" and r.action == "upload_started" for r in found)


def test_record_does_not_publish_on_the_callers_thread() -> None:
    broker = InMemoryBroker()
    trail = AuditTrail(broker, "auth", linger=NEVER)
    stop = trail.start()
    trail.record("login", actor="7")
    trail.record("logout", actor="7")
    assert broker.published == [] and trail.buffered == 2, "buffered, not published in place"
    stop()
    [batch] = broker.of_type(AuditsRecorded)
    assert [r.action for r in batch.records] == ["login", "logout"]


def test_a_lone_record_goes_after_the_linger_without_a_stop() -> None:
    broker = InMemoryBroker()
    trail = AuditTrail(broker, "auth", linger=0.05)
    stop = trail.start()
    try:
        started = time.monotonic()
        trail.record("login", actor="7")
        trail.record("logout", actor="7")
        wait_until(lambda: len(records_of(broker)) == 2, timeout=5.0)
        assert time.monotonic() - started < 5.0
        [batch] = broker.of_type(AuditsRecorded)
        assert [r.action for r in batch.records] == ["login", "logout"]
    finally:
        stop()


def test_stop_publishes_the_buffer_and_later_records_go_in_place() -> None:
    broker = InMemoryBroker()
    trail = AuditTrail(broker, "pool_aggregator", linger=NEVER)
    stop = trail.start()
    for n in range(7):
        trail.record("result_posted", actor="k", group_id=f"g{n}")
    assert broker.published == []
    stop()
    [batch] = broker.of_type(AuditsRecorded)
    assert [r.group_id for r in batch.records] == [f"g{n}" for n in range(7)]
    assert trail.buffered == 0
    # After the stop (a handler finishing late): in place, not into a buffer nobody drains.
    trail.record("result_posted", actor="k", group_id="late")
    assert [r.group_id for r in broker.of_type(AuditRecorded)] == ["late"]


def test_an_unstarted_trail_publishes_in_place() -> None:
    broker = InMemoryBroker()
    trail = AuditTrail(broker, "auth")
    trail.record("signup", actor="7")
    assert [r.action for r in broker.of_type(AuditRecorded)] == ["signup"]


def test_past_the_bound_a_record_is_published_in_place_and_counted() -> None:
    broker = InMemoryBroker()
    lost = Count()
    trail = AuditTrail(broker, "file_uploader", lost, capacity=10, linger=NEVER)
    stop = trail.start()
    for n in range(10):
        trail.record("upload_started", actor="7", file_id=f"f{n}")
    assert broker.published == [] and trail.buffered == 10
    trail.record("upload_started", actor="7", file_id="over")  # the 11th: the buffer is full
    assert [r.file_id for r in broker.of_type(AuditRecorded)] == ["over"], "published at once, in place"
    assert trail.overflowed == 1 and trail.buffered == 10 and lost.value == 0
    # In place and refused by the broker: lost, counted and logged; the caller is not failed.
    broker.fail_publishes(1)
    trail.record("upload_started", actor="7", file_id="refused")
    assert lost.value == 1 and trail.overflowed == 2
    stop()
    [batch] = broker.of_type(AuditsRecorded)
    assert [r.file_id for r in batch.records] == [f"f{n}" for n in range(10)]
    assert len(records_of(broker)) == 11


def test_a_refused_batch_counts_every_record_lost(caplog) -> None:
    broker = InMemoryBroker()
    lost = Count()
    trail = AuditTrail(broker, "auth", lost, linger=NEVER)
    stop = trail.start()
    for _ in range(3):
        trail.record("login", actor="7")
    broker.fail_publishes(1)
    with caplog.at_level("ERROR", logger=audit_module.__name__):
        stop()
    assert lost.value == 3 and broker.published == []
    assert any(r.getMessage() == "audit_write_lost" and getattr(r, "records", None) == 3 for r in caplog.records)


class GatedBroker(InMemoryBroker):
    """A broker whose publishes wait for a gate: one slower than the records arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def publish(self, message, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.gate.wait(10)  # bounded: a test that forgets to open it ends anyway
        super().publish(message, **kwargs)


def test_stop_waits_a_bounded_time_and_counts_what_is_left() -> None:
    broker = GatedBroker()
    lost = Count()
    trail = AuditTrail(broker, "auth", lost, batch=2, linger=NEVER)
    stop = trail.start()
    for _ in range(5):  # the thread takes 2 and waits at the gate; 3 stay buffered
        trail.record("login", actor="7")
    wait_until(lambda: trail.buffered == 3)
    started = time.monotonic()
    trail.stop(timeout=0.2)
    assert time.monotonic() - started < 2.0, "stop is bounded"
    assert lost.value == 3 and trail.buffered == 0
    broker.gate.set()  # the batch in flight still goes
    wait_until(lambda: len(records_of(broker)) == 2)
    stop()  # already stopped: nothing more to do
    assert lost.value == 3


def test_the_runtime_starts_the_trail_and_its_stop_flushes_it_last() -> None:
    broker = InMemoryBroker()
    trail = AuditTrail(broker, "file_service_manager", linger=NEVER)
    order: list[str] = []

    def service() -> object:
        def stopper() -> None:
            trail.record("stopping", actor="system")  # recorded while the service stops
            order.append("service stopped")
        return stopper

    class App:
        extensions = {"runtime": Runtime(services=[service], audit=trail)}

    # no consumers: never connects; no SIGTERM handler in the test process
    stop = runtime_start(App(), "amqp://guest:guest@127.0.0.1:1/%2F", sigterm=False)
    trail.record("downloaded", actor="7")
    assert broker.published == [], "started by the runtime: buffered"
    stop()
    [batch] = broker.of_type(AuditsRecorded)
    assert [r.action for r in batch.records] == ["downloaded", "stopping"], "flushed after the other stoppers"
    assert order == ["service stopped"]


def test_stop_runs_once_however_often_it_is_called() -> None:
    """serve's finally, the atexit hook and a signal may all call it: one flush, one stop each."""
    broker = InMemoryBroker()
    trail = AuditTrail(broker, "file_service_manager", linger=NEVER)
    stopped: list[str] = []

    class App:
        extensions = {"runtime": Runtime(services=[lambda: lambda: stopped.append("service")], audit=trail)}

    stop = runtime_start(App(), "amqp://guest:guest@127.0.0.1:1/%2F", sigterm=False)
    trail.record("downloaded", actor="7")
    trail.record("downloaded", actor="8")
    stop()
    stop()
    assert stopped == ["service"]
    assert len(broker.published) == 1, "one batch, flushed once"


def test_a_start_that_fails_midway_stops_what_it_started_and_flushes() -> None:
    """A service whose start fails (or is interrupted by SIGTERM's SystemExit) after the trail
    started must not leave the trail's thread running with its records."""
    broker = InMemoryBroker()
    trail = AuditTrail(broker, "file_service_manager", linger=NEVER)
    stopped: list[str] = []

    def fine() -> object:
        trail.record("stopping", actor="system")
        trail.record("stopping", actor="system")
        return lambda: stopped.append("fine")

    def broken() -> object:
        raise SystemExit(0)

    class App:
        extensions = {"runtime": Runtime(services=[fine, broken], audit=trail)}

    with pytest.raises(SystemExit):
        runtime_start(App(), "amqp://guest:guest@127.0.0.1:1/%2F", sigterm=False)
    assert stopped == ["fine"], "the service that had started is stopped"
    [batch] = broker.of_type(AuditsRecorded)
    assert [r.action for r in batch.records] == ["stopping", "stopping"]


def test_a_batch_larger_than_a_consumer_decodes_is_refused() -> None:
    with pytest.raises(ValueError):
        AuditTrail(InMemoryBroker(), "auth", batch=1_001)


def test_a_malformed_record_is_counted_lost_alone_and_its_batch_still_decodes() -> None:
    """One record file_service_manager's decode would refuse (a byte count that is not an int)
    would have its whole batch dead-lettered, uncounted (review): refused at record time instead."""
    from services.common import contracts

    broker = InMemoryBroker()
    lost = Count()
    trail = AuditTrail(broker, "file_uploader", lost, linger=NEVER)
    stop = trail.start()
    trail.record("stored", actor="7", file_id="f1", size=3)
    trail.record("stored", actor="7", file_id="bad", size="3")  # type: ignore[arg-type]
    trail.record("stored", actor="7", file_id="f2", size=5)
    stop()
    [batch] = broker.of_type(AuditsRecorded)
    assert [r.file_id for r in batch.records] == ["f1", "f2"] and lost.value == 1
    assert contracts.decode(batch.encode()) == batch
