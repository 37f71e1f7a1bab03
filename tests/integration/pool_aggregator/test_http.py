"""The processor API over real HTTP, with real MongoDB and RabbitMQ (auth and upstreams stood in for)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading

import requests

from examples.processor.mean import decode, encode
from examples.processor.runner import Processor
from services.common.contracts import GroupChanged, ResultPublished
from services.pool_aggregator import core, ticking

from .conftest import ADMIN_TOKEN, KEY, MEMBER_TOKEN, OTHER_KEY, OUTSIDER_TOKEN, POOL, Rig

W = 60


def _ready_group(rig: Rig, arrays: list[list[float]] | None = None) -> str:
    start = core.window_for(rig.clock(), W).start
    arrays = arrays or [[1.0, 2.0], [3.0, 4.0]]
    for i, values in enumerate(arrays):
        rig.handle(rig.stored(f"f{i}", ts=start + i, owner=f"u{i}", data=encode(values)))
    rig.clock.t = start + W
    ticking.promote_ready(rig.deps)
    return core.group_id(POOL, int(start))


def _key(key: str = KEY) -> dict:
    return {"X-API-Key": key}


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_group_listing_auth(rig: Rig) -> None:
    gid = _ready_group(rig)
    url = f"{rig.url}/pools/{POOL}/groups"
    assert requests.get(url).status_code == 401
    assert requests.get(url, headers=_key("wrong")).status_code == 401
    refused = requests.get(url, headers=_key(OTHER_KEY))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert requests.get(url, headers=_bearer("bogus")).status_code == 401
    assert requests.get(url, headers=_bearer(OUTSIDER_TOKEN)).status_code == 403
    for headers in (_key(), _bearer(MEMBER_TOKEN), _bearer(ADMIN_TOKEN)):
        response = requests.get(url, params={"status": "ready"}, headers=headers)
        assert response.status_code == 200
        assert response.json()["groups"] == [{
            "group_id": gid, "pool_id": POOL, "window_start": core.epoch_iso(rig.clock.t - W),
            "window_end": core.epoch_iso(rig.clock.t), "status": "ready", "file_count": 2, "bytes": 32,
            "late_files": 0, "contributors": 2, "lease_expiries": 0, "result_id": None}]
    assert requests.get(url, params={"status": "open"}, headers=_key()).json()["groups"] == []
    bad = requests.get(url, params={"status": "weird"}, headers=_key())
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


def test_user_token_cannot_use_processor_routes(rig: Rig) -> None:
    gid = _ready_group(rig)
    base = f"{rig.url}/pools/{POOL}/groups/{gid}"
    for method, path in (("GET", "/files"), ("GET", "/archive"), ("POST", "/result")):
        response = requests.request(method, base + path, headers=_bearer(ADMIN_TOKEN), data=b"x")
        assert response.status_code == 403, path
        assert requests.request(method, base + path, data=b"x").status_code == 401
        assert requests.request(method, base + path, headers=_key(OTHER_KEY), data=b"x").status_code == 403
    assert rig.deps.store.get(gid)["status"] == "ready"  # nothing leased it


def test_files_leases_a_ready_group(rig: Rig) -> None:
    gid = _ready_group(rig)
    url = f"{rig.url}/pools/{POOL}/groups/{gid}/files"
    body = requests.get(url, headers=_key()).json()
    assert body["status"] == "processing"
    got = [(f["file_id"], f["owner_id"], f["size"]) for f in body["files"]]
    assert got == [("f0", "u0", 16), ("f1", "u1", 16)]
    assert body["files"][0]["download_url"] == "http://files.example/file/f0"
    assert body["files"][0]["sha256"] == hashlib.sha256(encode([1.0, 2.0])).hexdigest()
    group = rig.deps.store.get(gid)
    assert group["status"] == "processing" and group["lease_expires_at"] == rig.clock() + 300
    lease_id = group["lease_id"]
    assert requests.get(url, headers=_key()).status_code == 200
    assert rig.deps.store.get(gid)["lease_id"] == lease_id  # asking again does not renew the lease
    assert requests.get(f"{rig.url}/pools/{POOL}/groups/{POOL}-0/files", headers=_key()).status_code == 404


def test_open_group_is_not_handed_out(rig: Rig) -> None:
    start = core.window_for(rig.clock(), W).start
    rig.handle(rig.stored("f0", ts=start + 1))
    gid = core.group_id(POOL, int(start))
    response = requests.get(f"{rig.url}/pools/{POOL}/groups/{gid}/files", headers=_key())
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_archive_streams_every_member(rig: Rig) -> None:
    gid = _ready_group(rig, [[1.0] * 1000, [2.0] * 3000])
    response = requests.get(f"{rig.url}/pools/{POOL}/groups/{gid}/archive", headers=_key(), stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-tar"
    raw = response.content
    assert len(raw) == int(response.headers["Content-Length"])
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar}
    names = sorted(got)
    assert names[0].endswith("_f0_f0.f64") and names[1].endswith("_f1_f1.f64")
    assert ":" not in names[0]
    assert got[names[0]] == encode([1.0] * 1000) and got[names[1]] == encode([2.0] * 3000)
    assert rig.deps.store.get(gid)["status"] == "processing"


def test_post_result_full_flow(rig: Rig) -> None:
    gid = _ready_group(rig)
    requests.get(f"{rig.url}/pools/{POOL}/groups/{gid}/files", headers=_key())
    payload = bytes(range(256)) * 10  # 2560 bytes: three 1000-byte chunks upstream
    url = f"{rig.url}/pools/{POOL}/groups/{gid}/result"
    response = requests.post(url, data=payload, headers={
        **_key(), "X-File-Name": "../mean result.f64", "X-Sha256": hashlib.sha256(payload).hexdigest()})
    assert response.status_code == 201, response.text
    result_id = response.json()["result_id"]
    upload = rig.upstream.uploads[result_id]
    assert upload["body"]["kind"] == "result" and upload["body"]["group_id"] == gid
    assert upload["body"]["owner_id"] == f"processor:{POOL}" and upload["body"]["pool_id"] == POOL
    assert upload["body"]["file_name"] == "mean_result.f64"
    assert sorted(upload["chunks"]) == [0, 1, 2] and rig.upstream.files[result_id] == payload
    group = rig.deps.store.get(gid)
    assert (group["status"], group["result_id"]) == ("done", result_id)

    assert response.json()["seq"] == 1
    assert rig.store.get_result(result_id)["seq"] == 1

    again = requests.post(url, data=payload, headers={**_key(), "X-File-Name": "x"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    results_url = f"{rig.url}/pools/{POOL}/results"
    published = rig.events.of(ResultPublished)
    assert len(published) == 1 and (published[0].result_id, published[0].seq) == (result_id, 1)
    rig.store_result(result_id)  # a redelivered FileStored announces nothing twice
    rig.events.settle()
    assert len(rig.events.of(ResultPublished)) == 1
    page = requests.get(results_url, headers=_bearer(MEMBER_TOKEN)).json()
    listed = page["results"]
    assert listed == [{
        "result_id": result_id, "pool_id": POOL, "group_id": gid, "seq": 1,
        "window_start": core.epoch_iso(rig.clock.t - W),
        "window_end": core.epoch_iso(rig.clock.t), "file_name": "mean_result.f64", "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(), "created": listed[0]["created"],
        "download_url": f"http://files.example/file/{result_id}"}]
    assert (page["next_seq"], page["more"]) == (1, False)
    since = listed[0]["created"]
    assert requests.get(results_url, params={"since": since}, headers=_key()).json()["results"] == []
    assert requests.get(results_url, params={"after_seq": 1}, headers=_key()).json() == {
        "results": [], "next_seq": 1, "more": False}
    assert requests.get(results_url, headers=_bearer(OUTSIDER_TOKEN)).status_code == 403
    assert requests.get(results_url, params={"since": "yesterday"}, headers=_key()).status_code == 400


def test_storage_down_answers_503_the_group_stays_processing_and_a_second_post_succeeds(rig: Rig) -> None:
    gid = _ready_group(rig)
    url = f"{rig.url}/pools/{POOL}/groups/{gid}/result"
    rig.upstream.on_complete = None  # no FileStored comes within RESULT_STORE_WAIT_SECONDS
    failed = requests.post(url, data=b"first", headers={**_key(), "X-File-Name": "r"})
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "unavailable"
    group = rig.deps.store.get(gid)
    assert group["status"] == "processing" and group.get("result_claim") is None
    assert rig.store.results.count_documents({}) == 0
    [lost] = rig.upstream.uploads
    rig.store_result(lost)  # its FileStored after all, late: dropped (no result doc)
    rig.upstream.on_complete = rig.store_result
    second = requests.post(url, data=b"second", headers={**_key(), "X-File-Name": "r"})
    assert second.status_code == 201 and second.json()["seq"] == 1
    published = rig.events.of(ResultPublished)
    rig.events.settle()
    assert [m.result_id for m in rig.events.of(ResultPublished)] == [second.json()["result_id"]] == \
        [m.result_id for m in published]


def test_results_page_by_after_seq(rig: Rig) -> None:
    posted = []
    for n in range(5):
        start = core.window_for(rig.clock(), W).start
        rig.handle(rig.stored(f"p{n}", ts=start, data=encode([float(n)])))
        rig.clock.t = start + W
        ticking.promote_ready(rig.deps)
        gid = core.group_id(POOL, int(start))
        answer = requests.post(f"{rig.url}/pools/{POOL}/groups/{gid}/result", data=f"r{n}".encode(),
                               headers={**_key(), "X-File-Name": "r"})
        posted.append((answer.json()["seq"], answer.json()["result_id"]))
    assert [seq for seq, _ in posted] == [1, 2, 3, 4, 5]
    got, after = [], 0
    while True:
        page = requests.get(f"{rig.url}/pools/{POOL}/results", params={"after_seq": after, "limit": 2},
                            headers=_key()).json()
        got += [(r["seq"], r["result_id"]) for r in page["results"]]
        after = page["next_seq"]
        if not page["more"]:
            break
    assert got == posted


def test_result_input_checks(rig: Rig) -> None:
    gid = _ready_group(rig)
    url = f"{rig.url}/pools/{POOL}/groups/{gid}/result"
    assert requests.post(url, data=b"abc", headers=_key()).json()["error"]["code"] == "bad_request"
    chunked = requests.post(url, data=iter([b"abc"]), headers={**_key(), "X-File-Name": "r"})
    assert chunked.status_code == 411
    too_big = requests.post(url, data=b"x" * 100_001, headers={**_key(), "X-File-Name": "r"})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"
    empty = requests.post(url, data=b"", headers={**_key(), "X-File-Name": "r"})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_file"
    bad_sha = requests.post(url, data=b"abc", headers={**_key(), "X-File-Name": "r", "X-Sha256": "zz"})
    assert bad_sha.status_code == 400
    wrong_sha = requests.post(url, data=b"abc", headers={**_key(), "X-File-Name": "r", "X-Sha256": "0" * 64})
    assert wrong_sha.status_code == 400
    # The failed post was undone: the group stays under the post's lease, the upload released, no result doc.
    group = rig.deps.store.get(gid)
    assert group["status"] == "processing" and group.get("result_claim") is None
    assert all(u["released"] for u in rig.upstream.uploads.values())
    assert rig.store.results.count_documents({}) == 0
    ok = requests.post(url, data=b"abc", headers={**_key(), "X-File-Name": "r"})
    assert ok.status_code == 201


def test_failed_upload_reverts_the_claim(rig: Rig) -> None:
    gid = _ready_group(rig)
    requests.get(f"{rig.url}/pools/{POOL}/groups/{gid}/files", headers=_key())
    url = f"{rig.url}/pools/{POOL}/groups/{gid}/result"
    rig.upstream.fail_complete = True
    busy = requests.post(url, data=b"abc", headers={**_key(), "X-File-Name": "r"})
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "overloaded"
    assert busy.headers["Retry-After"] == "1"
    group = rig.deps.store.get(gid)
    assert group["status"] == "processing" and group.get("result_claim") is None
    rig.upstream.fail_complete = False
    assert requests.post(url, data=b"abc", headers={**_key(), "X-File-Name": "r"}).status_code == 201


def test_concurrent_result_posts_one_wins(rig: Rig) -> None:
    gid = _ready_group(rig)
    url = f"{rig.url}/pools/{POOL}/groups/{gid}/result"
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        barrier.wait()
        codes.append(requests.post(url, data=b"r" * 5000, headers={**_key(), "X-File-Name": "r"}).status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] + [409] * 5
    assert rig.store.results.count_documents({}) == 1


def test_reference_processor_posts_the_mean(rig: Rig) -> None:
    gid = _ready_group(rig, [[1.0, 2.0, 3.0], [3.0, 6.0, 9.0], [2.0, 1.0, 0.0, 99.0]])
    processor = Processor(rig.url, POOL, KEY)
    assert processor.poll_once() == [gid]
    result_id = processor.results[gid]
    assert decode(rig.upstream.files[result_id]) == [2.0, 3.0, 4.0]
    upload = rig.upstream.uploads[result_id]
    assert upload["body"]["file_name"] == f"mean_{gid}.f64"
    assert upload["body"]["sha256"] == hashlib.sha256(rig.upstream.files[result_id]).hexdigest()
    assert processor.poll_once() == []  # nothing ready any more


def test_lease_close_retry_and_quorum_on_mongodb(rig: Rig) -> None:
    rig.auth.set_pool(min_contributors=3, quorum_wait_seconds=30, on_short="fail", processing_timeout_seconds=60)
    start = core.window_for(rig.clock(), W).start
    rig.handle(rig.stored("q0", ts=start, data=encode([1.0])))
    gid = core.group_id(POOL, int(start))
    base = f"{rig.url}/pools/{POOL}/groups/{gid}"
    rig.clock.t = start + W + 29
    ticking.promote_ready(rig.deps)
    assert rig.deps.store.get(gid)["status"] == "open"  # short, still in its quorum wait
    rig.clock.t = start + W + 30
    ticking.promote_ready(rig.deps)
    group = rig.deps.store.get(gid)
    assert (group["status"], group["reason"]) == ("failed", "quorum_not_met")
    changed = rig.events.of(GroupChanged)
    assert [(m.status, m.reason) for m in changed if m.group_id == gid] == [("failed", "quorum_not_met")]
    assert requests.post(f"{base}/retry", headers=_bearer(MEMBER_TOKEN)).status_code == 403
    retried = requests.post(f"{base}/retry", headers=_bearer(ADMIN_TOKEN))
    assert retried.status_code == 200 and retried.json()["status"] == "ready" and "reason" not in retried.json()
    assert requests.post(f"{base}/lease", headers=_key()).status_code == 409  # ready, not processing
    requests.get(f"{base}/files", headers=_key())
    rig.clock.advance(50)
    renewed = requests.post(f"{base}/lease", headers=_key())
    assert renewed.status_code == 200 and renewed.json()["lease_expires"] == core.epoch_iso(rig.clock() + 60)
    rig.clock.advance(30)
    assert ticking.expire_leases(rig.deps) == 0
    # close: an open group of a later window turns ready now.
    rig.handle(rig.stored("q1", ts=rig.clock(), data=encode([2.0])))
    later = core.group_id(POOL, core.window_for(rig.clock(), W).start)
    closed = requests.post(f"{rig.url}/pools/{POOL}/groups/{later}/close", headers=_key())
    assert closed.status_code == 200 and closed.json()["status"] == "ready"
    assert requests.post(f"{rig.url}/pools/{POOL}/groups/{later}/close", headers=_key()).status_code == 409
