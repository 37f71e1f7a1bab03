"""The upload routes against real Redis and a RabbitMQ vhost of the test's own."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta

from services.common import messaging, timeutil
from services.common.authclient import Identity
from services.common.contracts import FileStatusChanged, StoreUpload
from services.file_uploader import sweep

from .helpers import INTERNAL_KEY, Collector, StaticAuth, complete, put_chunk, start, upload_all

CHUNK = 64 * 1024
ENV = {"CHUNK_SIZE": str(CHUNK), "MAX_FILE_SIZE": str(1024 * 1024)}


def keys(rclient, redis_prefix: str, file_id: str) -> set[str]:
    return {k.decode() for k in rclient.scan_iter(f"{redis_prefix}:upload:{file_id}*")}


def test_internal_routes_need_the_key(make_uploader) -> None:
    _, client, _ = make_uploader(**ENV)
    response = client.post("/uploads", json={"file_name": "a", "size": 1})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_empty_file_and_too_large(make_uploader) -> None:
    _, client, _ = make_uploader(**ENV)
    r = start(client, file_name="a.csv", size=0)
    assert (r.status_code, r.get_json()["error"]["code"]) == (400, "empty_file")
    r = start(client, file_name="a.csv", size=1024 * 1024 + 1)
    assert (r.status_code, r.get_json()["error"]["code"]) == (413, "too_large")
    r = start(client, file_name="tool.EXE", size=10)
    assert (r.status_code, r.get_json()["error"]["code"]) == (415, "forbidden_type")


def test_forbidden_type_by_content_drops_the_upload(make_uploader, rclient, redis_prefix) -> None:
    _, client, _ = make_uploader(**ENV)
    file_id = start(client, file_name="innocent.dat", size=100).get_json()["file_id"]
    r = put_chunk(client, file_id, 0, b"\x7fELF" + b"\0" * 96)
    assert (r.status_code, r.get_json()["error"]["code"]) == (415, "forbidden_type")
    assert keys(rclient, redis_prefix, file_id) <= {f"{redis_prefix}:upload:{file_id}:status"}
    r = put_chunk(client, file_id, 0, b"x" * 100)
    assert r.status_code == 404


def test_chunk_rules(make_uploader) -> None:
    _, client, _ = make_uploader(**ENV)
    size = CHUNK * 2 + 10
    file_id = start(client, file_name="a.bin", size=size).get_json()["file_id"]
    r = put_chunk(client, file_id, 0, b"a" * (CHUNK + 1))
    assert (r.status_code, r.get_json()["error"]["code"]) == (413, "too_large")
    r = put_chunk(client, file_id, 3, b"a" * 10)
    assert (r.status_code, r.get_json()["error"]["code"]) == (400, "bad_request")
    r = put_chunk(client, file_id, 2, b"a" * 11)  # the last chunk must be exactly the remainder
    assert r.status_code == 413
    r = put_chunk(client, file_id, 2, b"a" * 9)
    assert (r.status_code, r.get_json()["error"]["code"]) == (400, "bad_request")
    r = put_chunk(client, file_id, 0, b"a" * CHUNK, **{"X-Chunk-Sha256": "0" * 64})
    assert r.status_code == 400 and "sha256" in r.get_json()["error"]["message"]
    good = hashlib.sha256(b"a" * CHUNK).hexdigest()
    r = put_chunk(client, file_id, 0, b"a" * CHUNK, **{"X-Chunk-Sha256": good})
    assert r.get_json() == {"file_id": file_id, "index": 0, "received": 1}
    assert put_chunk(client, file_id, 0, b"a" * CHUNK).status_code == 200  # same bytes: harmless
    r = put_chunk(client, file_id, 0, b"b" * CHUNK)
    assert (r.status_code, r.get_json()["error"]["code"]) == (409, "conflict")
    r = put_chunk(client, file_id, 1, b"a" * CHUNK, owner="someone-else")
    assert r.status_code == 404


def test_missing_chunk_at_complete_then_resume(make_uploader) -> None:
    _, client, _ = make_uploader(**ENV)
    data = os.urandom(CHUNK * 3)
    file_id = start(client, file_name="a.bin", size=len(data)).get_json()["file_id"]
    put_chunk(client, file_id, 0, data[:CHUNK])
    put_chunk(client, file_id, 2, data[2 * CHUNK:])
    r = complete(client, file_id)
    assert r.status_code == 409
    assert r.get_json()["error"]["missing"] == [1]
    # Another writer cannot take over while the lock is held; after release it can.
    r = start(client, file_name="a.bin", size=len(data), file_id=file_id, writer="w2")
    assert r.status_code == 409
    assert put_chunk(client, file_id, 1, data[CHUNK:2 * CHUNK], writer="w2").status_code == 409
    client.post(f"/uploads/{file_id}/release", json={"writer": "w1"},
                headers={"X-Internal-Key": INTERNAL_KEY})
    r = start(client, file_name="a.bin", size=len(data), file_id=file_id, writer="w2")
    assert r.status_code == 200
    assert r.get_json() == {"file_id": file_id, "chunk_size": CHUNK, "pool_id": None, "missing": [1]}
    assert put_chunk(client, file_id, 1, data[CHUNK:2 * CHUNK], writer="w2").status_code == 200
    assert complete(client, file_id, writer="w2").get_json() == {"file_id": file_id, "status": "cached"}


def test_sha256_mismatch_drops_the_upload(make_uploader, rclient, redis_prefix) -> None:
    _, client, _ = make_uploader(**ENV)
    data = b"z" * 1000
    file_id = start(client, file_name="a.bin", size=len(data), sha256="1" * 64).get_json()["file_id"]
    assert put_chunk(client, file_id, 0, data).status_code == 200
    r = complete(client, file_id)
    assert r.status_code == 400 and "sha256 mismatch" in r.get_json()["error"]["message"]
    assert keys(rclient, redis_prefix, file_id) == {f"{redis_prefix}:upload:{file_id}:status"}


def test_complete_publishes_once(make_uploader, amqp_url) -> None:
    _, client, _ = make_uploader(**ENV)
    data = os.urandom(CHUNK + 5)
    with Collector(amqp_url, messaging.STORE_QUEUE) as stores, \
            Collector(amqp_url, messaging.GATEWAY_QUEUE) as notices:
        file_id = upload_all(client, data, CHUNK, file_name="b.bin", sha256=hashlib.sha256(data).hexdigest())
        assert complete(client, file_id).get_json() == {"file_id": file_id, "status": "cached"}
        got = stores.wait_for(lambda m: len(m) >= 1)
        notices.wait_for(lambda m: len(m) >= 1)
        import time

        time.sleep(0.3)
        assert len(stores.messages) == 1 and len(notices.messages) == 1
    command = got[0]
    assert isinstance(command, StoreUpload)
    assert command.sha256 == hashlib.sha256(data).hexdigest() and command.chunk_count == 2
    assert command.items[0].file_id == file_id and command.attempt == 1
    assert isinstance(notices.messages[0], FileStatusChanged) and notices.messages[0].status == "cached"


def test_out_of_order_chunks_hash_from_redis(make_uploader, amqp_url) -> None:
    _, client, service = make_uploader(**ENV)
    data = os.urandom(CHUNK * 3 + 1)
    file_id = start(client, file_name="c.bin", size=len(data)).get_json()["file_id"]
    for i in (3, 1, 0, 2):
        assert put_chunk(client, file_id, i, data[i * CHUNK:(i + 1) * CHUNK]).status_code == 200
    with Collector(amqp_url, messaging.STORE_QUEUE) as stores:
        assert complete(client, file_id).status_code == 200
        command = stores.wait_for(lambda m: len(m) >= 1)[0]
    assert command.sha256 == hashlib.sha256(data).hexdigest()


def test_per_user_limit_and_backpressure(make_uploader) -> None:
    _, client, _ = make_uploader(MAX_UPLOADS_PER_USER="2", **ENV)
    assert start(client, file_name="a", size=5).status_code == 201
    assert start(client, file_name="a", size=5).status_code == 201
    r = start(client, file_name="a", size=5)
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "overloaded"
    assert r.headers["Retry-After"] and r.get_json()["error"]["retry_after"] > 0
    assert start(client, file_name="a", size=5, owner_id="u2").status_code == 201


def test_store_queue_backpressure(make_uploader) -> None:
    _, client, service = make_uploader(MAX_STORE_QUEUE_DEPTH="1", **ENV)
    upload_all(client, b"x" * 10, CHUNK, file_name="a.txt")  # nobody consumes: depth 1
    service.load.interval = 0  # do not wait for the one-second cache in a test
    r = start(client, file_name="b.txt", size=5)
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "overloaded"
    assert "Retry-After" in r.headers


def test_http_upload(make_uploader, amqp_url) -> None:
    auth = StaticAuth({"tok": Identity("u9", "bob", "user", {"p1": "contributor", "p2": "listener"})},
                      pools={"p1": {"pool_id": "p1", "max_late_seconds": 3600}})
    _, client, _ = make_uploader(auth=auth, **ENV)
    data = os.urandom(CHUNK * 2 + 3)
    import io
    # Relative to now: p1 refuses updates older than its max_late_seconds (an hour).
    stamp = timeutil.iso(timeutil.now() - timedelta(minutes=10))

    with Collector(amqp_url, messaging.STORE_QUEUE) as stores:
        r = client.post("/file/upload", headers={"Authorization": "Bearer tok"},
                        content_type="multipart/form-data",
                        data={"file": (io.BytesIO(data), "dir/up.bin"), "pool_id": "p1",
                              "timestamp": stamp, "metadata": '{"k": 1}'})
        assert r.status_code == 201, r.get_json()
        command = stores.wait_for(lambda m: len(m) >= 1)[0]
    assert command.upload_id == r.get_json()["file_id"] and command.file_name == "up.bin"
    assert command.owner_id == "u9" and command.pool_id == "p1" and command.metadata == {"k": 1}
    assert command.sha256 == hashlib.sha256(data).hexdigest()
    assert command.items[0].timestamp == stamp

    def post(headers, **fields):
        return client.post("/file/upload", headers=headers, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(fields.pop("body", b"abc")),
                                          fields.pop("name", "a.txt")),
                                 **fields})

    assert post({}).status_code == 401
    assert post({"Authorization": "Bearer tok"}, pool_id="p2").status_code == 403
    late = timeutil.iso(timeutil.now() - timedelta(hours=2))
    r = post({"Authorization": "Bearer tok"}, pool_id="p1", timestamp=late)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_request", r.get_json()
    assert post({"Authorization": "Bearer tok"}, body=b"").get_json()["error"]["code"] == "empty_file"
    assert post({"Authorization": "Bearer tok"}, body=b"MZ\x90\x00rest").status_code == 415
    assert post({"X-Internal-Key": INTERNAL_KEY}, user_id="svc").status_code == 201
    assert post({"X-Internal-Key": "wrong"}, user_id="svc").status_code == 401


def test_update_status(make_uploader, amqp_url) -> None:
    _, client, _ = make_uploader(**ENV)
    file_id = upload_all(client, b"x" * 10, CHUNK, file_name="a.txt")
    h = {"X-Internal-Key": INTERNAL_KEY}
    with Collector(amqp_url, messaging.GATEWAY_QUEUE) as notices:
        r = client.put("/file/update/status", json={"file_id": file_id, "status": "uploaded_successfully"},
                       headers=h)
        assert r.status_code == 200
        got = notices.wait_for(lambda m: any(x.status == "uploaded_successfully" for x in m))
    assert any(x.file_id == file_id and x.owner_id == "u1" for x in got)
    assert client.put("/file/update/status", json={"file_id": "nope", "status": "upload_failed"},
                      headers=h).status_code == 404
    assert client.put("/file/update/status", json={"file_id": file_id, "status": "cached"},
                      headers=h).status_code == 400
    r = client.put("/file/update/status", json={"file_id": file_id, "status": "upload_failed"})
    assert r.status_code == 401


def test_sweep_removes_orphans_and_abandoned(make_uploader, rclient, redis_prefix) -> None:
    _, client, service = make_uploader(**ENV)
    orphan = start(client, file_name="a.bin", size=CHUNK + 1).get_json()["file_id"]
    put_chunk(client, orphan, 0, b"a" * CHUNK)
    rclient.delete(f"{redis_prefix}:upload:{orphan}")  # the session expired before its chunk
    abandoned = start(client, file_name="b.bin", size=10, owner_id="u5").get_json()["file_id"]
    put_chunk(client, abandoned, 0, b"b" * 10, owner="u5")
    rclient.hset(f"{redis_prefix}:upload:{abandoned}", "updated", 0)
    alive = start(client, file_name="c.bin", size=10).get_json()["file_id"]
    put_chunk(client, alive, 0, b"c" * 10)

    dry = sweep.sweep(service.store, upload_ttl=3600, dry_run=True)
    assert set(dry["uploads"]) == {orphan, abandoned} and dry["keys_deleted"] == 0
    assert f"{redis_prefix}:upload:{orphan}:chunk:0" in keys(rclient, redis_prefix, orphan)
    done = sweep.sweep(service.store, upload_ttl=3600)
    assert done["uploads"] == {orphan: "orphaned", abandoned: "abandoned"}
    for gone in (orphan, abandoned):
        assert keys(rclient, redis_prefix, gone) == {f"{redis_prefix}:upload:{gone}:status"}
    assert f"{redis_prefix}:upload:{alive}:chunk:0" in keys(rclient, redis_prefix, alive)
    assert rclient.zcard(f"{redis_prefix}:upload-owner:u5") == 0


def test_two_replicas_sweeping_at_once_remove_only_the_dead_uploads(make_uploader, rclient, redis_prefix) -> None:
    """Every replica runs the sweeper: two passes at once over the same leftovers delete each
    key once between them (deletes are idempotent) and never touch a live upload."""
    _, client, service = make_uploader(**ENV)
    _, _, other = make_uploader(**ENV)  # a second replica on the same Redis prefix
    dead = []
    for n in range(6):
        file_id = start(client, file_name=f"d{n}.bin", size=10, owner_id="u7").get_json()["file_id"]
        put_chunk(client, file_id, 0, b"d" * 10, owner="u7")
        rclient.hset(f"{redis_prefix}:upload:{file_id}", "updated", 0)  # abandoned long ago
        dead.append(file_id)
    alive = start(client, file_name="live.bin", size=10).get_json()["file_id"]
    put_chunk(client, alive, 0, b"c" * 10)
    doomed = sum(len([k for k in keys(rclient, redis_prefix, f) if not k.endswith(":status")]) for f in dead)
    assert doomed >= 2 * len(dead)  # at least the session and a chunk each
    barrier = threading.Barrier(2)
    results: list[dict] = []

    def one(store) -> None:
        barrier.wait(timeout=10)
        results.append(sweep.sweep(store, upload_ttl=3600))

    threads = [threading.Thread(target=one, args=(s.store,)) for s in (service, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2
    for gone in dead:
        assert keys(rclient, redis_prefix, gone) == {f"{redis_prefix}:upload:{gone}:status"}
    # Each key was deleted by one of the two passes: their counts add up to the keys there were.
    assert sum(r["keys_deleted"] for r in results) == doomed
    assert f"{redis_prefix}:upload:{alive}:chunk:0" in keys(rclient, redis_prefix, alive)
    assert rclient.zcard(f"{redis_prefix}:upload-owner:u7") == 0


def test_every_key_expires(make_uploader, rclient, redis_prefix) -> None:
    _, client, _ = make_uploader(**ENV)
    file_id = start(client, file_name="a.bin", size=CHUNK + 1).get_json()["file_id"]
    put_chunk(client, file_id, 0, b"a" * CHUNK)
    ledger = f"{redis_prefix}:upload-quota:u1".encode()
    assert rclient.exists(ledger)
    for key in rclient.scan_iter(f"{redis_prefix}:*"):
        if key == ledger:  # the user's stored-bytes account (USER_QUOTA_BYTES) must outlive every upload
            assert rclient.ttl(key) == -1
            continue
        assert rclient.ttl(key) > 0, key
