"""Audit batches over the real broker into the MongoDB-wire server (issue 13): a service's trail
publishes ``AuditsRecorded``; file_service_manager appends a batch with one insert, and a batch
delivered twice (a redelivery after a lost ack) appends each record once."""

from __future__ import annotations

import dataclasses
import threading

import pymongo
import pytest
from pymongo import monitoring

from services.common import messaging
from services.common.audit import AuditTrail
from services.common.contracts import AuditRecorded, AuditsRecorded
from services.file_service_manager import handlers
from services.file_service_manager.store import FileIndex
from tests.integration.file_uploader.helpers import Collector

RECORDS = 1_234  # three batches: 500, 500, 234


class Inserts(monitoring.CommandListener):
    """Counts the insert commands the server received for the audit collection."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert" and event.command.get("insert") == "audit":
            with self._lock:
                self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def audit_consumer(make_pipeline, mongo_uri, mongo_db):
    """file_service_manager's audit handler over a FileIndex whose client counts inserts."""
    p = make_pipeline()
    inserts = Inserts()
    client = pymongo.MongoClient(mongo_uri, event_listeners=[inserts])
    index = FileIndex(client[mongo_db.name])
    deps = dataclasses.replace(p.fsm.application.extensions["deps"], index=index)
    spec = {s.name: s for s in handlers.consumers(deps)}["audit"]
    yield p, spec.dispatch, index, inserts
    client.close()


def test_a_batch_delivered_twice_appends_each_record_once(audit_consumer) -> None:
    p, handle, index, inserts = audit_consumer
    broker = messaging.Broker(p.amqp_url)
    try:
        with Collector(p.amqp_url, messaging.AUDIT_QUEUE, handle) as audit:
            trail = AuditTrail(broker, "file_uploader", linger=3600)  # batches go full, the rest at the stop
            stop = trail.start()
            for n in range(RECORDS):
                trail.record("upload_started", actor="7", file_id=f"f{n}", size=n)
            stop()
            batches = audit.wait_for(lambda m: sum(len(b.records) for b in m) == RECORDS, timeout=30)
            assert [len(b.records) for b in batches] == [500, 500, 234]
            assert all(isinstance(b, AuditsRecorded) for b in batches)
            assert inserts.count == 3, "one insert per batch, not one per record"
            # Every batch again (as a redelivery would bring it), and an older replica's single record
            # of an id already appended: nothing fails, nothing is doubled.
            for batch in batches:
                broker.publish(batch)
            broker.publish(batches[0].records[7])
            audit.wait_for(lambda m: len(m) == 7, timeout=30)
    finally:
        broker.close()
    assert index.audit.count_documents({}) == RECORDS
    assert sorted(d["file_id"] for d in index.audit.find({}, {"file_id": 1})) == sorted(
        f"f{n}" for n in range(RECORDS))
    one = index.audit.find_one({"file_id": "f42"})
    assert one is not None and one["bytes"] == 42 and one["service"] == "file_uploader" and one["_id"]
    # The trail route serves them as before.
    page = p.fsm.get("/audit?file_id=f42", headers={"Authorization": "Bearer root"}).get_json()
    assert [e["audit_id"] for e in page["events"]] == [one["_id"]]


def test_a_partly_appended_batch_writes_the_rest(audit_consumer) -> None:
    """A redelivery after a write that got halfway: the records already there are skipped, the others
    written (unordered insert), and the handler succeeds so the message is acked."""
    p, handle, index, _ = audit_consumer
    records = tuple(AuditRecorded(audit_id=f"a{n}", time=f"2026-01-01T00:00:0{n}.000Z", service="auth",
                                  actor="7", action="login", outcome="ok") for n in range(6))
    handle(AuditsRecorded(records=records[::2]))  # a0, a2, a4 made it the first time
    handle(AuditsRecorded(records=records))
    assert sorted(d["_id"] for d in index.audit.find({})) == [f"a{n}" for n in range(6)]
    assert index.add_audits([dict(r.to_dict(), _id=r.audit_id) for r in records]) == 0


def test_a_write_error_other_than_a_duplicate_raises(audit_consumer) -> None:
    """Only a duplicate _id is ignored: a document the database cannot take fails the handler, so
    the consumer retries the message (and dead-letters it at the delivery limit) instead of acking
    a batch that was not written."""
    _p, handle, index, _ = audit_consumer
    fine = AuditRecorded(audit_id="ok", time="t", service="auth", actor="7", action="login", outcome="ok")
    unstorable = dataclasses.replace(fine, audit_id="big", detail={"n": 10 ** 30})  # no 64-bit BSON integer
    with pytest.raises(Exception) as caught:  # noqa: PT011 - pymongo's own error for the document
        handle(AuditsRecorded(records=(fine, unstorable)))
    assert "DuplicateKey" not in type(caught.value).__name__
    handle(AuditsRecorded(records=(fine,)))  # the record that can be stored is, on a later delivery
    assert [d["_id"] for d in index.audit.find({})] == ["ok"]
