"""A pool's own storage and the retention pass, on the real servers: a pool's files land in its backend
(filesystem here) and not in the default; two replicas running the retention pass at the same moment
delete each expired file once, from its own backend, with one audit record."""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

import pytest

from services.common.runtime import runtime_of
from services.file_service_manager import retention

from .conftest import AUTH
from .test_http import stored
from .test_storage_choice import gridfs_ids


@pytest.fixture
def pools_in_auth():
    """Pools auth answers (AUTH is the suite's one stand-in: restored afterwards)."""
    AUTH.pools.clear()
    yield AUTH.pools
    AUTH.pools.clear()


class Audits:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def record(self, action: str, **fields: Any) -> None:
        with self.lock:
            self.records.append((action, fields))


def test_pool_files_go_to_its_backend_and_two_replicas_expire_them_once(make_pipeline, tmp_path,
                                                                        pools_in_auth) -> None:
    pools_in_auth["p1"] = {"pool_id": "p1", "storage": {"backend": "filesystem", "root": str(tmp_path)},
                           "retention_days": 0}
    p = make_pipeline()
    data = os.urandom(1_300_000)
    pooled = stored(p, data, file_name="pooled.bin", pool_id="p1")
    private = stored(p, b"private bytes", file_name="private.bin")
    on_disk = {f.name for f in tmp_path.rglob("*") if f.is_file()}
    assert on_disk == {pooled} and gridfs_ids(p) == {private}
    r = p.fsm.get(f"/file/{pooled}", headers={"Authorization": "Bearer alice", "Range": "bytes=5-9"})
    assert r.status_code == 206 and r.data == data[5:10]

    # Two replicas (two apps on one database), their passes started together.
    q = make_pipeline()
    replicas = []
    for pipeline in (p, q):
        deps = pipeline.fsm.application.extensions["deps"]
        replicas.append(dataclasses.replace(deps, audit=Audits()))
    start = threading.Barrier(2)
    outcomes: list[dict[str, Any]] = []

    def run(deps) -> None:
        start.wait(timeout=10)
        outcomes.append(retention.sweep(deps, AUTH))
    threads = [threading.Thread(target=run, args=(d,)) for d in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 2 and all(o["failed"] == [] for o in outcomes)
    assert {f.name for f in tmp_path.rglob("*") if f.is_file()} == set()
    assert p.index.record(pooled)["status"] == "deleted"
    audits = [r for d in replicas for r in d.audit.records if r[0] == "deleted"]  # type: ignore[attr-defined]
    assert len(audits) == 1 and audits[0][1]["file_id"] == pooled and audits[0][1]["reason"] == "retention"
    # Files without a pool: RETENTION_DAYS is unset here, so the private file stays.
    assert gridfs_ids(p) == {private} and p.index.record(private)["status"] == "uploaded_successfully"
    assert any(spec.name == "retention" for spec in runtime_of(p.fsm.application).periodic)
