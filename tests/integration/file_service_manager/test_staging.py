"""Staging against real servers: the status store on MongoDB, S3 copies on moto, webhooks on a real
HTTP receiver, the per-retry delay queues on RabbitMQ, and the whole use case with real consumers."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from services.common import messaging, topology
from services.common.contracts import ResultPublished, StageResult
from services.common.runtime import runtime_of
from services.common.testing import FakeAuth
from services.file_service_manager import staging_rules as rules
from services.file_service_manager import staging_targets as targets
from services.file_service_manager.app import create_app
from services.file_service_manager.backends.filesystem import FilesystemBackend
from services.file_service_manager.config import Settings
from services.file_service_manager.store import FileIndex, StagingStatuses
from tests.integration.file_uploader.helpers import common_env
from tests.receiver import Receiver, signed

DATA = bytes(range(256)) * 4096  # 1 MiB
VALUES = {"pool_id": "p1", "group_id": "g1", "window_start": "2026-01-01T00:00:00Z", "seq": 4,
          "file_name": "../mean.f64", "result_id": "r1", "sha256": hashlib.sha256(DATA).hexdigest(),
          "download_url": "http://files/file/r1"}


class Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.closed = data, 0, False

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.pos + size
        piece, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return piece

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else len(self.data) + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self.closed = True


def _source() -> targets.Source:
    return targets.Source(values=VALUES, open=lambda: Bytes(DATA))


def test_the_status_store_transitions_once_each_on_mongodb(mongo_db) -> None:
    store = StagingStatuses(mongo_db)
    store.ensure_indexes()
    docs = [{"_id": f"r1:{i}", "result_id": "r1", "pool_id": "p1", "target": i, "kind": "webhook",
             "status": "pending", "attempts": 0} for i in range(2)]
    assert [d["target"] for d in store.plan(docs)] == [0, 1]
    store.plan([{**docs[0], "kind": "s3"}])  # a redelivery keeps what is there
    assert store.get("r1", 0)["kind"] == "webhook"
    assert store.claim("r1", 0, 1, 100.0, "t") is not None
    assert store.claim("r1", 0, 1, 100.0, "t") is None  # a duplicate of attempt 1
    assert store.take_over("r1", 0, 1, 50.0, 200.0, "t") is None  # its lease is not over
    assert store.take_over("r1", 0, 1, 150.0, 300.0, "t")["running_until"] == 300.0
    assert store.finish("r1", 0, 1, status="pending", location=None, error="boom", updated="t")
    assert store.claim("r1", 0, 2, 100.0, "t")["attempts"] == 2
    assert store.finish("r1", 0, 2, status="done", location="/x", error=None, updated="t")
    assert not store.finish("r1", 0, 2, status="failed", location=None, error="late", updated="t")
    done = store.get("r1", 0)
    assert (done["status"], done["attempts"], done["location"], "error" in done) == ("done", 2, "/x", False)


def test_an_s3_target_gets_a_copy_streamed_in_parts(s3_bucket: dict[str, str]) -> None:
    big = bytes(range(256)) * (4096 * 12)  # 12 MiB: more than one part
    target = rules.parse_target({"kind": "s3", "endpoint_url": s3_bucket["endpoint_url"], "bucket": s3_bucket["bucket"],
                                 "prefix": "{pool_id}/{seq}/", "access_key_id": s3_bucket["access_key_id"],
                                 "secret_access_key": s3_bucket["secret_access_key"]})
    location = targets.deliver_s3(target, targets.Source(values=VALUES, open=lambda: Bytes(big)))
    assert location == f"s3://{s3_bucket['bucket']}/p1/4/_._mean.f64"
    client = boto3.client("s3", endpoint_url=s3_bucket["endpoint_url"], region_name="us-east-1",
                          aws_access_key_id=s3_bucket["access_key_id"],
                          aws_secret_access_key=s3_bucket["secret_access_key"])
    got = client.get_object(Bucket=s3_bucket["bucket"], Key="p1/4/_._mean.f64")
    assert got["Body"].read() == big


def test_an_s3_failure_says_what_without_secrets(s3_bucket: dict[str, str]) -> None:
    target = rules.parse_target({"kind": "s3", "endpoint_url": s3_bucket["endpoint_url"], "bucket": "no-such-bucket-x",
                                 "access_key_id": "AKIDSECRETVALUE", "secret_access_key": "SECRETVALUE"})
    with pytest.raises(targets.StagingError) as caught:
        targets.deliver_s3(target, _source())
    assert str(caught.value).startswith("s3: ") and "SECRETVALUE" not in str(caught.value)


def test_a_webhook_is_signed_and_a_failing_receiver_is_an_error() -> None:
    receiver = Receiver(fail_first=1).start()
    try:
        target = rules.parse_target({"kind": "webhook", "url": receiver.url + "?token=abc", "secret": "s3cret"})
        policy = targets.WebhookPolicy(timeout=5, allow_private=True)
        with pytest.raises(targets.StagingError, match="answered 500"):
            targets.deliver_webhook(target, _source(), policy)
        assert targets.deliver_webhook(target, _source(), policy) == receiver.url
        seen = receiver.seen()
        assert len(seen) == 2 and all(signed("s3cret", r) for r in seen)
        assert not signed("other", seen[0])
        assert json.loads(seen[1].body) == {k: VALUES[k] for k in ("pool_id", "group_id", "result_id", "seq",
                                                                    "sha256", "download_url")}
        # Internal addresses are refused unless allowed (the receiver is on loopback).
        with pytest.raises(targets.StagingError, match="internal address"):
            targets.deliver_webhook(target, _source(), targets.WebhookPolicy(timeout=5))
        assert len(receiver.seen()) == 2
    finally:
        receiver.stop()


def test_a_webhook_that_does_not_answer_times_out() -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        target = rules.parse_target({"kind": "webhook", "url": f"http://127.0.0.1:{silent.getsockname()[1]}/",
                                     "secret": "s"})
        started = time.monotonic()
        with pytest.raises(targets.StagingError, match="Timeout"):
            targets.deliver_webhook(target, _source(), targets.WebhookPolicy(timeout=0.5, allow_private=True))
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_each_retry_waits_in_its_own_delay_queue_so_a_short_delay_never_waits_behind_a_long_one(
        amqp_url: str) -> None:
    broker = messaging.Broker(amqp_url)
    arrived: list[tuple[int, float]] = []
    done = threading.Event()

    def handler(message: Any) -> None:
        arrived.append((message.attempt, time.monotonic()))
        if len(arrived) == 2:
            done.set()

    consumer = messaging.Consumer(amqp_url, topology.STAGING_QUEUE, handler, name="t")
    consumer.start()
    try:
        base = StageResult(result_id="r", pool_id="p", group_id="g", seq=1, window_start="w", file_name="f",
                           size=1, sha256="0" * 64, download_url="u", target=0)
        time.sleep(0.5)
        started = time.monotonic()
        # The long delay first: in one shared queue it would hold the short one back.
        broker.publish(StageResult(**{**base.to_dict(), "attempt": 3}), exchange=topology.STAGING_DELAY_EXCHANGE,
                       routing_key=topology.staging_delay_key(2), expiration_ms=3000)
        broker.publish(StageResult(**{**base.to_dict(), "attempt": 2}), exchange=topology.STAGING_DELAY_EXCHANGE,
                       routing_key=topology.staging_delay_key(1), expiration_ms=300)
        assert done.wait(30), arrived
        # In one shared queue the 3 s message at the head would hold the 0.3 s one until it left first.
        assert [a for a, _ in arrived] == [2, 3]
        assert arrived[0][1] - started >= 0.25 and arrived[1][1] - started >= 2.9
    finally:
        consumer.stop()
        broker.close()


def _wait(predicate: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    return predicate()


def test_a_result_is_staged_by_real_consumers_with_retries(amqp_url: str, mongo_db, tmp_path: Path) -> None:
    root, out = tmp_path / "store", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    receiver = Receiver(fail_first=2).start()
    auth = FakeAuth()
    auth.pools["p1"] = {"pool_id": "p1", "staging": [
        {"kind": "filesystem", "path": f"{out}/{{pool_id}}", "link": True},
        {"kind": "webhook", "url": receiver.url, "secret": "hook-secret"}]}
    env = common_env(amqp_url, "unused", DEFAULT_STORAGE=json.dumps({"backend": "filesystem", "root": str(root)}),
                     STAGING_RETRY_DELAY_SECONDS="0.3", STAGING_WEBHOOK_ALLOW_PRIVATE="true")
    broker = messaging.Broker(amqp_url)
    index = FileIndex(mongo_db)
    app = create_app(Settings.from_env(env), index=index, broker=broker, auth=auth,
                     staging=StagingStatuses(mongo_db))
    deps = app.extensions["deps"]
    rid = uuid.uuid4().hex
    written = deps.storage.default.write(rid, [DATA], content_type="application/octet-stream")
    index.upsert_stored({"file_id": rid, "status": "uploaded_successfully", "pool_id": "p1", "size": len(DATA),
                         "sha256": written.sha256, "storage": dict(deps.storage.default.descriptor)})
    specs = [s for s in runtime_of(app).consumers if s.name == "staging"]
    consumers = messaging.start_consumers(amqp_url, specs)
    try:
        message = ResultPublished(result_id=rid, pool_id="p1", group_id="g1", window_start=VALUES["window_start"],
                                  window_end="x", file_name="mean.f64", size=len(DATA), sha256=written.sha256,
                                  created="c", download_url=f"http://files/file/{rid}", seq=1)
        broker.publish(message)
        broker.publish(message)  # redelivered (or published twice): nothing happens twice

        def finished() -> list[dict[str, Any]] | None:
            docs = StagingStatuses(mongo_db).for_result(rid)
            return docs if len(docs) == 2 and all(d["status"] != "pending" for d in docs) else None

        docs = _wait(finished)
        assert docs, StagingStatuses(mongo_db).for_result(rid)
        assert [(d["kind"], d["status"], d["attempts"]) for d in docs] == [("filesystem", "done", 1),
                                                                            ("webhook", "done", 3)]
        placed = out / "p1" / "mean.f64"
        stored = FilesystemBackend(str(root)).path(rid)
        assert placed.read_bytes() == DATA and placed.samefile(stored)  # linked: the same file
        seen = receiver.seen()
        assert len(seen) == 3 and all(signed("hook-secret", r) for r in seen)
        gaps = [b.at - a.at for a, b in zip(seen, seen[1:], strict=False)]
        assert gaps[0] >= 0.25 and gaps[1] >= 0.55, gaps  # 0.3 s, then 0.6 s: growing
    finally:
        messaging.stop_consumers(consumers)
        broker.close()
        receiver.stop()


def test_the_internal_status_route_needs_the_key_and_shows_no_internals(amqp_url: str, mongo_db) -> None:
    from tests.integration.file_uploader.helpers import INTERNAL_KEY

    statuses = StagingStatuses(mongo_db)
    statuses.plan([{"_id": "r9:0", "result_id": "r9", "pool_id": "p1", "target": 0, "kind": "webhook",
                    "status": "pending", "attempts": 0}])
    statuses.claim("r9", 0, 1, 10.0, "t")
    statuses.finish("r9", 0, 1, status="failed", location=None, error="webhook: the receiver answered 500",
                    updated="t")
    broker = messaging.Broker(amqp_url)
    try:
        app = create_app(Settings.from_env(common_env(amqp_url, "unused")), index=FileIndex(mongo_db), broker=broker,
                         auth=FakeAuth(), staging=statuses)
        client = app.test_client()
        assert client.get("/internal/staging/r9").status_code == 401
        assert client.get("/internal/staging/r9", headers={"X-Internal-Key": "wrong"}).status_code == 401
        bad = client.get(f"/internal/staging/{'x' * 300}", headers={"X-Internal-Key": INTERNAL_KEY})
        assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_request"
        answer = client.get("/internal/staging/r9", headers={"X-Internal-Key": INTERNAL_KEY})
        assert answer.get_json() == {"targets": [{"kind": "webhook", "status": "failed", "attempts": 1,
                                                  "error": "webhook: the receiver answered 500"}]}
        empty = client.get("/internal/staging/unknown", headers={"X-Internal-Key": INTERNAL_KEY})
        assert empty.get_json() == {"targets": []}
    finally:
        broker.close()
