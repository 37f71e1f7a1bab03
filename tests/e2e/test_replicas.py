"""`make run REPLICAS=2` through the launcher's Python API: HAProxy serves every service from
two replicas and keeps serving when one replica is SIGKILLed; and (issue 14) one replica of
every service SIGKILLed in turn during 100 pool uploads loses nothing and doubles nothing."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from client.api import DropboxClient
from devtools.fleet import DEFAULT_PORTS, SERVICES, ReplicatedFleet, free_base_port, replica_ports

from .conftest import ADMIN, ROOT, fleet_env, teardown_env
from .helpers import RawSocket, bearer, login, signup
from .helpers import wait_for as _wait
from .pools import Admin

pytestmark = pytest.mark.slow


def _replicated(mongo_uri: str, tmp_path, **extra: str) -> Iterator[ReplicatedFleet]:
    env = fleet_env(mongo_uri, **{"LOG_LEVEL": "WARNING", **extra})
    base = free_base_port(2)
    fleet = ReplicatedFleet(env, replicas=2, base=base,
                            log_dir=ROOT / "artifacts" / "fleet-logs" / f"replicas-{uuid.uuid4().hex[:6]}",
                            run_dir=tmp_path)
    try:
        fleet.start(timeout=180)
        yield fleet
    finally:
        fleet.stop()
        teardown_env(env)


@pytest.fixture
def replicated(mongo_uri: str, tmp_path) -> Iterator[ReplicatedFleet]:
    yield from _replicated(mongo_uri, tmp_path)


def _all_ready(fleet: ReplicatedFleet, times: int) -> dict[str, list[int]]:
    answers: dict[str, list[int]] = {}
    for name in DEFAULT_PORTS:
        answers[name] = [requests.get(f"{fleet.urls[name]}/ready", timeout=5).status_code for _ in range(times)]
    return answers


def test_the_balancer_serves_every_service_and_survives_a_replica_sigkill(replicated: ReplicatedFleet):
    fleet = replicated
    assert fleet.ports["auth"] == fleet.base + 1
    assert fleet.ports["auth-2"] == replica_ports(2, fleet.base)["auth"] == fleet.base + 201
    assert set(fleet.procs) == {f"{s}-{k}" for s in SERVICES for k in (1, 2)}
    assert _all_ready(fleet, 4) == {name: [200] * 4 for name in DEFAULT_PORTS}

    user = signup(fleet.urls["auth"])
    sock = RawSocket(fleet.urls["socket_gateway"], user["access_token"])
    try:
        file_id = sock.upload_bytes(b"x" * 150_000, file_name="before.bin")
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully",
                        timeout=60)
    finally:
        sock.close()

    for name in SERVICES:  # one replica of every service dies, one service at a time
        fleet.stop_service(f"{name}-1", sig=signal.SIGKILL)
        assert fleet.procs[f"{name}-1"].poll() is not None
        # Straight away (before the health check noticed): the balancer retries elsewhere.
        assert [requests.get(f"{fleet.urls[name]}/ready", timeout=10).status_code for _ in range(10)] == [200] * 10

    # Everything again, on the survivors alone: login, a socket upload end to end, the history.
    admin = login(fleet.urls["auth"], *ADMIN)
    assert admin["user_name"] == ADMIN[0]
    sock = RawSocket(fleet.urls["socket_gateway"], user["access_token"])
    try:
        file_id = sock.upload_bytes(b"y" * 150_000, file_name="after.bin")
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully",
                        timeout=60)
    finally:
        sock.close()
    history = requests.get(f"{fleet.urls['file_service_manager']}/client/history/{user['user_id']}",
                           headers=bearer(user["access_token"]), timeout=10)
    assert history.status_code == 200
    assert {f["file_name"] for f in history.json()["files"]} >= {"before.bin", "after.bin"}
    groups = requests.get(f"{fleet.urls['pool_aggregator']}/pools/none/groups", timeout=10)
    assert groups.status_code in (401, 403, 404)  # served (refused as it should be), not a 502/503


def test_a_socket_through_the_balancer_hears_its_uploads_from_any_replica(replicated: ReplicatedFleet):
    """The gateway takes WebSocket only (one TCP connection: no stickiness needed). Its file-status
    is taken off the queue by either gateway replica and reaches the socket through Redis."""
    user = signup(replicated.urls["auth"])
    sock = RawSocket(replicated.urls["socket_gateway"], user["access_token"])
    try:
        for n in range(4):
            file_id = sock.upload_bytes(f"through the balancer {n} ".encode() * 5000, f"b{n}.bin")
            sock.wait_event("file-status", lambda d, f=file_id: d["file_id"] == f
                            and d["status"] == "uploaded_successfully", timeout=60)
        assert sock.call("alive", {}, timeout=10)["ok"] is True
    finally:
        sock.close()


# --- Issue 14: one replica of every service SIGKILLed during 100 pool uploads -----------------

UPLOADS, MEMBERS = 100, 5
W, GRACE = 10, 3  # window_seconds, close_grace_seconds: the uploads span several windows
LEASE = 3  # LEADER_LEASE_SECONDS: a dead ticker leader is replaced within it
# Killed (and left dead) when this many uploads are done: every service loses a replica while
# files are being uploaded, grouped and their windows close. The ticker's leader goes first.
KILL_ORDER = ("pool_aggregator", "socket_gateway", "file_uploader", "file_service_manager", "auth")
KILL_AT = (10, 25, 40, 55, 70)
UPDATE_BYTES = 100 * 1024  # SPEC: a pool file is at least 100 KB


class Announcements:
    """The pools' processor_url: counts the announcements it receives per group (bounded by
    the groups of one pool: a few per window)."""

    def __init__(self) -> None:
        self.per_group: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer.lock:
                    gid = str(body.get("group_id"))
                    outer.per_group[gid] = outer.per_group.get(gid, 0) + 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.per_group)


class KillTolerantProcessor:
    """A processor on the balancer's pool_aggregator: leases every ready group (GET files) and
    posts one result per group; a request cut by a killed replica is tried again next pass."""

    def __init__(self, url: str, pool_id: str, key: str) -> None:
        self.base = f"{url}/pools/{pool_id}"
        self.headers = {"X-API-Key": key}
        self.posted: dict[str, str] = {}  # group_id -> result_id (201s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="processor", daemon=True)
        self.thread.start()

    def groups(self) -> list[dict]:
        r = requests.get(f"{self.base}/groups", headers=self.headers, timeout=15)
        r.raise_for_status()
        return r.json()["groups"]

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                for group in self.groups():
                    gid = group["group_id"]
                    if gid in self.posted or group["status"] not in ("ready", "processing"):
                        continue
                    if group["status"] == "ready":
                        requests.get(f"{self.base}/groups/{gid}/files", headers=self.headers, timeout=30)
                    data = f"result of {gid} ".encode() * (UPDATE_BYTES // 20)
                    r = requests.post(f"{self.base}/groups/{gid}/result", data=data, timeout=60,
                                      headers={**self.headers, "X-File-Name": "mean.f64"})
                    if r.status_code == 201:
                        self.posted[gid] = r.json()["result_id"]
            except requests.RequestException:
                continue  # a replica died under this request: the next pass sees what happened


def _ticker_leaders(fleet: ReplicatedFleet) -> list[str]:
    """The pool_aggregator replicas whose /metrics say they hold the ticker's lease."""
    leaders = []
    for name in fleet.instances("pool_aggregator"):
        if fleet.procs[name].poll() is not None:
            continue
        try:
            text = requests.get(f"{fleet.urls[name]}/metrics", timeout=5).text
        except requests.RequestException:
            continue
        if any(line.split() == ["pool_ticker_leader", "1.0"] for line in text.splitlines()):
            leaders.append(name)
    return leaders


def _logged(log_dir: Path, file_ids: list[str], most: int = 60) -> str:
    """The fleet's log lines naming any of ``file_ids`` (at most ``most``, the last ones), each
    prefixed by its log file: a lost file's story lands in the failure message, which CI prints
    (its artifacts directory does not survive the run)."""
    lines: list[str] = []
    for path in sorted(log_dir.glob("*.log")):
        with open(path, errors="replace") as log_file:
            lines += [f"{path.stem}: {line.rstrip()[:400]}" for line in log_file if any(f in line for f in file_ids)]
    return "\n".join(lines[-most:]) or "(nothing)"


def _where_it_waits(fleet: ReplicatedFleet, most: int = 80) -> str:
    """For a lost file: the grouping queue's counts in the fleet's vhost (a message still queued,
    or held unacked by a live consumer) and the stacks of the live pool_aggregators' threads that
    are inside our code (a consumer stuck in a wait), at most ``most`` lines."""
    import shutil
    import subprocess
    import sys
    from urllib.parse import unquote, urlparse

    out: list[str] = []
    vhost = unquote(urlparse(fleet.env.get("AMQP_URL", "")).path.lstrip("/")) or "/"
    if shutil.which("rabbitmqctl"):
        run = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_ready",
                              "messages_unacknowledged", "consumers"], capture_output=True, text=True, timeout=30)
        out += [f"queues: {line}" for line in run.stdout.splitlines() if "pool_aggregator" in line or "dead" in line]
    spy = Path(sys.executable).with_name("py-spy")
    for name in fleet.instances("pool_aggregator"):
        proc = fleet.procs[name]
        if proc.poll() is not None or not spy.exists():
            continue
        run = subprocess.run([str(spy), "dump", "--pid", str(proc.pid)], capture_output=True, text=True, timeout=60)
        threads = run.stdout.split("\nThread ")
        out += [f"{name}: Thread {t.strip()}" for t in threads
                if "services/pool_aggregator" in t and ("memberships" in t or "batching" in t or "grouping" in t)]
    text = "\n".join(out)
    return "\n".join(text.splitlines()[:most]) or "(nothing)"


@pytest.fixture
def replicated_pools(mongo_uri: str, tmp_path) -> Iterator[ReplicatedFleet]:
    # INFO: a lost or doubled upload is then traceable by its file_id in artifacts/fleet-logs.
    # A file whose group is not known 20 s after its store is announced again (regrouping), so a
    # lost announcement is recovered within the test's wait; each one is counted and printed.
    yield from _replicated(mongo_uri, tmp_path, LEADER_LEASE_SECONDS=str(LEASE), TICK_SECONDS="0.5",
                           POOL_CACHE_SECONDS="1", LOG_LEVEL="INFO", REGROUP_AFTER_SECONDS="20",
                           REGROUP_INTERVAL_SECONDS="5")


def test_sigkill_one_replica_of_every_service_during_100_pool_uploads(replicated_pools: ReplicatedFleet):
    """Every upload ends uploaded_successfully exactly once (its events and its record), every
    group is announced once and gets its result, every member gets every result. The killed
    replicas stay dead: the last part of the run is served by one replica of each service."""
    fleet = replicated_pools
    urls = fleet.urls
    hook = Announcements()
    admin = Admin(SimpleNamespace(urls=urls, admin=ADMIN))
    pool_id = admin.create_pool(f"kill-{uuid.uuid4().hex[:6]}", window_seconds=W, close_grace_seconds=GRACE,
                                # A post cut by a killed replica may leave its claim: the group's
                                # lease then expires and it is leased and posted again.
                                processing_timeout_seconds=30, processor_url=hook.url)["pool_id"]
    key = admin.processor_key(pool_id)
    leaders = _wait(lambda: _ticker_leaders(fleet), 30, "a ticker leader")
    assert len(leaders) == 1, leaders

    def member(n: int) -> DropboxClient:
        client = DropboxClient(urls["socket_gateway"], urls["auth"], urls["file_service_manager"],
                               urls["pool_aggregator"], timeout=30)
        client.signup(f"kill_{uuid.uuid4().hex[:8]}_{n}", "replica-kill-password")
        admin.add_member(pool_id, client.user["user_name"])
        client.connect()
        return client

    with ThreadPoolExecutor(MEMBERS) as ex:
        members = list(ex.map(member, range(MEMBERS)))
    processor = KillTolerantProcessor(urls["pool_aggregator"], pool_id, key)
    uploaded: list[tuple[DropboxClient, str]] = []
    done = threading.Condition()
    killed: list[str] = []
    takeover: list[float] = []  # seconds from the leader's SIGKILL to the survivor ticking

    def killer() -> None:
        for service, at in zip(KILL_ORDER, KILL_AT, strict=True):
            with done:
                done.wait_for(lambda at=at: len(uploaded) >= at, timeout=240)
            if service == "pool_aggregator":
                victim = _ticker_leaders(fleet)[0]  # the leader: its ticking must move elsewhere
            else:
                victim = f"{service}-1"
            fleet.stop_service(victim, sig=signal.SIGKILL)
            killed.append(victim)
            if service == "pool_aggregator":
                t0 = time.monotonic()
                survivors = [n for n in fleet.instances("pool_aggregator") if n != victim]
                deadline = t0 + LEASE + 20
                while _ticker_leaders(fleet) != survivors and time.monotonic() < deadline:
                    time.sleep(0.1)
                takeover.append(time.monotonic() - t0)

    # Two pool windows at least, however fast the uploads go (on a quiet machine all 100 once fit
    # in one): each member's second half waits for the next window boundary (3 s away at least).
    boundary = (int(time.time()) // W + 1) * W
    boundary += W if boundary - time.time() < 3 else 0

    def uploads(client: DropboxClient, n: int) -> None:
        for i in range(UPLOADS // MEMBERS):
            if i == UPLOADS // MEMBERS // 2:
                time.sleep(max(0.0, boundary + 0.2 - time.time()))
            data = f"member {n} update {i} ".encode().ljust(UPDATE_BYTES, b".")
            file_id = client.upload(io.BytesIO(data), file_name=f"u{n}-{i}.f64", pool_id=pool_id,
                                    timestamp=datetime.now(UTC).isoformat())
            with done:
                uploaded.append((client, file_id))
                done.notify_all()

    kill_thread = threading.Thread(target=killer, name="killer", daemon=True)
    kill_thread.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(MEMBERS) as ex:
            list(ex.map(uploads, members, range(MEMBERS)))
        kill_thread.join(timeout=60)
        assert killed == [*[v for v in killed if v.startswith("pool_aggregator")],
                          "socket_gateway-1", "file_uploader-1", "file_service_manager-1", "auth-1"], killed
        upload_seconds = time.monotonic() - started
        # The ticker moved to the surviving replica within its lease.
        survivor = [n for n in fleet.instances("pool_aggregator") if n != killed[0]]
        assert _wait(lambda: _ticker_leaders(fleet), LEASE + 20, "the ticker's takeover") == survivor
        assert takeover and takeover[0] < LEASE + 20, takeover

        # Every upload: uploaded_successfully (its record), never twice (its events).
        for client, file_id in uploaded:
            client.wait_status(file_id, timeout=90)
        for client in members:
            records = [f for f in client.history() if f["file_id"] in {fid for c, fid in uploaded if c is client}]
            assert len(records) == UPLOADS // MEMBERS, len(records)
            assert {f["status"] for f in records} == {"uploaded_successfully"}, records
        twice = {fid: n for c, fid in uploaded if (n := sum(
            s.get("status") == "uploaded_successfully" for s in c.statuses[fid])) > 1}
        assert not twice, f"uploaded_successfully more than once: {twice}"

        # Every window's group: ready once (announced once), a result, done; every file counted once.
        seen: list[list[dict]] = [[]]

        def all_done() -> list[dict] | None:
            try:
                groups = seen[0] = processor.groups()
            except requests.RequestException:
                return None
            counted = sum(g["file_count"] for g in groups)
            return groups if counted == UPLOADS and all(g["status"] == "done" for g in groups) else None

        try:
            groups = _wait(all_done, 120, "every group done with all 100 files")
        except AssertionError as exc:
            grouped: set[str] = set()
            for g in seen[0]:  # a done group's files (GET .../files leases only a ready group)
                r = requests.get(f"{processor.base}/groups/{g['group_id']}/files", headers=processor.headers,
                                 timeout=30)
                grouped |= {f["file_id"] for f in r.json().get("files", [])} if r.status_code == 200 else set()
            ungrouped = sorted({fid for _, fid in uploaded} - grouped)
            raise AssertionError(f"{exc}: {[(g['group_id'], g['status'], g['file_count']) for g in seen[0]]}; "
                                 f"posted {processor.posted}; stored but in no group: {ungrouped}; "
                                 f"what the fleet logged of them:\n{_logged(fleet.log_dir, ungrouped)}\n"
                                 f"where it may wait:\n{_where_it_waits(fleet)}") from None
        gids = {g["group_id"] for g in groups}
        assert len(gids) >= 2, groups  # at least two pool windows
        time.sleep(2)  # a duplicate announcement in flight would land by now
        assert hook.counts() == dict.fromkeys(gids, 1)
        results = requests.get(f"{urls['pool_aggregator']}/pools/{pool_id}/results",
                               headers={"X-API-Key": key}, timeout=15).json()["results"]
        assert {r["group_id"] for r in results} == gids
        assert {r["group_id"]: r["result_id"] for r in results} == processor.posted
        assert sorted(r["seq"] for r in results) == list(range(1, len(gids) + 1))

        # Every member gets every result (the client drops a re-sent one by result_id: a member
        # whose gateway died reconnects and may be re-sent what it had; counted, not hidden).
        wanted = {r["result_id"] for r in results}
        for client in members:
            _wait(lambda c=client: {r["result_id"] for r in c.results_received} >= wanted, 60,
                  f"every result at {client.user['user_name']}")
            assert len(client.results_received) == len(wanted)
        resent = sum(c.duplicate_results for c in members)
        print(f"\n{UPLOADS} uploads in {upload_seconds:.0f}s over {len(gids)} groups; killed {killed}; "
              f"ticker takeover {takeover[0]:.1f}s after the leader's SIGKILL (lease {LEASE}s); "
              f"results re-sent after a reconnect (dropped by the client): {resent}; files announced again "
              f"(regrouping): {_logged(fleet.log_dir, ['file_announced_again'])}")
    finally:
        processor.stop.set()
        for client in members:
            client.disconnect()
        hook.server.shutdown()
