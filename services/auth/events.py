"""Publishing auth's events: durable in PostgreSQL first, then told to the fleet."""

from __future__ import annotations

import logging

from services.common.contracts import Message

from .deps import Deps

log = logging.getLogger(__name__)


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
