"""The client library's feed wiring with fakes: pool-result -> ResultFeed, gap fills with get-results,
acks of what the application finished, reauth before expiry and on token-expired, refresh on a refused
connect. No network: a fake socket answers the events, FakeFleet (test_refresh) answers auth."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from client import DropboxClient, DropboxError
from client.feed import ResultFeed

from .test_refresh import FakeFleet, client_on


class FakeSocket:
    """python-socketio's Client as DropboxClient uses it: ``call`` answers like the gateway."""

    def __init__(self, client: DropboxClient, last: int = 0) -> None:
        self.client = client
        self.connected = True
        self.last = last  # the pool's last seq
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.acks: dict[str, int] = {}
        self.lock = threading.Lock()

    def call(self, event: str, data: dict[str, Any], timeout: float = 0) -> dict[str, Any]:
        with self.lock:
            self.calls.append((event, dict(data)))
        if event == "get-results":
            after, limit = data.get("after_seq") or 0, data.get("limit") or 100
            seqs = list(range(after + 1, min(self.last, after + limit) + 1))
            return {"results": [result(s, data["pool_id"]) for s in seqs], "next_seq": seqs[-1] if seqs else after,
                    "more": after + limit < self.last}
        if event == "ack-result":
            self.acks[data["pool_id"]] = max(data["seq"], self.acks.get(data["pool_id"], 0))
            return {"pool_id": data["pool_id"], "acked_seq": self.acks[data["pool_id"]]}
        if event == "reauth":
            return {"ok": True, "expires_in": 5}
        raise AssertionError(f"unexpected event {event}")

    def of(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [d for e, d in self.calls if e == event]

    def shutdown(self) -> None:
        self.connected = False


def result(seq: int, pool: str = "p1") -> dict[str, Any]:
    return {"pool_id": pool, "seq": seq, "result_id": f"{pool}-r{seq}", "group_id": "g", "file_name": "r.bin",
            "size": 1, "sha256": "0" * 64, "download_url": f"http://fsm/file/{pool}-r{seq}"}


def connected(c: DropboxClient, last: int = 0) -> FakeSocket:
    sock = FakeSocket(c, last)
    c.sio = sock  # type: ignore[assignment]
    c.token = c.token or "a0"
    c._on_connect()
    return sock


def start_keeper(c: DropboxClient) -> None:
    c._stop.clear()
    c._keeper = threading.Thread(target=c._keep_feed, daemon=True)
    c._keeper.start()


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def seqs(c: DropboxClient, pool: str = "p1") -> list[int]:
    return [r["seq"] for r in c.results_received if r["pool_id"] == pool]


def make(tmp_path: Path | None = None, **kw: Any) -> DropboxClient:
    return DropboxClient("http://127.0.0.1:1", auth_url="http://a", fsm_url="http://f", aggregator_url="http://g",
                         feed_state=(tmp_path / "feed.json") if tmp_path else None, **kw)


def test_pool_results_reach_the_application_once_each_in_seq_order() -> None:
    c = make()
    for s in (1, 3, 2, 2, 1, 4):  # out of order (one thread per message) and duplicated (catch-up + live)
        c._on_pool_result(result(s))
    assert seqs(c) == [1, 2, 3, 4] and c.duplicate_results == 2
    assert [c.wait_result("p1", 0.1)["seq"] for _ in range(4)] == [1, 2, 3, 4]
    # An older gateway's result without seq: deduplicated by result_id.
    for rid in ("x1", "x1"):
        c._on_pool_result({"result_id": rid, "pool_id": "old"})
    assert [r["result_id"] for r in c.results_received if r["pool_id"] == "old"] == ["x1"]


def test_a_gap_is_filled_with_get_results_after_the_last_seq_all_pages() -> None:
    c = make()
    sock = connected(c, last=2500)
    c._on_pool_result(result(1))
    c._on_pool_result(result(2500))  # live, while 2..2499 were lost
    assert seqs(c) == [1] and c.feed.gaps() == {"p1": 1}
    assert c.fill("p1") == 2499
    assert seqs(c) == list(range(1, 2501)) and c.feed.gaps() == {}
    assert [(d["after_seq"], d["limit"]) for d in sock.of("get-results")] == [(1, 1000), (1001, 1000), (2001, 1000)]


def test_the_keeper_fills_a_gap_only_once_it_stops_closing_by_itself() -> None:
    c = make(gap_wait=0.3)
    sock = connected(c, last=6)
    start_keeper(c)
    try:
        c._on_pool_result(result(1))
        c._on_pool_result(result(4))
        c._on_pool_result(result(2))  # the catch-up is moving: no fetch yet
        time.sleep(0.15)
        assert sock.of("get-results") == []
        wait_until(lambda: seqs(c) == [1, 2, 3, 4, 5, 6])  # 3 never came: fetched after gap_wait
        assert sock.of("get-results")[0]["after_seq"] == 2
    finally:
        c.disconnect()


def test_acks_follow_what_the_application_finished_and_survive_a_restart(tmp_path: Path) -> None:
    c = make(tmp_path, confirm_results=True)
    sock = connected(c, last=3)
    for s in (1, 2, 3):
        c._on_pool_result(result(s))
    c.send_acks()
    assert sock.of("ack-result") == []  # handed over, not finished: nothing acknowledged
    c.result_done(c.wait_result("p1", 0.1))
    c.result_done(c.wait_result("p1", 0.1))
    c.send_acks()
    c.send_acks()  # nothing new: no second ack
    assert sock.of("ack-result") == [{"pool_id": "p1", "seq": 2}]
    # A crash with seq 3 handed over but not finished: the restarted client gets it again.
    again = make(tmp_path, confirm_results=True)
    assert again.feed.last_seq("p1") == 2
    again._on_pool_result(result(3))
    assert seqs(again) == [3]
    # The connect says what the feed has (the gateway starts after the larger of it and the ack).
    assert again._auth_payload()["results_after"] == {"p1": 3}


def test_without_confirm_handing_over_counts_and_the_keeper_acks_within_a_second() -> None:
    c = make()
    sock = connected(c, last=2)
    start_keeper(c)
    try:
        c._on_pool_result(result(1))
        c._on_pool_result(result(2))
        wait_until(lambda: sock.acks.get("p1") == 2, 5)
    finally:
        c.disconnect()
    assert c.acked == {"p1": 2}


def test_reauth_before_the_access_token_expires() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    c.token_ttl = 6.0  # renewed a third of its lifetime (2 s) before it expires
    c.token_expires_at = time.time() + 10
    sock = connected(c)
    start_keeper(c)
    try:
        time.sleep(0.4)
        assert sock.of("reauth") == []
        c.token_expires_at = time.time() + 1.5
        wait_until(lambda: len(sock.of("reauth")) == 1)
        assert sock.of("reauth") == [{"token": "a2"}] and fleet.refreshes == 1 and c.reauths == 1
    finally:
        c.disconnect()


def test_token_expired_refreshes_and_reauths_at_once() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    sock = connected(c)
    start_keeper(c)
    try:
        c._on_token_expired({})  # e.g. revoked early, or the clock was off
        wait_until(lambda: len(sock.of("reauth")) == 1, 3)
        assert sock.of("reauth") == [{"token": "a2"}] and not c._token_expired
    finally:
        c.disconnect()


def test_a_login_that_ended_stops_the_reauths() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    sock = connected(c)
    fleet.valid_refresh.clear()  # logged out elsewhere
    start_keeper(c)
    try:
        c._on_token_expired({})
        wait_until(lambda: c.refresh_token is None, 3)
        time.sleep(0.6)
        assert fleet.refreshes == 1 and sock.of("reauth") == []  # asked once, not in a loop
    finally:
        c.disconnect()


def test_a_connect_refused_unauthorized_refreshes_and_connects_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    tried: list[str | None] = []

    def open_once(wait_timeout: float) -> None:
        tried.append(c.token)
        if len(tried) == 1:
            raise DropboxError("unauthorized", "invalid or expired token")
        c.sio = FakeSocket(c)  # type: ignore[assignment]

    monkeypatch.setattr(c, "_open", open_once)
    c.connect()
    try:
        assert tried == ["a1", "a2"] and fleet.refreshes == 1
    finally:
        c.disconnect()
    # Refused for another reason: no refresh, the error stands.
    c2 = client_on(FakeFleet())
    c2.login("bob", "password-123")

    def refuse(wait_timeout: float) -> None:
        raise DropboxError("overloaded", "busy")

    monkeypatch.setattr(c2, "_open", refuse)
    with pytest.raises(DropboxError):
        c2.connect()


def test_a_reconnect_after_a_refusal_presents_a_fresh_token() -> None:
    fleet = FakeFleet()
    c = client_on(fleet)
    c.login("alice", "password-123")
    assert c._auth_payload()["token"] == "a1" and fleet.refreshes == 0  # not expiring: as is
    c._refused_unauthorized = True  # python-socketio's reconnect was refused for its token
    assert c._auth_payload()["token"] == "a2" and fleet.refreshes == 1


def test_a_long_running_client_keeps_only_what_the_application_has_not_taken() -> None:
    c = make(keep_received=False)
    for s in range(1, 501):
        c._on_pool_result(result(s))
    assert c.results_received == [] and c._result_ids == set()
    assert [c.wait_result("p1", 0.1)["seq"] for _ in range(500)] == list(range(1, 501))
    assert len(c._result_queues["p1"]) == 0


def test_the_feed_state_lives_beside_the_spool(tmp_path: Path) -> None:
    c = DropboxClient("http://127.0.0.1:1", auth_url="http://a", fsm_url="http://f", aggregator_url="http://g",
                      spool_dir=tmp_path / "spool")
    c._on_pool_result(result(1))
    c.feed.flush()
    assert ResultFeed(tmp_path / "spool.feed.json").last_seq("p1") == 1


def test_listen_saves_each_result_by_seq_and_marks_it_done_once_verified(tmp_path: Path) -> None:
    from client.__main__ import _listen, _state_file, parser

    class Fake:
        def __init__(self) -> None:
            self.queue = [result(1), result(2)]
            self.done: list[int] = []
            self.watched: list[str] = []

        def connect(self, results_since: Any = None) -> None:
            pass

        def watch(self, pool_id: str) -> None:
            self.watched.append(pool_id)

        def wait_result(self, pool_id: str, timeout: float) -> dict[str, Any]:
            return self.queue.pop(0)

        def download(self, url: str, dest: Path) -> dict[str, Any]:
            Path(dest).write_bytes(b"x")
            # The second result's bytes do not match its sha256: not marked done (it comes again).
            return {"sha256": "0" * 64 if url.endswith("r1") else "bad"}

        def result_done(self, r: dict[str, Any]) -> None:
            self.done.append(r["seq"])

    args = parser().parse_args(["listen", "p1", "--out", str(tmp_path / "out"), "--count", "2"])
    fake = Fake()
    _listen(fake, args)  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000001-p1-r1-r.bin", "00000002-p1-r2-r.bin"]
    assert fake.done == [1] and fake.watched == ["p1"]
    assert _state_file(args, "alice").name == "feed-alice.json"
    assert _state_file(parser().parse_args(["listen", "p1", "--out", "o", "--state", "/x/s.json"]), "a") == \
        Path("/x/s.json")


def test_spools_under_one_parent_keep_feed_states_of_their_own(tmp_path: Path) -> None:
    # Two members on one machine (spools side by side) must not drop each other's results as
    # duplicates: each spool has its own default state file, beside it.
    first = DropboxClient(spool_dir=tmp_path / "alice", auto_flush=False)
    second = DropboxClient(spool_dir=tmp_path / "bob", auto_flush=False)
    assert first.feed.path == tmp_path / "alice.feed.json"
    assert second.feed.path == tmp_path / "bob.feed.json"
    assert first.feed.path != second.feed.path
