"""Per-backend health and metrics: the probe behind /ready and storage_backend_up, and metered calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from services.common.httpkit import ServiceMetrics
from services.common.testing import FakeClock
from services.common.testing.file_service_manager import FakeBackend, FakeCatalog
from services.file_service_manager.backends import MAX_IN_USE, Storages, StorageSpec, parse_spec
from services.file_service_manager.backends.metered import Metered, StorageMetrics
from services.file_service_manager.deps import FsmMetrics
from services.file_service_manager.health import StorageProbes


def _sample(metrics: FsmMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def setup():
    metrics = FsmMetrics(ServiceMetrics("file_service_manager"))
    fake = FakeBackend("filesystem")
    spec = parse_spec({"backend": "filesystem", "root": "/srv"})
    meters = StorageMetrics(metrics.storage_bytes, metrics.storage_errors, metrics.storage_latency)
    storages = Storages(spec, lambda s: Metered(FakeBackend("filesystem", files=fake.files, descriptor=s.descriptor()),
                                                meters))
    return metrics, storages, spec.id


def test_the_probe_sets_the_gauge_and_is_kept_for_its_ttl(setup) -> None:
    metrics, storages, spec_id = setup
    clock = FakeClock()
    probes = StorageProbes(storages, metrics.storage_up, ttl=30, clock=clock.time)
    check = probes.checks()[f"storage:{spec_id}"]
    assert check() is True
    assert _sample(metrics, "storage_backend_up", {"backend": spec_id, "kind": "filesystem", "role": "default"}) == 1
    inner = storages.default.inner  # type: ignore[attr-defined]
    inner.healthy = False
    assert check() is True  # still within the ttl: no new probe
    clock.advance(31)
    assert check() is False
    assert _sample(metrics, "storage_backend_up", {"backend": spec_id, "kind": "filesystem", "role": "default"}) == 0
    assert _sample(metrics, "storage_errors_total", {"backend": spec_id, "op": "probe"}) == 1
    inner.healthy = True
    assert probes.run_all() == {spec_id: True}
    assert check() is True


def test_metered_calls_count_bytes_errors_and_latency(setup) -> None:
    metrics, storages, spec_id = setup
    backend = storages.default
    backend.write("a", [b"12345", b"678"], content_type="x")
    backend.write("b", [b"12"], content_type="x")
    assert _sample(metrics, "storage_bytes_written_total", {"backend": spec_id}) == 10
    backend.inner.fail_writes = 1  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError):
        backend.write("c", [b"x"], content_type="x")
    assert _sample(metrics, "storage_errors_total", {"backend": spec_id, "op": "write"}) == 1
    assert _sample(metrics, "storage_seconds_count", {"backend": spec_id, "op": "write"}) == 3
    assert backend.open("a") is not None and backend.delete("a") is True and not backend.exists("a")
    assert _sample(metrics, "storage_seconds_count", {"backend": spec_id, "op": "delete"}) == 1


def _fleet(catalog: Any, made: dict[str, FakeBackend]) -> Callable[[StorageSpec], FakeBackend]:
    """A ``make`` whose backends are kept in ``made`` by id (one per location, like one machine's view)."""

    def make(spec: StorageSpec) -> FakeBackend:
        return made.setdefault(spec.id, FakeBackend(spec.backend, descriptor=spec.descriptor()))

    return make


def test_pool_backends_another_replica_wrote_to_are_probed_and_reported_without_deciding_readiness() -> None:
    metrics = FsmMetrics(ServiceMetrics("file_service_manager"))
    catalog, made = FakeCatalog(), {}
    default = parse_spec({"backend": "filesystem", "root": "/srv"})
    pool = parse_spec({"backend": "gridfs", "bucket": "pool_one"})
    # Another replica stored a pool's file: its storage went into the shared catalog.
    Storages(default, _fleet(catalog, made), catalog).for_spec(pool).write("f1", [b"x"], content_type="x")
    here = Storages(default, _fleet(catalog, made), catalog)  # this replica never wrote there
    probes = StorageProbes(here, metrics.storage_up, ttl=30, clock=FakeClock().time)
    assert set(probes.checks()) == {f"storage:{default.id}"}, "only the default decides readiness"
    assert probes.run_all() == {default.id: True, pool.id: True}
    assert probes.reports() == {f"storage:{pool.id}": True}
    made[pool.id].healthy = False
    assert probes.run_all() == {default.id: True, pool.id: False}
    assert probes.reports() == {f"storage:{pool.id}": False}
    assert probes.checks()[f"storage:{default.id}"]() is True
    assert _sample(metrics, "storage_backend_up", {"backend": pool.id, "kind": "gridfs", "role": "pool"}) == 0
    assert _sample(metrics, "storage_backend_up", {"backend": default.id, "kind": "filesystem", "role": "default"}) == 1


def test_a_hung_probe_delays_neither_the_pass_nor_ready_and_counts_as_down() -> None:
    metrics = FsmMetrics(ServiceMetrics("file_service_manager"))
    catalog, made, clock = FakeCatalog(), {}, FakeClock()
    default = parse_spec({"backend": "filesystem", "root": "/srv"})
    slow = parse_spec({"backend": "filesystem", "root": "/mnt/hung-nfs"})
    release = threading.Event()

    calls: list[float] = []

    class Hung(FakeBackend):
        def probe(self) -> bool:
            calls.append(time.monotonic())
            release.wait(30)  # bound: the test releases it; a real hung mount may never return
            return True

    made[slow.id] = Hung("filesystem", descriptor=slow.descriptor())
    Storages(default, _fleet(catalog, made), catalog).for_spec(slow)
    probes = StorageProbes(Storages(default, _fleet(catalog, made), catalog), metrics.storage_up, ttl=30,
                           clock=clock.time)
    started = time.monotonic()
    assert probes.run_all(wait=0.3) == {default.id: True}, "the pass answers what finished in time"
    assert time.monotonic() - started < 2
    assert probes.reports() == {}, "not probed to the end yet: nothing to show"
    clock.advance(31)
    assert probes.run_all(wait=0.3) == {default.id: True}  # the hung one is not started a second time
    assert len(calls) == 1
    assert _sample(metrics, "storage_backend_up", {"backend": slow.id, "kind": "filesystem", "role": "pool"}) == 0
    started = time.monotonic()
    assert probes.checks()[f"storage:{default.id}"]() is True
    assert time.monotonic() - started < 1, "/ready never waits on a pool's backend"
    release.set()
    deadline = time.monotonic() + 10
    while probes.reports() != {f"storage:{slow.id}": True} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert probes.reports() == {f"storage:{slow.id}": True}
    assert _sample(metrics, "storage_backend_up", {"backend": slow.id, "kind": "filesystem", "role": "pool"}) == 1


def test_at_most_the_bound_of_backends_are_probed_newest_first() -> None:
    metrics = FsmMetrics(ServiceMetrics("file_service_manager"))
    catalog, made = FakeCatalog(), {}
    default = parse_spec({"backend": "filesystem", "root": "/srv"})
    writer = Storages(default, _fleet(catalog, made), catalog)
    buckets = [parse_spec({"backend": "gridfs", "bucket": f"b{n}"}) for n in range(MAX_IN_USE + 10)]
    for spec in buckets:
        writer.for_spec(spec)
    probes = StorageProbes(Storages(default, _fleet(catalog, made), catalog), metrics.storage_up, ttl=30,
                           clock=FakeClock().time)
    probed = probes.run_all()
    assert len(probed) == MAX_IN_USE and default.id in probed
    assert buckets[-1].id in probed and buckets[0].id not in probed, "the most recently saved first"
