"""A failed store: retried through the delay queue twice, then upload_failed and the cache dropped."""

from __future__ import annotations

import pytest

from services.common import contracts, topology
from services.common.contracts import AuditRecorded, FileStatusChanged, StoreUpload
from services.common.messaging import PublishError
from services.file_uploader import retries

from .conftest import OWNER, cached_upload


def statuses(broker, file_id: str) -> list[tuple[str, int | None]]:
    return [(n.status, n.attempt) for n in broker.of_type(FileStatusChanged) if n.file_id == file_id]


def test_a_first_failure_schedules_attempt_two_after_the_delay(uploads, cache, broker, settings) -> None:
    command = cached_upload(uploads, broker)
    outcome = retries.store_failed(uploads, command.upload_id, 1, "disk full", command)
    assert outcome == "retry"
    [delayed] = broker.delayed()
    assert isinstance(delayed.message, StoreUpload) and delayed.message.attempt == 2
    assert delayed.message.upload_id == command.upload_id and delayed.routing_key == StoreUpload.routing_key
    assert delayed.delay_seconds == pytest.approx(settings.store_retry_delay_seconds)
    assert statuses(broker, command.upload_id)[-1] == (contracts.RETRYING, 2)
    tomb = cache.status(command.upload_id)
    assert tomb["status"] == contracts.RETRYING and tomb["attempt"] == "2"
    assert cache.touched[-1] == (command.upload_id, settings.cached_ttl_seconds)  # bytes outlive the delay
    assert command.upload_id in cache.uploads


def test_a_handler_killed_between_claim_and_publish_is_taken_over_by_the_redelivery(uploads, cache,
                                                                                     broker) -> None:
    """The gap docs/SCALING.md named: a SIGKILL after the claim, before the delayed StoreUpload.
    The redelivery is retried while the claim's lease holds, then does the work itself."""
    command = cached_upload(uploads, broker)
    clock = [1000.0]
    cache.now = lambda: clock[0]
    assert cache.claim_attempt(command.upload_id, 1, retries.CLAIM_LEASE_SECONDS) == "claimed"  # then killed
    with pytest.raises(retries.AttemptBusy):
        retries.store_failed(uploads, command.upload_id, 1, "x", command)
    assert not broker.delayed()
    clock[0] += retries.CLAIM_LEASE_SECONDS + 0.1
    assert retries.store_failed(uploads, command.upload_id, 1, "x", command) == "retry"
    assert [p.message.attempt for p in broker.delayed()] == [2]
    clock[0] += 3600
    assert retries.store_failed(uploads, command.upload_id, 1, "x", command) == "duplicate"


def test_a_redelivered_failure_is_handled_once(uploads, broker) -> None:
    command = cached_upload(uploads, broker)
    assert retries.store_failed(uploads, command.upload_id, 1, "x", command) == "retry"
    before = len(broker.published)
    assert retries.store_failed(uploads, command.upload_id, 1, "x", command) == "duplicate"
    assert len(broker.published) == before and len(broker.delayed()) == 1


def test_the_third_failure_gives_up_drops_the_cache_and_tells_the_owner(uploads, cache, broker) -> None:
    command = cached_upload(uploads, broker)
    assert retries.store_failed(uploads, command.upload_id, 1, "e1", command) == "retry"
    assert retries.store_failed(uploads, command.upload_id, 2, "e2", command) == "retry"
    assert retries.store_failed(uploads, command.upload_id, 3, "e3", command) == "failed"
    assert [m.attempt for m in (p.message for p in broker.delayed())] == [2, 3]
    assert statuses(broker, command.upload_id)[1:] == [(contracts.RETRYING, 2), (contracts.RETRYING, 3),
                                                       (contracts.FAILED, 3)]
    assert command.upload_id not in cache.uploads and not cache.pending
    assert cache.status(command.upload_id)["status"] == contracts.FAILED
    assert [a.action for a in broker.of_type(AuditRecorded)][-1] == "store_failed"
    assert retries.store_failed(uploads, command.upload_id, 3, "e3", command) == "duplicate"


def test_an_older_attempt_arriving_late_does_nothing(uploads, broker) -> None:
    command = cached_upload(uploads, broker)
    retries.store_failed(uploads, command.upload_id, 2, "e2", command)
    before = len(broker.published)
    assert retries.store_failed(uploads, command.upload_id, 1, "e1", command) == "duplicate"
    assert len(broker.published) == before


def test_a_retry_without_cached_bytes_gives_up_at_once(uploads, cache, broker) -> None:
    command = cached_upload(uploads, broker)
    cache.drop(command.upload_id)  # the cache expired while the store was failing
    assert retries.store_failed(uploads, command.upload_id, 1, "e1", command) == "failed"
    assert statuses(broker, command.upload_id)[-1] == (contracts.FAILED, 1)
    assert not broker.delayed()


def test_a_retry_that_cannot_be_published_is_unclaimed_for_the_redelivery(uploads, cache, broker) -> None:
    command = cached_upload(uploads, broker)
    broker.fail_publishes(2)  # the retrying notice (logged, not raised) and the delayed command
    with pytest.raises(PublishError):
        retries.store_failed(uploads, command.upload_id, 1, "e1", command)
    assert cache.status(command.upload_id).get("failed_attempt") == "0"
    assert retries.store_failed(uploads, command.upload_id, 1, "e1", command) == "retry"
    assert len(broker.delayed()) == 1


def test_the_delayed_retry_reaches_the_store_queue(uploads, broker) -> None:
    command = cached_upload(uploads, broker)
    retries.store_failed(uploads, command.upload_id, 1, "e1", command)
    [delayed] = broker.delayed()
    assert delayed.exchange == topology.RETRY_EXCHANGE
    assert topology.topic_matches(topology.STORE_QUEUE.bindings[0], delayed.routing_key)
    assert delayed.message.owner_id == OWNER


SECRET = "ServerSelectionTimeoutError: mongo-0.internal:27017 refused (user=svc)"


def test_internal_failure_text_never_reaches_users(uploads, cache, broker, caplog) -> None:
    command = cached_upload(uploads, broker)
    with caplog.at_level("WARNING"):
        for attempt in (1, 2, 3):
            retries.store_failed(uploads, command.upload_id, attempt, SECRET, command)
    notices = [n for n in broker.of_type(FileStatusChanged) if n.status != contracts.CACHED]
    assert [n.status for n in notices] == [contracts.RETRYING, contracts.RETRYING, contracts.FAILED]
    for notice in notices:
        assert notice.reason and "mongo" not in notice.reason and "Error" not in notice.reason
    assert notices[0].reason == retries.USER_RETRY_REASON and notices[-1].reason == retries.USER_FAILED_REASON
    assert "mongo" not in str(cache.status(command.upload_id))
    assert any(SECRET in str(getattr(r, "reason", "")) for r in caplog.records)  # the details are in the logs
