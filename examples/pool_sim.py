"""Simulate one pool end to end against a running fleet.

    python -m examples.pool_sim --gateway URL --admin-user admin --admin-password admin-password \
        --clients N --listeners L --offline K --window S --windows W

Creates a pool (window S seconds) whose processor_url is the webhook of the
reference processor (examples.processor) running in this process, N
contributors (K of them offline) and L listeners. During W consecutive
windows every online contributor uploads one float64 array stamped inside the
window; the offline ones keep theirs and, after the last window, connect and
send them as one batch (one upload with ``items``), which makes them late.
Then it waits for every group's result at every member (offline members get
the missed ones on connect) and prints per window: files grouped, late files,
seconds from window end to the result reaching the last member, and whether
every member downloaded a byte-identical result.

    python -m examples.pool_sim --soak --gateway URL1 --gateway URL2 \
        --members 50 --window 1 --windows 200 --long-away 3 --long-away-windows 110

The soak (issue 11): ``--members`` members spread over the gateways (two or more
``--gateway``, all of one fleet), windows of ``--window`` seconds for ``--windows``
windows. In every window a few online contributors upload an update; members drop off
at random (a lost connection, no goodbye) and come back at random, each time through
a gateway picked at random; ``--long-away`` of them stay away longer than
``--long-away-windows`` windows; short blips (the connection dies and the library
reconnects by itself) come on top. Run it against a fleet with short access tokens
(``ACCESS_TOKEN_TTL_SECONDS=5``): the client library renews them by itself. At the end
everyone comes back; it waits for every result at every member, downloads every
(member, result) pair and prints the fraction delivered exactly once (as the
application saw them) and byte-identical; exit status 0 only at 100%.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import requests

from client.api import DropboxClient, DropboxError
from examples.processor.mean import encode
from examples.processor.runner import Processor

UPDATE_VALUES = 12_800  # 102,400 bytes: SPEC's files are 100 KB and up


class TimedClient(DropboxClient):
    """A client that also notes when each pool-result arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: dict[str, float] = {}  # group_id -> wall time of the pool-result

    def _on_pool_result(self, data: dict[str, Any]) -> None:
        if isinstance(data, dict) and "group_id" in data:
            self.arrivals.setdefault(str(data["group_id"]), time.time())
        super()._on_pool_result(data)


class RecordingProcessor(Processor):
    """The reference processor, noting the sha256 of every result it posted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.posted: dict[str, str] = {}  # result_id -> sha256 of the posted bytes

    def post(self, group_id: str, data: bytes) -> str | None:
        result_id = super().post(group_id, data)
        if result_id:
            self.posted[result_id] = hashlib.sha256(data).hexdigest()
        return result_id


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def update_bytes(rng: random.Random) -> bytes:
    return encode(rng.uniform(-1, 1) for _ in range(UPDATE_VALUES))


def checked(response: requests.Response, what: str) -> dict:
    if response.status_code >= 300:
        raise SystemExit(f"{what} failed: {response.status_code} {response.text[:300]}")
    return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.pool_sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", action="append", default=None,
                        help="gateway URL (default http://127.0.0.1:5000); --soak spreads members over "
                             "every one given")
    parser.add_argument("--auth", default=None, help="auth URL (default: from the gateway's /config.json)")
    parser.add_argument("--aggregator", default=None, help="pool_aggregator URL (default: from /config.json)")
    parser.add_argument("--admin-user", default="admin")
    parser.add_argument("--admin-password", default="admin-password")
    parser.add_argument("--clients", type=int, default=4, help="contributors")
    parser.add_argument("--listeners", type=int, default=1)
    parser.add_argument("--offline", type=int, default=1, help="contributors that send one batch at the end")
    parser.add_argument("--window", type=int, default=5, help="window_seconds of the pool")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--result-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    soak_args = parser.add_argument_group("soak (--soak)")
    soak_args.add_argument("--soak", action="store_true", help="the churn soak described above")
    soak_args.add_argument("--members", type=int, default=50)
    soak_args.add_argument("--uploads-per-window", type=int, default=2,
                           help="online contributors that upload in each window")
    soak_args.add_argument("--leave-chance", type=float, default=0.02,
                           help="chance per window that an online member drops off")
    soak_args.add_argument("--return-chance", type=float, default=0.15,
                           help="chance per window that an absent member comes back")
    soak_args.add_argument("--blip-chance", type=float, default=0.01,
                           help="chance per window that a member's connection dies and the library reconnects")
    soak_args.add_argument("--long-away", type=int, default=3, help="members that stay away a long time")
    soak_args.add_argument("--long-away-windows", type=int, default=110)
    soak_args.add_argument("--settle", type=float, default=300.0,
                           help="bound (s) on the wait for the last results after the last window")
    args = parser.parse_args(argv)
    args.gateway = args.gateway or ["http://127.0.0.1:5000"]
    if args.soak:
        return soak(args)
    args.gateway = args.gateway[0]
    if not 0 <= args.offline <= args.clients:
        parser.error("--offline must be between 0 and --clients")
    rng = random.Random(args.seed)
    S = args.window

    admin = TimedClient(args.gateway, args.auth, None, args.aggregator)
    admin.login(args.admin_user, args.admin_password)
    auth_url, agg_url = admin.auth_url, admin.aggregator_url
    admin_h = {"Authorization": f"Bearer {admin.token}"}

    pool = checked(requests.post(f"{auth_url}/auth/pools", headers=admin_h, timeout=10, json={
        "name": f"sim-{uuid.uuid4().hex[:6]}", "window_seconds": S, "close_grace_seconds": 0,
        "processing_timeout_seconds": max(10, 4 * S)}), "create pool")
    pool_id = str(pool["pool_id"])
    key = checked(requests.post(f"{auth_url}/auth/pools/{pool_id}/processor-keys", headers=admin_h,
                                timeout=10), "processor key")["api_key"]
    processor = Processor(agg_url, pool_id, key, poll_seconds=1.0)
    # The webhook's port is the one its server got (a port picked first and bound later may be
    # taken in between); then the pool is told where it is.
    hook = f"http://127.0.0.1:{processor.start_webhook(0)}/"
    checked(requests.patch(f"{auth_url}/auth/pools/{pool_id}", headers=admin_h, timeout=10,
                           json={"processor_url": hook}), "set processor_url")
    threading.Thread(target=processor.run, name="processor", daemon=True).start()

    members: list[tuple[TimedClient, str]] = []  # (client, role)
    for i in range(args.clients + args.listeners):
        role = "contributor" if i < args.clients else "listener"
        member = TimedClient(args.gateway, auth_url, None, agg_url)
        member.signup(f"sim_{uuid.uuid4().hex[:8]}_{i}", "sim-password-123")
        checked(requests.post(f"{auth_url}/auth/pools/{pool_id}/members", headers=admin_h, timeout=10,
                              json={"user_name": member.user["user_name"], "role": role}), "add member")
        members.append((member, role))
    contributors = [m for m, r in members if r == "contributor"]
    offline = contributors[:args.offline]
    online = [m for m, _ in members if m not in offline]
    for member in online:
        member.connect()
    print(f"pool {pool_id}: window {S}s, {len(contributors)} contributors ({len(offline)} offline), "
          f"{args.listeners} listeners")

    first = (time.time() // S + 1) * S
    batches: dict[int, list[tuple[float, bytes]]] = {id(m): [] for m in offline}
    for w in range(args.windows):
        start = first + w * S
        time.sleep(max(0.0, start + 0.05 * S - time.time()))
        errors: list[str] = []

        def send(member: TimedClient, ts: float, data: bytes, errors: list[str] = errors) -> None:
            try:
                file_id = member.upload(io.BytesIO(data), file_name="update.f64", pool_id=pool_id,
                                        timestamp=iso(ts))
                member.wait_status(file_id, timeout=60)
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                errors.append(f"{member.user['user_name']}: {exc}")

        threads = []
        for member in contributors:
            ts = min(start + rng.uniform(0.1, 0.6) * S, start + S - 0.01)
            data = update_bytes(rng)
            if member in offline:
                batches[id(member)].append((ts, data))
                continue
            thread = threading.Thread(target=send, args=(member, ts, data))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        print(f"window {w + 1}/{args.windows} [{iso(start)}]: {len(threads)} uploads"
              + (f", {len(errors)} failed: {errors[:3]}" if errors else ""))

    # The offline members come back: one batch each, every update with its own timestamp.
    for member in offline:
        member.connect()
        blob = b"".join(data for _, data in batches[id(member)])
        items, offset = [], 0
        for n, (ts, data) in enumerate(batches[id(member)]):
            items.append({"timestamp": iso(ts), "offset": offset, "length": len(data),
                          "name": f"update{n}.f64"})
            offset += len(data)
        if items:
            file_id = member.upload(io.BytesIO(blob), file_name="batch.f64", pool_id=pool_id, items=items)
            member.wait_status(file_id, timeout=60)
    if offline:
        print(f"{len(offline)} offline member(s) reconnected and sent their batch")

    # Every group that will get a result: the W windows plus the window that took the late files.
    deadline = time.time() + args.result_timeout
    everyone = [m for m, _ in members]
    groups: list[dict] = []
    while time.time() < deadline:
        groups, cursor = [], None
        while True:  # the listing is paged (next_cursor null on the last page)
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = checked(requests.get(f"{agg_url}/pools/{pool_id}/groups", params=params, headers=admin_h,
                                        timeout=10), "list groups")
            groups += page["groups"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        pending = [g for g in groups if g["status"] not in ("done", "failed")]
        done = [g["group_id"] for g in groups if g["status"] == "done"]
        delivered = all(gid in m.arrivals for gid in done for m in everyone)
        if groups and not pending and delivered:
            break
        time.sleep(0.5)

    print(f"{'window start':<26}{'files':>6}{'late':>6}{'status':>12}{'end->last member (s)':>22}  identical")
    all_ok = True
    for group in groups:
        end = datetime.fromisoformat(group["window_end"].replace("Z", "+00:00")).timestamp()
        got = [m.arrivals.get(group["group_id"]) for m in everyone]
        latency = f"{max(got) - end:.1f}" if all(got) else "missing"
        identical = "-"
        if group["status"] == "done" and all(got):
            digests = set()
            for member in everyone:
                result = next(r for r in member.results_received if r["group_id"] == group["group_id"])
                sink = io.BytesIO()
                info = member.download(result["download_url"], sink)
                digests.add((info["sha256"], result["sha256"]))
            identical = "yes" if len(digests) == 1 and all(a == b for a, b in digests) else f"NO {digests}"
        ok = group["status"] == "done" and identical == "yes"
        all_ok &= ok
        print(f"{group['window_start']:<26}{group['file_count']:>6}{group.get('late_files', 0):>6}"
              f"{group['status']:>12}{latency:>22}  {identical}")
    processor.stop()
    for member in everyone:
        member.disconnect()
    print("OK" if all_ok and groups else "NOT OK")
    return 0 if all_ok and groups else 1


# --- the soak ------------------------------------------------------------------------------


class SoakMember:
    """One member of the soak: its client, whether it is online, and where it connects."""

    def __init__(self, index: int, client: DropboxClient, role: str) -> None:
        self.index = index
        self.client = client
        self.role = role
        self.online = False
        self.back_at: int | None = None  # a long-away member: the window it comes back in
        self.connects = 0
        self.gateways: set[str] = set()
        self.tokens: set[str] = set()  # access tokens seen: the library renewed them itself


def drop_transport(client: DropboxClient) -> None:
    """A lost network: the TCP connection dies under the client, no goodbye."""
    sio = client.sio
    ws = getattr(getattr(sio, "eio", None), "ws", None)
    if ws is not None and ws.sock is not None:
        try:
            ws.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    gateways = [g.rstrip("/") for g in args.gateway]
    admin = DropboxClient(gateways[0], args.auth, None, args.aggregator)
    admin.login(args.admin_user, args.admin_password)
    auth_url, agg_url, fsm_url = admin.auth_url, admin.aggregator_url, admin.fsm_url
    S = args.window

    def as_admin(method: str, url: str, what: str, **kwargs: Any) -> dict:
        # The admin's access token may live only seconds: a 401 refreshes it and retries.
        return checked(admin._authed(method, url, timeout=30, **kwargs), what)

    pool = as_admin("POST", f"{auth_url}/auth/pools", "create pool", json={
        "name": f"soak-{uuid.uuid4().hex[:6]}", "window_seconds": S, "close_grace_seconds": 0,
        "processing_timeout_seconds": 30})
    pool_id = str(pool["pool_id"])
    key = as_admin("POST", f"{auth_url}/auth/pools/{pool_id}/processor-keys", "processor key")["api_key"]
    processor = RecordingProcessor(agg_url, pool_id, key, poll_seconds=0.5)
    hook = f"http://127.0.0.1:{processor.start_webhook(0)}/"  # as in run_sim: the port its server got
    as_admin("PATCH", f"{auth_url}/auth/pools/{pool_id}", "set processor_url", json={"processor_url": hook})
    threading.Thread(target=processor.run, name="processor", daemon=True).start()
    # Each member keeps its state (spool, last seq) in a directory of its own, as `listen` does.
    state_dir = tempfile.TemporaryDirectory(prefix="pool-soak-")
    members: list[SoakMember] = []
    try:
        return _soak_run(args, rng, gateways, pool_id, key, processor, members, state_dir.name,
                         auth_url, fsm_url, agg_url, as_admin)
    finally:
        processor.stop()
        for member in members:
            member.client.disconnect()
        state_dir.cleanup()


def _soak_run(args: argparse.Namespace, rng: random.Random, gateways: list[str], pool_id: str, key: str,
              processor: RecordingProcessor, members: list[SoakMember], state_dir: str, auth_url: str,
              fsm_url: str, agg_url: str, as_admin: Any) -> int:
    S = args.window

    for i in range(args.members):
        role = "contributor" if i < args.members - args.listeners else "listener"
        client = DropboxClient(gateways[i % len(gateways)], auth_url, fsm_url, agg_url,
                               spool_dir=f"{state_dir}/member-{i}/spool",
                               feed_state=f"{state_dir}/member-{i}/feed.json", auto_flush=False)
        client.signup(f"soak_{uuid.uuid4().hex[:8]}_{i}", "soak-password-123")
        as_admin("POST", f"{auth_url}/auth/pools/{pool_id}/members", "add member",
                 json={"user_name": client.user["user_name"], "role": role})
        members.append(SoakMember(i, client, role))
    ttl = members[0].client.user.get("expires_in") if members else None
    lock = threading.Lock()  # guards busy, errors, file_ids (upload threads and the window loop)
    busy: set[int] = set()  # members with an upload in flight: they do not leave meanwhile
    file_ids: list[tuple[SoakMember, str]] = []
    errors: list[str] = []

    def bring_back(member: SoakMember) -> bool:
        gateway = rng.choice(gateways)
        member.client.gateway_url = gateway
        try:
            member.client.connect(wait_timeout=20)
        except (DropboxError, OSError) as exc:
            with lock:
                errors.append(f"connect member {member.index}: {exc}")
            member.client.disconnect()
            return False
        member.online = True
        member.connects += 1
        member.gateways.add(gateway)
        return True

    for member in members:
        bring_back(member)
    # The long-away members leave early and come back after more than --long-away-windows.
    long_away = rng.sample(members, min(args.long_away, len(members)))
    leave_at = {m.index: rng.randint(1, max(1, args.windows // 10)) for m in long_away}
    print(f"pool {pool_id}: window {S}s x {args.windows}, {len(members)} members over {len(gateways)} "
          f"gateway(s), access tokens live {ttl}s; {len(long_away)} member(s) away > "
          f"{args.long_away_windows} windows", flush=True)

    def send(member: SoakMember, ts: float, data: bytes) -> None:
        try:
            file_id = member.client.upload(io.BytesIO(data), file_name="update.f64", pool_id=pool_id,
                                           timestamp=iso(ts), deadline_seconds=120)
            with lock:
                file_ids.append((member, file_id))
        except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
            with lock:
                errors.append(f"upload by member {member.index}: {exc!r}")
        finally:
            with lock:
                busy.discard(member.index)

    # Bound: at most uploads-per-window uploads start per window and each ends within its
    # 120-s deadline, so at most 120/S * uploads-per-window threads are ever alive.
    first = (time.time() // S + 1) * S
    leaves = returns = blips = 0
    for w in range(args.windows):
        start = first + w * S
        time.sleep(max(0.0, start + 0.05 * S - time.time()))
        with lock:
            idle = [m for m in members if m.index not in busy]
        for member in idle:
            if member.client.token:
                member.tokens.add(member.client.token)
            if member.online:
                if member.index in leave_at and w >= leave_at[member.index] and member.connects == 1:
                    # (the first window it is online and idle from its leave_at on; once)
                    member.back_at = w + args.long_away_windows + 1 + rng.randint(0, 5)
                elif member.index not in leave_at and rng.random() < args.leave_chance:
                    member.back_at = -1  # away; back at random
                else:
                    if rng.random() < args.blip_chance:
                        drop_transport(member.client)  # the library reconnects by itself
                        blips += 1
                    continue
                drop_transport(member.client)
                member.client.disconnect()
                member.online = False
                leaves += 1
            elif member.back_at is None or (member.back_at >= 0 and w >= member.back_at) \
                    or (member.back_at < 0 and rng.random() < args.return_chance):
                if bring_back(member):
                    member.back_at = None
                    returns += 1
        uploaders = [m for m in members if m.online and m.role == "contributor" and m.index not in busy]
        for member in rng.sample(uploaders, min(args.uploads_per_window, len(uploaders))):
            ts = min(start + rng.uniform(0.1, 0.6) * S, start + S - 0.01)
            with lock:
                busy.add(member.index)
            threading.Thread(target=send, args=(member, ts, update_bytes(rng)), daemon=True).start()
        if (w + 1) % max(1, args.windows // 10) == 0:
            print(f"window {w + 1}/{args.windows}: {sum(m.online for m in members)} online, "
                  f"{len(processor.posted)} results posted, {leaves} left, {returns} came back, "
                  f"{blips} blips", flush=True)

    # Everyone comes back (the long-away ones too, if the run ended before their time).
    deadline = time.time() + args.settle
    while time.time() < deadline:
        with lock:
            if not busy:
                break
        time.sleep(0.2)
    for member in members:
        member.back_at = None
        while not member.online and time.time() < deadline:
            if not bring_back(member):
                time.sleep(1.0)
    stored = 0
    for member, file_id in list(file_ids):
        try:
            member.client.wait_status(file_id, timeout=max(1.0, deadline - time.time()))
            stored += 1
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(f"upload {file_id}: {exc!r}")

    def groups() -> list[dict]:
        found, cursor = [], None
        while True:  # the listing is paged (next_cursor null on the last page)
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = checked(requests.get(f"{agg_url}/pools/{pool_id}/groups", params=params,
                                        headers={"X-API-Key": key}, timeout=30), "list groups")
            found += page["groups"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    while time.time() < deadline and any(g["status"] != "done" for g in groups()):
        time.sleep(1.0)
    posted = dict(processor.posted)

    def received(member: SoakMember) -> collections.Counter[str]:
        return collections.Counter(str(r["result_id"]) for r in list(member.client.results_received))

    while time.time() < deadline and not all(set(posted) <= set(received(m)) for m in members):
        time.sleep(1.0)

    # Every (member, result) pair: handed to the application exactly once, and its bytes,
    # downloaded by that member, are the ones the processor posted.
    started = time.time()
    identical: dict[tuple[int, str], bool] = {}

    def verify(member: SoakMember) -> None:
        for result in list(member.client.results_received):
            rid = str(result["result_id"])
            if rid not in posted or (member.index, rid) in identical:
                continue
            try:
                info = member.client.download(str(result["download_url"]), io.BytesIO())
                identical[(member.index, rid)] = info["sha256"] == posted[rid] == result.get("sha256")
            except DropboxError as exc:
                identical[(member.index, rid)] = False
                with lock:
                    errors.append(f"download {rid} by member {member.index}: {exc}")

    threads = [threading.Thread(target=verify, args=(m,)) for m in members]
    for batch in range(0, len(threads), 8):  # 8 members download at once
        for t in threads[batch:batch + 8]:
            t.start()
        for t in threads[batch:batch + 8]:
            t.join()
    download_seconds = time.time() - started

    pairs = len(members) * len(posted)
    good = duplicates = missing = gaps = 0
    for member in members:
        counts = received(member)
        for rid in posted:
            n = counts.get(rid, 0)
            missing += n == 0
            duplicates += n > 1
            good += n == 1 and identical.get((member.index, rid), False)
        seqs = sorted(int(r["seq"]) for r in member.client.results_received if r.get("seq") is not None)
        gaps += seqs != list(range(1, len(posted) + 1))
    all_groups = groups()
    away_long = [m for m in long_away if m.connects >= 2]
    fraction = good / pairs if pairs else 0.0
    print(f"groups: {len(all_groups)} ({sum(g['status'] == 'done' for g in all_groups)} done); "
          f"results posted: {len(posted)}; uploads stored: {stored}/{len(file_ids)}")
    print(f"churn: {leaves} drop-offs, {returns} returns, {blips} blips; {len(away_long)} member(s) came back "
          f"after > {args.long_away_windows} windows; members that used 2+ gateways: "
          f"{sum(len(m.gateways) > 1 for m in members)}; access tokens per member: "
          f"min {min(len(m.tokens) for m in members)}, max {max(len(m.tokens) for m in members)}")
    print(f"pairs: {pairs}; missing {missing}, duplicated {duplicates}, members with seq gaps {gaps}; "
          f"downloads verified in {download_seconds:.1f}s")
    for member in members:
        counts = received(member)
        lost = sorted(rid for rid in posted if counts.get(rid, 0) != 1)
        if lost:
            seqs = [int(r["seq"]) for r in member.client.results_received if r.get("seq") is not None]
            print(f"  member {member.index} ({member.role}): {len(lost)} not exactly once; online "
                  f"{member.client.connected}, {member.connects} connects, gateways {sorted(member.gateways)}, "
                  f"seqs held {min(seqs, default=0)}..{max(seqs, default=0)} ({len(seqs)}), gap fills "
                  f"{member.client.gap_fills}, reauths {member.client.reauths}, acked {member.client.acked}")
    if errors:
        print(f"{len(errors)} error(s), e.g. {errors[:3]}")
    print(f"delivered exactly once and byte-identical: {good}/{pairs} = {100 * fraction:.2f}%")
    ok = pairs > 0 and good == pairs and not gaps and stored == len(file_ids)
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
