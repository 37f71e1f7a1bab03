"""DELETE /file/<id> over HTTP, from each backend: the bytes leave it, the record says deleted, the audit
trail keeps the deletion, downloads 404, a second DELETE is 200."""

from __future__ import annotations

import json
import os

import pytest

from services.common import messaging
from services.common.secretbox import SecretBox
from tests.integration.file_uploader.helpers import Collector

from .test_http import bearer, stored


def backend_holds(p, kind: str, file_id: str, where) -> bool:
    if kind == "gridfs":
        db = p.index.db
        return db["fs.files"].count_documents({"_id": file_id}) + db["fs.chunks"].count_documents(
            {"files_id": file_id}) > 0
    if kind == "filesystem":
        return any(f.name == file_id for f in where.rglob("*"))
    import boto3

    s3 = boto3.client("s3", endpoint_url=where["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s")
    return s3.list_objects_v2(Bucket=where["bucket"]).get("KeyCount", 0) > 0


@pytest.mark.parametrize("kind", ["gridfs", "filesystem", "s3"])
def test_delete_from_each_backend(make_pipeline, request, tmp_path, kind: str) -> None:
    env: dict[str, str] = {}
    where = None
    if kind == "filesystem":
        where = tmp_path / "root"
        where.mkdir()
        env["DEFAULT_STORAGE"] = json.dumps({"backend": "filesystem", "root": str(where)})
    elif kind == "s3":
        where = request.getfixturevalue("s3_bucket")
        env.update(DEFAULT_STORAGE=json.dumps(where), STORAGE_SECRETS_KEY=SecretBox.generate_key())
    p = make_pipeline(fsm_env=env)
    file_id = stored(p, os.urandom(1_200_000), file_name="doomed.bin")
    other = stored(p, b"stays", file_name="kept.txt")
    assert backend_holds(p, kind, file_id, where)

    assert p.fsm.delete(f"/file/{file_id}", headers=bearer("bob")).status_code == 404  # not the owner
    assert p.fsm.delete(f"/file/{file_id}").status_code == 401
    with Collector(p.amqp_url, messaging.AUDIT_QUEUE, p.worker.handle_audit) as audit:
        r = p.fsm.delete(f"/file/{file_id}", headers=bearer("alice"))
        assert r.status_code == 200 and r.get_json() == {"file_id": file_id, "status": "deleted"}
        audit.wait_for(lambda m: any(a.action == "deleted" for a in m))
    assert p.index.record(file_id)["status"] == "deleted"
    trail = p.fsm.get(f"/audit?file_id={file_id}", headers=bearer("root")).get_json()["events"]
    assert [e["actor"] for e in trail if e["action"] == "deleted"] == ["u1"]
    assert p.fsm.get(f"/file/{file_id}", headers=bearer("alice")).status_code == 404
    assert p.fsm.get(f"/file/{file_id}", headers=bearer("root")).status_code == 404
    r = p.fsm.delete(f"/file/{file_id}", headers=bearer("root"))
    assert r.status_code == 200 and r.get_json()["status"] == "deleted"
    # Only that file left the backend.
    assert p.fsm.get(f"/file/{other}", headers=bearer("alice")).data == b"stays"
    if kind == "gridfs":
        assert not backend_holds(p, kind, file_id, where)
    elif kind == "filesystem":
        assert [f.name for f in where.rglob("*") if f.is_file()] == [other]
    else:
        import boto3

        s3 = boto3.client("s3", endpoint_url=where["endpoint_url"], region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=where["bucket"])["Contents"]] == [other]


def test_the_index_never_turns_a_deleted_record_stored_again(mongo_db) -> None:
    """The store's record write is conditional on the real server (a DELETE may land first)."""
    from services.file_service_manager.store import FileIndex

    index = FileIndex(mongo_db)
    assert index.upsert_stored({"file_id": "race-1", "status": "uploaded_successfully", "owner_id": "7"}) is True
    mongo_db["files"].update_one({"_id": "race-1"}, {"$set": {"status": "deleted"}})
    assert index.upsert_stored({"file_id": "race-1", "status": "uploaded_successfully", "owner_id": "7"}) is False
    assert index.record("race-1")["status"] == "deleted"
