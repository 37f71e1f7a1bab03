"""The small interfaces use cases and handlers depend on, instead of pika,
pymongo, redis or requests types. Real implementations: ``messaging.Broker``,
``authclient.AuthClient``, ``SystemClock``; in-memory ones for fast tests:
``services.common.testing``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol

from .authclient import Identity
from .contracts import Message


class Publisher(Protocol):
    """Publishes a message durably (returns once the broker confirmed it) or raises PublishError."""

    def publish(self, message: Message, *, exchange: str = ..., routing_key: str | None = None,
                expiration_ms: int | None = None) -> None: ...

    def publish_delayed(self, message: Message, delay_seconds: float) -> None: ...

    def ping(self) -> bool:
        """Does the broker answer (for /ready)?"""
        ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (for TTLs and leases)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()


class AuthLookup(Protocol):
    """What services ask auth (``authclient.AuthClient``); raises AuthUnavailable when auth is down."""

    def validate(self, token: str | None) -> Identity | None: ...

    def processor_key(self, api_key: str | None) -> dict[str, Any] | None: ...

    def processor_pool(self, api_key: str | None) -> str | None: ...

    def pool(self, pool_id: str) -> dict[str, Any] | None: ...
