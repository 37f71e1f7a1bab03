"""/ready reports each configured backend's probe; /metrics has its bytes, errors, latency and up gauge."""

from __future__ import annotations

import json

from .test_http import bearer, stored


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
    import time

    time.sleep(1.1)
    ready = p.fsm.get("/ready")
    assert ready.status_code == 503 and ready.get_json()["checks"][name] is False
    assert p.fsm.get(f"/file/{file_id}", headers=bearer("alice")).status_code == 404
    text = p.fsm.get("/metrics").get_data(as_text=True)
    assert f'storage_backend_up{{backend="{backend_id}",kind="filesystem"}} 0.0' in text
    assert f'storage_bytes_written_total{{backend="{backend_id}"}} 5000.0' in text
    assert f'storage_errors_total{{backend="{backend_id}",op="probe"}} 1.0' in text
    assert f'storage_seconds_count{{backend="{backend_id}",op="write"}}' in text

    (tmp_path / "gone").rename(root)
    time.sleep(1.1)
    assert p.fsm.get("/ready").status_code == 200
