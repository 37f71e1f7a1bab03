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


# The IPv6 forms that carry an internal IPv4 address: NAT64 (well-known and local-use prefixes),
# 6to4, IPv4-compatible, Teredo (its client address is stored inverted: 10.0.0.1 here).
@pytest.mark.parametrize("address", ["100.64.0.7", "192.0.2.1", "::ffff:10.0.0.1", "fc00::1", "127.0.0.1",
                                     "64:ff9b::a00:1", "64:ff9b:1::a00:1", "2002:a00:1::1", "::a00:1",
                                     "2001:0:4136:e378:8000:63bf:f5ff:fffe"])
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


def _read_request(conn: Any) -> bytes:
    """A request's head and its Content-Length body (bounds: 64 KiB of head, 1 MiB of body). Read
    whole before answering: closing with unread bytes makes TCP reset, and the client may then lose
    the answer."""
    got = b""
    while b"\r\n\r\n" not in got and len(got) < 65536:
        piece = conn.recv(4096)
        if not piece:
            return got
        got += piece
    head, _, body = got.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = min(int(value.strip()), 1024 * 1024)
    while len(body) < length:
        piece = conn.recv(min(65536, length - len(body)))
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n"


def _receiver(host: str) -> tuple[socket.socket, list[bytes]]:
    """A loopback HTTP receiver on ``host`` answering 204 to every request; returns its listener and
    the request heads it got (bound: it serves until the listener is closed, one head of 64 KiB each)."""
    listener = socket.create_server((host, 0))
    listener.settimeout(0.2)
    heads: list[bytes] = []

    def run() -> None:
        while listener.fileno() != -1:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(10)
                heads.append(_read_request(conn))
                conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    threading.Thread(target=run, daemon=True).start()
    return listener, heads


def _resolver(monkeypatch: pytest.MonkeyPatch, host: str, answers: list[str]) -> list[str]:
    """socket.getaddrinfo answering ``answers[0]`` for ``host`` the first time, ``answers[1]`` every
    time after (what a hostile DNS server with a zero TTL does); other names resolve as usual."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(name: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if name != host:
            return real(name, port, *args, **kwargs)
        address = answers[min(len(asked), 1)]
        asked.append(address)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # the one module urllib3 resolves through too
    return asked


def test_a_webhook_connects_to_the_address_it_checked_not_a_rebound_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name answers a public address for the check and 127.0.0.1 for the connect.
    The call must go to the checked (public) address, never reach the local receiver."""
    listener, heads = _receiver("127.0.0.1")
    port = listener.getsockname()[1]
    asked = _resolver(monkeypatch, "hook.example", ["93.184.215.14", "127.0.0.1"])
    try:
        with pytest.raises(staging_targets.StagingError):  # the public address does not answer HTTP here
            staging_targets.deliver_webhook(_webhook_target(f"http://hook.example:{port}/in"), _fs_source(DATA),
                                            staging_targets.WebhookPolicy(timeout=2.0))
        time.sleep(0.3)  # the receiver's accept loop polls every 0.2 s
    finally:
        listener.close()
    assert heads == [], "the rebound name reached the local receiver"
    assert asked == ["93.184.215.14"], "the name was resolved again after the check"


def test_a_webhook_is_posted_to_the_pinned_address_with_its_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A normal webhook still works through the pinned connection. allow_private (a receiver on the
    same network): still one lookup, and the connection goes to its answer (127.0.0.1, where the
    receiver listens), not to a later one (127.0.0.2, nobody); the Host header keeps the URL's name."""
    listener, heads = _receiver("127.0.0.1")
    port = listener.getsockname()[1]
    asked = _resolver(monkeypatch, "hook.example", ["127.0.0.1", "127.0.0.2"])
    try:
        shown = staging_targets.deliver_webhook(_webhook_target(f"http://hook.example:{port}/in?k=v"),
                                                _fs_source(DATA),
                                                staging_targets.WebhookPolicy(timeout=5.0, allow_private=True))
    finally:
        listener.close()
    assert shown == f"http://hook.example:{port}/in"
    assert asked == ["127.0.0.1"]
    [head] = heads
    assert head.startswith(b"POST /in?k=v HTTP/1.1\r\n")
    assert f"\r\nHost: hook.example:{port}\r\n".encode() in head
    assert b"X-Dropbox-Signature: " in head


def _tls_files(tmp_path: Path, name: str) -> tuple[str, str]:
    """A self-signed certificate for ``name`` (its own CA) and its key, as PEM files."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.mark.parametrize("served_name, delivered", [("hook.example", True), ("other.example", False)])
def test_an_https_webhook_checks_the_certificate_and_sends_sni_for_its_host_name(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served_name: str, delivered: bool) -> None:
    """Pinned to 127.0.0.1, an https webhook still sends the URL's name as SNI and checks the
    certificate against it: a certificate for another name is refused."""
    import ssl

    cert, key = _tls_files(tmp_path, served_name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sni: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: sni.append(name)  # type: ignore[assignment,misc,func-returns-value]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)  # bound: the one client comes at once or the test fails
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(10)
                    _read_request(tls)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except (OSError, ssl.SSLError):
                pass  # the client refused the certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    asked = _resolver(monkeypatch, "hook.example", ["127.0.0.1", "127.0.0.2"])
    session = staging_targets.requests.Session()
    session.verify = cert  # the test's own CA (trust_env is off: nothing comes from the environment)
    target, policy = _webhook_target(f"https://hook.example:{port}/in"), staging_targets.WebhookPolicy(
        timeout=5.0, allow_private=True)
    if delivered:
        assert staging_targets.deliver_webhook(target, _fs_source(DATA), policy, session=session) == \
            f"https://hook.example:{port}/in"
    else:
        with pytest.raises(staging_targets.StagingError, match="SSLError"):
            staging_targets.deliver_webhook(target, _fs_source(DATA), policy, session=session)
    thread.join(15)
    assert sni == ["hook.example"] and asked == ["127.0.0.1"]


def test_public_addresses_in_the_same_ipv6_forms_are_allowed() -> None:
    for address in ("8.8.8.8", "2001:4860:4860::8888", "64:ff9b::808:808", "2002:808:808::1"):
        assert not staging_targets._not_global(address), address


def test_an_internationalised_host_name_is_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests gives the connection the IDNA form of the name; the pin compares it with the URL's
    Unicode form (a mismatch refused every IDN webhook)."""
    listener, heads = _receiver("127.0.0.1")
    port = listener.getsockname()[1]
    real = socket.getaddrinfo

    def getaddrinfo(name: Any, p: Any, *args: Any, **kwargs: Any) -> Any:
        if name in ("bücher.example", "xn--bcher-kva.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(p or 0)))]
        return real(name, p, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        staging_targets.deliver_webhook(_webhook_target(f"http://bücher.example:{port}/in"), _fs_source(DATA),
                                        staging_targets.WebhookPolicy(timeout=5.0, allow_private=True))
    finally:
        listener.close()
    [head] = heads
    assert f"\r\nHost: xn--bcher-kva.example:{port}\r\n".encode() in head


def test_connecting_to_many_silent_addresses_keeps_the_attempts_one_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four addresses whose SYNs go unanswered (listeners with a full accept queue), timeout 1 s: the
    attempt ends within about a second, not four (each address got the whole timeout before)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(4):
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(0)
            held.append(server)
            ports.append(server.getsockname()[1])
            for _ in range(3):  # fill the accept queue: further SYNs are dropped
                client = socket.socket()
                client.setblocking(False)
                try:
                    client.connect(server.getsockname())
                except BlockingIOError:
                    pass
                held.append(client)
        time.sleep(0.2)
        real = socket.getaddrinfo

        def getaddrinfo(name: Any, p: Any, *args: Any, **kwargs: Any) -> Any:
            if name == "slow.example":
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)) for port in ports]
            return real(name, p, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        started = time.monotonic()
        with pytest.raises(staging_targets.StagingError):
            staging_targets.deliver_webhook(_webhook_target("http://slow.example/in"), _fs_source(DATA),
                                            staging_targets.WebhookPolicy(timeout=1.0, allow_private=True))
        assert time.monotonic() - started < 2.5
    finally:
        for sock in held:
            sock.close()
