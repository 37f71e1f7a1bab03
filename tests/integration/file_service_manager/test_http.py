"""Downloads (Range, 416, ETag, access), history, the file list and the audit trail."""

from __future__ import annotations

import hashlib
import os

from services.common import messaging
from services.common.contracts import AuditRecorded
from tests.integration.file_uploader.helpers import Collector

from .test_store import upload_and_command


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}"}


def stored(p, data: bytes, **body) -> str:
    command = upload_and_command(p, data, **body)
    p.worker.handle_store(command)
    return command.upload_id


def test_download_range_etag_and_access(make_pipeline) -> None:
    p = make_pipeline()
    data = os.urandom(700_000)
    own = stored(p, data, file_name="résumé 1.pdf")
    pooled = stored(p, b"pool data", file_name="pool.txt", pool_id="p1")
    sha = hashlib.sha256(data).hexdigest()

    r = p.fsm.get(f"/file/{own}", headers=bearer("alice"))
    assert r.status_code == 200 and r.data == data
    assert r.headers["ETag"] == f'"{sha}"' and r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Content-Length"] == str(len(data))
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf" in r.headers["Content-Disposition"]

    r = p.fsm.get(f"/file/{own}", headers={**bearer("alice"), "Range": "bytes=100-199"})
    assert r.status_code == 206 and r.data == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    r = p.fsm.get(f"/file/{own}", headers={**bearer("alice"), "Range": "bytes=-10"})
    assert r.status_code == 206 and r.data == data[-10:]
    r = p.fsm.get(f"/file/{own}", headers={**bearer("alice"), "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    assert r.get_json()["error"]["code"] == "range_not_satisfiable"
    r = p.fsm.get(f"/file/{own}", headers={**bearer("alice"), "If-None-Match": f'"{sha}"'})
    assert r.status_code == 304 and r.data == b""

    assert p.fsm.get(f"/file/{own}").status_code == 401
    r = p.fsm.get(f"/file/{own}", headers=bearer("bob"))  # someone else's file: not even its existence
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    assert p.fsm.get("/file/does-not-exist", headers=bearer("alice")).status_code == 404
    assert p.fsm.get(f"/file/{own}", headers=bearer("root")).status_code == 200
    assert p.fsm.get(f"/file/{own}", headers={"X-API-Key": "key-p1"}).status_code == 404
    # another member of the pool: updates are not shared among members (only results are)
    assert p.fsm.get(f"/file/{pooled}", headers=bearer("carol")).status_code == 404
    assert p.fsm.get(f"/file/{pooled}", headers=bearer("bob")).status_code == 404
    assert p.fsm.get(f"/file/{pooled}", headers={"X-API-Key": "key-p1"}).data == b"pool data"
    assert p.fsm.get(f"/file/{pooled}", headers={"X-API-Key": "key-p2"}).status_code == 404
    assert p.fsm.get(f"/file/{pooled}", headers={"X-API-Key": "nope"}).status_code == 401


def test_download_is_audited(make_pipeline) -> None:
    p = make_pipeline()
    file_id = stored(p, b"abc", file_name="a.txt")
    with Collector(p.amqp_url, messaging.AUDIT_QUEUE, p.worker.handle_audit) as audit:
        p.fsm.get(f"/file/{file_id}", headers=bearer("alice"))
        got = audit.wait_for(lambda m: any(a.action == "downloaded" for a in m))
    event = next(a for a in got if a.action == "downloaded")
    assert event.actor == "u1" and event.file_id == file_id
    p.worker.handle_audit(event)  # redelivery: harmless
    assert p.index.db["audit"].count_documents({"action": "downloaded"}) == 1


def test_history_and_files(make_pipeline) -> None:
    p = make_pipeline()
    first = stored(p, b"one", file_name="1.txt")
    second = stored(p, b"two", file_name="2.txt", pool_id="p1")
    r = p.fsm.get("/client/history/u1", headers=bearer("alice"))
    files = r.get_json()["files"]
    assert [f["file_id"] for f in files] == [second, first]  # newest first
    assert set(files[0]) >= {"file_id", "file_name", "size", "sha256", "status", "owner_id", "owner_name",
                             "pool_id", "timestamp", "group_id", "late", "created"}
    assert files[0]["status"] == "uploaded_successfully" and files[0]["late"] is False
    assert p.fsm.get("/client/history/u1", headers=bearer("bob")).status_code == 403
    assert len(p.fsm.get("/client/history/u1", headers=bearer("root")).get_json()["files"]) == 2
    assert p.fsm.get("/client/history/u1").status_code == 401

    assert p.fsm.get("/files", headers=bearer("bob")).get_json() == {"files": []}
    assert p.fsm.get("/files?owner_id=u1", headers=bearer("bob")).get_json() == {"files": []}
    pool_files = p.fsm.get("/files?pool_id=p1", headers=bearer("root")).get_json()["files"]
    assert [f["file_id"] for f in pool_files] == [second]
    assert len(p.fsm.get("/files?limit=1", headers=bearer("alice")).get_json()["files"]) == 1
    assert p.fsm.get("/files?limit=5000", headers=bearer("alice")).status_code == 400


def test_audit_paging(make_pipeline) -> None:
    p = make_pipeline()
    for n in range(5):
        p.worker.handle_audit(AuditRecorded(audit_id=f"a{n}", time=f"2024-05-01T10:00:0{n}.000Z",
                                            service="t", actor="u1" if n % 2 else "u2", action="stored",
                                            outcome="ok", file_id=f"f{n}"))
    assert p.fsm.get("/audit", headers=bearer("alice")).status_code == 403
    page = p.fsm.get("/audit?limit=2", headers=bearer("root")).get_json()
    assert [e["audit_id"] for e in page["events"]] == ["a0", "a1"]
    page = p.fsm.get(f"/audit?limit=2&cursor={page['next_cursor']}", headers=bearer("root")).get_json()
    assert [e["audit_id"] for e in page["events"]] == ["a2", "a3"]
    page = p.fsm.get(f"/audit?limit=2&cursor={page['next_cursor']}", headers=bearer("root")).get_json()
    assert [e["audit_id"] for e in page["events"]] == ["a4"] and page["next_cursor"] is None
    page = p.fsm.get("/audit?user=u1", headers=bearer("root")).get_json()
    assert [e["audit_id"] for e in page["events"]] == ["a1", "a3"]
    page = p.fsm.get("/audit?since=2024-05-01T10:00:03Z&file_id=f4", headers=bearer("root")).get_json()
    assert [e["audit_id"] for e in page["events"]] == ["a4"]
    assert p.fsm.get("/audit?since=soon", headers=bearer("root")).status_code == 400
    assert p.fsm.get("/audit?cursor=%%%", headers=bearer("root")).status_code == 400


def test_ready_and_metrics(make_pipeline) -> None:
    p = make_pipeline()
    assert p.fsm.get("/ready").get_json()["status"] == "ready"
    assert p.uploader.get("/ready").get_json()["status"] == "ready"
    stored(p, b"xyz", file_name="m.txt")
    text = p.fsm.get("/metrics").data.decode()
    assert "files_stored_total 1.0" in text and "file_bytes_stored_total 3.0" in text
    assert "uploads_completed_total 1.0" in p.uploader.get("/metrics").data.decode()
