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
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import requests

from client.api import DropboxClient
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


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def update_bytes(rng: random.Random) -> bytes:
    return encode(rng.uniform(-1, 1) for _ in range(UPDATE_VALUES))


def checked(response: requests.Response, what: str) -> dict:
    if response.status_code >= 300:
        raise SystemExit(f"{what} failed: {response.status_code} {response.text[:300]}")
    return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.pool_sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:5000")
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
    args = parser.parse_args(argv)
    if not 0 <= args.offline <= args.clients:
        parser.error("--offline must be between 0 and --clients")
    rng = random.Random(args.seed)
    S = args.window

    admin = TimedClient(args.gateway, args.auth, None, args.aggregator)
    admin.login(args.admin_user, args.admin_password)
    auth_url, agg_url = admin.auth_url, admin.aggregator_url
    admin_h = {"Authorization": f"Bearer {admin.token}"}

    hook_port = free_port()
    pool = checked(requests.post(f"{auth_url}/auth/pools", headers=admin_h, timeout=10, json={
        "name": f"sim-{uuid.uuid4().hex[:6]}", "window_seconds": S, "close_grace_seconds": 0,
        "processing_timeout_seconds": max(10, 4 * S), "processor_url": f"http://127.0.0.1:{hook_port}/"}),
        "create pool")
    pool_id = str(pool["pool_id"])
    key = checked(requests.post(f"{auth_url}/auth/pools/{pool_id}/processor-keys", headers=admin_h,
                                timeout=10), "processor key")["api_key"]
    processor = Processor(agg_url, pool_id, key, poll_seconds=1.0)
    processor.start_webhook(hook_port)
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


if __name__ == "__main__":
    sys.exit(main())
