"""Per-backend health and metrics: the probe behind /ready and storage_backend_up, and metered calls."""

from __future__ import annotations

import pytest

from services.common.httpkit import ServiceMetrics
from services.common.testing import FakeClock
from services.common.testing.file_service_manager import FakeBackend
from services.file_service_manager.backends import Storages, parse_spec
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
    assert _sample(metrics, "storage_backend_up", {"backend": spec_id, "kind": "filesystem"}) == 1
    inner = storages.default.inner  # type: ignore[attr-defined]
    inner.healthy = False
    assert check() is True  # still within the ttl: no new probe
    clock.advance(31)
    assert check() is False
    assert _sample(metrics, "storage_backend_up", {"backend": spec_id, "kind": "filesystem"}) == 0
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
