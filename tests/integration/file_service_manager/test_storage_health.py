"""/ready reports each configured backend's probe; /metrics has its bytes, errors, latency and up gauge."""

from __future__ import annotations

import json
import time

import pytest

from services.common.runtime import runtime_of
from services.file_service_manager import backends

from .conftest import AUTH
from .test_http import bearer, stored


@pytest.fixture
def pools_in_auth():
    """Pools auth answers (AUTH is the suite's one stand-in: restored afterwards)."""
    AUTH.pools.clear()
    yield AUTH.pools
    AUTH.pools.clear()


def test_ready_and_metrics_per_backend(make_pipeline, tmp_path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    spec = {"backend": "filesystem", "root": str(root)}
    # STORAGE_PROBE_SECONDS=1: the probe result is kept one second
    p = make_pipeline(fsm_env={"DEFAULT_STORAGE": json.dumps(spec), "STORAGE_PROBE_SECONDS": "1"})
    file_id = stored(p, b"x" * 5000, file_name="m.bin")
    ready = p.fsm.get("/ready")
    checks = ready.get_json()["checks"]
    [name] = [k for k in checks if k.startswith("storage:")]
    assert ready.status_code == 200 and checks[name] is True and name.startswith("storage:filesystem-")
    backend_id = name.split(":", 1)[1]
    assert list(root.rglob("probe-*")) == []  # the probe cleans up after itself

    root.rename(tmp_path / "gone")  # the filesystem went away
    time.sleep(1.1)
    ready = p.fsm.get("/ready")
    assert ready.status_code == 503 and ready.get_json()["checks"][name] is False
    assert p.fsm.get(f"/file/{file_id}", headers=bearer("alice")).status_code == 404
    text = p.fsm.get("/metrics").get_data(as_text=True)
    assert f'storage_backend_up{{backend="{backend_id}",kind="filesystem",role="default"}} 0.0' in text
    assert f'storage_bytes_written_total{{backend="{backend_id}"}} 5000.0' in text
    assert f'storage_errors_total{{backend="{backend_id}",op="probe"}} 1.0' in text
    assert f'storage_seconds_count{{backend="{backend_id}",op="write"}}' in text

    (tmp_path / "gone").rename(root)
    time.sleep(1.1)
    assert p.fsm.get("/ready").status_code == 200


def _probe_pass(p) -> None:
    """Run the replica's periodic storage probe pass once (its Runtime would, every STORAGE_PROBE_SECONDS)."""
    [work] = [job.work for job in runtime_of(p.fsm.application).periodic if job.name == "storage-probe"]
    work()


def test_a_pool_backend_is_probed_by_every_replica_and_a_broken_one_is_reported_not_fatal(
        make_pipeline, tmp_path, pools_in_auth) -> None:
    default_root, pool_root = tmp_path / "default", tmp_path / "pool"
    default_root.mkdir()
    pool_root.mkdir()
    pools_in_auth["p1"] = {"pool_id": "p1", "storage": {"backend": "filesystem", "root": str(pool_root)}}
    env = {"DEFAULT_STORAGE": json.dumps({"backend": "filesystem", "root": str(default_root)}),
           "STORAGE_PROBE_SECONDS": "1"}
    writer = make_pipeline(fsm_env=env)
    stored(writer, b"pool bytes", file_name="p.bin", pool_id="p1")  # the pool's storage is now in use
    assert [f.name for f in pool_root.rglob("*") if f.is_file()]
    other = make_pipeline(fsm_env=env)  # a replica that never wrote to the pool's storage
    pool_id = backends.parse_spec(pools_in_auth["p1"]["storage"]).id
    default_id = backends.parse_spec(json.loads(env["DEFAULT_STORAGE"])).id

    _probe_pass(other)
    ready = other.fsm.get("/ready")
    body = ready.get_json()
    assert ready.status_code == 200 and body["checks"][f"storage:{pool_id}"] is True, body
    assert body["checks"][f"storage:{default_id}"] is True and body["degraded"] == []

    pool_root.rename(tmp_path / "gone")  # the pool's filesystem went away
    time.sleep(1.1)
    _probe_pass(other)
    ready = other.fsm.get("/ready")
    body = ready.get_json()
    # Reported, in the body and the gauge; the replica stays ready: the default and other pools still work.
    assert ready.status_code == 200 and body["status"] == "ready", body
    assert body["checks"][f"storage:{pool_id}"] is False and body["degraded"] == [f"storage:{pool_id}"]
    assert body["checks"][f"storage:{default_id}"] is True
    text = other.fsm.get("/metrics").get_data(as_text=True)
    assert f'storage_backend_up{{backend="{pool_id}",kind="filesystem",role="pool"}} 0.0' in text
    assert f'storage_backend_up{{backend="{default_id}",kind="filesystem",role="default"}} 1.0' in text

    (tmp_path / "gone").rename(pool_root)
    time.sleep(1.1)
    _probe_pass(other)
    body = other.fsm.get("/ready").get_json()
    assert body["checks"][f"storage:{pool_id}"] is True and body["degraded"] == []
    assert list(pool_root.rglob("probe-*")) == []  # each probe cleaned up after itself
