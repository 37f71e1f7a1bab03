"""Result pipeline benchmark: processors posting results through the real route, on a fleet of its own.

    python -m bench.result_bench [--groups 400] [--sequential 60] [--concurrency 8] [--result-bytes 1024]
                                 [--env KEY=VALUE ...] [--keep-logs DIR]

It starts a fleet of its own (devtools.fleet.Fleet, one process per service on free ports,
never 5000-5004, with a database, vhost, Redis prefix and secantusdb of its own), then,
through the SPEC API only:

1. a pool with ``window_seconds`` 1, its processor key, a contributor and a listener (one
   python-socketio connection to the gateway, which notes when each ``pool-result`` arrived);
2. ``--groups`` ready groups: offline batch uploads (SPEC ``items``, at most 1,000 per upload)
   putting one one-byte update in each of ``--groups`` one-second windows an hour back, long
   closed (as tests/e2e/test_result_feed.py makes its 8);
3. ``POST /pools/<id>/groups/<gid>/result`` (``--result-bytes`` each): the first
   ``--sequential`` groups by one processor client, one post after the other; the rest (up to
   ``--posts`` results in all) by ``--concurrency`` clients at once.

Per phase it prints results/s (201s over the phase's wall time), the seconds from post to
201 and from 201 to the listener's ``pool-result`` (p50, p95, max), and checks that the
listener got every result once with ``seq`` 1..N gapless. The machine's load average is
printed beside the figures (other engineers share the 2 cores).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
import requests
import socketio

from client import DropboxClient
from devtools import infra
from devtools.fleet import SERVICES, Fleet

ADMIN = ("admin", "admin-password-bench")
PASSWORD = "result-bench-password"
BATCH_ITEMS = 1000  # file_uploader's MAX_ITEMS default: one upload holds at most this many updates


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def checked(response: requests.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise SystemExit(f"{what} failed: {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process used so far, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            used[name] = 0.0
    return used


def mongo_ops(uri: str) -> dict[str, int]:
    """MongoDB's operation counters (serverStatus): what the fleet asked of its database."""
    with pymongo.MongoClient(uri) as client:
        counters: dict[str, int] = client.admin.command("serverStatus")["opcounters"]
        return counters


def settle(mongo_uri: str, timeout: float = 60.0) -> None:
    """Until the fleet's database is quiet (under 10 writes in 0.5 s: grouping's aftermath, such
    as file_service_manager marking each file's group, done), so a phase times only its posts."""
    deadline = time.monotonic() + timeout
    before = mongo_ops(mongo_uri)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = mongo_ops(mongo_uri)
        if sum(now[k] - before[k] for k in ("insert", "update", "delete")) < 10:
            return
        before = now


def quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"p50 {statistics.median(ordered):.3f} s, p95 {p95:.3f} s, max {ordered[-1]:.3f} s"


class Listener:
    """One member's socket; when each ``pool-result`` arrived, by result_id (bounded by the
    bench's own results, ``--groups``)."""

    def __init__(self, gateway: str, token: str) -> None:
        self.arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self.duplicates = 0
        self._cond = threading.Condition()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("pool-result", self._on_result)
        self.sio.connect(gateway, auth={"token": token}, transports=["websocket"], wait_timeout=30)

    def _on_result(self, data: dict[str, Any]) -> None:
        now = time.perf_counter()
        with self._cond:
            if data["result_id"] in self.arrived:
                self.duplicates += 1
            else:
                self.arrived[data["result_id"]] = (now, data)
            self._cond.notify_all()

    def wait(self, result_ids: list[str], timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        with self._cond:
            while not all(r in self.arrived for r in result_ids):
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        self.sio.disconnect()


class Bench:
    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.http = requests.Session()
        admin = checked(self.http.put(f"{urls['auth']}/auth/login/{ADMIN[0]}", json={"password": ADMIN[1]},
                                      timeout=30), "admin login")
        self.admin = {"Authorization": f"Bearer {admin['access_token']}"}

    def make_pool(self) -> tuple[str, str]:
        pool = checked(self.http.post(f"{self.urls['auth']}/auth/pools", headers=self.admin, timeout=30,
                                      json={"name": f"rb-{uuid.uuid4().hex[:6]}", "window_seconds": 1,
                                            "processing_timeout_seconds": 600}), "create pool")
        key = checked(self.http.post(f"{self.urls['auth']}/auth/pools/{pool['pool_id']}/processor-keys",
                                     headers=self.admin, timeout=30), "processor key")["api_key"]
        return pool["pool_id"], key

    def member(self, pool_id: str, role: str) -> DropboxClient:
        client = DropboxClient(self.urls["socket_gateway"], self.urls["auth"], self.urls["file_service_manager"],
                               self.urls["pool_aggregator"], timeout=120)
        client.signup(f"rb_{uuid.uuid4().hex[:10]}", PASSWORD)
        checked(self.http.post(f"{self.urls['auth']}/auth/pools/{pool_id}/members", headers=self.admin, timeout=30,
                               json={"user_name": client.user["user_name"], "role": role}), "add member")
        return client

    def ready_groups(self, pool_id: str, key: str, wanted: int, timeout: float) -> list[str]:
        """Every ready group of the pool once there are ``wanted`` of them (paged), oldest first."""
        deadline = time.monotonic() + timeout
        while True:
            found: list[str] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"status": "ready", "limit": 500}
                if cursor:
                    params["cursor"] = cursor
                page = checked(self.http.get(f"{self.urls['pool_aggregator']}/pools/{pool_id}/groups", params=params,
                                             headers={"X-API-Key": key}, timeout=30), "list groups")
                found += [g["group_id"] for g in page["groups"]]
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            if len(found) >= wanted or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def post(session: requests.Session, base: str, key: str, gid: str, body: bytes) -> tuple[float, float, dict]:
    """One result post: (sent at, 201 at, answer); retried on 503/429 (counted as one post,
    timed from its first attempt)."""
    sent = time.perf_counter()
    for _attempt in range(5):
        r = session.post(f"{base}/groups/{gid}/result", data=body, timeout=120,
                         headers={"X-API-Key": key, "X-File-Name": f"{gid}.bin"})
        if r.status_code == 201:
            return sent, time.perf_counter(), r.json()
        if r.status_code not in (429, 503):
            break
        time.sleep(0.5)
    raise RuntimeError(f"result for {gid}: {r.status_code} {r.text[:300]}")


def phase(name: str, groups: list[str], clients: int, base: str, key: str, body: bytes,
          listener: Listener, pids: dict[str, int], mongo_uri: str) -> list[dict[str, Any]]:
    """Post a result for each of ``groups`` with ``clients`` processor clients; print the figures."""
    if not groups:
        return []
    sessions = threading.local()

    def one(gid: str) -> tuple[float, float, dict]:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        return post(sessions.s, base, key, gid, body)

    settle(mongo_uri)
    load = os.getloadavg()[0]
    cpu_before = cpu_seconds(pids)
    ops_before = mongo_ops(mongo_uri)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        done = list(ex.map(one, groups))
    took = time.perf_counter() - started
    ok = listener.wait([d["result_id"] for _s, _a, d in done], 120)
    ops_after = mongo_ops(mongo_uri)
    to_201 = [answered - sent for sent, answered, _d in done]
    to_event = [listener.arrived[d["result_id"]][0] - answered for _s, answered, d in done
                if d["result_id"] in listener.arrived]
    print(f"{name}: {len(groups)} results by {clients} client(s) in {took:.1f} s = "
          f"{len(groups) / took:.1f} results/s (load avg {load:.1f} -> {os.getloadavg()[0]:.1f})")
    print(f"  post -> 201:         {quantiles(to_201)}")
    print(f"  201 -> pool-result:  {quantiles(to_event)}" + ("" if ok else "  (SOME NEVER ARRIVED)"))
    cpu_after = cpu_seconds(pids)
    print("  CPU ms per result:   " + ", ".join(
        f"{n} {1000 * (cpu_after[n] - cpu_before[n]) / len(groups):.0f}" for n in pids))
    print("  MongoDB ops per result (whole fleet): " + ", ".join(
        f"{k} {(ops_after[k] - ops_before[k]) / len(groups):.1f}" for k in ops_after if ops_after[k] != ops_before[k]))
    return [d for _s, _a, d in done]


def run(args: argparse.Namespace, urls: dict[str, str], pids: dict[str, int], mongo_uri: str) -> int:
    bench = Bench(urls)
    pool_id, key = bench.make_pool()
    contributor = bench.member(pool_id, "contributor")
    listen = bench.member(pool_id, "listener")
    listener = Listener(urls["socket_gateway"], listen.token or "")
    started = time.perf_counter()
    base_ts = int(time.time()) - 3600
    contributor.connect()
    try:
        for first in range(0, args.groups, BATCH_ITEMS):
            count = min(BATCH_ITEMS, args.groups - first)
            items = [{"timestamp": iso(base_ts + first + n + 0.5), "offset": n, "length": 1, "name": f"u{n}.bin"}
                     for n in range(count)]
            upload = contributor.upload(io.BytesIO(bytes(count)), file_name="batch.bin", pool_id=pool_id,
                                        items=items)
            contributor.wait_status(upload, timeout=300)
    finally:
        contributor.disconnect()
    groups = bench.ready_groups(pool_id, key, args.groups, args.ready_timeout)
    print(f"{len(groups)} ready groups in {time.perf_counter() - started:.1f} s (upload + grouping)")
    if len(groups) < args.groups:
        print("not every group turned ready")
        return 1
    body = b"RSLT" + os.urandom(max(0, args.result_bytes - 4))
    base = f"{urls['pool_aggregator']}/pools/{pool_id}"
    seen = (listener, pids, mongo_uri)
    last = args.posts or len(groups)
    posted = phase("sequential", groups[:args.sequential], 1, base, key, body, *seen)
    posted += phase("concurrent", groups[args.sequential:last], args.concurrency, base, key, body, *seen)
    listener.wait([d["result_id"] for d in posted], 60)
    seqs = sorted(data["seq"] for _t, data in listener.arrived.values())
    gapless = seqs == list(range(1, len(posted) + 1)) and sorted(d["seq"] for d in posted) == seqs
    print(f"listener: {len(listener.arrived)} results, {listener.duplicates} duplicates, "
          f"seq {'1..' + str(len(seqs)) + ' gapless' if gapless else 'NOT GAPLESS'}")
    listener.close()
    if args.collections:
        with pymongo.MongoClient(mongo_uri) as client:
            for name in client.list_database_names():
                db = client[name]
                print(f"  {name}: " + ", ".join(f"{c} {db[c].estimated_document_count()}"
                                                for c in sorted(db.list_collection_names())))
                if "audit" in db.list_collection_names():
                    actions = db.audit.aggregate([{"$group": {"_id": "$action", "n": {"$sum": 1}}}])
                    print("  audit by action: " + ", ".join(f"{a['_id']} {a['n']}" for a in actions))
    return 0 if gapless and not listener.duplicates else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--sequential", type=int, default=60, help="results posted by one client first")
    parser.add_argument("--concurrency", type=int, default=8, help="processor clients for the rest")
    parser.add_argument("--posts", type=int, default=0,
                        help="results posted in all (default: one per group); the other groups stay ready")
    parser.add_argument("--ready-timeout", type=float, default=900.0,
                        help="seconds to wait for every group to be ready")
    parser.add_argument("--result-bytes", type=int, default=1024)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every service")
    parser.add_argument("--collections", action="store_true", help="print MongoDB's collections at the end")
    parser.add_argument("--keep-logs", default="", help="keep the services' logs in this directory")
    args = parser.parse_args(argv)
    infra.ensure_all()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        mongo_port = infra.free_port()
        mongo = infra.start_secantus(mongo_port, workdir / "mongo", workdir / "secantus.log")
        tag = uuid.uuid4().hex[:8]
        env = {"DROPBOX_ENV": "development", "DATABASE_URL": infra.create_postgres_db("dropbox_bench"),
               "AMQP_URL": infra.create_vhost("dropbox_bench"), "REDIS_URL": "redis://127.0.0.1:6379/0",
               "REDIS_PREFIX": f"bench:{tag}", "MONGODB_URI": f"mongodb://127.0.0.1:{mongo_port}",
               "MONGODB_DB": f"bench_{tag}", "LOG_LEVEL": "WARNING", "ADMIN_USER": ADMIN[0],
               "ADMIN_PASSWORD": ADMIN[1], "SIGNUP_IP_RATE_PER_MINUTE": "0", "LOGIN_IP_RATE_PER_MINUTE": "0",
               **dict(kv.split("=", 1) for kv in args.env)}
        logs = Path(args.keep_logs) if args.keep_logs else workdir / "logs"
        fleet = Fleet(env, ports={name: infra.free_port() for name in SERVICES}, log_dir=logs)
        try:
            fleet.start(timeout=180)
            print(f"fleet on {fleet.urls['pool_aggregator']} (pool_aggregator), load avg "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; cores {os.cpu_count()}", flush=True)
            pids = {name: proc.pid for name, proc in fleet.procs.items()}
            pids["mongodb"] = mongo.pid
            return run(args, fleet.urls, pids, env["MONGODB_URI"])
        finally:
            fleet.stop()
            infra.drop_postgres_db(env["DATABASE_URL"])
            infra.delete_vhost(env["AMQP_URL"])
            infra.stop_process(mongo)


if __name__ == "__main__":
    sys.exit(main())
