"""Results and group reading through the real routes, on in-memory stores (no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from services.common.contracts import AuditRecorded, GroupChanged, ResultPublished
from services.common.errors import ApiError
from services.pool_aggregator import core, results, ticking

from .conftest import KEY, MEMBER, OTHER_KEY, POOL, Kit, W


def _ready_group(kit: Kit, count: int = 2, prefix: str = "f") -> str:
    start = kit.window_start()
    for i in range(count):
        fid = f"{prefix}{i}"
        kit.files.files[fid] = f"bytes of {fid}".encode()
        kit.deliver(kit.stored(fid, ts=start + i, owner=f"u{i}", size=len(kit.files.files[fid])))
    kit.clock.advance(W)
    ticking.promote_ready(kit.deps)
    return core.group_id(POOL, start)


def _post(kit: Kit, gid: str, body: bytes = b"the result", **headers: str):
    return kit.app.test_client().post(f"/pools/{POOL}/groups/{gid}/result", data=body,
                                      headers={"X-API-Key": KEY, "X-File-Name": "mean.f64", **headers})


def test_post_result_happy_path(kit: Kit) -> None:
    gid = _ready_group(kit)
    body = b"0123456789"  # three chunks of the fake uploader's 4 bytes
    answer = _post(kit, gid, body, **{"X-Sha256": hashlib.sha256(body).hexdigest()})
    assert answer.status_code == 201, answer.get_json()
    posted = answer.get_json()
    rid = posted["result_id"]
    assert posted == {"result_id": rid, "group_id": gid, "size": 10, "sha256": hashlib.sha256(body).hexdigest()}
    assert kit.uploader.data(rid) == body and kit.uploader.uploads[rid]["completed"]
    assert kit.uploader.uploads[rid]["body"]["kind"] == "result"
    group = kit.store.get(gid)
    assert (group["status"], group["result_id"]) == ("done", rid)
    assert kit.store.get_result(rid)["stored"] is False
    assert [m.status for m in kit.broker.of_type(GroupChanged)] == ["ready", "done"]
    assert [a.outcome for a in kit.broker.of_type(AuditRecorded) if a.action == "result_posted"] == ["ok"]
    # Its FileStored (after file_service_manager stored it) announces it once, even redelivered.
    stored = kit.stored(rid, ts=kit.clock.time(), kind="result", group_id=gid, size=10)
    kit.deliver(stored)
    kit.deliver(stored)
    assert [m.result_id for m in kit.broker.of_type(ResultPublished)] == [rid]
    listed = kit.app.test_client().get(f"/pools/{POOL}/results", headers={"Authorization": f"Bearer {MEMBER}"})
    assert [r["result_id"] for r in listed.get_json()["results"]] == [rid]


def test_a_second_result_is_409_and_changes_nothing(kit: Kit) -> None:
    gid = _ready_group(kit)
    first = _post(kit, gid).get_json()["result_id"]
    again = _post(kit, gid, b"another")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"
    assert kit.store.get(gid)["result_id"] == first and len(kit.uploader.uploads) == 1


def test_a_result_for_an_open_group_is_409(kit: Kit) -> None:
    start = kit.window_start()
    kit.deliver(kit.stored("f1", ts=start + 1))
    answer = _post(kit, core.group_id(POOL, start))
    assert answer.status_code == 409 and "open" in answer.get_json()["error"]["message"]
    assert kit.uploader.uploads == {}


def test_a_failed_store_undoes_everything_and_the_processor_may_post_again(kit: Kit) -> None:
    gid = _ready_group(kit)
    kit.store.lease(gid, kit.clock.time(), 30)
    kit.store.fail("insert_result")
    failed = kit.app.test_client().post(f"/pools/{POOL}/groups/{gid}/result", data=b"abcdef",
                                        headers={"X-API-Key": KEY, "X-File-Name": "r"})
    assert failed.status_code == 500
    [upload] = kit.uploader.uploads.values()
    assert upload["released"] and not upload["completed"]
    group = kit.store.get(gid)
    assert group["status"] == "processing" and "result_claim" not in group and kit.store.results == {}
    assert [a.outcome for a in kit.broker.of_type(AuditRecorded) if a.action == "result_posted"] == ["failed"]
    assert _post(kit, gid).status_code == 201


def test_a_refused_complete_is_passed_on_and_undone(kit: Kit) -> None:
    gid = _ready_group(kit)
    kit.uploader.fail_complete = 1
    assert _post(kit, gid).status_code == 500
    assert kit.store.get(gid)["status"] == "ready" and kit.store.results == {}


def test_result_headers_are_checked_before_any_upload(kit: Kit) -> None:
    gid = _ready_group(kit)
    client = kit.app.test_client()
    url = f"/pools/{POOL}/groups/{gid}/result"
    cases = [({"X-API-Key": KEY}, b"x", 400),
             ({"X-API-Key": KEY, "X-File-Name": "r"}, b"x" * 1001, 413),
             ({"X-API-Key": KEY, "X-File-Name": "r", "X-Sha256": "nothex"}, b"x", 400),
             ({"X-API-Key": OTHER_KEY, "X-File-Name": "r"}, b"x", 403),
             ({"Authorization": f"Bearer {MEMBER}", "X-File-Name": "r"}, b"x", 403)]
    for headers, body, status in cases:
        answer = client.post(url, data=body, headers=headers)
        assert answer.status_code == status, (headers, answer.get_json())
        assert set(answer.get_json()["error"]) >= {"code", "message"}
    for length, status, code in (("0", 400, "empty_file"), (None, 411, "length_required"),
                                 ("-3", 400, "bad_request"), ("1e3", 400, "bad_request")):
        with pytest.raises(ApiError) as refused:
            results.check_request(kit.deps, "r", "", length)
        assert (refused.value.status, refused.value.code) == (status, code)
    assert results.check_request(kit.deps, "../a b", "", "5") == results.ResultRequest("a_b", 5, None)
    mismatch = _post(kit, gid, b"abc", **{"X-Sha256": "0" * 64})
    assert mismatch.get_json()["error"]["code"] == "checksum_mismatch"
    assert kit.store.get(gid)["status"] == "ready"  # the mismatch was undone too


def test_files_lease_a_ready_group_and_head_only_looks(kit: Kit) -> None:
    gid = _ready_group(kit)
    client = kit.app.test_client()
    url = f"/pools/{POOL}/groups/{gid}/files"
    assert client.head(url, headers={"X-API-Key": KEY}).status_code == 200
    assert kit.store.get(gid)["status"] == "ready"
    listed = client.get(url, headers={"X-API-Key": KEY}).get_json()
    assert listed["status"] == "processing" and kit.store.get(gid)["lease_expires_at"] == kit.clock.time() + 30
    assert [(f["file_id"], f["download_url"]) for f in listed["files"]] == [
        ("f0", "http://files.example/file/f0"), ("f1", "http://files.example/file/f1")]
    lease_id = kit.store.get(gid)["lease_id"]
    client.get(url, headers={"X-API-Key": KEY})
    assert kit.store.get(gid)["lease_id"] == lease_id  # asking again does not renew the lease
    start = kit.window_start()
    kit.deliver(kit.stored("open1", ts=start + 1))
    still_open = client.get(f"/pools/{POOL}/groups/{core.group_id(POOL, start)}/files", headers={"X-API-Key": KEY})
    assert still_open.status_code == 409


def test_archive_streams_every_file_with_the_processors_key(kit: Kit) -> None:
    gid = _ready_group(kit)
    answer = kit.app.test_client().get(f"/pools/{POOL}/groups/{gid}/archive", headers={"X-API-Key": KEY})
    data = answer.get_data()
    assert int(answer.headers["Content-Length"]) == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        contents = sorted(tar.extractfile(m).read() for m in tar.getmembers())
    assert contents == [b"bytes of f0", b"bytes of f1"]
    assert sorted(kit.files.reads) == [("f0", KEY), ("f1", KEY)]


def test_group_listing_in_window_order_with_status_filter_and_limit(kit: Kit) -> None:
    start = kit.window_start()
    for i in (3, 0, 2, 1):
        kit.deliver(kit.stored(f"f{i}", ts=start + i * W))
    kit.store.mark_ready(core.group_id(POOL, start + W), kit.clock.time())
    client = kit.app.test_client()
    headers = {"Authorization": f"Bearer {MEMBER}"}
    listed = client.get(f"/pools/{POOL}/groups", headers=headers).get_json()["groups"]
    assert [g["window_start"] for g in listed] == [core.epoch_iso(start + i * W) for i in range(4)]
    ready = client.get(f"/pools/{POOL}/groups?status=ready", headers=headers).get_json()["groups"]
    assert [g["group_id"] for g in ready] == [core.group_id(POOL, start + W)]
    assert client.get(f"/pools/{POOL}/groups?status=weird", headers=headers).status_code == 400
    assert [g["window_start"] for g in kit.store.list_groups(POOL, limit=2)] == [start, start + W]
    assert client.get(f"/pools/{POOL}/groups").status_code == 401
    assert client.get(f"/pools/{POOL}/groups", headers={"X-API-Key": OTHER_KEY}).status_code == 403


def test_results_listing_since(kit: Kit) -> None:
    rids = []
    for n in range(3):
        gid = _ready_group(kit, count=1, prefix=f"w{n}-")
        rid = _post(kit, gid).get_json()["result_id"]
        kit.deliver(kit.stored(rid, ts=kit.clock.time(), kind="result", group_id=gid, size=10))
        rids.append(rid)
    client = kit.app.test_client()
    every = client.get(f"/pools/{POOL}/results", headers={"X-API-Key": KEY}).get_json()["results"]
    assert [r["result_id"] for r in every] == rids
    after_first = client.get(f"/pools/{POOL}/results", query_string={"since": every[0]["created"]},
                             headers={"X-API-Key": KEY}).get_json()["results"]
    assert [r["result_id"] for r in after_first] == rids[1:]
    bad = client.get(f"/pools/{POOL}/results", query_string={"since": "yesterday"}, headers={"X-API-Key": KEY})
    assert bad.status_code == 400
