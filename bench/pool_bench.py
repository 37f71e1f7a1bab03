"""Pool delivery benchmark against a running fleet: one result to 1,000 members.

    python -m bench.pool_bench --gateway URL --admin-user admin --admin-password admin-password \
        [--members 1000] [--contributors 100] [--window 10] [--downloaders 500] [--result-mb 5]

It starts nothing itself. It creates a pool (window ``--window`` s), ``--members`` users
(the first ``--contributors`` contributors, the rest listeners) all connected to the
gateway at once, has the contributors upload one 200 KB float64 array each inside one
window (plain-HTTP ``POST /file/upload``), and runs the reference processor
(examples.processor, webhook + polling) which answers as soon as the group is ready and
posts a ``--result-mb`` result (the mean, tiled to that size). It prints the time from
the result post to the last member's ``pool-result``, and to the last of
``--downloaders`` members (each starts when its notification arrives) having
downloaded the whole result. Targets on a 2-core machine: last notification <= 0.5 s
after the post; 500 downloads of 5 MB done <= 10 s.

The members are raw Engine.IO v4 / Socket.IO v5 WebSocket clients (websocket-client for the
handshake, then read raw by one epoll loop that cuts the frames out itself and parses only
``pool-result`` events): a python-socketio Client costs ~3 threads each, which for 1,000
members would cost more CPU than the gateway being measured. An event's arrival time is when
the epoll wait that reported its socket readable returned, so the bench's own parsing of
thousands of sockets is not counted as the fleet's latency (``Members``). Signups are argon2
hashes (~0.1 s of auth's CPU each): the users are kept in ``--users-cache`` and reused while
their tokens are valid for that auth URL.

Issue 11 adds two measurements:

- ``--members 5000 --sockets-per-user 20 --contributors 50 --downloaders 0 --result-mb 0.1``:
  5,000 member connections on one gateway receive a result (target: last ``pool-result``
  <= 1 s after the post; the gateway's GATEWAY_MAX_CONNECTIONS, default 10,000, already admits
  them). Each connect starts a catch-up (two pool_aggregator requests); the window starts once
  the gateway's ``gateway_catchups`` gauge is back to 0, so what is timed is a result reaching
  connected members, not the connect storm.
- ``--catchup 10000``: one member, away while its pool got 10,000 results, reconnects; the
  time from its connect to the last of the 10,000 ``pool-result`` events (target <= 5 s),
  each once, in ``seq`` order. Made through the SPEC API: 10 batch uploads of 1,000 items, each
  item stamped in a window of its own one second long (an hour or so back), then the
  processor's files + result post for every group (threads, ``--catchup-workers``): hours on
  a loaded 2-core machine. With ``--seed-results --mongodb-uri URI --mongodb-db DB`` (a SETUP
  SHORTCUT, as tests/e2e/test_result_feed.py does): result 1 is written straight into
  pool_aggregator's MongoDB, the member connects, gets it and acknowledges it (``ack-result``),
  leaves; then the N results are written the same way (seq 2..N+1, the pool's counter moved on)
  and the member reconnects. The catch-up itself goes through the real path (gateway ->
  pool_aggregator's ``GET /pools/<id>/results`` -> the socket).

Grouping throughput and fairness (issue 10: 1,000 items in <= 2 s, another pool's
file <= 1 s behind them) are measured by ``python -m bench.grouping_bench``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import queue
import random
import re
import selectors
import socket
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import websocket

from examples.processor.mean import encode
from examples.processor.runner import Processor

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "pool-bench-password"
UPDATE_VALUES = 25_000  # 200,000 bytes per update
TOKEN_MARGIN = 600.0  # seconds a cached user's token must still live for a run to reuse it


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def checked(response: requests.Response, what: str) -> dict:
    if response.status_code >= 300:
        raise SystemExit(f"{what} failed: {response.status_code} {response.text[:300]}")
    return response.json()


# --- users -----------------------------------------------------------------------------


def signup(auth_url: str) -> dict:
    """A new user (its id, name and access token)."""
    name = f"pb_{uuid.uuid4().hex[:10]}"
    for _attempt in range(60):  # auth answers 429 while its hashing queue is full: wait it out
        response = requests.post(f"{auth_url}/auth/signup", timeout=60,
                                 json={"user_name": name, "password": PASSWORD})
        if response.status_code != 429:
            break
        time.sleep(float(response.json()["error"].get("retry_after") or 1))
    body = checked(response, "signup")
    return {k: body[k] for k in ("user_id", "user_name", "access_token")}


def load_users(cache: Path, auth_url: str, count: int, http: requests.Session) -> list[dict]:
    """``count`` users with valid tokens: from the cache when it still works, signups for the rest."""
    users: list[dict] = []
    try:
        users = json.loads(cache.read_text()).get(auth_url, [])
    except (OSError, ValueError):
        pass
    if users:
        # The oldest token of the cache: a run (connects, catch-ups, window) takes minutes, and a
        # token expiring in the middle of it fails its uploads (access tokens live 15 minutes).
        probe = http.get(f"{auth_url}/auth/validate", timeout=10,
                         headers={"Authorization": f"Bearer {users[0]['access_token']}"})
        if probe.status_code != 200 or float(probe.json().get("expires_at") or 0) < time.time() + TOKEN_MARGIN:
            users = []  # another fleet (or tokens expiring soon): start over
    missing = count - len(users)
    if missing > 0:
        started = time.perf_counter()

        # auth hashes 4 at a time; more threads only queue there.
        with ThreadPoolExecutor(6) as ex:
            users += list(ex.map(lambda _n: signup(auth_url), range(missing)))
        print(f"signed up {missing} users in {time.perf_counter() - started:.1f}s", flush=True)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            try:
                all_users = json.loads(cache.read_text())
            except (OSError, ValueError):
                all_users = {}
            all_users[auth_url] = users
            cache.write_text(json.dumps(all_users))
        except OSError as exc:
            print(f"(users not cached: {exc})")
    return users[:count]


# --- raw Socket.IO members -----------------------------------------------------------------


class Members:
    """Many Socket.IO connections read by one epoll loop; notes when each got each pool-result.

    The loop must cost far less than the gateway it measures (one thread for thousands of
    sockets): after the handshake (websocket-client) each socket is read raw, ``recv`` of
    whatever the kernel holds, and the server's unmasked frames are cut out of that buffer here;
    only ``pool-result`` events are JSON-parsed. An event's arrival time is the moment the
    epoll wait that reported its socket readable returned (taken once per wait): the data was
    in the kernel by then, so this never understates the fleet's latency, and the bench's own
    parsing of the thousands of sockets in that wait is not counted as the fleet's.
    """

    # Bytes taken from a socket per read (one read per readiness; the rest waits for the next).
    READ_BYTES = 1 << 18

    def __init__(self, gateway_url: str) -> None:
        parts = urlsplit(gateway_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.url = f"{scheme}://{parts.netloc}/socket.io/?EIO=4&transport=websocket"
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.arrivals: dict[int, dict[str, tuple[float, dict]]] = {}  # member -> result_id -> (time, event)
        self.on_result: Any = None  # callback(member, event, arrived_at), called on the loop thread
        self.sockets: dict[int, websocket.WebSocket] = {}
        # Per member: bytes read but not yet a whole frame (at most one frame plus READ_BYTES), and
        # a fragmented message's parts so far (the gateway does not fragment; bounded by its cap).
        self.buffers: dict[int, bytearray] = {}
        self.fragments: dict[int, list[bytes]] = {}
        self.errors: list[str] = []
        self.answers: list[str] = []  # acks of events sent with an ack id (a few, set-up only)
        self.pings = 0
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="members", daemon=True)
        self._wake_r, self._wake_w = socket.socketpair()
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    def connect(self, member: int, token: str) -> None:
        ws = websocket.create_connection(self.url, timeout=30, enable_multithread=True)
        opened = ws.recv()  # Engine.IO OPEN: 0{"sid", "pingInterval", ...}
        if not opened.startswith("0"):
            raise RuntimeError(f"unexpected open packet {opened[:80]!r}")
        ws.send("40" + json.dumps({"token": token}))  # Socket.IO CONNECT with the auth payload
        while True:
            packet = ws.recv()
            if packet == "2":
                ws.send("3")
            elif packet.startswith("40"):
                break
            elif packet.startswith("44"):
                raise RuntimeError(f"connection refused: {packet[2:200]}")
            else:
                self._handle(member, packet.encode(), time.time())
        # websocket-client reads a frame's exact length (never ahead): the socket holds the rest.
        with self.lock:
            self.sockets[member] = ws
            self.buffers[member] = bytearray()
            self.arrivals.setdefault(member, {})
            self.selector.register(ws.sock, selectors.EVENT_READ, member)
        self._wake_w.send(b"x")

    def start(self) -> None:
        self._thread.start()

    def _handle(self, member: int, payload: bytes, arrived: float) -> None:
        if payload == b"2":  # Engine.IO ping: answer or the gateway drops us
            if member in self.sockets:
                self.sockets[member].send("3")
            self.pings += 1
            return
        if payload.startswith(b"43"):
            self.answers.append(payload.decode())
            return
        if not payload.startswith(b'42["pool-result"'):
            return  # group-status, file-status, ...: not measured, not parsed
        try:
            name, data = json.loads(payload[2:])[:2]
        except (ValueError, TypeError):
            return
        if isinstance(data, dict):
            with self.lock:
                self.arrivals.setdefault(member, {}).setdefault(str(data.get("result_id")), (arrived, data))
            if self.on_result is not None:
                self.on_result(member, data, arrived)

    def _frames(self, member: int, buf: bytearray, arrived: float) -> None:
        """Cut the server's (unmasked) WebSocket frames out of ``buf`` and handle each."""
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head:pos + head + length])
            pos += head + length
            self.frames += 1
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode == 0x9:  # WebSocket ping
                self.sockets[member].pong(payload)
            elif opcode in (0x1, 0x2, 0x0):
                parts = self.fragments.pop(member, [])
                if not fin:
                    self.fragments[member] = [*parts, payload]
                elif opcode == 0x1 or parts:
                    self._handle(member, b"".join([*parts, payload]), arrived)
            elif opcode == 0x8:
                raise ConnectionError("closed by the gateway")
        del buf[:pos]

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready = self.selector.select(timeout=0.5)
            arrived = time.time()  # once per wait: see the class docstring
            for key, _ in ready:
                member = key.data
                if member is None:
                    self._wake_r.recv(4096)
                    continue
                ws = self.sockets[member]
                try:
                    data = ws.sock.recv(self.READ_BYTES)
                    if not data:
                        raise ConnectionError("connection closed")
                    buf = self.buffers[member]
                    buf += data
                    self._frames(member, buf, arrived)
                except (websocket.WebSocketException, OSError) as exc:
                    self.errors.append(f"member {member}: {exc!r}")
                    with self.lock:
                        self.selector.unregister(ws.sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for ws in list(self.sockets.values()):
            try:
                ws.close(timeout=0.2)
            except Exception:  # noqa: BLE001 - closing anyway
                pass


# --- the processor ---------------------------------------------------------------------


class BenchProcessor(Processor):
    """The reference processor, posting the mean tiled to ``result_bytes`` (a big result)."""

    def __init__(self, *args: Any, result_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result_bytes = result_bytes - result_bytes % 8
        self.posts: dict[str, tuple[float, float, str]] = {}  # group -> (post start, 201 at, sha256)
        self.arrays_used: dict[str, int] = {}

    def compute(self, group_id: str) -> tuple[bytes, int]:
        mean, used = super().compute(group_id)
        self.arrays_used[group_id] = used
        reps = -(-self.result_bytes // len(mean))
        return (mean * reps)[:self.result_bytes], used

    def post(self, group_id: str, data: bytes) -> str | None:
        started = time.time()
        result_id = super().post(group_id, data)
        self.posts[group_id] = (started, time.time(), hashlib.sha256(data).hexdigest())
        return result_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- downloads -------------------------------------------------------------------------


class Downloader:
    """``workers`` threads, each with a keep-alive connection, streaming whole results (1 MiB reads)."""

    def __init__(self, workers: int, verify_every: int) -> None:
        self.jobs: queue.Queue[tuple[int, str, str, int, str] | None] = queue.Queue()
        self.done: list[tuple[int, float, int, bool | None]] = []  # (member, finished, bytes, sha ok)
        self.errors: list[str] = []
        self.verify_every = verify_every
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        conns: dict[str, http.client.HTTPConnection] = {}
        while True:
            job = self.jobs.get()
            if job is None:
                return
            member, url, token, size, sha = job
            parts = urlsplit(url)
            for attempt in range(2):
                conn = conns.get(parts.netloc)
                if conn is None:
                    conn = conns[parts.netloc] = http.client.HTTPConnection(parts.netloc, timeout=60)
                try:
                    conn.request("GET", parts.path, headers={"Authorization": f"Bearer {token}"})
                    response = conn.getresponse()
                    digest = hashlib.sha256() if member % self.verify_every == 0 else None
                    got = 0
                    while True:
                        block = response.read(1 << 20)
                        if not block:
                            break
                        got += len(block)
                        if digest is not None:
                            digest.update(block)
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")
                    ok = None if digest is None else digest.hexdigest() == sha
                    self.done.append((member, time.time(), got, ok if got == size else False))
                    break
                except (OSError, http.client.HTTPException, RuntimeError) as exc:
                    conn.close()
                    conns.pop(parts.netloc, None)
                    if attempt:
                        self.errors.append(f"member {member}: {exc!r}")

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


def metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- catch-up of many results -------------------------------------------------------------


# Results written per insert_many while seeding (a batch of documents is held at a time).
SEED_BATCH = 1000


def seed_results(args: argparse.Namespace, pool_id: str, count: int, fsm_url: str) -> None:
    """SETUP SHORTCUT (``--seed-results``): ``count`` stored, numbered results written straight into
    pool_aggregator's ``results`` collection, shaped as it stores them (as
    tests/e2e/test_result_feed.py does), and the pool's seq counter moved past them. Making 10,000
    results through the API takes hours on this machine (see README); what is measured, the
    member's catch-up, reads them through pool_aggregator's real route and the gateway either way.
    Only for a pool no processor posts to while this runs (the counter's compare-and-set checks it)."""
    import pymongo

    if not args.mongodb_uri or not args.mongodb_db:
        raise SystemExit("--seed-results needs --mongodb-uri and --mongodb-db (the fleet's MONGODB_URI/_DB)")
    db = pymongo.MongoClient(args.mongodb_uri)[args.mongodb_db]
    db.result_counters.update_one({"_id": pool_id}, {"$setOnInsert": {"seq": 0, "pending": None}}, upsert=True)
    counter = db.result_counters.find_one({"_id": pool_id}) or {}
    if counter.get("pending"):
        raise SystemExit(f"pool {pool_id} has a result being numbered; seed a pool nobody posts to")
    first_seq, now = int(counter.get("seq") or 0) + 1, time.time()
    # created_max: the running maximum of created_ts (MongoGroupStore numbers results with it),
    # carried on from the pool's last result; none if that has none (the store's rule).
    before = db.results.find_one({"pool_id": pool_id, "seq": first_seq - 1}, {"created_max": 1}) or {}
    high = before.get("created_max") if first_seq > 1 else float("-inf")
    for start in range(0, count, SEED_BATCH):
        docs = []
        for n in range(start, min(count, start + SEED_BATCH)):
            rid = uuid.uuid4().hex
            docs.append({"_id": rid, "result_id": rid, "pool_id": pool_id, "group_id": f"{pool_id}-seed-{n}",
                         "window_start": iso(now - 120), "window_end": iso(now - 119), "file_name": "seed.bin",
                         "size": 1, "sha256": "0" * 64, "created": iso(now + n / 1000),
                         "created_ts": now + n / 1000, "stored": True, "published": True, "seq": first_seq + n,
                         "download_url": f"{fsm_url}/file/{rid}"})
            if high is not None:
                high = docs[-1]["created_max"] = max(high, now + n / 1000)
        db.results.insert_many(docs)
    moved = db.result_counters.update_one({"_id": pool_id, "seq": first_seq - 1, "pending": None},
                                          {"$set": {"seq": first_seq + count - 1}})
    if moved.modified_count != 1:
        found = db.result_counters.find_one({"_id": pool_id})
        raise SystemExit(f"the seq counter of {pool_id} moved while seeding: {found}")


def acknowledge_first(args: argparse.Namespace, auth_url: str, pool_id: str, member_user: dict) -> None:
    """The member connects, gets seq 1 (its catch-up), acknowledges it with ``ack-result`` and leaves."""
    token = checked(requests.put(f"{auth_url}/auth/login/{member_user['user_name']}", timeout=30,
                                 json={"password": PASSWORD}), "member login")["access_token"]
    members = Members(args.gateway)
    members.start()
    members.connect(0, token)
    deadline = time.time() + 60
    while time.time() < deadline and not any(int(e.get("seq") or 0) == 1 for _, e in members.arrivals[0].values()):
        time.sleep(0.05)
    members.sockets[0].send("421" + json.dumps(["ack-result", {"pool_id": pool_id, "seq": 1}]))
    while time.time() < deadline and not members.answers:
        time.sleep(0.05)
    members.close()
    if not members.answers or "error" in members.answers[0]:
        raise SystemExit(f"ack-result of seq 1 not answered: {members.answers[:1]}")
    print(f"the member got seq 1 and acknowledged it: {members.answers[0][:80]}", flush=True)


def catchup(args: argparse.Namespace, http: requests.Session, auth_url: str, agg_url: str,
            admin_h: dict[str, str], fsm_url: str = "") -> int:
    """One member away while ``args.catchup`` results arrive; time its catch-up on connect."""
    from client.api import DropboxClient

    if args.catchup_pool:
        # Measure only: a pool made by an earlier run, and its member (printed by that run).
        if not args.catchup_user:
            raise SystemExit("--catchup-pool needs --catchup-user (the member the earlier run printed)")
        member_user = {"user_name": args.catchup_user}
        return measure_catchup(args, http, auth_url, agg_url, args.catchup_pool, member_user)
    count = args.catchup
    pool = checked(http.post(f"{auth_url}/auth/pools", headers=admin_h, timeout=30, json={
        "name": f"catchup-{uuid.uuid4().hex[:6]}", "window_seconds": 1, "close_grace_seconds": 0,
        "processing_timeout_seconds": 600}), "create pool")
    pool_id = str(pool["pool_id"])
    key = {"X-API-Key": checked(http.post(f"{auth_url}/auth/pools/{pool_id}/processor-keys", headers=admin_h,
                                          timeout=30), "processor key")["api_key"]}
    # Users of their own: the member catches up in every pool it belongs to (pools sorted by id),
    # so a cached user, a member of earlier runs' pools, would be sent their results too.
    uploader_user, member_user = signup(auth_url), signup(auth_url)
    print(f"pool {pool_id}; the member who will catch up: {member_user['user_name']}", flush=True)
    for user, role in ((uploader_user, "contributor"), (member_user, "listener")):
        checked(http.post(f"{auth_url}/auth/pools/{pool_id}/members", headers=admin_h, timeout=30,
                          json={"user_name": user["user_name"], "role": role}), "add member")
    if args.seed_results:
        # A reconnecting member: it got result 1 and acknowledged it (ack-result, on the wire), went
        # away, and N results came meanwhile: on connect it is owed 2..N+1, after its ack.
        seed_results(args, pool_id, 1, fsm_url)
        acknowledge_first(args, auth_url, pool_id, member_user)
        began = time.perf_counter()
        seed_results(args, pool_id, count, fsm_url)
        print(f"{count} results SEEDED into pool_aggregator's MongoDB in {time.perf_counter() - began:.1f}s "
              "(setup shortcut: the results were not made through the API)", flush=True)
        return measure_catchup(args, http, auth_url, agg_url, pool_id, member_user, acked=1)

    # count updates, each in a one-second window of its own, ending a minute ago (well within
    # the pool's 7-day max_late, every window long closed): one group, one result each.
    uploader = DropboxClient(args.gateway, auth_url, None, agg_url, timeout=120)
    uploader.login(uploader_user["user_name"], PASSWORD)
    uploader.connect()
    first = int(time.time()) - 60 - count
    began = time.perf_counter()
    for batch_start in range(0, count, 1000):
        n = min(1000, count - batch_start)
        # Plain text items ("U0000042"): raw integers can spell a magic number ("#!" is refused).
        blob = b"".join(f"U{batch_start + i:07d}".encode() for i in range(n))
        items = [{"timestamp": iso(first + batch_start + i + 0.5), "offset": 8 * i, "length": 8,
                  "name": f"u{batch_start + i}.bin"} for i in range(n)]
        uploader.upload(io.BytesIO(blob), file_name="batch.bin", pool_id=pool_id, items=items)
    uploader.disconnect()
    print(f"{count} updates sent in {time.perf_counter() - began:.1f}s (batches of 1,000 items)", flush=True)

    # The processor: every ready group -> files (takes the lease) -> a small result of its own.
    began = time.perf_counter()
    posted: dict[str, str] = {}  # group_id -> result_id
    deadline = time.time() + args.catchup_timeout
    session_local = threading.local()

    def session() -> requests.Session:
        if not hasattr(session_local, "s"):
            session_local.s = requests.Session()
            session_local.s.headers.update(key)
        return session_local.s

    def process(group_id: str) -> None:
        base = f"{agg_url}/pools/{pool_id}/groups/{group_id}"
        # A 503 (the result not stored in time: a loaded fleet) leaves the group processing under
        # our lease: post again, until the run's deadline.
        while time.time() < deadline:
            try:
                files = session().get(f"{base}/files", timeout=60)
                if files.status_code not in (200, 409):
                    raise RuntimeError(f"files {files.status_code}")
                data = f"result of {group_id}".encode()
                answer = session().post(f"{base}/result", data=data, timeout=60,
                                        headers={"X-File-Name": "r.bin"})
                if answer.status_code == 201:
                    posted[group_id] = str(answer.json()["result_id"])
                    return
                if answer.status_code == 409:
                    return
                raise RuntimeError(f"result {answer.status_code}")
            except (requests.RequestException, RuntimeError):
                time.sleep(1.0)

    while len(posted) < count and time.time() < deadline:
        ready, cursor = [], None
        while True:
            params = {"status": "ready", "limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = checked(session().get(f"{agg_url}/pools/{pool_id}/groups", params=params, timeout=60),
                           "ready groups")
            ready += [g["group_id"] for g in page["groups"] if g["group_id"] not in posted]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if not ready:
            time.sleep(1.0)
            continue
        with ThreadPoolExecutor(args.catchup_workers) as ex:
            list(ex.map(process, ready))
        print(f"  {len(posted)}/{count} results posted ({time.perf_counter() - began:.0f}s)", flush=True)
    print(f"{len(posted)} results posted in {time.perf_counter() - began:.1f}s", flush=True)
    if len(posted) < count:
        print(f"NOT OK: only {len(posted)} of {count} results within {args.catchup_timeout:.0f}s")
        return 1

    return measure_catchup(args, http, auth_url, agg_url, pool_id, member_user)


def measure_catchup(args: argparse.Namespace, http: requests.Session, auth_url: str, agg_url: str,
                    pool_id: str, member_user: dict, acked: int = 0) -> int:
    """The member comes back: every result after the ``acked`` seq it acknowledged (all of the
    pool's when it acknowledged none), streamed on connect."""
    # A fresh token: making the results may have outlasted the cached one.
    token = checked(http.put(f"{auth_url}/auth/login/{member_user['user_name']}", timeout=30,
                             json={"password": PASSWORD}), "member login")["access_token"]
    count, after = 0, acked
    while True:  # how many results the pool has (GET /pools/<id>/results, paged by after_seq)
        page = checked(http.get(f"{agg_url}/pools/{pool_id}/results", params={"after_seq": after, "limit": 1000},
                                headers={"Authorization": f"Bearer {token}"}, timeout=60), "results")
        count += len(page["results"])
        if not page.get("more") or not page["results"]:
            break
        after = int(page["next_seq"])
    print(f"pool {pool_id}: {count} results after seq {acked}; the member connects", flush=True)
    members = Members(args.gateway)
    seqs: list[int] = []
    done = threading.Event()

    def on_result(member: int, event: dict, arrived: float) -> None:
        seq = int(event.get("seq") or 0)
        if event.get("pool_id") != pool_id or seq > acked + count:
            return  # a result posted after the count was taken (live, not caught up)
        seqs.append(seq)
        if len(seqs) >= count:
            done.set()

    members.on_result = on_result
    members.start()
    connect_at = time.time()
    members.connect(0, token)
    done.wait(args.timeout)
    with members.lock:
        arrivals = sorted(t for t, e in members.arrivals.get(0, {}).values()
                          if e.get("pool_id") == pool_id and acked < int(e.get("seq") or 0) <= acked + count)
    members.close()
    if not arrivals:
        print("NOT OK: no pool-result reached the member")
        return 1
    last = arrivals[-1] - connect_at
    unique = len(set(seqs))
    # Delivery is at least once: a result posted just before the connect may also come live (the
    # broadcast reaches the socket once it is in the pool's room), before or amid the catch-up's
    # pages; the client library holds it until the gap before it is filled and drops the second
    # copy. So: acked+1..acked+count must appear in order as a subsequence of what arrived.
    expected = acked + 1
    for seq in seqs:
        if seq == expected:
            expected += 1
    in_order = expected == acked + count + 1
    outside = len(seqs) - count if in_order else None
    ok = unique == count and in_order and last <= 5.0
    order = (f"{acked + 1}..{acked + count} in order, {outside} more live or repeated" if in_order
             else "NOT in order")
    print(f"\ncatch-up: {len(arrivals)}/{count} results ({len(seqs)} events, {unique} distinct seq, "
          f"{order}); first {arrivals[0] - connect_at:.3f}s, "
          f"last {last:.3f}s after the connect (target <= 5); {count / max(last, 1e-9):,.0f} results/s")
    if not in_order:
        print(f"  seq {expected} never came after seq {expected - 1}; the first arrivals: {seqs[:8]}")
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


# --- set-up shared by the measurements -------------------------------------------------------


def make_pool(http: requests.Session, auth_url: str, admin_h: dict[str, str], window: int,
              processor_url: str | None = None) -> tuple[str, str]:
    """A new pool (``window`` s, no grace) and a processor key for it: ``(pool_id, api_key)``."""
    body: dict[str, Any] = {"name": f"bench-{uuid.uuid4().hex[:6]}", "window_seconds": window,
                            "close_grace_seconds": 0, "processing_timeout_seconds": 120}
    if processor_url:
        body["processor_url"] = processor_url
    pool_id = str(checked(http.post(f"{auth_url}/auth/pools", headers=admin_h, timeout=10, json=body),
                          "create pool")["pool_id"])
    key = checked(http.post(f"{auth_url}/auth/pools/{pool_id}/processor-keys", headers=admin_h, timeout=10),
                  "processor key")["api_key"]
    return pool_id, str(key)


def add_members(auth_url: str, admin_h: dict[str, str], pool_id: str, users: list[dict], contributors: int) -> None:
    """``users`` into the pool: the first ``contributors`` as contributors, the rest as listeners."""
    started = time.perf_counter()

    def add(n: int) -> None:
        role = "contributor" if n < contributors else "listener"
        checked(requests.post(f"{auth_url}/auth/pools/{pool_id}/members", headers=admin_h, timeout=30,
                              json={"user_name": users[n]["user_name"], "role": role}), "add member")

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(add, range(len(users))))
    print(f"pool {pool_id}: {len(users)} members added in {time.perf_counter() - started:.1f}s", flush=True)


def connect_members(args: argparse.Namespace, http: requests.Session, users: list[dict], count: int,
                    members: Members | None = None, first: int = 0) -> Members:
    """``count`` raw member connections (connection ``first + n`` is user ``n % len(users)``'s), then a
    wait until the gateway's catch-ups of the connects are done (bounded: 5 x ``--timeout``)."""
    if members is None:
        members = Members(args.gateway)
        members.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(args.connect_workers) as ex:
        list(ex.map(lambda n: members.connect(first + n, users[n % len(users)]["access_token"]), range(count)))
    print(f"{count} member connections ({len(users)} users) up in {time.perf_counter() - started:.1f}s",
          flush=True)
    # Every connect starts a catch-up (the gateway asks pool_aggregator for the member's ack and its
    # results: two requests each, GATEWAY_MAX_CATCHUPS at a time); what is measured is a result
    # reaching members that are connected, so the connect storm's catch-ups finish first.
    waited = time.perf_counter()
    gw_metrics = ""
    while time.perf_counter() - waited < args.timeout * 5:
        gw_metrics = http.get(f"{args.gateway.rstrip('/')}/metrics", timeout=10).text
        if not metric(gw_metrics, "gateway_catchups"):  # 0 (None: a gateway without the gauge)
            break
        time.sleep(1.0)
    print(f"the connects' catch-ups done {time.perf_counter() - waited:.1f}s later "
          f"(gateway_catchups={metric(gw_metrics, 'gateway_catchups')})", flush=True)
    print(f"gateway /metrics: gateway_connected_sockets={metric(gw_metrics, 'gateway_connected_sockets')} "
          f"gateway_max_connections={metric(gw_metrics, 'gateway_max_connections')}", flush=True)
    return members


# --- fairness: one pool's result fan-out next to another pool's result --------------------------


def _ready_groups(http: requests.Session, agg_url: str, pool_id: str, key: str, want: int,
                  timeout: float) -> list[str]:
    """The pool's ``ready`` groups, once there are ``want`` of them (polled, at most ``timeout`` s)."""
    deadline = time.time() + timeout
    while True:
        groups = checked(http.get(f"{agg_url}/pools/{pool_id}/groups", params={"status": "ready", "limit": "100"},
                                  headers={"X-API-Key": key}, timeout=10), "groups")["groups"]
        if len(groups) >= want or time.time() > deadline:
            return [str(g["group_id"]) for g in groups]
        time.sleep(0.2)


def _post_result(agg_url: str, pool_id: str, key: str, group_id: str, data: bytes) -> tuple[str, float]:
    """Lease the group (its files) and post ``data`` as its result: ``(result_id, time of the 201)``."""
    headers = {"X-API-Key": key}
    checked(requests.get(f"{agg_url}/pools/{pool_id}/groups/{group_id}/files", headers=headers, timeout=30),
            "group files")
    body = checked(requests.post(f"{agg_url}/pools/{pool_id}/groups/{group_id}/result", data=data, timeout=120,
                                 headers={**headers, "X-File-Name": f"fair_{group_id}.bin"}), "result post")
    return str(body["result_id"]), time.time()


def fairness(args: argparse.Namespace, http: requests.Session, auth_url: str, agg_url: str,
             uploader_url: str, admin_h: dict[str, str]) -> int:
    """Issue 10: does one pool's result delivery delay another pool's by more than a second?

    Pool A ("busy") has ``--members`` member connections and ``--fair-busy-results`` groups; pool
    B ("quiet") one member connection and two groups. Every group is made by one upload stamped
    in a past window of its own (so the ticker turns it ready at once). Then:

    1. B's first result is posted alone: B's member's latency (post's 201 -> its ``pool-result``)
       is the baseline.
    2. A's results are posted all at once (threads), each fanned out to every A connection; as
       soon as the first of them is answered 201 (its fan-out under way), B's second result is
       posted. B's member's latency now is what A's work costs B (target: <= 1 s more than the
       baseline, i.e. no pool's work delays another pool's delivery by more than a second).
    """
    user_count = -(-args.members // max(1, args.sockets_per_user))
    users = load_users(args.users_cache, auth_url, user_count + 1, http)
    busy_users, quiet_user = users[:user_count], users[user_count]
    window = 60
    busy, busy_key = make_pool(http, auth_url, admin_h, window)
    quiet, quiet_key = make_pool(http, auth_url, admin_h, window)
    add_members(auth_url, admin_h, busy, busy_users, 1)
    add_members(auth_url, admin_h, quiet, [quiet_user], 1)
    members = connect_members(args, http, busy_users, args.members)
    quiet_member = args.members
    connect_members(args, http, [quiet_user], 1, members, first=quiet_member)

    rng = random.Random(11)
    update = encode(rng.uniform(-1, 1) for _ in range(UPDATE_VALUES))
    now = time.time()
    base = (now // window - 5 - args.fair_busy_results) * window  # whole windows, all closed

    def upload(user: dict, pool_id: str, ts: float) -> None:
        checked(requests.post(f"{uploader_url}/file/upload", timeout=60,
                              headers={"Authorization": f"Bearer {user['access_token']}"},
                              files={"file": ("update.f64", update, "application/octet-stream")},
                              data={"pool_id": pool_id, "timestamp": iso(ts)}), "upload")

    for n in range(args.fair_busy_results):
        upload(busy_users[0], busy, base + n * window + 1)
    for n in range(2):
        upload(quiet_user, quiet, base + n * window + 1)
    busy_groups = _ready_groups(http, agg_url, busy, busy_key, args.fair_busy_results, args.timeout)
    quiet_groups = _ready_groups(http, agg_url, quiet, quiet_key, 2, args.timeout)
    if len(busy_groups) < args.fair_busy_results or len(quiet_groups) < 2:
        print(f"NOT OK: groups not ready in {args.timeout}s (busy {len(busy_groups)}, quiet {len(quiet_groups)})")
        members.close()
        return 1
    result = os.urandom(int(args.result_mb * 1024 * 1024))

    def quiet_latency(result_id: str, posted: float) -> float | None:
        deadline = posted + args.timeout
        while time.time() < deadline:
            with members.lock:
                got = members.arrivals.get(quiet_member, {}).get(result_id)
            if got is not None:
                return got[0] - posted
            time.sleep(0.005)
        return None

    baseline_id, baseline_at = _post_result(agg_url, quiet, quiet_key, quiet_groups[0], result)
    baseline = quiet_latency(baseline_id, baseline_at)

    first_busy = threading.Event()
    busy_posts: list[tuple[str, float]] = []

    def post_busy(group_id: str) -> None:
        busy_posts.append(_post_result(agg_url, busy, busy_key, group_id, result))
        first_busy.set()

    with ThreadPoolExecutor(len(busy_groups)) as ex:
        futures = [ex.submit(post_busy, g) for g in busy_groups]
        first_busy.wait(args.timeout)
        loaded_id, loaded_at = _post_result(agg_url, quiet, quiet_key, quiet_groups[1], result)
        loaded = quiet_latency(loaded_id, loaded_at)
        for f in futures:
            f.result()

    def busy_last(result_id: str, posted: float) -> tuple[int, float | None]:
        deadline = posted + args.timeout
        while True:
            with members.lock:
                times = [got[result_id][0] for m, got in members.arrivals.items()
                         if m != quiet_member and result_id in got]
            if len(times) >= args.members or time.time() > deadline:
                return len(times), (max(times) - posted if times else None)
            time.sleep(0.02)

    print(f"\nfairness: pool A {args.members} connections, {len(busy_groups)} results of "
          f"{len(result):,} bytes posted at once; pool B one member")
    for result_id, posted in busy_posts:
        reached, last = busy_last(result_id, posted)
        print(f"  A result {result_id[:8]}: {reached}/{args.members} members, last "
              f"{'-' if last is None else f'{last:.3f}s'} after its 201")
    print(f"  B alone:            pool-result {'-' if baseline is None else f'{baseline:.3f}s'} after the 201")
    print(f"  B during A's fan-out: pool-result {'-' if loaded is None else f'{loaded:.3f}s'} after the 201 "
          f"(target: <= 1 s more than alone)")
    members.close()
    ok = baseline is not None and loaded is not None and loaded - baseline <= 1.0
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:5000")
    parser.add_argument("--admin-user", default="admin")
    parser.add_argument("--admin-password", default="admin-password")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--contributors", type=int, default=100)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--downloaders", type=int, default=500)
    parser.add_argument("--result-mb", type=float, default=5.0)
    parser.add_argument("--download-workers", type=int, default=32,
                        help="concurrent downloads (threads, each a keep-alive connection)")
    parser.add_argument("--verify-every", type=int, default=10, help="sha256-check every Nth download")
    parser.add_argument("--connect-workers", type=int, default=16)
    parser.add_argument("--users-cache", type=Path, default=ROOT / ".run" / "pool_bench_users.json")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for results/downloads")
    parser.add_argument("--notify-target", type=float, default=None,
                        help="seconds from the post to the last pool-result (default 0.5, 1.0 above 1,000 members)")
    parser.add_argument("--sockets-per-user", type=int, default=1,
                        help="member connections per user (signups are argon2-bound: ~1/s on a loaded 2-core "
                             "machine); the gateway's fan-out cost is per connection")
    parser.add_argument("--catchup", type=int, default=0,
                        help="instead: the catch-up of this many results by one reconnecting member")
    parser.add_argument("--catchup-pool", default=None,
                        help="measure the catch-up only, on this pool made by an earlier --catchup run")
    parser.add_argument("--catchup-user", default=None, help="with --catchup-pool: the member's user name")
    parser.add_argument("--catchup-workers", type=int, default=8)
    parser.add_argument("--seed-results", action="store_true",
                        help="with --catchup: SETUP SHORTCUT, write the N results straight into pool_aggregator's "
                             "MongoDB (as tests/e2e/test_result_feed.py does) instead of making them through the API")
    parser.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI"),
                        help="with --seed-results: the fleet's MONGODB_URI (default: $MONGODB_URI)")
    parser.add_argument("--mongodb-db", default=os.environ.get("MONGODB_DB", "dropbox"),
                        help="with --seed-results: the fleet's MONGODB_DB (default: $MONGODB_DB or dropbox)")
    parser.add_argument("--fairness", action="store_true",
                        help="issue 10: pool A's result fan-out next to pool B's result (see fairness())")
    parser.add_argument("--fair-busy-results", type=int, default=4,
                        help="with --fairness: results posted to pool A at once")
    parser.add_argument("--catchup-timeout", type=float, default=1800.0,
                        help="bound on making the results (s)")
    args = parser.parse_args(argv)
    if args.notify_target is None:
        args.notify_target = 0.5 if args.members <= 1000 else 1.0
    user_count = -(-args.members // max(1, args.sockets_per_user))
    if not 0 < args.contributors <= user_count or not 0 <= args.downloaders <= args.members:
        parser.error("need 0 < contributors <= members / sockets-per-user and downloaders <= members")

    http = requests.Session()
    config = checked(http.get(f"{args.gateway.rstrip('/')}/config.json", timeout=10), "config.json")
    auth_url, agg_url = config["auth_url"], config["pool_aggregator_url"]
    uploader_url = config["file_uploader_url"]
    admin = checked(http.put(f"{auth_url}/auth/login/{args.admin_user}", timeout=30,
                             json={"password": args.admin_password}), "admin login")
    admin_h = {"Authorization": f"Bearer {admin['access_token']}"}
    if args.catchup or args.catchup_pool:
        return catchup(args, http, auth_url, agg_url, admin_h, config["file_service_manager_url"])
    if args.fairness:
        return fairness(args, http, auth_url, agg_url, uploader_url, admin_h)

    users = load_users(args.users_cache, auth_url, user_count, http)
    hook_port = free_port()
    window = args.window
    pool_id, key = make_pool(http, auth_url, admin_h, window, f"http://127.0.0.1:{hook_port}/")
    add_members(auth_url, admin_h, pool_id, users, args.contributors)
    members = connect_members(args, http, users, args.members)

    result_bytes = int(args.result_mb * 1024 * 1024)
    processor = BenchProcessor(agg_url, pool_id, key, poll_seconds=0.5, timeout=60, result_bytes=result_bytes)
    processor.start_webhook(hook_port)
    threading.Thread(target=processor.run, name="processor", daemon=True).start()

    downloader = Downloader(args.download_workers, max(1, args.verify_every))
    queued: set[int] = set()

    def on_result(member: int, event: dict, arrived: float) -> None:
        # A member downloads as soon as it is told (the first downloaders members).
        if member < args.downloaders and member not in queued:
            queued.add(member)
            downloader.jobs.put((member, str(event["download_url"]), users[member % user_count]["access_token"],
                                 int(event["size"]), str(event["sha256"])))

    members.on_result = on_result

    # The contributors upload inside one window (the next one that leaves them most of it).
    now = time.time()
    w_start = (now // window + 1) * window
    time.sleep(max(0.0, w_start + 0.05 - time.time()))
    rng = random.Random(7)
    updates = [encode(rng.uniform(-1, 1) for _ in range(UPDATE_VALUES)) for _ in range(8)]

    def upload(n: int) -> float:
        data = updates[n % len(updates)]
        began = time.perf_counter()
        ts = min(time.time(), w_start + window - 0.01)
        checked(requests.post(f"{uploader_url}/file/upload", timeout=60,
                              headers={"Authorization": f"Bearer {users[n]['access_token']}"},
                              files={"file": (f"update{n}.f64", data, "application/octet-stream")},
                              data={"pool_id": pool_id, "timestamp": iso(ts)}), "upload")
        return time.perf_counter() - began

    began = time.perf_counter()
    with ThreadPoolExecutor(16) as ex:
        upload_times = list(ex.map(upload, range(args.contributors)))
    print(f"{args.contributors} updates of {len(updates[0]):,} bytes uploaded in "
          f"{time.perf_counter() - began:.1f}s (p50 {statistics.median(upload_times):.2f}s); "
          f"window ends in {w_start + window - time.time():.1f}s", flush=True)
    if time.time() > w_start + window:
        print("WARNING: the uploads outlasted the window; the group may be incomplete")

    gid = f"{pool_id}-{int(w_start)}"
    deadline = time.time() + window + args.timeout
    while gid not in processor.posts and time.time() < deadline:
        time.sleep(0.05)
    if gid not in processor.posts:
        print(f"NOT OK: no result posted for {gid}")
        return 1
    post_start, posted, sha = processor.posts[gid]
    result_id = processor.results.get(gid)
    print(f"group ready at window end +{post_start - (w_start + window):.2f}s (mean of "
          f"{processor.arrays_used.get(gid)} arrays computed); result post took {posted - post_start:.2f}s",
          flush=True)

    def arrived_all() -> bool:
        with members.lock:
            return all(result_id in got for got in members.arrivals.values())

    while not arrived_all() and time.time() < posted + args.timeout:
        time.sleep(0.02)
    with members.lock:
        times = [got[result_id][0] for got in members.arrivals.values() if result_id in got]
        bad_sha = sum(1 for got in members.arrivals.values()
                      if result_id in got and got[result_id][1].get("sha256") != sha)
    notified = len(times)
    want_downloads = min(args.downloaders, notified)
    while len(downloader.done) + len(downloader.errors) < want_downloads and time.time() < posted + args.timeout:
        time.sleep(0.05)
    downloader.close()
    done = list(downloader.done)

    ok = True
    print(f"\nresult {result_id}: {result_bytes:,} bytes, sha256 {sha[:12]}...")
    if times:
        lat = [t - posted for t in times]
        last = max(lat)
        ok &= notified == args.members and last <= args.notify_target and not bad_sha
        print(f"pool-result at {notified}/{args.members} members; after the post's 201: first "
              f"{min(lat):.3f}s, p50 {pct(lat, 0.5):.3f}s, p99 {pct(lat, 0.99):.3f}s, last {last:.3f}s "
              f"(target <= {args.notify_target}){'' if not bad_sha else f'; {bad_sha} with a wrong sha256'}")
        print(f"  (from the post's start: last {max(times) - post_start:.3f}s; the 201 at epoch {posted:.3f}, "
              f"to line up with the gateway's log)")
    else:
        ok = False
        print("pool-result reached no member")
    if args.downloaders:
        full = [d for d in done if d[2] == result_bytes and d[3] is not False]
        verified = sum(1 for d in done if d[3] is True)
        if done:
            last_dl = max(d[1] for d in done) - posted
            mb = sum(d[2] for d in done) / 1e6
            ok &= len(full) == args.downloaders and last_dl <= 10
            print(f"downloads: {len(full)}/{args.downloaders} complete ({verified} sha256-verified), "
                  f"{mb:,.0f} MB; last done {last_dl:.2f}s after the post's 201 (target <= 10); "
                  f"{mb / max(last_dl, 1e-9):,.0f} MB/s")
        else:
            ok = False
            print("downloads: none finished")
        if downloader.errors:
            print(f"  {len(downloader.errors)} download errors, e.g. {downloader.errors[:2]}")
    if members.errors:
        print(f"{len(members.errors)} socket errors, e.g. {members.errors[:2]}")
    processor.stop()
    members.close()
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
