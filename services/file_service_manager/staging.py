"""Staging pool results (SPEC "Staging"): every new result goes to each of its pool's targets.

Why here: file_service_manager owns the bytes. A delivery streams them straight from the
result's own backend (no second HTTP hop, never the whole file in memory), and knows
whether the result already lives on a filesystem (``link``). The status is this service's
MongoDB ``staging``; pool_aggregator's staging route reads it through ``GET
/internal/staging/<result_id>``.

1. ``plan`` (on ``ResultPublished``): the pool's ``staging`` from auth; one ``pending`` status
   per target (inserted once: a redelivery finds them) and one ``StageResult`` per target
   not yet tried.
2. ``deliver`` (on ``StageResult``): claim the attempt (compare-and-set on the attempt
   count, so a duplicate does nothing), deliver, then ``done``, or publish the next attempt
   through the staging delay queue of that retry (growing delays) *before* recording the
   failure (a crash between the two leaves a retry on its way, never a target stuck
   ``pending``), or ``failed`` after ``max_attempts``. Each outcome is audited.
A command redelivered while its attempt is claimed (a consumer died mid-delivery, or a
duplicate) comes back after the first retry delay, and runs again only once the claim's
lease (``attempt_lease_seconds``) is over.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from services.common import topology
from services.common.contracts import ResultPublished, StageResult
from services.common.timeutil import now_iso

from . import staging_rules as rules
from . import staging_targets as targets
from .backends import BackendError
from .backends.filesystem import FilesystemBackend
from .deps import Deps

log = logging.getLogger(__name__)

ACTOR = "staging"


def _values(msg: StageResult) -> dict[str, Any]:
    return {"pool_id": msg.pool_id, "group_id": msg.group_id, "window_start": msg.window_start, "seq": msg.seq,
            "file_name": msg.file_name, "result_id": msg.result_id, "sha256": msg.sha256,
            "download_url": msg.download_url}


def _pool_targets(deps: Deps, pool_id: str) -> list[Any]:
    pool = deps.auth.pool(pool_id)  # AuthUnavailable propagates: the message is tried again
    raw = (pool or {}).get("staging") or []
    if not isinstance(raw, list):
        log.warning("pool staging is not a list; ignored", extra={"pool_id": pool_id})
        return []
    return raw[: rules.MAX_TARGETS]


def plan(deps: Deps, msg: ResultPublished) -> int:
    """One status per target of the result's pool, and the first attempt of each not yet
    tried; returns how many commands were published."""
    raw = _pool_targets(deps, msg.pool_id)
    if not raw or msg.seq is None:
        return 0
    now = now_iso()
    docs = []
    for index, target in enumerate(raw):
        doc: dict[str, Any] = {"_id": f"{msg.result_id}:{index}", "result_id": msg.result_id,
                               "pool_id": msg.pool_id, "target": index, "kind": rules.kind_of(target),
                               "status": rules.PENDING, "attempts": 0, "created": now, "updated": now}
        try:
            rules.parse_target(target)
        except rules.BadTarget as exc:
            doc.update(status=rules.FAILED, error=rules.short_error(str(exc)))
        docs.append(doc)
    published = 0
    for doc in deps.staging.plan(docs):
        if doc["status"] == rules.FAILED and doc["attempts"] == 0:
            deps.audit.record("staging_failed", actor=ACTOR, outcome="failed", file_id=msg.result_id,
                              pool_id=msg.pool_id, group_id=msg.group_id, kind=doc["kind"], target=doc["target"],
                              reason=doc.get("error"))
        if doc["status"] != rules.PENDING or doc["attempts"] != 0:
            continue
        deps.broker.publish(StageResult(
            result_id=msg.result_id, pool_id=msg.pool_id, group_id=msg.group_id, seq=int(msg.seq),
            window_start=msg.window_start, file_name=msg.file_name, size=msg.size, sha256=msg.sha256,
            download_url=msg.download_url, target=int(doc["target"]), attempt=1))
        published += 1
    if published:
        log.info("staging planned", extra={"result_id": msg.result_id, "targets": published})
    return published


def _source(deps: Deps, msg: StageResult) -> targets.Source:
    record = deps.index.record(msg.result_id)
    if record is None or record.get("status") == "deleted":
        raise targets.StagingError("the result is not stored (deleted?)")
    backend = deps.storage.for_record(record)

    def open_bytes() -> Any:
        download = backend.open(msg.result_id)
        if download is None:
            raise targets.StagingError("the result's bytes are missing from its backend")
        return download

    local: Path | None = None
    descriptor = record.get("storage")
    if isinstance(descriptor, dict) and descriptor.get("backend") == "filesystem" and descriptor.get("root"):
        try:
            local = FilesystemBackend(str(descriptor["root"])).path(msg.result_id)
        except BackendError:
            local = None
    return targets.Source(values=_values(msg), open=open_bytes, local_path=local)


def _attempt(deps: Deps, target: rules.Target, msg: StageResult) -> str:
    source = _source(deps, msg)
    if target.kind == "filesystem":
        return targets.deliver_filesystem(target, source, deps.settings.common.filesystem_roots)
    if target.kind == "s3":
        return targets.deliver_s3(target, source)
    settings = deps.settings.staging
    return targets.deliver_webhook(target, source, targets.WebhookPolicy(
        timeout=settings.webhook_timeout_seconds, allow_private=settings.webhook_allow_private))


def _claim(deps: Deps, msg: StageResult) -> dict[str, Any] | None:
    """The status, claimed for this attempt; None when there is nothing to do now."""
    settings = deps.settings.staging
    now = deps.clock.time()
    until = now + settings.attempt_lease_seconds
    claimed = deps.staging.claim(msg.result_id, msg.target, msg.attempt, until, now_iso())
    if claimed is not None:
        return claimed
    doc = deps.staging.get(msg.result_id, msg.target)
    if doc is None or doc["status"] != rules.PENDING or doc["attempts"] != msg.attempt \
            or doc.get("running_until") is None:
        # done, failed, a later attempt claimed, this attempt over (its retry is on its way), or
        # not planned: a duplicate, nothing to do
        return None
    taken = deps.staging.take_over(msg.result_id, msg.target, msg.attempt, now, until, now_iso())
    if taken is not None:
        log.warning("staging attempt taken over (its runner's lease ran out)",
                    extra={"result_id": msg.result_id, "target": msg.target, "attempt": msg.attempt})
        return taken
    # Claimed by a runner that may have died: look again after a delay (bounded by the lease).
    _publish_later(deps, msg, 1)
    return None


def _publish_later(deps: Deps, msg: StageResult, retry: int) -> None:
    settings = deps.settings.staging
    delay = rules.retry_delay(retry, settings.retry_base_seconds, settings.retry_factor,
                              settings.retry_max_delay_seconds)
    deps.broker.publish(msg, exchange=topology.STAGING_DELAY_EXCHANGE, routing_key=topology.staging_delay_key(retry),
                        expiration_ms=max(1, int(delay * 1000)))


def deliver(deps: Deps, msg: StageResult) -> str:
    """One attempt at one target; returns ``done``, ``retry``, ``failed`` or ``skipped``."""
    claimed = _claim(deps, msg)
    if claimed is None:
        return "skipped"
    settings = deps.settings.staging
    kind = str(claimed.get("kind"))
    location: str | None = None
    try:
        raw = _pool_targets(deps, msg.pool_id)
        if msg.target >= len(raw):
            raise targets.StagingError("the pool's staging target was removed")
        target = rules.parse_target(raw[msg.target])
        if target.kind != kind:
            raise targets.StagingError("the pool's staging target changed kind")
        location = _attempt(deps, target, msg)
    except (targets.StagingError, rules.BadTarget, BackendError) as exc:
        return _failed(deps, msg, kind, rules.short_error(str(exc)))
    except Exception as exc:  # noqa: BLE001 - an unexpected failure is one failed attempt, not a poison message
        log.exception("staging attempt failed unexpectedly", extra={"result_id": msg.result_id})
        return _failed(deps, msg, kind, f"internal error ({type(exc).__name__})")
    deps.staging.finish(msg.result_id, msg.target, msg.attempt, status=rules.DONE, location=location, error=None,
                        updated=now_iso())
    deps.metrics.staging_attempts.labels(kind, rules.DONE).inc()
    deps.audit.record("staging_done", actor=ACTOR, file_id=msg.result_id, pool_id=msg.pool_id,
                      group_id=msg.group_id, sha256=msg.sha256, size=msg.size, kind=kind, target=msg.target,
                      attempts=msg.attempt, location=location)
    log.info("staged", extra={"result_id": msg.result_id, "target": msg.target, "kind": kind,
                              "attempt": msg.attempt, "max_attempts": settings.max_attempts})
    return rules.DONE


def _failed(deps: Deps, msg: StageResult, kind: str, reason: str) -> str:
    settings = deps.settings.staging
    step = rules.next_step(msg.attempt, settings.max_attempts)
    deps.metrics.staging_attempts.labels(kind, step).inc()
    extra = {"result_id": msg.result_id, "target": msg.target, "kind": kind, "attempt": msg.attempt,
             "reason": reason}
    if step == "retry":
        # The next attempt is on its way before the failure is recorded (see the module doc).
        _publish_later(deps, dataclasses.replace(msg, attempt=msg.attempt + 1), msg.attempt)
        deps.staging.finish(msg.result_id, msg.target, msg.attempt, status=rules.PENDING, location=None,
                            error=reason, updated=now_iso())
        deps.audit.record("staging_attempt_failed", actor=ACTOR, outcome="retry", file_id=msg.result_id,
                          pool_id=msg.pool_id, group_id=msg.group_id, kind=kind, target=msg.target,
                          attempt=msg.attempt, reason=reason)
        log.warning("staging attempt failed; retrying", extra=extra)
        return "retry"
    deps.staging.finish(msg.result_id, msg.target, msg.attempt, status=rules.FAILED, location=None, error=reason,
                        updated=now_iso())
    deps.audit.record("staging_failed", actor=ACTOR, outcome="failed", file_id=msg.result_id, pool_id=msg.pool_id,
                      group_id=msg.group_id, kind=kind, target=msg.target, attempts=msg.attempt, reason=reason)
    log.error("staging failed for good", extra=extra)
    return rules.FAILED


def status(deps: Deps, result_id: str) -> dict[str, Any]:
    """SPEC's staging view: ``{targets: [{kind, status, attempts, location?, error?}]}``."""
    views = []
    for doc in deps.staging.for_result(result_id):
        view: dict[str, Any] = {"kind": doc.get("kind"), "status": doc.get("status"),
                                "attempts": int(doc.get("attempts") or 0)}
        for key in ("location", "error"):
            if doc.get(key):
                view[key] = doc[key]
        views.append(view)
    return {"targets": views}
