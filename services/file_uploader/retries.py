"""A store failed (``UploadStoreFailed``): schedule the next attempt, or give the upload up.

SPEC: a failed store is retried twice more (``MAX_STORE_ATTEMPTS`` in all),
after ``STORE_RETRY_DELAY_SECONDS``, through the delay queue. Idempotent: the
attempt number is claimed in the cache first (compare-and-set), so a
redelivered failure of an attempt already handled does nothing.
"""

from __future__ import annotations

import dataclasses
import logging

from services.common import contracts
from services.common.contracts import FileStatusChanged, StoreUpload

from . import core
from .ports import CLAIM_LEASE_SECONDS
from .uploads import UploadService

log = logging.getLogger(__name__)

MAX_REASON = 500  # characters of a failure reason kept in the logs and the audit trail (it may quote input)

# What users read in file-status: a store failure's own text names servers, drivers and
# exceptions (file_service_manager's internals), so it goes to the logs and the audit
# trail, never to a client.
USER_RETRY_REASON = "storing the file failed; trying again"
USER_FAILED_REASON = "the file could not be stored; upload it again"


class AttemptBusy(RuntimeError):
    """Another handler's claim on this attempt still holds: the consumer retries the message
    (1 s later, at most MAX_DELIVERIES times), and it takes the claim over once the claim lapses
    (``CLAIM_LEASE_SECONDS``): the claimant was killed before it finished."""


def store_failed(uploads: UploadService, upload_id: str, attempt: int, reason: str, command: StoreUpload) -> str:
    """Decide on a failed store; returns what was done (``duplicate``, ``retry`` or ``failed``).

    The attempt is claimed (with a lease) before and finished after: a handler SIGKILLed in
    between no longer leaves the upload claimed and waiting in ``retrying`` forever, since its
    redelivered message takes the lapsed claim over."""
    claim = uploads.store.claim_attempt(upload_id, attempt, CLAIM_LEASE_SECONDS)
    if claim == "done":
        return "duplicate"
    if claim == "busy":
        raise AttemptBusy(f"attempt {attempt} of {upload_id} is being handled")
    try:
        decision = core.retry_decision(attempt)
        if decision.retry and uploads.store.session(upload_id) is None:
            outcome = give_up(uploads, upload_id, attempt, f"{reason}; the cached upload is gone", command)
        elif decision.retry and decision.next_attempt is not None:
            outcome = retry(uploads, upload_id, attempt, decision.next_attempt, reason, command)
        else:
            outcome = give_up(uploads, upload_id, attempt, reason, command)
    except BaseException:
        uploads.store.unclaim_attempt(upload_id, attempt)  # not handled: a redelivery must do it
        raise
    uploads.store.finish_attempt(upload_id, attempt)
    return outcome


def retry(uploads: UploadService, upload_id: str, attempt: int, next_attempt: int, reason: str,
          command: StoreUpload) -> str:
    settings = uploads.settings
    # The bytes must outlive the delay and the next attempt.
    uploads.store.touch(upload_id, command.chunk_count, settings.cached_ttl_seconds)
    uploads.store.set_status(upload_id, contracts.RETRYING, attempt=next_attempt)
    uploads.notify(FileStatusChanged(file_id=upload_id, owner_id=command.owner_id, status=contracts.RETRYING,
                                     attempt=next_attempt, reason=USER_RETRY_REASON, pool_id=command.pool_id,
                                     file_name=command.file_name))
    uploads.broker.publish_delayed(dataclasses.replace(command, attempt=next_attempt),
                                   settings.store_retry_delay_seconds)
    uploads.metrics.retries.inc()
    log.warning("store failed; retrying", extra={"file_id": upload_id, "attempt": attempt,
                                                 "reason": reason[:MAX_REASON]})
    return "retry"


def give_up(uploads: UploadService, upload_id: str, attempt: int, reason: str, command: StoreUpload) -> str:
    uploads.store.drop(upload_id, command.chunk_count, command.owner_id)
    uploads.hashes.forget(upload_id)
    uploads.store.set_status(upload_id, contracts.FAILED, reason=USER_FAILED_REASON)
    uploads.broker.publish(FileStatusChanged(file_id=upload_id, owner_id=command.owner_id, status=contracts.FAILED,
                                             attempt=attempt, reason=USER_FAILED_REASON, pool_id=command.pool_id,
                                             file_name=command.file_name))
    uploads.metrics.failed.labels("store_failed").inc()
    uploads.audit.record("store_failed", actor=command.owner_id, outcome="failed", file_id=upload_id,
                         pool_id=command.pool_id, size=command.size, reason=reason[:MAX_REASON], attempt=attempt)
    log.error("store failed for good", extra={"file_id": upload_id, "attempt": attempt,
                                              "reason": reason[:MAX_REASON]})
    return "failed"
