"""Pools end to end: 25 members, timestamp windows, a late batch, the reference processor.

The pool (window W s, grace G s) has 20 online contributors, 2 offline contributors and
3 listeners. In window W0 the online contributors upload one float64 array each; the
offline ones produce theirs but stay disconnected. In W1 the online ones upload again.
Once W0's result is out, the offline ones reconnect (they must get W0's result on
connect) and each sends ONE batch: its W0 update (now late) and its W1 update. The
reference processor (examples.processor, in a thread) averages every group.

Values are multiples of 1/8 and small, so every sum is exact in float64 whatever the
order: the mean the test computes is bit-identical to the processor's.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
import uuid
from array import array
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from client.api import DropboxClient
from examples.processor.mean import decode, encode
from examples.processor.runner import Processor as ReferenceProcessor

from .helpers import wait_for
from .pools import Admin

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

W = 4  # window_seconds
GRACE = 2  # close_grace_seconds: room for uploads to be grouped before a window turns ready
VALUES = 12_800  # float64 values per update: 102,400 bytes (SPEC files are >= 100 KB)
ONLINE, OFFLINE, LISTENERS = 20, 2, 3
PASSWORD = "pool-flow-password"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def update_bytes(rng: random.Random) -> bytes:
    # Multiples of 1/8 below 2**10: sums of 25 of them are exact, so order cannot matter.
    return encode(rng.randint(-8192, 8192) / 8 for _ in range(VALUES))


def mean_bytes(arrays: list[bytes]) -> bytes:
    sums = array("d", bytes(8 * VALUES))
    for data in arrays:
        for i, value in enumerate(decode(data)):
            sums[i] += value
    return encode(s / len(arrays) for s in sums)


def test_pool_of_25_windows_late_batch_and_results_reach_everyone(fleet):
    rng = random.Random(20240607)
    admin = Admin(fleet)
    urls = fleet.urls
    pool_id = admin.create_pool(f"flow-{uuid.uuid4().hex[:6]}", window_seconds=W, close_grace_seconds=GRACE,
                                processing_timeout_seconds=60)["pool_id"]
    key = admin.processor_key(pool_id)
    api = {"X-API-Key": key}
    agg = f"{urls['pool_aggregator']}/pools/{pool_id}"

    def new_member(n: int) -> tuple[DropboxClient, str]:
        role = "listener" if n >= ONLINE + OFFLINE else "contributor"
        client = DropboxClient(fleet.gateway, urls["auth"], urls["file_service_manager"], urls["pool_aggregator"],
                               timeout=30)
        client.signup(f"flow_{uuid.uuid4().hex[:8]}_{n}", PASSWORD)
        admin.add_member(pool_id, client.user["user_name"], role)
        return client, role

    with ThreadPoolExecutor(4) as ex:  # argon2 signups cost ~0.15 s of auth's CPU each
        members = list(ex.map(new_member, range(ONLINE + OFFLINE + LISTENERS)))
    everyone = [c for c, _ in members]
    online = everyone[:ONLINE]
    offline = everyone[ONLINE:ONLINE + OFFLINE]
    listeners = everyone[ONLINE + OFFLINE:]

    processor = ReferenceProcessor(urls["pool_aggregator"], pool_id, key, poll_seconds=0.25, timeout=30)
    runner = threading.Thread(target=processor.run, name="reference-processor", daemon=True)
    runner.start()
    try:
        for client in online + listeners:
            client.connect()
        # One offline member was connected before and dropped (its last-seen says when); the
        # other has not connected since it joined (owed results from its membership's start).
        offline[0].connect()
        offline[0].disconnect()
        wait_for(lambda: not offline[0].connected, 10, "the offline member's disconnect")

        sent: dict[str, dict[str, Any]] = {}  # sha256 -> {owner, ts, data}

        def produce(owner: DropboxClient, ts: float) -> bytes:
            data = update_bytes(rng)
            sent[hashlib.sha256(data).hexdigest()] = {"owner": owner, "ts": ts, "data": data}
            return data

        def upload_all(window_start: float) -> list[str]:
            # Every update is stamped with the moment it was produced, inside the window.
            jobs = [(c, produce(c, min(time.time(), window_start + W - 0.05))) for c in online]

            def one(job: tuple[DropboxClient, bytes]) -> str:
                client, data = job
                ts = sent[hashlib.sha256(data).hexdigest()]["ts"]
                file_id = client.upload(io.BytesIO(data), file_name="update.f64", pool_id=pool_id,
                                        timestamp=iso(ts))
                client.wait_status(file_id, timeout=30)
                return file_id

            with ThreadPoolExecutor(10) as ex:
                return list(ex.map(one, jobs))

        # W0: the next window, so the uploads have all of it (plus the grace) to be grouped.
        w0 = (time.time() // W + 1) * W
        w1 = w0 + W
        time.sleep(max(0.0, w0 + 0.05 - time.time()))
        w0_ids = upload_all(w0)
        assert time.time() < w0 + W + GRACE, "the W0 uploads took longer than the window and its grace"
        # The offline members produce their updates while disconnected.
        held: dict[int, list[tuple[float, bytes]]] = {}
        for n, client in enumerate(offline):
            ts0 = w0 + 0.2 + 0.1 * n
            held[id(client)] = [(ts0, produce(client, ts0))]

        time.sleep(max(0.0, w1 + 0.05 - time.time()))
        w1_ids = upload_all(w1)
        for n, client in enumerate(offline):
            ts1 = w1 + 0.3 + 0.1 * n
            held[id(client)].append((ts1, produce(client, ts1)))

        # W0's result reaches every connected member.
        g0 = f"{pool_id}-{int(w0)}"
        first = {id(c): c.wait_result(pool_id, timeout=30) for c in online + listeners}
        assert {r["group_id"] for r in first.values()} == {g0}

        # The offline members come back: W0's result on connect, then one batch each.
        for client in offline:
            client.connect()
            missed = client.wait_result(pool_id, timeout=15)
            assert missed["group_id"] == g0, missed
            blob = b"".join(data for _, data in held[id(client)])
            items, offset = [], 0
            for n, (ts, data) in enumerate(held[id(client)]):
                items.append({"timestamp": iso(ts), "offset": offset, "length": len(data), "name": f"u{n}.f64"})
                offset += len(data)
            upload_id = client.upload(io.BytesIO(blob), file_name="batch.f64", pool_id=pool_id, items=items)
            client.wait_status(upload_id, timeout=30)
        # Grouped before W1 turned ready? Otherwise the W1 items would be late too (a slow machine).
        assert time.time() < w1 + W + GRACE, "the batches came after W1 closed; the machine is too slow"

        # Every group with files gets a result, and every member gets every result.
        def groups() -> list[dict]:
            r = requests.get(f"{agg}/groups", headers=api, timeout=10)
            assert r.status_code == 200, r.text
            return r.json()["groups"]

        def all_done() -> list[dict] | None:
            found = [g for g in groups() if g["file_count"]]
            return found if len(found) >= 2 and all(g["status"] == "done" for g in found) else None

        done = wait_for(all_done, 45, "every group to be done")
        results = requests.get(f"{agg}/results", headers=api, timeout=10).json()["results"]
        by_group = {r["group_id"]: r for r in results}
        assert set(by_group) == {g["group_id"] for g in done}
        assert {gid: r["result_id"] for gid, r in by_group.items()} == processor.results

        for client in everyone:
            wait_for(lambda c=client: {r["group_id"] for r in c.results_received} >= set(by_group), 20,
                     f"every result at {client.user['user_name']}")
            got = {r["group_id"]: r for r in client.results_received}
            for gid, result in by_group.items():
                event = got[gid]
                assert event["pool_id"] == pool_id
                assert (event["result_id"], event["sha256"], event["size"]) == (
                    result["result_id"], result["sha256"], result["size"])
                assert event["download_url"] == result["download_url"]

        # Groups hold exactly the updates of their window; late ones sit in a later group.
        history = {}
        for client in everyone[:ONLINE + OFFLINE]:
            for record in client.history():
                history[record["file_id"]] = record
        seen_files: set[str] = set()
        for group in done:
            gid = group["group_id"]
            start, end = epoch(group["window_start"]), epoch(group["window_end"])
            r = requests.get(f"{agg}/groups/{gid}/files", headers=api, timeout=10)
            assert r.status_code == 200, r.text
            files = r.json()["files"]
            assert len(files) == group["file_count"]
            arrays = []
            for f in files:
                record = history[f["file_id"]]
                origin = sent[f["sha256"]]
                assert record["owner_id"] == origin["owner"].user["user_id"] == f["owner_id"]
                assert epoch(f["timestamp"]) == pytest.approx(origin["ts"], abs=0.002)
                assert record["group_id"] == gid
                if record["late"]:
                    assert epoch(f["timestamp"]) < start, (f, group)
                else:
                    assert start <= epoch(f["timestamp"]) < end, (f, group)
                body = requests.get(f["download_url"], headers=api, timeout=10)
                assert body.status_code == 200 and body.content == origin["data"]
                arrays.append(body.content)
                seen_files.add(f["file_id"])
            # The result is the mean of exactly these files.
            result = by_group[gid]
            expected = mean_bytes(arrays)
            listener = listeners[0]
            sink = io.BytesIO()
            info = listener.download(result["download_url"], sink)
            assert sink.getvalue() == expected
            assert info["sha256"] == result["sha256"] == hashlib.sha256(expected).hexdigest()

        # Every update was grouped once: 20 + 20 online, 2 x 2 batch items.
        assert seen_files == set(history) and len(seen_files) == 2 * ONLINE + 2 * OFFLINE
        assert set(w0_ids) | set(w1_ids) <= seen_files
        by_start = {epoch(g["window_start"]): g["group_id"] for g in done}
        assert {f for f, rec in history.items() if rec["group_id"] == by_start[w0]} == set(w0_ids)
        for client in offline:
            records = sorted((r for r in history.values() if r["owner_id"] == client.user["user_id"]),
                             key=lambda r: r["timestamp"])
            assert [r["sha256"] for r in records] == [hashlib.sha256(d).hexdigest() for _, d in held[id(client)]]
            early, current = records
            assert early["late"] is True and epoch(early["timestamp"]) < w1
            assert by_start[w0] != early["group_id"] and early["group_id"] in by_group
            assert current["late"] is False and current["group_id"] == by_start[w1]
        assert all(not rec["late"] for f, rec in history.items() if f in set(w0_ids) | set(w1_ids))
        # W1 = its 20 online updates + the 2 batch items stamped in W1 (+ the late ones if they landed there).
        w1_files = {f for f, rec in history.items() if rec["group_id"] == by_start[w1] and not rec["late"]}
        assert len(w1_files) == ONLINE + OFFLINE
    finally:
        processor.stop()
        runner.join(5)
        for client in everyone:
            client.disconnect()
