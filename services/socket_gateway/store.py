"""The gateway's one Redis connection (besides python-socketio's own ``{prefix}:socketio`` channel),
and which once-only notifications were emitted (``DeliveryStore``).

Where a member's catch-up starts is its ack, kept durably by pool_aggregator (months), not
here. Through this client the gateway reads auth's revocation list
(``services.common.revocations``), answers /ready with a ping, and keeps the short-lived
``{prefix}:gw:sent:*`` once-only records.
The only module of the gateway that opens a Redis connection.
"""

from __future__ import annotations

import redis

from services.common import redisconn
from services.common.settings import CommonSettings

from .ports import StoreError


class GatewayRedis:
    def __init__(self, common: CommonSettings, socket_timeout: float = 2.0) -> None:
        self.client: redis.Redis = redisconn.redis_client(common, socket_timeout=socket_timeout)

    def ping(self) -> bool:
        return bool(self.client.ping())


class DeliveryStore:
    """``{prefix}:gw:sent:<key>``: a notification every gateway replica emits at most once
    (``uploaded_successfully``/``upload_failed`` per upload attempt, ``pool-result`` per
    result), though its message may come twice: redelivered after a gateway died before its
    ack, or published twice upstream (a store redelivered after its announcement). Marked
    after the emit, so a gateway killed in between repeats it rather than loses it. Each key
    expires after ``ttl_seconds``: duplicates come within seconds of each other, and the keys
    stay bounded by the notifications of that period."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int = 600) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl_seconds

    def key(self, key: str) -> str:
        return f"{self.prefix}:gw:sent:{key}"

    def delivered(self, key: str) -> bool:
        try:
            return bool(self.client.exists(self.key(key)))
        except redis.RedisError as exc:
            raise StoreError(f"deliveries unreadable: {exc}") from exc

    def mark_delivered(self, key: str) -> None:
        try:
            self.client.set(self.key(key), "1", ex=self.ttl)
        except redis.RedisError as exc:
            raise StoreError(f"delivery not recorded: {exc}") from exc
