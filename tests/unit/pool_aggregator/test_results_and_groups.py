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
    assert posted == {"result_id": rid, "seq": 1, "group_id": gid, "size": 10,
                      "sha256": hashlib.sha256(body).hexdigest()}
    assert kit.uploader.data(rid) == body and kit.uploader.uploads[rid]["completed"]
    assert kit.uploader.uploads[rid]["body"]["kind"] == "result"
    group = kit.store.get(gid)
    assert (group["status"], group["result_id"]) == ("done", rid)
    assert kit.store.get_result(rid)["stored"] is True
    # Leased by the post itself (no listing first), then done once its result was numbered.
    assert [m.status for m in kit.broker.of_type(GroupChanged)] == ["ready", "processing", "done"]
    # The result goes out before its group's `done` (members wait for it, not for the status).
    order = [type(p.message).__name__ for p in kit.broker.published
             if isinstance(p.message, ResultPublished | GroupChanged)]
    assert order[-2:] == ["ResultPublished", "GroupChanged"], order
    assert [a.outcome for a in kit.broker.of_type(AuditRecorded) if a.action == "result_posted"] == ["ok"]
    # Its FileStored redelivered announces nothing twice.
    kit.store_result(rid)
    assert [(m.result_id, m.seq) for m in kit.broker.of_type(ResultPublished)] == [(rid, 1)]
    listed = kit.app.test_client().get(f"/pools/{POOL}/results", headers={"Authorization": f"Bearer {MEMBER}"})
    assert [(r["result_id"], r["seq"]) for r in listed.get_json()["results"]] == [(rid, 1)]


def test_a_reader_never_sees_done_without_its_result(kit: Kit) -> None:
    gid = _ready_group(kit)
    seen: list[tuple[str, object]] = []
    real_finish = kit.store.finish_group

    def finish(g: str, rid: str, now: float):  # type: ignore[no-untyped-def]
        seen.append((kit.store.get(g)["status"], kit.store.get_result(rid).get("seq")))
        return real_finish(g, rid, now)

    kit.store.finish_group = finish  # type: ignore[method-assign]
    assert _post(kit, gid).status_code == 201
    assert seen == [("processing", 1)]


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


def test_a_failed_record_undoes_everything_answers_503_and_the_processor_may_post_again(kit: Kit) -> None:
    gid = _ready_group(kit)
    kit.store.lease(gid, kit.clock.time(), 30)
    kit.store.fail("insert_result")
    failed = kit.app.test_client().post(f"/pools/{POOL}/groups/{gid}/result", data=b"abcdef",
                                        headers={"X-API-Key": KEY, "X-File-Name": "r"})
    assert failed.status_code == 503 and failed.get_json()["error"]["code"] == "unavailable"
    [upload] = kit.uploader.uploads.values()
    assert upload["released"] and not upload["completed"]
    group = kit.store.get(gid)
    assert group["status"] == "processing" and "result_claim" not in group and kit.store.results == {}
    assert [a.outcome for a in kit.broker.of_type(AuditRecorded) if a.action == "result_posted"] == ["failed"]
    assert _post(kit, gid).get_json()["seq"] == 1


def test_a_refused_complete_answers_503_and_keeps_the_group_processing(kit: Kit) -> None:
    gid = _ready_group(kit)
    kit.uploader.fail_complete = 1
    assert _post(kit, gid).status_code == 503
    assert kit.store.get(gid)["status"] == "processing" and kit.store.results == {}


def test_storage_that_never_stores_answers_503_then_a_second_post_is_delivered_once(kit: Kit) -> None:
    gid = _ready_group(kit)
    kit.uploader.on_complete = None  # the storage is down: no FileStored comes
    failed = _post(kit, gid, b"first try")
    assert failed.status_code == 503
    group = kit.store.get(gid)
    assert group["status"] == "processing" and not group.get("result_id") and kit.store.results == {}
    [lost] = kit.uploader.uploads
    # The storage comes back: the first upload's late FileStored finds no result doc and is dropped.
    kit.store_result(lost)
    kit.uploader.on_complete = kit.store_result
    second = _post(kit, gid, b"second try")
    assert second.status_code == 201 and second.get_json()["seq"] == 1
    assert [m.result_id for m in kit.broker.of_type(ResultPublished)] == [second.get_json()["result_id"]]


def test_a_crash_mid_post_leaves_nothing_visible_and_the_lease_brings_the_group_back(kit: Kit) -> None:
    gid = _ready_group(kit)
    kit.store.lease(gid, kit.clock.time(), 30)
    # The process died after recording the result, before its FileStored came.
    held = results.claim(kit.deps, POOL, gid)
    request = results.ResultRequest("r", 3, None)
    results.record(kit.deps, held, request, "half", "0" * 64)
    assert kit.store.get(gid)["status"] == "processing"
    listed = kit.app.test_client().get(f"/pools/{POOL}/results", headers={"X-API-Key": KEY}).get_json()
    assert listed == {"results": [], "next_seq": 0, "more": False}
    kit.clock.advance(31)
    ticking.expire_leases(kit.deps)
    assert kit.store.get(gid)["status"] == "ready"
    # The half-done result's FileStored after all: its claim is gone, it is dropped, no seq burnt.
    kit.deliver(kit.stored("half", ts=kit.clock.time(), kind="result", group_id=gid, size=3))
    assert kit.store.get_result("half") is None and kit.store.get(gid)["status"] == "ready"
    assert _post(kit, gid).get_json()["seq"] == 1


def test_seq_is_gapless_per_pool_and_a_duplicate_delivery_keeps_its_seq(kit: Kit) -> None:
    seqs = []
    for n in range(3):
        gid = _ready_group(kit, count=1, prefix=f"w{n}-")
        rid = _post(kit, gid).get_json()["result_id"]
        kit.store_result(rid)  # a redelivery
        seqs.append(kit.store.get_result(rid)["seq"])
    assert seqs == [1, 2, 3]
    assert [m.seq for m in kit.broker.of_type(ResultPublished)] == [1, 2, 3]


def test_backfill_numbers_old_results_in_created_order(kit: Kit) -> None:
    for n, created in enumerate((30.0, 10.0, 20.0)):
        kit.store.results[f"old{n}"] = {"_id": f"old{n}", "result_id": f"old{n}", "pool_id": POOL,
                                        "created_ts": created, "stored": True, "published": True}
    kit.store.results["unstored"] = {"_id": "unstored", "result_id": "unstored", "pool_id": POOL,
                                     "created_ts": 5.0, "stored": False}
    assert results.backfill_seq(kit.deps) == 3
    assert [kit.store.results[f"old{n}"]["seq"] for n in range(3)] == [3, 1, 2]
    assert kit.store.results["unstored"].get("seq") is None
    assert results.backfill_seq(kit.deps) == 0


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
    group = kit.store.get(gid)  # the mismatch was undone too (the group stays under the post's lease)
    assert group["status"] == "processing" and "result_claim" not in group


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


def test_group_listing_in_window_order_with_status_filter_and_paging(kit: Kit) -> None:
    start = kit.window_start()
    for i in (3, 0, 2, 1):
        kit.deliver(kit.stored(f"f{i}", ts=start + i * W))
    kit.store.mark_ready(core.group_id(POOL, start + W), kit.clock.time())
    client = kit.app.test_client()
    headers = {"Authorization": f"Bearer {MEMBER}"}
    listed = client.get(f"/pools/{POOL}/groups", headers=headers).get_json()
    assert [g["window_start"] for g in listed["groups"]] == [core.epoch_iso(start + i * W) for i in range(4)]
    assert listed["next_cursor"] is None
    ready = client.get(f"/pools/{POOL}/groups?status=ready", headers=headers).get_json()["groups"]
    assert [g["group_id"] for g in ready] == [core.group_id(POOL, start + W)]
    pages, cursor = [], None
    while True:
        page = client.get(f"/pools/{POOL}/groups", query_string={"limit": 3, **({"cursor": cursor} if cursor else {})},
                          headers=headers).get_json()
        pages.append([g["group_id"] for g in page["groups"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [[core.group_id(POOL, start + i * W) for i in range(3)], [core.group_id(POOL, start + 3 * W)]]
    for bad in ({"status": "weird"}, {"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"cursor": "abc"}):
        answer = client.get(f"/pools/{POOL}/groups", query_string=bad, headers=headers)
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "bad_request", bad
    assert client.get(f"/pools/{POOL}/groups").status_code == 401
    assert client.get(f"/pools/{POOL}/groups", headers={"X-API-Key": OTHER_KEY}).status_code == 403


def test_results_listing_since(kit: Kit) -> None:
    rids = []
    for n in range(3):
        gid = _ready_group(kit, count=1, prefix=f"w{n}-")
        rids.append(_post(kit, gid).get_json()["result_id"])
    client = kit.app.test_client()
    every = client.get(f"/pools/{POOL}/results", headers={"X-API-Key": KEY}).get_json()["results"]
    assert [r["result_id"] for r in every] == rids
    after_first = client.get(f"/pools/{POOL}/results", query_string={"since": every[0]["created"]},
                             headers={"X-API-Key": KEY}).get_json()["results"]
    assert [r["result_id"] for r in after_first] == rids[1:]
    bad = client.get(f"/pools/{POOL}/results", query_string={"since": "yesterday"}, headers={"X-API-Key": KEY})
    assert bad.status_code == 400


def test_results_paged_by_after_seq_with_no_cap(kit: Kit) -> None:
    rids = [_post(kit, _ready_group(kit, count=1, prefix=f"w{n}-")).get_json()["result_id"] for n in range(5)]
    client = kit.app.test_client()
    got, after, pages = [], 0, 0
    while True:
        page = client.get(f"/pools/{POOL}/results", query_string={"after_seq": after, "limit": 2},
                          headers={"X-API-Key": KEY}).get_json()
        got += [(r["seq"], r["result_id"]) for r in page["results"]]
        pages += 1
        assert page["next_seq"] == (got[-1][0] if got else 0)
        after = page["next_seq"]
        if not page["more"]:
            break
    assert got == list(zip(range(1, 6), rids, strict=True)) and pages == 3
    empty = client.get(f"/pools/{POOL}/results", query_string={"after_seq": 5}, headers={"X-API-Key": KEY})
    assert empty.get_json() == {"results": [], "next_seq": 5, "more": False}
    for bad in ({"after_seq": -1}, {"after_seq": "x"}, {"limit": 0}, {"limit": 1001}):
        answer = client.get(f"/pools/{POOL}/results", query_string=bad, headers={"X-API-Key": KEY})
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "bad_request", bad
