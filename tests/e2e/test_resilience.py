"""Issue "Uploads that survive the real world": dropped sockets, a killed storage
worker, a broker that drops its connections, two writers, floods and bad input.

Tests that kill, restart or reconfigure something run on a private fleet
(``make_fleet``); the others use the shared session fleet. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pymongo
import pytest
import redis
import requests

from devtools import infra

from .helpers import RawSocket, assert_error, bearer, sha256_hex, signup

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024
# Transient answers a well-behaved client waits out (SPEC: `overloaded` carries retry_after).
TRANSIENT = ("overloaded",)


# --- helpers --------------------------------------------------------------------------------


def _payload(size: int, tag: bytes = b"DATA") -> bytes:
    """Random bytes that never start like an executable (the uploader sniffs the head)."""
    return tag + os.urandom(size - len(tag))


def _refused(ack: Any, code: str | tuple[str, ...]) -> dict:
    """An ack in SPEC's error shape with ``code`` (or one of them)."""
    codes = (code,) if isinstance(code, str) else code
    assert isinstance(ack, dict) and set(ack) == {"error"}, ack
    err = ack["error"]
    assert err["code"] in codes, ack
    assert isinstance(err["message"], str) and err["message"], ack
    return err


def _wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def _call_patiently(sock: RawSocket, event: str, data: dict, timeout: float = 60) -> dict:
    """A socket call that waits out `overloaded` (what a real client does), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        ack = sock.call(event, data, timeout=30)
        err = ack.get("error") if isinstance(ack, dict) else None
        if not err or err.get("code") not in TRANSIENT or time.monotonic() > deadline:
            return ack
        time.sleep(min(float(err.get("retry_after") or 1), 1.0))


def _history_record(sock: RawSocket, file_id: str) -> dict | None:
    return next((f for f in sock.call("get-history", {})["files"] if f["file_id"] == file_id), None)


def _download_sha256(fsm_url: str, token: str, file_id: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with requests.get(f"{fsm_url}/file/{file_id}", headers=bearer(token), stream=True, timeout=60) as r:
        assert r.status_code == 200, r.text[:300]
        for block in r.iter_content(MiB):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _mongo(env: dict[str, str]) -> pymongo.database.Database:
    return pymongo.MongoClient(env["MONGODB_URI"], serverSelectionTimeoutMS=10_000)[env["MONGODB_DB"]]


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _upload_keys(env: dict[str, str]) -> set[bytes]:
    """Every upload-cache key of the fleet except the small status tombstones (they expire
    by themselves and keep repeated requests idempotent)."""
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        return {k for k in client.scan_iter(f"{env['REDIS_PREFIX']}:upload:*", count=1000)
                if not k.endswith(b":status")}
    finally:
        client.close()


def _drop_transport(sock: RawSocket) -> None:
    """Cut the TCP connection under a socket: no Socket.IO or engine.io goodbye is sent,
    as when a phone leaves the Wi-Fi."""
    sock.sio.eio.ws.sock.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + 10
    while sock.sio.connected and time.monotonic() < deadline:
        time.sleep(0.05)


def _vhost_connections(vhost: str) -> list[str]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "vhost"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    pids = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].strip() == vhost:
            pids.append(parts[0].strip())
    return pids


def _close_vhost_connections(vhost: str) -> int:
    """Close every broker connection of ``vhost`` (the fleet's services'); returns how many
    there were. One rabbitmqctl run for all of them (a run per connection costs an Erlang VM
    start each, seconds on a small machine)."""
    count = len(_vhost_connections(vhost))
    subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "resilience test"],
                   capture_output=True, timeout=60, check=True)
    return count


# --- 1. a dropped socket resumes on another gateway ------------------------------------------


def test_dropped_upload_resumes_on_a_second_gateway(make_fleet):
    running = make_fleet()
    fleet = running.fleet
    fleet.start_service("socket_gateway", instance="socket_gateway_2", port=infra.free_port())
    fleet.wait_ready(("socket_gateway_2",), timeout=90)
    second = fleet.urls["socket_gateway_2"]
    assert second != running.gateway

    user = signup(running.urls["auth"])
    data = _payload(20 * MiB)
    expected = sha256_hex(data)
    first = RawSocket(running.gateway, user["access_token"])
    try:
        ack = first.call("start-transfer", {"file_name": "survivor.bin", "size": len(data), "sha256": expected})
        assert "error" not in ack, ack
        file_id, chunk = ack["file_id"], ack["chunk_size"]
        count = math.ceil(len(data) / chunk)
        sent = math.ceil(count * 0.4)  # 40% of the file
        assert 0 < sent < count
        for index in range(sent):
            answer = first.call("write-chunk", {"file_id": file_id, "index": index,
                                                "data": data[index * chunk:(index + 1) * chunk]})
            assert "error" not in answer, answer
        _drop_transport(first)
        assert not first.sio.connected
    finally:
        first.close()

    resumed = RawSocket(second, user["access_token"])
    try:
        # The first gateway releases the writer lock when it sees the connection gone; until
        # then a resume is answered `conflict` (bounded by the lock's expiry).
        deadline = time.monotonic() + 45
        while True:
            ack = resumed.call("start-transfer", {"file_id": file_id, "file_name": "survivor.bin",
                                                  "size": len(data), "sha256": expected})
            if "error" not in ack or ack["error"]["code"] != "conflict" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "error" not in ack, ack
        assert ack["file_id"] == file_id and ack["chunk_size"] == chunk
        assert ack["missing"] == list(range(sent, count)), ack  # only what never arrived
        for index in ack["missing"]:
            answer = resumed.call("write-chunk", {"file_id": file_id, "index": index,
                                                  "data": data[index * chunk:(index + 1) * chunk]})
            assert "error" not in answer, answer
        done = resumed.call("complete-upload", {"file_id": file_id})
        assert done.get("status") == "cached", done
        # The notice reaches the socket on the second gateway.
        resumed.wait_event("file-status", lambda d: d["file_id"] == file_id
                           and d["status"] == "uploaded_successfully", timeout=90)
        record = _history_record(resumed, file_id)
        assert record is not None and record["status"] == "uploaded_successfully", record
        assert record["sha256"] == expected and record["size"] == len(data), record
    finally:
        resumed.close()
    digest, size = _download_sha256(running.urls["file_service_manager"], user["access_token"], file_id)
    assert (digest, size) == (expected, len(data))


# --- 2. file_service_manager killed in the middle of a store ---------------------------------


def test_storage_worker_killed_mid_store_stores_exactly_once(make_fleet):
    running = make_fleet()
    fleet = running.fleet
    db = _mongo(running.env)
    user = signup(running.urls["auth"])
    sock = RawSocket(running.gateway, user["access_token"])
    try:
        caught = None
        seen: set = set()
        for _attempt in range(3):  # the store must be caught half-written; a store that beat the kill retries
            data = _payload(30 * MiB)
            expected = sha256_hex(data)
            # A big upload is written to GridFS while its chunks arrive (a prestore), so the store
            # runs during the upload: send it from a thread, and watch GridFS meanwhile for the
            # first chunks of a new file; kill as soon as they are there and the file doc is not.
            sent: dict = {}
            sender = threading.Thread(target=lambda d=data, out=sent: out.update(
                file_id=sock.upload_bytes(d, "killed-mid-store.bin")), daemon=True)
            sender.start()
            deadline = time.monotonic() + 60
            file_id = None
            while time.monotonic() < deadline and file_id is None:
                fresh = [f for f in db["fs.chunks"].distinct("files_id") if f not in seen]
                file_id = fresh[0] if fresh else None
                if file_id is None:
                    time.sleep(0.003)
            if file_id is None:
                raise AssertionError("the store of the upload never started")
            seen.add(file_id)
            fleet.stop_service("file_service_manager", signal.SIGKILL)
            chunks_at_kill = db["fs.chunks"].count_documents({"files_id": file_id})
            file_doc_at_kill = db["fs.files"].count_documents({"_id": file_id})
            print(f"killed file_service_manager with {chunks_at_kill} GridFS chunks written, "
                  f"file doc present: {bool(file_doc_at_kill)}")
            fleet.start_service("file_service_manager")
            fleet.wait_ready(("file_service_manager",), timeout=90)
            sender.join(timeout=120)
            assert sent.get("file_id") == file_id, (sent, file_id)
            first_final = sock.wait_event("file-status", lambda d, f=file_id: d["file_id"] == f
                                          and d["status"] in ("uploaded_successfully", "upload_failed"),
                                          timeout=90)
            if not file_doc_at_kill:
                caught = (file_id, data, expected)
                break
        assert caught is not None, "the kill never landed in the middle of a store"
        file_id, data, expected = caught
        time.sleep(3)  # room for a duplicate notice to show up, if one were coming
        # wait_event took the first final notice off the queue; statuses() lists the rest.
        statuses = [first_final["status"], *sock.statuses(file_id)]
        assert statuses.count("uploaded_successfully") == 1, statuses
        assert "upload_failed" not in statuses, statuses

        files = list(db["fs.files"].find({"_id": file_id}))
        assert len(files) == 1, files
        chunk_size = files[0]["chunkSize"]
        assert files[0]["length"] == len(data)
        expected_chunks = math.ceil(len(data) / chunk_size)
        assert db["fs.chunks"].count_documents({"files_id": file_id}) == expected_chunks
        assert sorted(c["n"] for c in db["fs.chunks"].find({"files_id": file_id}, {"n": 1})) == \
            list(range(expected_chunks))
        record = _history_record(sock, file_id)
        assert record is not None and record["status"] == "uploaded_successfully", record
        assert record["sha256"] == expected and record["size"] == len(data)
        assert db["files"].count_documents({"upload_id": file_id}) == 1
        assert not [k for k in _upload_keys(running.env) if file_id.encode() in k]
    finally:
        sock.close()
        db.client.close()
    digest, size = _download_sha256(running.urls["file_service_manager"], user["access_token"], file_id)
    assert (digest, size) == (expected, len(data))


# --- 3. the broker drops every connection during a run of uploads ---------------------------


def test_broker_connections_closed_during_uploads_lose_nothing(make_fleet):
    running = make_fleet()
    vhost = running.env["AMQP_URL"].rsplit("/", 1)[1]
    assert _vhost_connections(vhost), "the fleet's services hold broker connections"
    threads_n, per_thread = 5, 10
    users = [signup(running.urls["auth"]) for _ in range(threads_n)]
    sockets = [RawSocket(running.gateway, u["access_token"]) for u in users]
    uploaded: list[list[str]] = [[] for _ in range(threads_n)]
    errors: queue.Queue[str] = queue.Queue()
    done_count = [0]
    lock = threading.Lock()

    def uploader(n: int) -> None:
        sock = sockets[n]
        try:
            for i in range(per_thread):
                data = _payload(100_000 + 7_000 * i)
                ack = _call_patiently(sock, "start-transfer", {"file_name": f"u{n}-{i}.bin", "size": len(data),
                                                                "sha256": sha256_hex(data)})
                assert "error" not in ack, ack
                file_id = ack["file_id"]
                answer = _call_patiently(sock, "write-chunk", {"file_id": file_id, "index": 0, "data": data})
                assert "error" not in answer, answer
                done = _call_patiently(sock, "complete-upload", {"file_id": file_id})
                assert done.get("status") == "cached", done
                uploaded[n].append(file_id)
                with lock:
                    done_count[0] += 1
                time.sleep(0.4)  # spread the run (~5 s) so the broker outages land in the middle of it
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.put(f"uploader {n}: {exc!r}")

    workers = [threading.Thread(target=uploader, args=(n,), daemon=True) for n in range(threads_n)]
    closes = []
    try:
        for worker in workers:
            worker.start()
        for threshold in (5, 25):
            _wait_until(lambda t=threshold: done_count[0] >= t or not any(w.is_alive() for w in workers),
                        60, f"{threshold} uploads done", interval=0.02)
            closes.append((done_count[0], _close_vhost_connections(vhost)))
        for worker in workers:
            worker.join(120)
        print(f"broker connection closes (uploads done at the time, connections closed): {closes}")
        assert errors.empty(), list(errors.queue)
        assert all(not w.is_alive() for w in workers)
        assert all(closed > 0 for _, closed in closes), closes
        assert closes[0][0] < threads_n * per_thread, "the first outage came after every upload"

        final = ("uploaded_successfully", "upload_failed")
        outcomes: dict[str, int] = {}
        for n, sock in enumerate(sockets):
            ids = uploaded[n]
            assert len(ids) == per_thread

            def statuses(s: RawSocket = sock) -> dict[str, str]:
                return {f["file_id"]: f["status"] for f in s.call("get-history", {})["files"]}

            def settled(ids: list[str] = ids, statuses=statuses) -> dict[str, str] | None:
                current = statuses()
                return current if all(current.get(i) in final for i in ids) else None

            status = _wait_until(settled, 90, f"every upload of user {n} reaches a final status in the index",
                                 1.0)
            for file_id in ids:
                outcomes[status[file_id]] = outcomes.get(status[file_id], 0) + 1
                # The owner is told the outcome: the final notice is not lost either.
                event = sock.wait_event("file-status", lambda d, f=file_id: d["file_id"] == f
                                        and d["status"] in final, timeout=60)
                if status[file_id] == "upload_failed":
                    assert event["status"] == "upload_failed" and event.get("reason"), event
        print(f"outcomes: {outcomes}")
    finally:
        for sock in sockets:
            sock.close()


# --- 4. two connections writing one upload -------------------------------------------------


def test_second_connection_cannot_write_an_upload_being_written(fleet):
    user = signup(fleet.urls["auth"])
    stranger = signup(fleet.urls["auth"])
    a = RawSocket(fleet.gateway, user["access_token"])
    b = RawSocket(fleet.gateway, user["access_token"])
    c = RawSocket(fleet.gateway, stranger["access_token"])
    data = _payload(9 * MiB)
    expected = sha256_hex(data)
    start = {"file_name": "contested.bin", "size": len(data), "sha256": expected}
    try:
        ack = a.call("start-transfer", start)
        assert "error" not in ack, ack
        file_id, chunk = ack["file_id"], ack["chunk_size"]
        count = math.ceil(len(data) / chunk)
        assert count >= 3, "the test needs an upload of at least three chunks"
        assert "error" not in a.call("write-chunk", {"file_id": file_id, "index": 0, "data": data[:chunk]})

        # B (the same user, another connection) while A is connected and writing:
        _refused(b.call("start-transfer", {**start, "file_id": file_id}), "conflict")
        _refused(b.call("write-chunk", {"file_id": file_id, "index": 1, "data": os.urandom(chunk)}), "conflict")
        _refused(b.call("complete-upload", {"file_id": file_id}), "conflict")
        # Another user cannot even see it.
        _refused(c.call("start-transfer", {**start, "file_id": file_id}), "not_found")
        _refused(c.call("write-chunk", {"file_id": file_id, "index": 1, "data": data[chunk:2 * chunk]}),
                 "not_found")

        # A is still the writer; B's refused bytes were not kept.
        answer = a.call("write-chunk", {"file_id": file_id, "index": 1, "data": data[chunk:2 * chunk]})
        assert "error" not in answer and answer["received"] == 2, answer

        # Once A is gone, B takes over and finishes.
        a.close()
        deadline = time.monotonic() + 30
        while True:
            ack = b.call("start-transfer", {**start, "file_id": file_id})
            if "error" not in ack or ack["error"]["code"] != "conflict" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "error" not in ack, ack
        assert ack["missing"] == list(range(2, count)), ack
        for index in ack["missing"]:
            answer = b.call("write-chunk", {"file_id": file_id, "index": index,
                                            "data": data[index * chunk:(index + 1) * chunk]})
            assert "error" not in answer, answer
        assert b.call("complete-upload", {"file_id": file_id}).get("status") == "cached"
        b.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully",
                     timeout=90)
        record = _history_record(b, file_id)
        assert record["sha256"] == expected, record
    finally:
        for s in (a, b, c):
            s.close()
    assert _download_sha256(fleet.urls["file_service_manager"], user["access_token"], file_id) == \
        (expected, len(data))


# --- 5. floods are answered `overloaded`; the gateway's memory stays bounded ------------------


def test_flood_of_start_transfers_is_answered_overloaded(make_fleet):
    retry_after = 7
    running = make_fleet(MAX_UPLOADS_PER_USER="3", MAX_PENDING_BYTES=str(MiB),
                         OVERLOAD_RETRY_AFTER=str(retry_after))
    fleet = running.fleet
    auth, uploader = running.urls["auth"], running.urls["file_uploader"]
    gateway_pid = fleet.procs["socket_gateway"].pid
    flooder = signup(auth)
    sockets = [RawSocket(running.gateway, flooder["access_token"]) for _ in range(4)]
    try:
        # Warm up (first requests open pools and connections), then measure.
        assert "ok" in sockets[0].call("alive", {})
        rss_before = _rss_bytes(gateway_pid)

        # Far more than the limits allow, fired without waiting for answers (a buggy or hostile
        # client): the gateway must not hold them all at once.
        total = 3000
        answers: queue.Queue[Any] = queue.Queue()
        for n in range(total):
            sockets[n % len(sockets)].sio.emit(
                "start-transfer", {"file_name": f"flood-{n}.bin", "size": 20 * MiB},
                callback=lambda *ack: answers.put(ack[0] if ack else None))
        got = []
        peak = [rss_before]
        sampling = threading.Event()

        def sample() -> None:  # the peak matters, not only what is left afterwards
            while not sampling.wait(0.02):
                peak[0] = max(peak[0], _rss_bytes(gateway_pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = time.monotonic() + 120
        while len(got) < total and time.monotonic() < deadline:
            try:
                got.append(answers.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                break
        sampling.set()
        sampler.join(5)
        rss_after = _rss_bytes(gateway_pid)
        growth = max(peak[0], rss_after) - rss_before
        print(f"gateway RSS before the flood {rss_before / MiB:.1f} MiB, peak {peak[0] / MiB:.1f} MiB, "
              f"after {rss_after / MiB:.1f} MiB (+{growth / MiB:.1f} MiB at most) for {total} start-transfers")
        assert len(got) == total, f"only {len(got)} of {total} start-transfers were answered"
        accepted = [a for a in got if isinstance(a, dict) and "file_id" in a]
        refused = [a for a in got if isinstance(a, dict) and "error" in a]
        assert len(accepted) == 3, accepted  # MAX_UPLOADS_PER_USER
        assert len(accepted) + len(refused) == total
        for ack in refused:
            err = _refused(ack, "overloaded")
            assert isinstance(err.get("retry_after"), int | float) and err["retry_after"] > 0, ack
        # The uploader's per-user limit speaks (its OVERLOAD_RETRY_AFTER) for what reaches it.
        assert retry_after in {a["error"]["retry_after"] for a in refused}
        assert growth < 100 * MiB

        # The same condition over plain HTTP: 429 with Retry-After.
        r = requests.post(f"{uploader}/file/upload", headers=bearer(flooder["access_token"]),
                          files={"file": ("http.bin", _payload(150_000))}, timeout=30)
        assert_error(r, 429, "overloaded")
        assert r.headers.get("Retry-After") == str(retry_after)
        assert r.json()["error"]["retry_after"] == retry_after

        # Bytes waiting to be stored over MAX_PENDING_BYTES refuse every user's new uploads.
        fleet.stop_service("file_service_manager")
        waiting_user = signup(auth)
        waiting = RawSocket(running.gateway, waiting_user["access_token"])
        other_user = signup(auth)
        other = RawSocket(running.gateway, other_user["access_token"])
        try:
            pending_id = waiting.upload_bytes(_payload(2 * MiB), "pending.bin")

            # The load gauge is re-read about once a second: probe over HTTP (an accepted probe is
            # completed and becomes one more upload waiting to be stored, holding no upload slot).
            def http_refused() -> list[requests.Response]:  # (a 4xx Response is falsy itself)
                r = requests.post(f"{uploader}/file/upload", headers=bearer(other_user["access_token"]),
                                  files={"file": ("probe.bin", _payload(150_000))}, timeout=30)
                assert r.status_code in (201, 429), r.text
                return [r] if r.status_code == 429 else []

            [r] = _wait_until(http_refused, 30, "an HTTP upload refused while bytes wait to be stored")
            assert_error(r, 429, "overloaded")
            assert r.headers.get("Retry-After") == str(retry_after)
            err = _refused(other.call("start-transfer", {"file_name": "later.bin", "size": 200_000}), "overloaded")
            assert err["retry_after"] == retry_after and "per user" not in err["message"], err

            # Once storage is back the backlog drains and uploads are accepted again.
            fleet.start_service("file_service_manager")
            fleet.wait_ready(("file_service_manager",), timeout=90)
            waiting.wait_event("file-status", lambda d: d["file_id"] == pending_id
                               and d["status"] == "uploaded_successfully", timeout=90)
            last: list[Any] = []

            def accepted_again() -> bool:
                last.append(other.call("start-transfer", {"file_name": "later.bin", "size": 200_000}))
                return "file_id" in last[-1]

            try:
                _wait_until(accepted_again, 30, "uploads accepted again after the backlog drained", interval=0.5)
            except AssertionError:
                raise AssertionError(f"still refused: {last[-1]}") from None
        finally:
            waiting.close()
            other.close()
    finally:
        for sock in sockets:
            sock.close()


# --- 6. bad input: SPEC's error shape, nothing left behind --------------------------------------


def test_bad_input_is_refused_in_spec_shape_and_leaves_nothing(fleet):
    user = signup(fleet.urls["auth"])
    token = user["access_token"]
    uploader, fsm = fleet.urls["file_uploader"], fleet.urls["file_service_manager"]
    keys_before = _upload_keys(fleet.env)
    sock = RawSocket(fleet.gateway, token)
    try:
        size = 200_000
        ok = {"file_name": "fine.bin", "size": size}

        # Control characters (and invisible format characters) in names: refused.
        for name in ("bad\x00name.txt", "line\nbreak.txt", "tab\there.txt", "bell\x07.txt", "del\x7f.txt",
                     "\u202etxt.exe", "../evil\r.txt"):
            _refused(sock.call("start-transfer", {**ok, "file_name": name}), "bad_request")
        # Names that are no file name once the path is removed, or too long: refused.
        for name in ("..", "a/..", "dir/", "../", "x" * 300 + ".txt", "", "   "):
            _refused(sock.call("start-transfer", {**ok, "file_name": name}), "bad_request")
        _refused(sock.call("start-transfer", {**ok, "file_name": ["a.txt"]}), "bad_request")

        # Oversize metadata (MAX_METADATA_BYTES, 16 KiB). The uploader answers 413 `too_large`.
        big_meta = {"note": "x" * (16 * 1024 + 1)}
        _refused(sock.call("start-transfer", {**ok, "metadata": big_meta}), ("too_large", "bad_request"))
        _refused(sock.call("start-transfer", {**ok, "metadata": "not an object"}), "bad_request")
        _refused(sock.call("start-transfer", {**ok, "metadata": [1, 2]}), "bad_request")

        # Larger than MAX_FILE_SIZE (64 MiB in the e2e fleet), or not a size at all.
        err = _refused(sock.call("start-transfer", {**ok, "size": 64 * MiB + 1}), "too_large")
        assert "64" in err["message"] or err.get("max_size") == 64 * MiB, err
        for bad_size in (-5, "200000", 1.5, None, True):
            _refused(sock.call("start-transfer", {**ok, "size": bad_size}), "bad_request")

        # Batch items out of range, overlapping, empty, without or with a bad timestamp.
        # A time of a few minutes ago: each batch below is refused for its own fault, never for
        # its age (a fixed date would age past a pool's max_late_seconds).
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
        for items in (
            [{"timestamp": stamp, "offset": 0, "length": size + 1}],
            [{"timestamp": stamp, "offset": size, "length": 1}],
            [{"timestamp": stamp, "offset": -1, "length": 10}],
            [{"timestamp": stamp, "offset": 0, "length": 0}],
            [{"timestamp": stamp, "offset": 0, "length": 100}, {"timestamp": stamp, "offset": 50, "length": 100}],
            [{"timestamp": stamp, "offset": 0, "length": 100}, {"timestamp": stamp, "offset": 0, "length": 100}],
            [{"offset": 0, "length": 100}],
            [{"timestamp": "last tuesday", "offset": 0, "length": 100}],
            [{"timestamp": stamp, "offset": "0", "length": 100}],
            [{"timestamp": stamp, "offset": 0, "length": 100, "name": "../x\n.txt"}],
            ["not an object"],
            {"timestamp": stamp, "offset": 0, "length": 100},
        ):
            _refused(sock.call("start-transfer", {**ok, "items": items}), "bad_request")

        # A bad timestamp.
        for stamp_value in ("yesterday", "2024-13-45T10:00:00Z", "", 1714557600, "2024-05-01T10:00:00+25:00"):
            _refused(sock.call("start-transfer", {**ok, "timestamp": stamp_value}), "bad_request")

        # The same checks over plain HTTP.
        def http_upload(name: str = "fine.bin", data: bytes | None = None, **form: str) -> requests.Response:
            return requests.post(f"{uploader}/file/upload", headers=bearer(token),
                                 files={"file": (name, data if data is not None else _payload(size))},
                                 data=form, timeout=60)

        assert_error(http_upload(metadata='{"note": "' + "x" * (16 * 1024 + 1) + '"}'), 413, "too_large")
        assert_error(http_upload(metadata="{not json"), 400, "bad_request")
        assert_error(http_upload(timestamp="yesterday"), 400, "bad_request")
        assert_error(http_upload(name=".."), 400, "bad_request")
        assert_error(http_upload(data=b"D" * (64 * MiB + 1)), 413, "too_large")

        # Nothing of the refused requests was kept.
        assert sock.call("get-history", {})["files"] == []
        client = redis.Redis.from_url(fleet.env["REDIS_URL"])
        try:
            assert client.zcard(f"{fleet.env['REDIS_PREFIX']}:upload-owner:{user['user_id']}") == 0
        finally:
            client.close()
        assert _upload_keys(fleet.env) - keys_before == set()

        # Names with path parts are not refused: the uploader keeps the base name only
        # (a browser may send C:\fakepath\x.txt), so nothing is written outside the name.
        sanitized = {"../../etc/passwd": "passwd", "a/b.txt": "b.txt",
                     "..\\..\\windows\\system32\\drivers.txt": "drivers.txt", "C:\\fakepath\\report.csv": "report.csv"}
        stored = {}
        for name, base in sanitized.items():
            data = _payload(size)
            stored[sock.upload_bytes(data, name)] = (base, sha256_hex(data))
        data = _payload(size)
        r = http_upload(name="../../etc/shadow", data=data)
        assert r.status_code == 201, r.text
        stored[r.json()["file_id"]] = ("shadow", sha256_hex(data))

        def all_stored() -> dict | None:
            records = {f["file_id"]: f for f in sock.call("get-history", {})["files"]}
            done = all(records.get(i, {}).get("status") == "uploaded_successfully" for i in stored)
            return records if done else None

        records = _wait_until(all_stored, 60, "the uploads with path parts are stored")
        assert set(records) == set(stored)
        for file_id, (base, digest) in stored.items():
            assert records[file_id]["file_name"] == base, records[file_id]
            assert records[file_id]["sha256"] == digest
            r = requests.get(f"{fsm}/file/{file_id}", headers=bearer(token), timeout=30)
            assert r.status_code == 200
            assert f'filename="{base}"' in r.headers["Content-Disposition"], r.headers["Content-Disposition"]
            assert "/" not in r.headers["Content-Disposition"] and ".." not in r.headers["Content-Disposition"]
    finally:
        sock.close()
