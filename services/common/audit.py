"""Recording file operations for the audit trail.

Every service calls ``AuditTrail.record``; the record travels as an
``AuditRecorded`` event to file_service_manager, which appends it to its
``audit`` collection and serves ``GET /audit``. Recording never blocks or
fails the operation it describes: a record that cannot be published is
logged as ``audit_write_lost`` and counted, so a gap is visible, not silent.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from .contracts import AuditRecorded
from .timeutil import now_iso

log = logging.getLogger(__name__)


class AuditTrail:
    def __init__(self, broker: Any, service: str, lost_counter: Any | None = None) -> None:
        self.broker = broker
        self.service = service
        self.lost_counter = lost_counter

    def record(self, action: str, *, actor: str, outcome: str = "ok", file_id: str | None = None,
               group_id: str | None = None, pool_id: str | None = None, size: int | None = None,
               sha256: str | None = None, **detail: Any) -> None:
        event = AuditRecorded(
            audit_id=uuid.uuid4().hex, time=now_iso(), service=self.service, actor=actor, action=action,
            outcome=outcome, file_id=file_id, group_id=group_id, pool_id=pool_id, bytes=size, sha256=sha256,
            detail={k: v for k, v in detail.items() if v is not None},
        )
        try:
            self.broker.publish(event)
        except Exception as exc:  # noqa: BLE001 - the operation goes on; the loss is made visible
            if self.lost_counter is not None:
                self.lost_counter.inc()
            log.error("audit_write_lost", extra={"action": action, "audit_file_id": file_id,
                                                 "error": repr(exc)})
