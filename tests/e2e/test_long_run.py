"""Issue 11: a member that runs unattended outlives its tokens and its connections.

A fleet whose access tokens live 5 seconds; a listening client and an uploading client
(both members of one pool, the client library doing everything by itself) run for two
minutes, across ~24 token lifetimes and three forced disconnects: the listener's
connection dropped under it, the uploader's, and a restart of the gateway. Nothing may be
missed: every upload ends ``uploaded_successfully``; every result posted by the processor
reaches both members exactly once (as the application sees them), with ``seq`` contiguous,
and downloads byte-identical. Then a refresh token used again ends the login: the reused
token, its descendants and the access token they gave are all refused (401).
"""

from __future__ import annotations

import collections
import io
import random
import socket
import threading
import time

import pytest
import requests

from client.api import ConnectionLost, DropboxClient, DropboxError
from examples.pool_sim import RecordingProcessor
from examples.processor.mean import encode

from .helpers import bearer, unique_name
from .pools import Processor as PoolApi

pytestmark = pytest.mark.slow

TOKEN_TTL = 5  # ACCESS_TOKEN_TTL_SECONDS of the fleet
RUN_SECONDS = 120.0
UPLOAD_EVERY = 2.0  # seconds between the uploader's updates
WINDOW = 4  # the pool's window_seconds: ~30 groups, ~30 results in the run
# (seconds into the run, what happens): the three forced disconnects.
DISRUPTIONS = ((30.0, "drop listener"), (60.0, "drop uploader"), (90.0, "restart gateway"))
SETTLE_SECONDS = 150.0  # bound on the wait, after the run, for the last statuses and results
PASSWORD = "long-run-password"


def handed(client: DropboxClient) -> collections.Counter[str]:
    """How many times the library handed each result to the application (results_received is
    what it handed on, after dropping duplicates: a duplicate that slipped through counts 2)."""
    return collections.Counter(str(r["result_id"]) for r in list(client.results_received))


def _drop_transport(client: DropboxClient) -> None:
    """What a lost network does: the TCP connection dies under the client, no goodbye."""
    assert client.sio is not None and client.sio.eio.ws is not None
    client.sio.eio.ws.sock.shutdown(socket.SHUT_RDWR)


def _wait(predicate, timeout: float, what: str, step: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f}s")
        time.sleep(step)


def test_listener_and_uploader_with_5s_tokens_miss_nothing_for_two_minutes(make_fleet, tmp_path):
    running = make_fleet(ACCESS_TOKEN_TTL_SECONDS=str(TOKEN_TTL))
    urls = running.urls
    # The admin's access token lives 5 s too (setup on a loaded machine takes longer): its calls
    # go through the client library, which refreshes on a 401 and retries.
    admin = DropboxClient(running.gateway, urls["auth"], urls["file_service_manager"], urls["pool_aggregator"])
    admin.login(*running.admin)

    def as_admin(path: str, body: dict | None = None) -> dict:
        response = admin._authed("POST", f"{urls['auth']}{path}", json=body, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()

    pool_id = str(as_admin("/auth/pools", {"name": unique_name("longrun"), "window_seconds": WINDOW,
                                           "close_grace_seconds": 0, "processing_timeout_seconds": 30})["pool_id"])
    key = as_admin(f"/auth/pools/{pool_id}/processor-keys")["api_key"]
    processor = RecordingProcessor(urls["pool_aggregator"], pool_id, key, poll_seconds=0.5)
    threading.Thread(target=processor.run, name="processor", daemon=True).start()

    def member(role: str, spool: str) -> tuple[DropboxClient, str]:
        client = DropboxClient(running.gateway, urls["auth"], urls["file_service_manager"], urls["pool_aggregator"],
                        spool_dir=tmp_path / spool / "spool", feed_state=tmp_path / spool / "feed.json")
        name = unique_name(role[:6])
        client.signup(name, PASSWORD)
        as_admin(f"/auth/pools/{pool_id}/members", {"user_name": name, "role": role})
        first_refresh = client.refresh_token
        client.connect()
        assert first_refresh
        return client, first_refresh

    listener, _ = member("listener", "listener")
    uploader, first_refresh = member("contributor", "uploader")
    clients = {"listener": listener, "uploader": uploader}
    tokens: dict[str, set[str]] = {name: set() for name in clients}
    file_ids: list[str] = []
    upload_errors: list[str] = []
    rng = random.Random(11)
    try:
        began = time.monotonic()
        pending = list(DISRUPTIONS)
        next_upload = began
        while time.monotonic() - began < RUN_SECONDS:
            now = time.monotonic()
            for name, client in clients.items():
                if client.token:
                    tokens[name].add(client.token)
            if pending and now - began >= pending[0][0]:
                _, what = pending.pop(0)
                if what == "drop listener":
                    _drop_transport(listener)
                elif what == "drop uploader":
                    _drop_transport(uploader)
                else:
                    # Every socket of the fleet goes; the clients reconnect once it is back.
                    running.fleet.stop_service("socket_gateway")
                    running.fleet.start_service("socket_gateway")
                    running.fleet.wait_ready(("socket_gateway",), timeout=90)
            if now >= next_upload:
                next_upload = now + UPLOAD_EVERY
                data = encode(rng.uniform(-1, 1) for _ in range(12_800))  # 102,400 bytes
                for _attempt in range(3):
                    try:
                        file_ids.append(uploader.upload(io.BytesIO(data), file_name="update.f64",
                                                        pool_id=pool_id, deadline_seconds=60))
                        break
                    except (ConnectionLost, DropboxError) as exc:
                        # Only a connection lost for longer than the upload's deadline may get here;
                        # the retry is a new upload, and every file_id it returns is checked below.
                        upload_errors.append(repr(exc))
                        time.sleep(1.0)
            time.sleep(0.2)
        assert not pending, f"disruptions not done: {pending}"
        assert len(file_ids) >= RUN_SECONDS / UPLOAD_EVERY * 0.5, (len(file_ids), upload_errors)
        assert len(upload_errors) <= 2, upload_errors

        # 1. Every upload stored (the status event, or the history after a reconnect).
        for file_id in file_ids:
            status = uploader.wait_status(file_id, timeout=SETTLE_SECONDS)
            assert status["status"] == "uploaded_successfully", status

        # 2. Every group gets its result; every result reaches both members.
        api = PoolApi(running, pool_id, key)

        def all_groups_done() -> bool:
            groups = api.groups()
            return bool(groups) and all(g["status"] == "done" for g in groups)

        _wait(all_groups_done, SETTLE_SECONDS, f"every group done ({api.groups()})")
        posted = dict(processor.posted)
        assert len(posted) >= RUN_SECONDS / WINDOW * 0.5, len(posted)
        for name, client in clients.items():
            _wait(lambda c=client: set(posted) <= set(handed(c)), SETTLE_SECONDS,
                  f"{name} has every result ({len(set(posted) - set(handed(client)))} missing)")
    finally:
        processor.stop()

    for name, client in clients.items():
        # Exactly once, nothing foreign, seq 1..N with no gap.
        counts = handed(client)
        assert set(counts) == set(posted), name
        assert all(count == 1 for count in counts.values()), (name, counts)
        seqs = sorted(int(r["seq"]) for r in client.results_received)
        assert seqs == list(range(1, len(posted) + 1)), (name, seqs)
        # Many access-token lifetimes crossed: the library renewed by itself each time.
        assert len(tokens[name]) >= RUN_SECONDS / TOKEN_TTL / 2, (name, len(tokens[name]))
    # Byte-identical, downloaded with whatever token the listener holds now.
    for result in listener.results_received:
        sink = io.BytesIO()
        info = listener.download(result["download_url"], sink)
        assert info["sha256"] == posted[result["result_id"]] == result["sha256"], result
        assert info["bytes"] == result["size"]

    # 3. A reused refresh token ends the whole login: its descendants and their access tokens.
    uploader.disconnect()
    auth = urls["auth"]
    current_access, current_refresh = uploader.token, uploader.refresh_token
    assert current_refresh != first_refresh  # it was rotated many times during the run
    assert requests.get(f"{auth}/auth/validate", headers=bearer(current_access), timeout=10).status_code == 200
    reused = requests.post(f"{auth}/auth/refresh", json={"refresh_token": first_refresh}, timeout=10)
    assert reused.status_code == 401, reused.text
    later = requests.post(f"{auth}/auth/refresh", json={"refresh_token": current_refresh}, timeout=10)
    assert later.status_code == 401, later.text
    # SPEC: refused everywhere within 5 seconds.
    _wait(lambda: requests.get(f"{auth}/auth/validate", headers=bearer(current_access),
                               timeout=10).status_code == 401, 5.0, "the descendant access token refused")
    with pytest.raises(DropboxError) as refused:
        uploader.connect()
    assert refused.value.code == "unauthorized", refused.value
    # The other login (the listener's) is untouched.
    listener.refresh()
    assert requests.get(f"{auth}/auth/validate", headers=bearer(listener.token), timeout=10).status_code == 200
    listener.disconnect()
