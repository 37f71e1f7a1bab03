"""Publishing auth's events: durable in PostgreSQL first, then told to the fleet."""

from __future__ import annotations

import logging
import threading
import time

from services.common.contracts import Message

from .deps import Deps

log = logging.getLogger(__name__)

WARN_EVERY_SECONDS = 10.0  # a flood of refusals is counted in metrics, logged at most this often per kind
_last_warned: dict[str, float] = {}  # bounded: one entry per call site (a fixed set of kinds)
_warn_lock = threading.Lock()


def warn_now_and_then(kind: str, message: str, **extra: object) -> None:
    """``log.warning`` at most once per WARN_EVERY_SECONDS for ``kind`` (floods must not flood the logs)."""
    now = time.monotonic()
    with _warn_lock:
        if now - _last_warned.get(kind, float("-inf")) < WARN_EVERY_SECONDS:
            return
        _last_warned[kind] = now
    log.warning(message, extra={"kind": kind, **extra})


def publish(deps: Deps, message: Message) -> bool:
    """Publish ``message``; False (logged, counted) when the broker did not take it.

    The change is already durable in PostgreSQL; an event that does not reach
    RabbitMQ only delays what gateways learn: they re-validate tokens and
    memberships with /auth/validate on connect and on every upload. So a failed
    publish is logged and counted, and the request still succeeds.
    """
    try:
        deps.broker.publish(message)
        return True
    except Exception:  # noqa: BLE001 - see above
        deps.metrics.publish_failures.labels(type(message).__name__).inc()
        log.exception("publishing an auth event failed", extra={"event": type(message).__name__})
        return False
