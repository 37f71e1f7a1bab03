"""In-memory stand-ins for fast tests of use cases and handlers.

One shared place (cosmicpython's fake unit of work, kombu's ``memory://``
transport are the models): the broker routes by the real topology and runs
the real ``ConsumerSpec`` tables, the clock moves only when told, auth answers
from dicts. Fakes of one service's stores live in a module of this package
named for that service (they implement that service's store Protocol by
shape; this package imports no service).

Never used by production code: only tests import it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..authclient import AuthUnavailable, Identity
from ..contracts import Message, decode
from ..handlers import ConsumerSpec
from ..messaging import PublishError
from ..topology import (
    EXCHANGE,
    RETRY_EXCHANGE,
    STAGING_DELAY_EXCHANGE,
    STAGING_DELIVER_KEY,
    QueueSpec,
    topic_matches,
)

DELAYING = (RETRY_EXCHANGE, STAGING_DELAY_EXCHANGE)  # exchanges whose queues hold a message for its expiry

__all__ = ["FakeAuth", "FakeClock", "FakeRevocationStore", "InMemoryBroker", "Published"]


@dataclass(frozen=True)
class Published:
    message: Message
    exchange: str
    routing_key: str
    delay_seconds: float | None = None


class InMemoryBroker:
    """A ``ports.Publisher`` that keeps what was published and delivers it like RabbitMQ would.

    Every message is encoded and decoded on the way, so a contract that does
    not survive JSON fails here as it would on the wire. Delayed messages
    (retries) wait until ``deliver(..., include_delayed=True)``.
    """

    MAX_ROUNDS = 10_000  # deliver() stops after this many dispatches: a handler loop would never end

    def __init__(self) -> None:
        self.published: list[Published] = []
        self._pending: deque[Published] = deque()
        self._delayed: deque[Published] = deque()
        self._failures = 0
        self.depths: dict[str, int] = {}  # what queue_depths answers: tests set it to simulate a backlog

    # --- Publisher ------------------------------------------------------
    def publish(self, message: Message, *, exchange: str = EXCHANGE, routing_key: str | None = None,
                expiration_ms: int | None = None) -> None:
        if self._failures:
            self._failures -= 1
            raise PublishError(f"publish {type(message).__name__} failed (InMemoryBroker.fail_publishes)")
        wire = decode(message.encode())
        delay = expiration_ms / 1000 if (exchange in DELAYING and expiration_ms is not None) else None
        item = Published(wire, exchange, routing_key or message.key(), delay)
        self.published.append(item)
        (self._delayed if exchange in DELAYING else self._pending).append(item)

    def publish_delayed(self, message: Message, delay_seconds: float) -> None:
        self.publish(message, exchange=RETRY_EXCHANGE, routing_key=message.key(),
                     expiration_ms=max(1, int(delay_seconds * 1000)))

    def queue_depths(self, names: list[str]) -> dict[str, int]:
        return {name: self.depths.get(name, 0) for name in names}

    # --- test controls ----------------------------------------------------
    def ping(self) -> bool:
        return True

    def fail_publishes(self, count: int = 1) -> None:
        """The next ``count`` publishes raise PublishError (the broker refused or was unreachable)."""
        self._failures = count

    def of_type(self, cls: type[Message]) -> list[Any]:
        return [p.message for p in self.published if isinstance(p.message, cls)]

    def routed_to(self, queue: QueueSpec) -> list[Message]:
        """Every message published so far that the real topology would put in ``queue``."""
        return [p.message for p in self.published
                if p.delay_seconds is None and p.exchange == queue.exchange
                and any(topic_matches(b, p.routing_key) for b in queue.bindings)]

    def delayed(self) -> list[Published]:
        return list(self._delayed)

    def deliver(self, specs: Iterable[ConsumerSpec], *, include_delayed: bool = False) -> int:
        """Run every pending message through the specs whose queue it would land in, until quiet.

        Messages no spec consumes are dropped from the pending list (they stay in
        ``published``). A handler's exception propagates: the test sees it as the
        consumer would (a requeue). Returns how many dispatches ran.
        """
        specs = list(specs)
        if include_delayed:
            while self._delayed:
                self._pending.append(self._delayed.popleft())
        runs = 0
        while self._pending:
            item = self._pending.popleft()
            for spec in specs:
                if _consumes(spec, item):
                    runs += 1
                    if runs > self.MAX_ROUNDS:
                        raise RuntimeError("InMemoryBroker.deliver: handlers keep publishing; stopped")
                    spec.dispatch(item.message)
            if include_delayed:
                while self._delayed:
                    self._pending.append(self._delayed.popleft())
        return runs


def _consumes(spec: ConsumerSpec, item: Published) -> bool:
    if item.exchange not in (EXCHANGE, *DELAYING):
        return False
    # A delayed message re-enters EXCHANGE with its own key after the delay; a staging retry
    # with the key its delay queue dead-letters it with (topology.STAGING_DELAY_QUEUES).
    key = STAGING_DELIVER_KEY if item.exchange == STAGING_DELAY_EXCHANGE else item.routing_key
    if spec.queue is not None:
        bindings = spec.queue.bindings if spec.queue.exchange == EXCHANGE else ()
    else:
        bindings = spec.bindings
    return any(topic_matches(b, key) for b in bindings)


class FakeClock:
    """A ``ports.Clock`` that moves only when told (``advance``)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


@dataclass
class FakeAuth:
    """A ``ports.AuthLookup`` answering from dicts; ``down = True`` makes every call raise AuthUnavailable."""

    tokens: dict[str, Identity] = field(default_factory=dict)
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    processor_keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # api_key -> {pool_id, key_id}
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise AuthUnavailable("FakeAuth.down")

    def add_user(self, token: str, user_id: str, user_name: str, role: str = "user",
                 pools: dict[str, str] | None = None, token_id: str | None = None,
                 expires_at: int | None = None, issued_at: float | None = None) -> Identity:
        identity = Identity(user_id=user_id, user_name=user_name, role=role, pools=dict(pools or {}),
                            token_id=token_id or f"jti-{token}", expires_at=expires_at, issued_at=issued_at)
        self.tokens[token] = identity
        return identity

    def validate(self, token: str | None) -> Identity | None:
        self._check()
        return self.tokens.get(token or "")

    def processor_key(self, api_key: str | None) -> dict[str, Any] | None:
        self._check()
        return self.processor_keys.get(api_key or "")

    def processor_pool(self, api_key: str | None) -> str | None:
        key = self.processor_key(api_key)
        return key["pool_id"] if key else None

    def pool(self, pool_id: str) -> dict[str, Any] | None:
        self._check()
        return self.pools.get(pool_id)

    def retention_rules(self) -> list[dict[str, Any]]:
        self._check()
        return [{"pool_id": p, "retention_days": d["retention_days"], "deleted": bool(d.get("deleted"))}
                for p, d in sorted(self.pools.items()) if d.get("retention_days") is not None]


class FakeRevocationStore:
    """What ``revocations.RevocationList`` reads (``mget``), kept in a dict: auth's Redis keys
    written the way auth writes them, without Redis. ``down`` makes every read fail."""

    def __init__(self, prefix: str = "test") -> None:
        self.prefix = prefix
        self.values: dict[str, str] = {}
        self.down = False

    def mget(self, keys: Iterable[str]) -> list[Any]:
        if self.down:
            raise ConnectionError("FakeRevocationStore.down")
        return [self.values.get(k) for k in keys]

    def revoke_token(self, token_id: str) -> None:
        from ..revocations import token_key

        self.values[token_key(self.prefix, token_id)] = "1"

    def not_before(self, user_id: str, epoch_ms: int) -> None:
        """A disabled user, or a role change: tokens issued before ``epoch_ms`` are refused."""
        from ..revocations import user_key

        self.values[user_key(self.prefix, user_id)] = str(epoch_ms)
