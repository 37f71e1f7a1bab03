"""Staging use cases on in-memory stand-ins: planning, attempts, retries through the delay queues,
idempotence on redelivery, audit, and no secret anywhere."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.common import topology
from services.common.contracts import AuditRecorded, ResultPublished, StageResult
from services.common.testing import InMemoryBroker
from services.file_service_manager import handlers, staging, staging_targets
from services.file_service_manager.deps import Deps

RID = "r1"
DATA = b"result bytes " * 100
SECRET = "TOPSECRET-value"


def _published(**over: Any) -> ResultPublished:
    base = dict(result_id=RID, pool_id="p1", group_id="g1", window_start="2026-01-01T00:00:00Z",
                window_end="2026-01-01T00:01:00Z", file_name="../../mean.f64", size=len(DATA),
                sha256=hashlib.sha256(DATA).hexdigest(), created="2026-01-01T00:02:00Z",
                download_url="http://files/file/r1", seq=3)
    return ResultPublished(**{**base, **over})


def _setup(deps: Deps, targets: list[dict[str, Any]]) -> InMemoryBroker:
    deps.index.records[RID] = {"file_id": RID, "status": "uploaded_successfully", "pool_id": "p1"}  # type: ignore[attr-defined]
    deps.index.files[RID] = DATA  # type: ignore[attr-defined]
    deps.auth.pools["p1"] = {"pool_id": "p1", "staging": targets}  # type: ignore[attr-defined]
    broker = deps.broker
    assert isinstance(broker, InMemoryBroker)
    return broker


def _run(deps: Deps, broker: InMemoryBroker, *, delayed: bool = True) -> None:
    broker.deliver(handlers.consumers(deps), include_delayed=delayed)


def _audit(broker: InMemoryBroker) -> list[tuple[str, str]]:
    return [(a.action, a.outcome) for a in broker.of_type(AuditRecorded) if a.action.startswith("staging")]


def test_a_filesystem_target_gets_a_read_only_copy_inside_its_directory(deps: Deps, tmp_path: Path) -> None:
    broker = _setup(deps, [{"kind": "filesystem", "path": f"{tmp_path}/{{pool_id}}/{{window_start}}"}])
    broker.publish(_published())
    _run(deps, broker)
    placed = tmp_path / "p1" / "2026-01-01T00:00:00Z" / "_._.._mean.f64"
    assert placed.read_bytes() == DATA
    assert not stat.S_IMODE(placed.stat().st_mode) & 0o222  # read-only
    assert [p.name for p in placed.parent.iterdir()] == [placed.name]  # no temporary left
    assert staging.status(deps, RID) == {"targets": [{"kind": "filesystem", "status": "done", "attempts": 1,
                                                      "location": str(placed)}]}
    assert _audit(broker) == [("staging_done", "ok")]


def test_link_hard_links_a_result_that_lives_on_the_filesystem(deps: Deps, tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / RID[:2]).mkdir(parents=True)
    stored = root / RID[:2] / RID
    stored.write_bytes(DATA)
    broker = _setup(deps, [{"kind": "filesystem", "path": f"{tmp_path}/out", "link": True}])
    (tmp_path / "out").mkdir()
    deps.index.records[RID]["storage"] = {"id": "fs-1", "backend": "filesystem", "root": str(root)}  # type: ignore[attr-defined]
    broker.publish(_published(file_name="a.bin"))
    _run(deps, broker)
    placed = tmp_path / "out" / "a.bin"
    assert placed.read_bytes() == DATA and os.path.samefile(placed, stored)


def test_a_target_failing_three_times_is_done_at_the_fourth_attempt_with_growing_delays(
        deps: Deps, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def flaky(target: Any, source: Any, policy: Any) -> str:
        calls.append(1)
        if len(calls) <= 3:
            raise staging_targets.StagingError("webhook: the receiver answered 500")
        return "http://hook.example/in"

    monkeypatch.setattr(staging_targets, "deliver_webhook", flaky)
    broker = _setup(deps, [{"kind": "webhook", "url": "http://hook.example/in?token=q", "secret": SECRET}])
    broker.publish(_published())
    _run(deps, broker)
    assert len(calls) == 4
    assert staging.status(deps, RID) == {"targets": [{"kind": "webhook", "status": "done", "attempts": 4,
                                                      "location": "http://hook.example/in"}]}
    retries = [p for p in broker.published if p.exchange == topology.STAGING_DELAY_EXCHANGE]
    settings = deps.settings.staging
    assert [p.routing_key for p in retries] == ["retry.1", "retry.2", "retry.3"]
    assert [p.delay_seconds for p in retries] == [settings.retry_base_seconds * settings.retry_factor ** n
                                                  for n in range(3)]
    assert [m.attempt for m in broker.of_type(StageResult)] == [1, 2, 3, 4]
    assert _audit(broker) == [("staging_attempt_failed", "retry")] * 3 + [("staging_done", "ok")]
    metric = deps.metrics.registry.get_sample_value
    assert metric("staging_attempts_total", {"kind": "webhook", "outcome": "retry"}) == 3
    assert metric("staging_attempts_total", {"kind": "webhook", "outcome": "done"}) == 1


def test_a_target_that_always_fails_is_failed_after_max_attempts(deps: Deps,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(target: Any, source: Any, policy: Any) -> str:
        raise staging_targets.StagingError("webhook: ConnectionError")

    monkeypatch.setattr(staging_targets, "deliver_webhook", broken)
    broker = _setup(deps, [{"kind": "webhook", "url": "http://hook.example/in", "secret": SECRET}])
    broker.publish(_published())
    _run(deps, broker)
    attempts = deps.settings.staging.max_attempts
    assert staging.status(deps, RID) == {"targets": [{"kind": "webhook", "status": "failed", "attempts": attempts,
                                                      "error": "webhook: ConnectionError"}]}
    assert _audit(broker)[-1] == ("staging_failed", "failed")
    assert len(broker.of_type(StageResult)) == attempts


def test_redelivered_messages_do_nothing_twice(deps: Deps, tmp_path: Path) -> None:
    broker = _setup(deps, [{"kind": "filesystem", "path": str(tmp_path)}])
    message = _published(file_name="x.bin")
    broker.publish(message)
    _run(deps, broker)
    first = broker.of_type(StageResult)
    assert len(first) == 1
    broker.publish(message)  # ResultPublished redelivered: the plan exists, the target is done
    broker.publish(first[0])  # the attempt redelivered
    _run(deps, broker)
    assert len(broker.of_type(StageResult)) == 2  # only the redelivery itself: nothing new published
    assert staging.status(deps, RID)["targets"][0]["attempts"] == 1
    assert _audit(broker) == [("staging_done", "ok")]


def test_a_claimed_attempt_redelivered_comes_back_later_and_is_taken_over_after_its_lease(deps: Deps,
                                                                                         tmp_path: Path) -> None:
    broker = _setup(deps, [{"kind": "filesystem", "path": str(tmp_path)}])
    message = _published(file_name="y.bin")
    broker.publish(message)
    _run(deps, broker, delayed=False)
    command = broker.of_type(StageResult)[0]
    # As if a consumer had claimed attempt 1 and died before finishing it.
    deps.staging.docs[f"{RID}:0"].update(status="pending", attempts=1,  # type: ignore[attr-defined]
                                         running_until=deps.clock.time() + 100)
    assert staging.deliver(deps, command) == "skipped"
    later = [p for p in broker.delayed() if p.exchange == topology.STAGING_DELAY_EXCHANGE]
    assert [p.routing_key for p in later] == ["retry.1"]
    deps.clock.advance(101)  # type: ignore[attr-defined]
    assert staging.deliver(deps, command) == "done"


def test_bad_targets_fail_at_once_and_pools_without_staging_cost_nothing(deps: Deps) -> None:
    broker = _setup(deps, [{"kind": "webhook", "url": "ftp://nope", "secret": SECRET}, {"kind": "carrier-pigeon"}])
    broker.publish(_published())
    _run(deps, broker)
    targets = staging.status(deps, RID)["targets"]
    assert [(t["kind"], t["status"], t["attempts"]) for t in targets] == [("webhook", "failed", 0),
                                                                           ("unknown", "failed", 0)]
    assert broker.of_type(StageResult) == []
    deps.auth.pools["p2"] = {"pool_id": "p2"}  # type: ignore[attr-defined]
    broker.publish(_published(result_id="r2", pool_id="p2"))
    _run(deps, broker)
    assert staging.status(deps, "r2") == {"targets": []}


def test_no_secret_reaches_status_audit_or_messages(deps: Deps, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(target: Any, source: Any, policy: Any) -> str:
        raise staging_targets.StagingError("webhook: the receiver answered 403")

    monkeypatch.setattr(staging_targets, "deliver_webhook", broken)
    broker = _setup(deps, [{"kind": "webhook", "url": f"http://u:{SECRET}@hook.example/in?k={SECRET}",
                            "secret": SECRET},
                           {"kind": "s3", "endpoint_url": "http://127.0.0.1:1", "bucket": "b",
                            "access_key_id": SECRET, "secret_access_key": SECRET}])
    monkeypatch.setattr(staging_targets, "deliver_s3", lambda target, source: (_ for _ in ()).throw(
        staging_targets.StagingError("s3: AccessDenied")))
    broker.publish(_published())
    _run(deps, broker)
    everything = repr(staging.status(deps, RID)) + "".join(p.message.encode().decode() for p in broker.published)
    assert SECRET not in everything
    assert {t["status"] for t in staging.status(deps, RID)["targets"]} == {"failed"}


def test_the_staging_queue_takes_results_and_attempts() -> None:
    assert topology.queues_for(topology.EXCHANGE, "pool.result_published") >= [] and \
        topology.STAGING_QUEUE in topology.queues_for(topology.EXCHANGE, "pool.result_published")
    assert topology.STAGING_QUEUE in topology.queues_for(topology.EXCHANGE, "staging.deliver")
    assert topology.queues_for(topology.STAGING_DELAY_EXCHANGE, "retry.2") == [topology.STAGING_DELAY_QUEUES[1]]
    assert dataclasses.asdict(StageResult.from_dict(StageResult(  # survives the wire
        result_id="r", pool_id="p", group_id="g", seq=1, window_start="w", file_name="f", size=1, sha256="0" * 64,
        download_url="u", target=0).to_dict()))["attempt"] == 1


def test_a_failed_attempt_redelivered_after_its_retry_was_scheduled_does_nothing(
        deps: Deps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging_targets, "deliver_webhook", lambda target, source, policy: (_ for _ in ()).throw(
        staging_targets.StagingError("webhook: the receiver answered 500")))
    broker = _setup(deps, [{"kind": "webhook", "url": "http://hook.example/in", "secret": SECRET}])
    broker.publish(_published())
    _run(deps, broker, delayed=False)  # attempt 1 fails; attempt 2 waits in its delay queue
    first = broker.of_type(StageResult)[0]
    waiting = len(broker.delayed())
    assert staging.deliver(deps, first) == "skipped"
    assert len(broker.delayed()) == waiting  # nothing bounced: the retry already on its way is enough
    assert staging.status(deps, RID)["targets"][0]["attempts"] == 1


def _fs_source(data: bytes, **values: Any) -> staging_targets.Source:
    import io

    base = {"file_name": "a.bin", "sha256": hashlib.sha256(data).hexdigest(), "pool_id": "p1", "group_id": "g1",
            "result_id": RID, "seq": 3, "download_url": "http://files/file/r1"}
    return staging_targets.Source(values={**base, **values}, open=lambda: io.BytesIO(data))  # type: ignore[arg-type, return-value]


def test_an_existing_different_file_is_never_clobbered(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"someone else's file")
    target = staging_targets.rules.Target(kind="filesystem", path=str(tmp_path))
    with pytest.raises(staging_targets.StagingError, match="exists"):
        staging_targets.deliver_filesystem(target, _fs_source(DATA))
    assert (tmp_path / "a.bin").read_bytes() == b"someone else's file"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary left


def test_an_existing_file_with_the_same_bytes_is_done_again(tmp_path: Path) -> None:
    target = staging_targets.rules.Target(kind="filesystem", path=str(tmp_path))
    first = staging_targets.deliver_filesystem(target, _fs_source(DATA))
    assert staging_targets.deliver_filesystem(target, _fs_source(DATA)) == first  # a redelivery: idempotent
    assert (tmp_path / "a.bin").read_bytes() == DATA
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_linked_file_is_made_read_only(tmp_path: Path) -> None:
    stored = tmp_path / "stored"
    stored.write_bytes(DATA)
    stored.chmod(0o640)
    out = tmp_path / "out"
    out.mkdir()
    target = staging_targets.rules.Target(kind="filesystem", path=str(out), link=True)
    source = dataclasses.replace(_fs_source(DATA), local_path=stored)
    placed = Path(staging_targets.deliver_filesystem(target, source))
    assert os.path.samefile(placed, stored)
    assert stat.S_IMODE(placed.stat().st_mode) == 0o444


def _webhook_target(url: str) -> staging_targets.rules.Target:
    return staging_targets.rules.Target(kind="webhook", url=url, secret=SECRET)


@pytest.mark.parametrize("address", ["100.64.0.7", "192.0.2.1", "::ffff:10.0.0.1", "fc00::1", "127.0.0.1"])
def test_a_webhook_resolving_to_a_non_global_address_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                address: str) -> None:
    family = staging_targets.socket.AF_INET6 if ":" in address else staging_targets.socket.AF_INET
    monkeypatch.setattr(staging_targets.socket, "getaddrinfo",
                        lambda host, port: [(family, 1, 6, "", (address, 0))])
    posted: list[str] = []

    class Recorder(staging_targets.requests.Session):
        def post(self, url: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            posted.append(url)
            raise AssertionError("must not be called")

    with pytest.raises(staging_targets.StagingError, match="internal address"):
        staging_targets.deliver_webhook(_webhook_target("http://hook.example/in"), _fs_source(DATA),
                                        staging_targets.WebhookPolicy(), session=Recorder())
    assert posted == []


def _serve_once(answer: Callable[[Any], None]) -> tuple[str, threading.Thread]:
    """A one-connection loopback server: reads the request head, then lets ``answer`` write."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)  # bound: the test's server never waits longer for its one client

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                got = b""
                while b"\r\n\r\n" not in got and len(got) < 65536:  # bound: the head only
                    piece = conn.recv(4096)
                    if not piece:
                        return
                    got += piece
                try:
                    answer(conn)
                except OSError:
                    pass  # the client hung up: what a deadline does

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/in", thread


def test_a_webhook_trickling_its_answer_is_cut_at_the_total_deadline() -> None:
    def trickle(conn: Any) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(60):  # bound: 60 header bytes, 0.2 s apart (12 s): each read is quick, the whole is not
            conn.sendall(b"X")
            time.sleep(0.2)

    url, thread = _serve_once(trickle)
    started = time.monotonic()
    with pytest.raises(staging_targets.StagingError, match="no complete answer within"):
        staging_targets.deliver_webhook(_webhook_target(url), _fs_source(DATA),
                                        staging_targets.WebhookPolicy(timeout=1.0, allow_private=True))
    assert time.monotonic() - started < 4
    thread.join(15)


def test_a_webhook_ignores_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens: going through it fails

    url, thread = _serve_once(lambda conn: conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"))
    shown = staging_targets.deliver_webhook(_webhook_target(url), _fs_source(DATA),
                                            staging_targets.WebhookPolicy(timeout=10.0, allow_private=True))
    assert shown.startswith("http://127.0.0.1:")
    thread.join(15)


def test_a_filesystem_target_outside_filesystem_roots_is_refused_also_through_a_symlink(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "sneaky").symlink_to(outside)
    roots = (str(allowed),)
    for path in (str(outside), f"{allowed}/sneaky"):
        with pytest.raises(staging_targets.StagingError, match="FILESYSTEM_ROOTS"):
            staging_targets.deliver_filesystem(staging_targets.rules.Target(kind="filesystem", path=path),
                                               _fs_source(DATA), roots)
    assert list(outside.iterdir()) == []
    placed = staging_targets.deliver_filesystem(staging_targets.rules.Target(kind="filesystem", path=str(allowed)),
                                                _fs_source(DATA), roots)
    assert Path(placed).read_bytes() == DATA
