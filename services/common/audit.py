"""Recording file operations for the audit trail, off the request path and in batches.

Every service calls ``AuditTrail.record``; the record travels to file_service_manager, which
appends it to its ``audit`` collection and serves ``GET /audit``. Recording never blocks or
fails the operation it describes: a record that cannot be published is logged as
``audit_write_lost`` and counted (``lost_counter``), so a gap is visible, not silent.

Batched (issue 13): once started (``runtime.start`` starts every service's trail, ``Runtime.audit``),
``record`` only appends to an in-process buffer and returns. One background thread publishes
what waits as ``AuditsRecorded`` messages of up to ``AUDIT_BATCH`` (500) records, as soon as 500
wait or ``LINGER_SECONDS`` (50 ms) after the oldest arrived. A small upload's three records then
cost a share of one confirmed publish, one delivery and one ``insert_many`` instead of three of
each, and no request thread waits for a broker confirm for them.

Bounds and what happens past them:

- The buffer holds at most ``CAPACITY`` (10,000) records (~5 MB). Past it (the broker is slow or
  down and the thread cannot keep up) ``record`` publishes that record in place, a single
  ``AuditRecorded`` as before batching: the request pays for its own record instead of memory
  growing; the broker's retries bound that wait (~15 s, ``messaging.Broker``), never forever.
  Each such record is counted (``overflowed``) and logged (the first, then every 1,000th).
- A batch the broker refuses after its retries is lost: ``lost_counter`` goes up by its number
  of records and ``audit_write_lost`` is logged with the count.
- ``stop`` (the service stopping: ``runtime.start``'s stop, after the consumers) publishes what
  is buffered, waiting at most ``STOP_SECONDS``; what is still buffered then is counted lost.
- Before ``start`` and after ``stop`` a record is published in place: a process that never
  starts the trail (a use case's unit test, a one-off script) and a handler that finishes after
  the stop lose nothing.
- A batch of one record goes as a single ``AuditRecorded`` (what every file_service_manager
  understands; a quiet service's records are mostly alone).
- A process killed outright (SIGKILL, OOM) loses what is buffered: normally under 50 ms' worth
  of records; the price of taking the confirm off the request path.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from .contracts import AUDIT_BATCH, MAX_AUDIT_RECORDS, AuditRecorded, AuditsRecorded, check_audit_record
from .timeutil import now_iso

log = logging.getLogger(__name__)

CAPACITY = 10_000  # records buffered at most (~0.5 KB each: ~5 MB); past it, published in place
LINGER_SECONDS = 0.05  # the oldest buffered record waits at most this long for others to join it
STOP_SECONDS = 5.0  # stop waits this long for the buffer (inside docker stop's 10-s grace); then lost
OVERFLOW_LOG_EVERY = 1_000  # an overflowing buffer logs its first record in place, then every 1,000th


class AuditTrail:
    def __init__(self, broker: Any, service: str, lost_counter: Any | None = None, *,
                 capacity: int = CAPACITY, batch: int = AUDIT_BATCH, linger: float = LINGER_SECONDS) -> None:
        if not 1 <= batch <= MAX_AUDIT_RECORDS:
            raise ValueError(f"batch: 1 to {MAX_AUDIT_RECORDS} (what a consumer decodes)")
        self.broker = broker
        self.service = service
        self.lost_counter = lost_counter
        self.capacity = max(0, capacity)
        self.batch = batch
        self.linger = linger
        self.overflowed = 0  # records published in place because the buffer was full
        # (arrival on the monotonic clock, record); guarded by _cond, bounded by capacity.
        self._buffer: deque[tuple[float, AuditRecorded]] = deque()
        self._cond = threading.Condition()
        self._accepting = False  # between start and stop: record buffers
        self._thread: threading.Thread | None = None

    @property
    def buffered(self) -> int:
        with self._cond:
            return len(self._buffer)

    def record(self, action: str, *, actor: str, outcome: str = "ok", file_id: str | None = None,
               group_id: str | None = None, pool_id: str | None = None, size: int | None = None,
               sha256: str | None = None, **detail: Any) -> None:
        event = AuditRecorded(
            audit_id=uuid.uuid4().hex, time=now_iso(), service=self.service, actor=actor, action=action,
            outcome=outcome, file_id=file_id, group_id=group_id, pool_id=pool_id, bytes=size, sha256=sha256,
            detail={k: v for k, v in detail.items() if v is not None},
        )
        try:
            # Checked here as file_service_manager's decode checks it: one malformed record in a
            # batch would have the whole batch (up to AUDIT_BATCH good records) dead-lettered.
            check_audit_record(event)
        except ValueError as exc:
            self._lost(1, f"malformed record: {exc}", event)
            return
        with self._cond:
            if self._accepting:
                if len(self._buffer) < self.capacity:
                    self._buffer.append((time.monotonic(), event))
                    # The thread sleeps without a timeout on an empty buffer, and lingers for a
                    # full batch: wake it for the first record and for the batch's last.
                    if len(self._buffer) in (1, self.batch):
                        self._cond.notify()
                    return
                self.overflowed += 1
                overflowed = self.overflowed
            else:
                overflowed = 0
        if overflowed % OVERFLOW_LOG_EVERY == 1:
            log.warning("audit buffer full; publishing in place",
                        extra={"capacity": self.capacity, "overflowed": overflowed})
        self._publish([event])

    def start(self) -> Callable[[], None]:
        """Start buffering and the publishing thread; returns ``stop`` (a ``Runtime.services`` entry)."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("AuditTrail started twice")
            self._accepting = True
            self._thread = threading.Thread(target=self._run, name=f"audit-{self.service}", daemon=True)
        self._thread.start()
        return self.stop

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Publish what is buffered (at most ``timeout`` seconds); later records publish in place."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            # Left only when the broker did not take them in time; the thread, if still stuck
            # in a publish, finds the buffer empty and ends.
            left = len(self._buffer)
            self._buffer.clear()
        if left:
            self._lost(left, "not published before the stop", None)

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            self._publish(list(batch))

    def _next_batch(self) -> tuple[AuditRecorded, ...] | None:
        """Wait (holding ``_cond``) for a batch to send: ``batch`` records, or the oldest waited
        ``linger``, or the trail is stopping. None: stopped and empty."""
        while True:
            if not self._buffer:
                if not self._accepting:
                    return None
                self._cond.wait()  # record notifies the first; stop notifies too
                continue
            if len(self._buffer) >= self.batch or not self._accepting:
                break
            left = self._buffer[0][0] + self.linger - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        count = min(self.batch, len(self._buffer))
        return tuple(self._buffer.popleft()[1] for _ in range(count))

    def _publish(self, records: list[AuditRecorded]) -> None:
        # One record goes as the single AuditRecorded every file_service_manager understands;
        # several as one AuditsRecorded.
        message = records[0] if len(records) == 1 else AuditsRecorded(records=tuple(records))
        try:
            self.broker.publish(message)
        except Exception as exc:  # noqa: BLE001 - the operation goes on; the loss is made visible
            self._lost(len(records), repr(exc), records[0])

    def _lost(self, count: int, error: str, first: AuditRecorded | None) -> None:
        if self.lost_counter is not None:
            self.lost_counter.inc(count)
        log.error("audit_write_lost", extra={"records": count, "error": error,
                                             "action": first.action if first else None,
                                             "audit_file_id": first.file_id if first else None})
