"""SPEC's gapless result feed end to end: a member offline for 2,500 results reconnects and gets
every one of them, in seq order, then the live ones, exactly once each (issue 11).

The results before and after the absence go through the real routes: one offline batch (SPEC
``items``) puts one update in each of 8 one-second windows long closed (each a ``ready`` group at
once), and a processor posts a result to each. The 2,500 results of the absence are written
straight into pool_aggregator's ``results`` collection, numbered 6..2,505 as stored results are,
with the pool's seq counter moved on: through the real route they would take ~6 minutes on
this shared 2-core machine (``bench/result_bench.py`` with 2,500 groups: 160 s to upload and
group 2,500 windows, then 11-15 results a second with 8 processor clients at load 8-20; it was
~4 a second before README "Result rate"), and what this test is about, the gateway's
catch-up, reads them through pool_aggregator's real route either way. The member's
client is the client library (its feed state on disk); it acknowledges what it got, goes away,
and comes back as a new process with the same state file.
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pymongo
import pytest
import requests

from client import DropboxClient
from services.common.settings import DEV_SECRETS

from .helpers import RawSocket, signup, wait_for
from .pools import Admin

PASSWORD = "correct-horse-battery"
BEFORE, OFFLINE, LIVE = 5, 2500, 3
TOTAL = BEFORE + OFFLINE + LIVE


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class Poster:
    """The processor: one tiny result per group, retried while the group is not ready yet."""

    def __init__(self, aggregator: str, pool_id: str, key: str) -> None:
        self.base = f"{aggregator}/pools/{pool_id}"
        self.headers = {"X-API-Key": key}
        self.session = requests.Session()

    def post(self, group_id: str) -> dict:
        deadline = time.monotonic() + 120
        while True:
            r = requests.post(f"{self.base}/groups/{group_id}/result", data=group_id.encode(),
                              headers={**self.headers, "X-File-Name": "result.bin"}, timeout=60)
            if r.status_code == 201:
                return r.json()
            # 404/409: not grouped or not ready yet; 503/429: storage or the fleet busy: again.
            if r.status_code not in (404, 409, 429, 503) or time.monotonic() > deadline:
                raise AssertionError(f"result for {group_id}: {r.status_code} {r.text}")
            time.sleep(0.2)


def seed_results(env: dict[str, str], pool_id: str, first_seq: int, count: int, fsm_url: str) -> set[str]:
    """``count`` stored, numbered results as pool_aggregator keeps them, and its counter moved on
    (only while no post is in flight: the compare-and-set on the counter checks it)."""
    db = pymongo.MongoClient(env["MONGODB_URI"])[env["MONGODB_DB"]]
    now = time.time()
    docs = []
    # created_max: the running maximum of created_ts, carried on from the pool's last result (none
    # if that has none), as MongoGroupStore numbers them.
    before = db.results.find_one({"pool_id": pool_id, "seq": first_seq - 1}, {"created_max": 1}) or {}
    high = before.get("created_max") if first_seq > 1 else float("-inf")
    for n in range(count):
        rid = uuid.uuid4().hex
        created = iso(now + n / 1000)
        docs.append({"_id": rid, "result_id": rid, "pool_id": pool_id, "group_id": f"{pool_id}-seed-{n}",
                     "window_start": iso(now - 120), "window_end": iso(now - 119), "file_name": "seed.bin",
                     "size": 1, "sha256": "0" * 64, "created": created, "created_ts": now + n / 1000,
                     "stored": True, "published": True, "seq": first_seq + n,
                     "download_url": f"{fsm_url}/file/{rid}"})
        if high is not None:
            high = docs[-1]["created_max"] = max(high, now + n / 1000)
    db.results.insert_many(docs)
    moved = db.result_counters.update_one({"_id": pool_id, "seq": first_seq - 1, "pending": None},
                                          {"$set": {"seq": first_seq + count - 1}})
    assert moved.modified_count == 1, db.result_counters.find_one({"_id": pool_id})
    return {d["result_id"] for d in docs}


@pytest.mark.slow
def test_a_member_offline_for_2500_results_gets_them_all_in_order_then_the_live_ones_once(make_fleet, tmp_path):
    fleet = make_fleet(TICK_SECONDS="0.2", POOL_CACHE_SECONDS="0", LOG_LEVEL="WARNING")
    urls = fleet.urls
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"feed-{uuid.uuid4().hex[:6]}", window_seconds=1,
                                processing_timeout_seconds=600)["pool_id"]
    poster = Poster(urls["pool_aggregator"], pool_id, admin.processor_key(pool_id))

    def client(state: Path | None = None) -> DropboxClient:
        return DropboxClient(fleet.gateway, urls["auth"], urls["file_service_manager"], urls["pool_aggregator"],
                             timeout=60, feed_state=state)

    contributor = client()
    contributor.signup(f"feedc_{uuid.uuid4().hex[:8]}", PASSWORD)
    admin.add_member(pool_id, contributor.user["user_name"], "contributor")
    state = tmp_path / "member-feed.json"
    member = client(state)
    member_name = f"feedm_{uuid.uuid4().hex[:8]}"
    member.signup(member_name, PASSWORD)
    admin.add_member(pool_id, member_name, "listener")
    # A member that never acknowledges anything: on connect it gets every result since it joined.
    quiet = signup(urls["auth"])
    admin.add_member(pool_id, quiet["user_name"], "listener")

    def server_ack(user_id: str) -> int | None:
        r = requests.get(f"{urls['pool_aggregator']}/internal/pools/{pool_id}/acks/{user_id}",
                         headers={"X-Internal-Key": DEV_SECRETS["INTERNAL_API_KEY"]}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["acked_seq"]

    # One offline batch: one one-byte update in each of 8 one-second windows, all long closed.
    base = int(time.time()) - 600
    windows = [base + n for n in range(BEFORE + LIVE)]
    items = [{"timestamp": iso(w + 0.5), "offset": n, "length": 1, "name": f"u{n}.bin"} for n, w in enumerate(windows)]
    contributor.connect()
    try:
        upload_id = contributor.upload(io.BytesIO(bytes(len(items))), file_name="batch.bin", pool_id=pool_id,
                                       items=items)
        contributor.wait_status(upload_id, timeout=120)
    finally:
        contributor.disconnect()
    started = time.monotonic()
    groups = [f"{pool_id}-{w}" for w in windows]

    # Online: the first results arrive live, are acknowledged, and the member goes away.
    member.connect()
    for gid in groups[:BEFORE]:
        poster.post(gid)
    wait_for(lambda: len(member.results_received) == BEFORE, 60, "the first live results")
    wait_for(lambda: member.acked.get(pool_id) == BEFORE, 30, "the member's ack")
    member.disconnect()
    assert [r["seq"] for r in member.results_received] == list(range(1, BEFORE + 1))
    assert server_ack(member.user["user_id"]) == BEFORE

    # Offline: 2,500 results.
    posted = seed_results(fleet.env, pool_id, BEFORE + 1, OFFLINE, urls["file_service_manager"])
    produced = time.monotonic()

    # Back, as a new process with the same feed state: every missed result, in order, once.
    back = client(state)
    back.login(member_name, PASSWORD)
    back.connect()
    try:
        wait_for(lambda: len(back.results_received) >= OFFLINE, 120, "the catch-up", step=0.2)
        caught_up = time.monotonic()
        live = [poster.post(gid) for gid in groups[BEFORE:]]
        assert [p["seq"] for p in live] == list(range(BEFORE + OFFLINE + 1, TOTAL + 1))
        wait_for(lambda: len(back.results_received) >= OFFLINE + LIVE, 60, "the live results")
        time.sleep(2)  # anything sent twice would show up now
        got = back.results_received
        seqs = [r["seq"] for r in got]
        assert seqs == list(range(BEFORE + 1, TOTAL + 1)), (seqs[:5], seqs[-5:], len(seqs))
        assert len({r["result_id"] for r in got}) == len(got)
        assert {r["result_id"] for r in got[:OFFLINE]} == posted
        assert [r["result_id"] for r in got[OFFLINE:]] == [p["result_id"] for p in live]
        assert all(r["pool_id"] == pool_id and r["download_url"] for r in got)
        # It acknowledges the newest; the next connect would start there.
        wait_for(lambda: back.acked.get(pool_id) == TOTAL, 30, "the ack of the last result")
        assert server_ack(member.user["user_id"]) == TOTAL
        print(f"produce {produced - started:.1f}s, catch-up of {OFFLINE} {caught_up - produced:.1f}s, "
              f"duplicates dropped {back.duplicate_results}, gap fills {back.gap_fills}")
    finally:
        back.disconnect()

    # On the wire, for a plain socket (no client-library help, nothing said at connect): the member
    # that never acknowledged gets all TOTAL, each once; the one that acknowledged all gets none.
    raw = RawSocket(fleet.gateway, quiet["access_token"])
    done = RawSocket(fleet.gateway, back.token or "")
    try:
        seen = []
        deadline = time.monotonic() + 120
        while len(seen) < TOTAL and time.monotonic() < deadline:
            seen.append(raw.wait_event("pool-result", timeout=max(1.0, deadline - time.monotonic()))["seq"])
        assert sorted(seen) == list(range(1, TOTAL + 1))
        time.sleep(2)
        assert raw.events.empty() and done.events.empty()  # nothing twice; nothing for an acked member
    finally:
        raw.close()
        done.close()


@pytest.mark.slow
def test_a_listening_client_renews_its_socket_across_token_expiries_and_misses_nothing(make_fleet, tmp_path):
    """Access tokens of 5 s: the client library reauths its open socket before each expiry (and
    after a token-expired), so results keep arriving live on the same connection."""
    fleet = make_fleet(ACCESS_TOKEN_TTL_SECONDS="5", TICK_SECONDS="0.2", POOL_CACHE_SECONDS="0",
                       LOG_LEVEL="WARNING")
    urls = fleet.urls
    # The admin's own token lives 5 s too: a fresh login for each step.
    pool_id = Admin(fleet).create_pool(f"reauth-{uuid.uuid4().hex[:6]}", window_seconds=1)["pool_id"]
    poster = Poster(urls["pool_aggregator"], pool_id, Admin(fleet).processor_key(pool_id))
    listener = DropboxClient(fleet.gateway, urls["auth"], urls["file_service_manager"], urls["pool_aggregator"],
                             timeout=30, feed_state=tmp_path / "feed.json")
    listener.signup(f"reauth_{uuid.uuid4().hex[:8]}", PASSWORD)
    Admin(fleet).add_member(pool_id, listener.user["user_name"], "listener")
    contributor = DropboxClient(fleet.gateway, urls["auth"], urls["file_service_manager"], urls["pool_aggregator"],
                                timeout=30)
    contributor.signup(f"reauthc_{uuid.uuid4().hex[:8]}", PASSWORD)
    Admin(fleet).add_member(pool_id, contributor.user["user_name"], "contributor")
    base = int(time.time()) - 300
    items = [{"timestamp": iso(base + n + 0.5), "offset": n, "length": 1} for n in range(3)]
    contributor.connect()
    try:
        contributor.wait_status(contributor.upload(io.BytesIO(bytes(3)), file_name="b.bin", pool_id=pool_id,
                                                   items=items), timeout=60)
    finally:
        contributor.disconnect()

    listener.connect()
    try:
        generation = listener._generation
        for n in range(3):
            time.sleep(6)  # past the lifetime of the token the socket had
            posted = poster.post(f"{pool_id}-{base + n}")
            got = listener.wait_result(pool_id, timeout=30)
            assert got["seq"] == posted["seq"] == n + 1
        assert listener.reauths >= 3
        # One connection all along: renewed by reauth, never refused or reconnected.
        assert listener._generation == generation and listener.connected
        assert listener.alive()["ok"] is True
    finally:
        listener.disconnect()
