"""Issue 10: the fleet tried as a hostile client would, one section per item of the issue.

Every probe asserts the clear refusal, that the attacked service's memory (RSS of the
process the fleet started) stays bounded, and that a normal user is still served after.
Each probe is bounded in time and in what it sends. The fleet is this module's own, with
small caps so the bounds are quick to reach.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import redis
import requests
import requests.adapters

from devtools.fleet import Fleet
from devtools.hostile import BINARY, CONTINUATION, TEXT, RawWebSocket, open_websocket, socketio_connect
from services.common import timeutil, topology
from services.common.contracts import AuditRecorded
from services.common.messaging import Broker
from services.common.settings import DEV_SECRETS
from services.common.topology import DELIVERY_LIMIT

from .conftest import ROOT, fleet_env, start_fleet, teardown_env
from .helpers import RawSocket, bearer, login, signup
from .pools import Admin, window_timestamp

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
MAX_CHUNK_BYTES = 1 * MIB
CHUNK_SIZE = 256 * 1024
# engine.io's max_http_buffer_size = MAX_CHUNK_BYTES + config.CHUNK_HEADROOM: the largest message.
MESSAGE_CAP = MAX_CHUNK_BYTES + 64 * 1024
ASSEMBLY_BUDGET = 16 * MIB
HEADER_TIMEOUT = 2.0
SOCKET_TIMEOUT = 8.0
PING_SECONDS = 2 + 3  # GATEWAY_PING_INTERVAL + GATEWAY_PING_TIMEOUT
REAUTH_GRACE = 3.0  # GATEWAY_REAUTH_GRACE_SECONDS (SPEC's 30 s, shortened for the probe)
LOGIN_IP_RATE = 20  # LOGIN_IP_RATE_PER_MINUTE of this module's auth (the shared e2e fleet: off)
UPLOADS_PER_USER = 3  # MAX_UPLOADS_PER_USER: unfinished uploads per user
MAX_FILE_SIZE = 4 * MIB
CACHED_PER_USER = 4 * MIB  # MAX_CACHED_BYTES_PER_USER (at least MAX_FILE_SIZE)
USER_QUOTA = 8 * MIB  # USER_QUOTA_BYTES
FLOODER = "127.0.0.77"  # the login flood's source address (any 127/8 address is this host's on Linux)


@dataclass
class HostileFleet:
    running: Fleet

    @property
    def urls(self) -> dict[str, str]:
        return self.running.urls

    def rss(self, service: str) -> int:
        """Resident memory of a service's process, in bytes (VmRSS of /proc/<pid>/status)."""
        pid = self.running.procs[service].pid
        for line in open(f"/proc/{pid}/status").read().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for {service} (pid {pid})")

    @property
    def admin(self) -> tuple[str, str]:
        env = self.running.env
        return env["ADMIN_USER"], env["ADMIN_PASSWORD"]

    def user(self) -> dict:
        return signup(self.urls["auth"], f"h_{uuid.uuid4().hex[:10]}")

    def normal_upload(self, size: int = 600 * 1024) -> None:
        """A normal user connects, uploads a multi-chunk file and sees it cached."""
        sock = RawSocket(self.urls["socket_gateway"], self.user()["access_token"])
        try:
            file_id = sock.upload_bytes(os.urandom(size), "after-attack.bin")
            sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "cached",
                            timeout=30)
        finally:
            sock.close()


@pytest.fixture(scope="module")
def fleet(mongo_uri: str) -> Iterator[HostileFleet]:
    env = fleet_env(mongo_uri, LOG_LEVEL="WARNING", CHUNK_SIZE=str(CHUNK_SIZE), MAX_CHUNK_BYTES=str(MAX_CHUNK_BYTES),
                    GATEWAY_ASSEMBLY_BUDGET_BYTES=str(ASSEMBLY_BUDGET), GATEWAY_PING_INTERVAL="2",
                    GATEWAY_PING_TIMEOUT="3", GATEWAY_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
                    GATEWAY_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT), GATEWAY_REAUTH_GRACE_SECONDS=str(REAUTH_GRACE),
                    # Section 4: the per-address login limit on. The flood comes from an address of
                    # its own (FLOODER), so this module's other logins (from 127.0.0.1) are not
                    # counted with it.
                    LOGIN_IP_RATE_PER_MINUTE=str(LOGIN_IP_RATE), AUTH_HASH_SLOTS="2", AUTH_HASH_QUEUE="2",
                    # Section 6: small per-user caps, so one account reaches each in a few MiB.
                    MAX_UPLOADS_PER_USER=str(UPLOADS_PER_USER), MAX_FILE_SIZE=str(MAX_FILE_SIZE),
                    MAX_CACHED_BYTES_PER_USER=str(CACHED_PER_USER), USER_QUOTA_BYTES=str(USER_QUOTA))
    running = start_fleet(env, ROOT / "artifacts" / "fleet-logs" / f"hostile-{uuid.uuid4().hex[:6]}")
    try:
        yield HostileFleet(running)
    finally:
        running.stop()
        teardown_env(env)


# --- the raw WebSocket client is devtools/hostile.py (stdlib only: no client library would send these frames)


def endless_message(ws: RawWebSocket, limit: int, frame_bytes: int = 64 * 1024, pace: float = 0.0) -> None:
    """A text frame without FIN, then continuation frames until the gateway closes (or ``limit`` bytes)."""
    piece = b"4" * frame_bytes  # engine.io MESSAGE packets, never finished
    opcode = TEXT
    while ws.sent < limit and ws.send_frame(opcode, piece, fin=False):
        opcode = CONTINUATION
        if ws.poll(pace):
            return
    ws.poll(5.0)


# --- 1. a WebSocket message without end (no login needed) -------------------------------------


def test_1_message_without_end_is_closed_with_1009(fleet: HostileFleet) -> None:
    ws = open_websocket(fleet.urls["socket_gateway"])
    try:
        # Paced, so the close frame is read before more frames reach a closed socket (a reset).
        endless_message(ws, limit=16 * MESSAGE_CAP, pace=0.005)
        assert ws.closed, f"still open after {ws.sent} bytes of one message"
        assert ws.close_code == 1009, ws.close_code
        # Refused when the message passed the cap, not at some later limit.
        assert ws.sent <= MESSAGE_CAP + 8 * 64 * 1024, ws.sent
    finally:
        ws.close()
    fleet.normal_upload()


def test_1_many_endless_messages_keep_the_gateway_bounded(fleet: HostileFleet) -> None:
    before = fleet.rss("socket_gateway")
    sockets = [open_websocket(fleet.urls["socket_gateway"]) for _ in range(40)]
    # Each would send 4 MiB (160 MiB in all) if nothing stopped it.
    threads = [threading.Thread(target=endless_message, args=(ws, 4 * MIB)) for ws in sockets]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert time.monotonic() - started < 60
        assert all(ws.closed for ws in sockets), [ws.sent for ws in sockets if not ws.closed]
        codes = {ws.close_code for ws in sockets}
        # 1009: that message passed its cap; 1013: the process budget was spent meanwhile (or the
        # close frame was lost to a reset: None).
        assert codes <= {1009, 1013, None}, codes
        grown = fleet.rss("socket_gateway") - before
        # The budget (16 MiB) plus the pieces in flight; unbounded this grew by the 160 MiB sent.
        assert grown < ASSEMBLY_BUDGET + 48 * MIB, f"gateway RSS grew by {grown / MIB:.0f} MiB"
    finally:
        for ws in sockets:
            ws.close()
    fleet.normal_upload()


# --- 2. attachments announced without end, bytes in flight (a logged-in user) ---------------


def test_2_a_packet_announcing_many_attachments_is_refused(fleet: HostileFleet) -> None:
    before = fleet.rss("socket_gateway")
    ws = socketio_connect(fleet.urls["socket_gateway"], fleet.user()["access_token"])
    try:
        # A write-chunk announcing a billion attachments, then 1 MiB attachments while the
        # gateway keeps the connection: python-socketio buffered every one before any handler.
        header = '451000000000-["write-chunk",{"file_id":"f1","index":0,"data":{"_placeholder":true,"num":0}}]'
        ws.send_frame(TEXT, header.encode())
        attachment = b"\x00" * MAX_CHUNK_BYTES
        for _ in range(48):
            if not ws.send_frame(BINARY, attachment) or ws.poll(0.01):
                break
        ws.poll(5.0)
        assert ws.closed, f"the gateway kept the socket after {ws.sent} bytes of attachments"
        assert ws.sent <= 8 * MAX_CHUNK_BYTES, ws.sent
    finally:
        ws.close()
    grown = fleet.rss("socket_gateway") - before
    assert grown < 32 * MIB, f"gateway RSS grew by {grown / MIB:.0f} MiB"
    fleet.normal_upload()


def test_2_long_polling_is_refused(fleet: HostileFleet) -> None:
    # Its POST bodies (up to a whole chunk each) would be read outside the WebSocket budget.
    answer = requests.post(f"{fleet.urls['socket_gateway']}/socket.io/?EIO=4&transport=polling",
                           data=b"x" * MIB, timeout=10)
    assert answer.status_code == 400, answer.status_code
    assert requests.get(f"{fleet.urls['socket_gateway']}/socket.io/?EIO=4&transport=polling",
                        timeout=10).status_code == 400


# --- 3. identity on every event (logout, expiry, removal) ------------------------------------


def listening(sock: RawSocket) -> RawSocket:
    """Record token-expired too (RawSocket records file-status and pool-result)."""
    sock.sio.on("token-expired", lambda data: sock.events.put(("token-expired", data)))
    return sock


def refused_within(sock: RawSocket, seconds: float) -> float | None:
    """Seconds until the socket's events are refused (unauthorized) or it is cut, else None."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if not sock.sio.connected:
            return time.monotonic() - started
        try:
            ack = sock.call("alive", {}, timeout=5)
        except Exception:  # noqa: BLE001 - disconnected while asking
            return time.monotonic() - started
        if ack.get("error", {}).get("code") == "unauthorized":
            return time.monotonic() - started
        assert ack.get("ok") is True, ack
        time.sleep(0.2)
    return None


def short_lived_token(user: dict, seconds: float) -> str:
    """A token of ``user`` expiring in ``seconds``, signed as auth signs (auth refuses a
    TOKEN_TTL_SECONDS under 60, too long for a probe): auth validates it until then."""
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    now = int(time.time())
    return jwt.encode({**claims, "iat": now, "exp": now + int(seconds), "jti": uuid.uuid4().hex},
                      DEV_SECRETS["JWT_SECRET"], algorithm="HS256")


def test_3_a_socket_whose_user_logged_out_is_refused_within_5_s(fleet: HostileFleet) -> None:
    user = fleet.user()
    sock = listening(RawSocket(fleet.urls["socket_gateway"], user["access_token"]))
    try:
        assert sock.call("alive", {})["ok"] is True
        out = requests.put(f"{fleet.urls['auth']}/auth/logout/{user['user_name']}",
                           headers=bearer(user["access_token"]), timeout=10)
        assert out.status_code == 200, out.text
        took = refused_within(sock, 5.0)
        assert took is not None, "a logged-out token was still served 5 s after the logout"
    finally:
        sock.close()
    fleet.normal_upload()


def test_3_a_removed_contributor_cannot_finish_its_pool_upload(fleet: HostileFleet) -> None:
    admin = Admin(fleet)
    pool_id = admin.create_pool(f"h3-{uuid.uuid4().hex[:6]}", window_seconds=60)["pool_id"]
    member = admin.member(pool_id)
    sock = RawSocket(fleet.urls["socket_gateway"], member["access_token"])
    try:
        data = os.urandom(3 * CHUNK_SIZE)
        ack = sock.call("start-transfer", {"file_name": "pool.bin", "size": len(data), "pool_id": pool_id})
        assert "error" not in ack, ack
        file_id, chunk = ack["file_id"], ack["chunk_size"]
        assert "error" not in sock.call("write-chunk", {"file_id": file_id, "index": 0, "data": data[:chunk]})
        admin.remove_member(pool_id, member["user_name"])
        refused = sock.call("write-chunk", {"file_id": file_id, "index": 1, "data": data[chunk:2 * chunk]})
        assert refused.get("error", {}).get("code") == "forbidden", refused
        assert sock.call("complete-upload", {"file_id": file_id})["error"]["code"] == "forbidden"
        # Nor from a new connection: a resume without naming the pool is refused too.
        sock.close()
        sock = RawSocket(fleet.urls["socket_gateway"], member["access_token"])
        deadline = time.monotonic() + 10
        while True:  # the old socket's writer lock is released on its disconnect
            resumed = sock.call("start-transfer", {"file_name": "pool.bin", "size": len(data), "file_id": file_id})
            if resumed.get("error", {}).get("code") != "conflict" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert resumed.get("error", {}).get("code") == "forbidden", resumed
        assert sock.call("complete-upload", {"file_id": file_id}).get("error", {}).get("code") == "forbidden"
    finally:
        sock.close()
    fleet.normal_upload()


def test_3_an_expired_token_gets_token_expired_then_is_cut_after_the_grace(fleet: HostileFleet) -> None:
    user = fleet.user()
    lasting = listening(RawSocket(fleet.urls["socket_gateway"], short_lived_token(user, 3)))
    cut = listening(RawSocket(fleet.urls["socket_gateway"], short_lived_token(user, 3)))
    try:
        assert lasting.call("alive", {})["ok"] is True and cut.call("alive", {})["ok"] is True
        for sock in (lasting, cut):  # idle sockets are told, not only those sending events
            assert sock.wait_event("token-expired", timeout=8) == {}
        for sock in (lasting, cut):
            assert sock.call("alive", {})["error"]["code"] == "unauthorized"
            assert sock.call("start-transfer", {"file_name": "a.bin", "size": 10})["error"]["code"] == "unauthorized"
        renewed = lasting.call("reauth", {"token": user["access_token"]})
        assert renewed["ok"] is True and renewed["expires_in"] > 60, renewed
        other = fleet.user()
        assert lasting.call("reauth", {"token": other["access_token"]})["error"]["code"] == "forbidden"
        deadline = time.monotonic() + REAUTH_GRACE + 5
        while cut.sio.connected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not cut.sio.connected, "a socket in its grace was not disconnected"
        assert lasting.sio.connected and lasting.call("alive", {})["ok"] is True
        assert not any(kind == "token-expired" for kind, _ in list(lasting.events.queue))  # told once
    finally:
        lasting.close()
        cut.close()
    fleet.normal_upload()


# --- 4. auth without an account; the gateway's timeouts ---------------------------------------


def seconds_until_closed(sock: socket.socket, limit: float) -> float | None:
    """How long until the peer closes ``sock`` (EOF or reset), or None within ``limit`` seconds."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


@pytest.mark.parametrize("opening", [b"", b"GET / HTTP/1.1"], ids=["nothing", "half a request line"])
def test_4_gateway_drops_a_connection_that_sends_nothing(fleet: HostileFleet, opening: bytes) -> None:
    url = urlsplit(fleet.urls["socket_gateway"])
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        if opening:
            sock.sendall(opening)
        waited = seconds_until_closed(sock, HEADER_TIMEOUT + 8)
    assert waited is not None, "the gateway kept a silent connection open"
    assert waited < HEADER_TIMEOUT + 3, waited


def test_4_gateway_drops_slow_headers(fleet: HostileFleet) -> None:
    url = urlsplit(fleet.urls["socket_gateway"])
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        waited = seconds_until_closed(sock, SOCKET_TIMEOUT + 8)
    assert waited is not None and waited < SOCKET_TIMEOUT + 3, waited


def test_4_gateway_drops_a_websocket_that_never_answers(fleet: HostileFleet) -> None:
    ws = open_websocket(fleet.urls["socket_gateway"])  # upgraded; no Socket.IO connect, no pong
    try:
        waited = seconds_until_closed(ws.sock, PING_SECONDS + 8)
    finally:
        ws.close()
    assert waited is not None and waited < PING_SECONDS + 3, waited
    fleet.normal_upload()


class FromAddress(requests.adapters.HTTPAdapter):
    """Connections from another local source address: a second client host, as auth sees it
    (waitress ignores X-Forwarded-For unless told to trust a proxy)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, source_address=(self.source, 0), **kwargs)


def session_from(source: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(source))
    return session


def test_4_a_login_flood_is_refused_by_address_while_validate_still_answers(fleet: HostileFleet) -> None:
    auth = fleet.urls["auth"]
    user = fleet.user()
    before = fleet.rss("auth")
    stop = threading.Event()
    answers: list[requests.Response] = []  # bounded: 8 threads for FLOOD_SECONDS, a few hundred
    validate_seconds: list[float] = []
    validate_statuses: list[int] = []
    flood_seconds = 6.0

    def flood() -> None:
        with session_from(FLOODER) as session:
            while not stop.is_set():
                try:  # a new name each time: the per-name limit is not what stops this
                    answers.append(session.put(f"{auth}/auth/login/nobody_{uuid.uuid4().hex[:8]}",
                                               json={"password": "guess-" + uuid.uuid4().hex}, timeout=10))
                except requests.RequestException:
                    pass  # a dropped connection is the flood's loss, not the fleet's fault

    def validate() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                answer = session.get(f"{auth}/auth/validate", headers=bearer(user["access_token"]), timeout=10)
                validate_seconds.append(time.monotonic() - started)
                validate_statuses.append(answer.status_code)
                time.sleep(0.05)

    flooders = [threading.Thread(target=flood) for _ in range(8)]
    checker = threading.Thread(target=validate)
    for thread in [*flooders, checker]:
        thread.start()
    time.sleep(flood_seconds)
    stop.set()
    for thread in [*flooders, checker]:
        thread.join(15)
    statuses = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 429]
    print(f"login flood: {len(answers)} answers {sorted(set(statuses))}, {len(refused)} refused 429; "
          f"validate: {len(validate_seconds)} calls, slowest {max(validate_seconds):.3f} s")
    assert 500 not in statuses and all(s in (401, 429, 503) for s in statuses), sorted(set(statuses))
    # The address limit: at most LOGIN_IP_RATE attempts were looked at, the rest refused with
    # when to come back (two minute windows may meet inside the flood: twice the rate at most).
    assert len(answers) - len(refused) <= 2 * LOGIN_IP_RATE + 8, statuses
    assert refused, "no login of the flood was refused"
    for answer in refused[:20]:
        body = answer.json()["error"]
        assert body["code"] == "overloaded" and 0 < int(body["retry_after"]) <= 60, body
    # /auth/validate, which every service calls per request, kept answering, and quickly.
    assert len(validate_seconds) >= 10 and set(validate_statuses) == {200}, validate_statuses
    assert max(validate_seconds) < 2.0, f"validate took {max(validate_seconds):.2f} s during the flood"
    grown = fleet.rss("auth") - before
    assert grown < 256 * MIB, f"auth RSS grew by {grown / MIB:.0f} MiB"  # argon2: 64 MiB per slot, 2 slots
    # The flood's address is refused; another address (a normal user) still logs in.
    with session_from(FLOODER) as session:
        assert session.put(f"{auth}/auth/login/{user['user_name']}", json={"password": user["password"]},
                           timeout=10).status_code == 429
    assert login(auth, user["user_name"], user["password"])["access_token"]
    fleet.normal_upload()


# --- 5. poison messages go aside; grouping that keeps up and is fair ----------------------------


def dead_lettered(fleet: HostileFleet, service: str, queue: str) -> float:
    """messages_dead_lettered_total{queue, reason="poison"} from the service's /metrics."""
    text = requests.get(f"{fleet.urls[service]}/metrics", timeout=10).text
    pattern = (r'^messages_dead_lettered_total\{[^}]*queue="' + re.escape(queue)
               + r'"[^}]*reason="poison"[^}]*\}\s+([0-9.e+]+)$|^messages_dead_lettered_total\{[^}]*reason="poison"'
               r'[^}]*queue="' + re.escape(queue) + r'"[^}]*\}\s+([0-9.e+]+)$')
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1) or found.group(2)) if found else 0.0


def test_5_a_poison_message_is_dead_lettered_after_the_delivery_limit(fleet: HostileFleet) -> None:
    """An audit record whose handler fails on every delivery: a byte count past 64 bits, which
    decodes (JSON has no integer limit) but which BSON cannot store. Once it was requeued forever
    and held its queue; now it goes to dropbox.dead_letters after DELIVERY_LIMIT deliveries."""
    broker = Broker(fleet.running.env["AMQP_URL"])
    queue = topology.AUDIT_QUEUE.name
    rss_before = fleet.rss("file_service_manager")
    try:
        parked = broker.queue_depths([topology.DEAD_LETTER_QUEUE.name])[topology.DEAD_LETTER_QUEUE.name]
        counted = dead_lettered(fleet, "file_service_manager", queue)
        poison = AuditRecorded(audit_id=f"poison-{uuid.uuid4().hex}", time=timeutil.now_iso(), service="hostile",
                               actor="hostile", action="poison", outcome="ok", bytes=10 ** 30)
        broker.publish(poison)
        started = time.monotonic()
        # DELIVERY_LIMIT deliveries, each failure retried after the consumer's 1-s pause.
        deadline = started + DELIVERY_LIMIT * 1.0 + 30
        while dead_lettered(fleet, "file_service_manager", queue) < counted + 1:
            assert time.monotonic() < deadline, "the poison message was not dead-lettered"
            time.sleep(0.5)
        took = time.monotonic() - started
        print(f"poison message dead-lettered after {took:.1f} s")
        assert took >= (DELIVERY_LIMIT - 1) * 0.9, f"dead-lettered after {took:.1f} s: before the delivery limit?"
        depth_deadline = time.monotonic() + 10
        while broker.queue_depths([topology.DEAD_LETTER_QUEUE.name])[topology.DEAD_LETTER_QUEUE.name] <= parked:
            assert time.monotonic() < depth_deadline, "nothing arrived in dropbox.dead_letters"
            time.sleep(0.2)
        # The audit queue is not held: it is empty again, and later work goes on.
        assert broker.queue_depths([queue])[queue] == 0
        assert fleet.rss("file_service_manager") - rss_before < 64 * MIB
    finally:
        broker.close()
    fleet.normal_upload()


def pool_groups(fleet: HostileFleet, pool_id: str, token: str) -> list[dict]:
    answer = requests.get(f"{fleet.urls['pool_aggregator']}/pools/{pool_id}/groups", headers=bearer(token),
                          timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["groups"]


def test_5_one_pools_batch_does_not_stall_another_pools_grouping(fleet: HostileFleet) -> None:
    admin = Admin(fleet)
    busy_pool = admin.create_pool(f"h5-busy-{uuid.uuid4().hex[:6]}", window_seconds=60)["pool_id"]
    quiet_pool = admin.create_pool(f"h5-quiet-{uuid.uuid4().hex[:6]}", window_seconds=60)["pool_id"]
    busy, quiet = admin.member(busy_pool), admin.member(quiet_pool)
    batch_items = 300  # bounded; MAX_ITEMS is 1,000
    item_bytes = 100
    stamp = window_timestamp(60)
    items = [{"timestamp": stamp, "offset": i * item_bytes, "length": item_bytes} for i in range(batch_items)]
    busy_sock = RawSocket(fleet.urls["socket_gateway"], busy["access_token"])
    quiet_sock = RawSocket(fleet.urls["socket_gateway"], quiet["access_token"])
    try:
        busy_sock.upload_bytes(os.urandom(batch_items * item_bytes), "batch.bin", pool_id=busy_pool, items=items)
        # Once the batch is stored, its 300 items are on their way to pool_aggregator ahead of
        # the other pool's upload: a first-come queue would group all of them first.
        busy_sock.wait_event("file-status", lambda d: d["status"] == "uploaded_successfully", timeout=60)
        quiet_sock.upload_bytes(os.urandom(2000), "single.bin", pool_id=quiet_pool, timestamp=stamp)
        started = time.monotonic()
        bound = 20.0  # SPEC's aim is 1 s; generous for a loaded 2-core CI machine (it was > 41 s)
        while sum(g["file_count"] for g in pool_groups(fleet, quiet_pool, quiet["access_token"])) < 1:
            assert time.monotonic() - started < bound, f"the other pool's upload not grouped within {bound} s"
            time.sleep(0.1)
        delay = time.monotonic() - started
        busy_count = sum(g["file_count"] for g in pool_groups(fleet, busy_pool, busy["access_token"]))
        print(f"fairness: the quiet pool's upload grouped {delay:.2f} s after it was cached, "
              f"while the busy pool had {busy_count}/{batch_items} items grouped")
        # And the batch itself is all grouped soon after (bulk writes, not one per item).
        deadline = time.monotonic() + 60
        while busy_count < batch_items:
            assert time.monotonic() < deadline, f"only {busy_count}/{batch_items} batch items grouped in 60 s"
            time.sleep(0.25)
            busy_count = sum(g["file_count"] for g in pool_groups(fleet, busy_pool, busy["access_token"]))
        assert busy_count == batch_items
    finally:
        busy_sock.close()
        quiet_sock.close()


# --- 6. one account filling Redis -------------------------------------------------------------


def redis_used_memory() -> int:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def refused(ack: dict, code: str) -> dict:
    assert ack.get("error", {}).get("code") == code, ack
    assert ack["error"].get("message"), ack
    return ack["error"]


def test_6_one_account_cannot_fill_redis(fleet: HostileFleet) -> None:
    memory_before = redis_used_memory()
    uploader_before = fleet.rss("file_uploader")
    sockets: list[RawSocket] = []
    try:
        # Unfinished uploads: UPLOADS_PER_USER, then overloaded with retry_after, however often asked.
        hoarder = RawSocket(fleet.urls["socket_gateway"], fleet.user()["access_token"])
        sockets.append(hoarder)
        started = [hoarder.call("start-transfer", {"file_name": f"u{i}.bin", "size": 1000})
                   for i in range(UPLOADS_PER_USER)]
        assert all("error" not in ack for ack in started), started
        for i in range(10):
            error = refused(hoarder.call("start-transfer", {"file_name": f"more{i}.bin", "size": 1000}), "overloaded")
            assert int(error["retry_after"]) > 0, error
        # A cancelled upload gives its slot back.
        assert "error" not in hoarder.call("cancel-upload", {"file_id": started[0]["file_id"]})
        assert "error" not in hoarder.call("start-transfer", {"file_name": "again.bin", "size": 1000})

        # Cached bytes: chunks of two unfinished uploads past CACHED_PER_USER are refused on a chunk.
        filler = RawSocket(fleet.urls["socket_gateway"], fleet.user()["access_token"])
        sockets.append(filler)
        cached = 0
        refusal: dict | None = None
        for n in range(2):
            ack = filler.call("start-transfer", {"file_name": f"fill{n}.bin", "size": 3 * MIB})
            assert "error" not in ack, ack
            file_id, chunk = ack["file_id"], ack["chunk_size"]
            for index in range(3 * MIB // chunk):
                answer = filler.call("write-chunk", {"file_id": file_id, "index": index, "data": os.urandom(chunk)})
                if "error" in answer:
                    refusal = refused(answer, "overloaded")
                    break
                cached += chunk
            if refusal:
                break
        assert refusal is not None, f"{cached} bytes cached for one user, no chunk refused"
        assert int(refusal["retry_after"]) > 0 and cached <= CACHED_PER_USER, (cached, refusal)
        assert cached > CACHED_PER_USER - 2 * CHUNK_SIZE, f"refused early, at {cached} bytes"

        # The quota: uploads whose sizes add up past USER_QUOTA_BYTES are refused at the start.
        spender = RawSocket(fleet.urls["socket_gateway"], fleet.user()["access_token"])
        sockets.append(spender)
        reserved = 0
        while reserved + MAX_FILE_SIZE <= USER_QUOTA:
            assert "error" not in spender.call("start-transfer", {"file_name": "q.bin", "size": MAX_FILE_SIZE})
            reserved += MAX_FILE_SIZE
        error = refused(spender.call("start-transfer", {"file_name": "q.bin", "size": MAX_FILE_SIZE}),
                        "quota_exceeded")
        print(f"redis probe: {cached} bytes cached before the refusal ({error['message']})")

        grown = redis_used_memory() - memory_before
        # At most CACHED_PER_USER per user was written; other suites share this Redis, so some slack.
        assert grown < CACHED_PER_USER + 64 * MIB, f"Redis used_memory grew by {grown / MIB:.0f} MiB"
        # Chunks pass through file_uploader to Redis; it keeps none of them.
        uploader_grown = fleet.rss("file_uploader") - uploader_before
        assert uploader_grown < 64 * MIB, f"file_uploader RSS grew by {uploader_grown / MIB:.0f} MiB"
    finally:
        for sock in sockets:
            sock.close()
    fleet.normal_upload()


# --- 7. the smaller ones -----------------------------------------------------------------------
# The HTTP probes of item 7 are in test_hostile_http.py, against the shared e2e fleet: a year-9999
# or far-off timestamp and a content_type outside Latin-1 or RFC 6838 refused with 400
# (test_unsafe_input_is_refused_with_400), odd Range headers answer 200/206/416 never 500
# (test_odd_ranges_never_answer_500), a download names the original file safely, CORS only for
# the configured origin (test_cors_only_for_the_gateway_origin), fuzzed JSON bodies never 500.
# Covered below the fleet: a stored year-9999 group listed, not a 500
# (tests/unit/pool_aggregator/test_grouping.py); the ingress routes neither /metrics, /ready,
# /config.json nor internal routes (tests/unit/deploy/test_kubernetes.py); production refuses a
# stored admin with the default password (tests/unit/auth/test_app.py, integration/auth/test_main.py);
# the lock file (tests/unit/deploy). Probed here, against the running fleet: the rest.


def test_7_an_executable_item_starting_at_a_chunk_boundary_is_refused(fleet: HostileFleet) -> None:
    sock = RawSocket(fleet.urls["socket_gateway"], fleet.user()["access_token"])
    try:
        stamp = window_timestamp(60)
        data = bytearray(b"a" * (2 * CHUNK_SIZE))
        data[CHUNK_SIZE:CHUNK_SIZE + 4] = b"\x7fELF"  # the second item's head is the second chunk's start
        items = [{"timestamp": stamp, "offset": 0, "length": CHUNK_SIZE},
                 {"timestamp": stamp, "offset": CHUNK_SIZE, "length": CHUNK_SIZE, "name": "tool"}]
        ack = sock.call("start-transfer", {"file_name": "batch.bin", "size": len(data), "items": items})
        assert "error" not in ack and ack["chunk_size"] == CHUNK_SIZE, ack
        answers = [sock.call("write-chunk", {"file_id": ack["file_id"], "index": i,
                                             "data": bytes(data[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE])})
                   for i in range(2)]
        if all("error" not in a for a in answers):
            answers.append(sock.call("complete-upload", {"file_id": ack["file_id"]}))
        assert answers[-1].get("error", {}).get("code") == "forbidden_type", answers
    finally:
        sock.close()


def test_7_a_failed_store_tells_the_user_no_internal_detail(fleet: HostileFleet) -> None:
    sock = RawSocket(fleet.urls["socket_gateway"], fleet.user()["access_token"])
    try:
        # fleet_env's STORE_FAIL_PATTERN (test-only) makes this store fail with an internal message.
        file_id = sock.upload_bytes(os.urandom(10_000), "fail-store-hostile.bin")
        final = sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "upload_failed",
                                timeout=60)
        record = next(f for f in sock.call("get-history", {})["files"] if f["file_id"] == file_id)
        for reason in (final.get("reason"), record.get("reason")):
            assert reason, (final, record)
            lowered = reason.lower()
            for internal in ("store_fail_pattern", "forced failure", "traceback", "exception", "error(", file_id):
                assert internal not in lowered, f"internal detail {internal!r} in the user's reason: {reason!r}"
    finally:
        sock.close()


def test_7_processor_url_is_shown_to_admins_only(fleet: HostileFleet) -> None:
    admin = Admin(fleet)
    url = "http://processor.internal:8080/run"
    pool_id = admin.create_pool(f"h7-{uuid.uuid4().hex[:6]}", window_seconds=60, processor_url=url)["pool_id"]
    member = admin.member(pool_id)
    auth = fleet.urls["auth"]
    as_admin = requests.get(f"{auth}/auth/pools/{pool_id}", headers=bearer(admin.token), timeout=10)
    assert as_admin.status_code == 200 and as_admin.json().get("processor_url") == url, as_admin.text
    as_member = requests.get(f"{auth}/auth/pools/{pool_id}", headers=bearer(member["access_token"]), timeout=10)
    assert as_member.status_code == 200 and "processor_url" not in as_member.json(), as_member.text
    listed = requests.get(f"{auth}/auth/pools", headers=bearer(member["access_token"]), timeout=10)
    assert listed.status_code == 200 and url not in listed.text, listed.text
