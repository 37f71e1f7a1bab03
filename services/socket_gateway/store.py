"""The gateway's Redis keys besides the socket.io channel: per-member last-seen times, and
which once-only notifications were emitted.

``{prefix}:gw:seen:<user_id>:<pool_id>`` = ISO time the member was last known connected
(written on connect after the offline delivery, and on disconnect). On the next connect
the member is re-sent the pool's results since then (minus a margin: see core.redelivery_since).

The only module of the gateway that touches Redis directly (python-socketio's Redis manager
owns the ``{prefix}:socketio`` channel itself). Redis errors leave as ``ports.StoreError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import cast

import redis

from services.common import timeutil

from .ports import StoreError


class SeenStore:
    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl_seconds

    def key(self, user_id: str, pool_id: str) -> str:
        return f"{self.prefix}:gw:seen:{user_id}:{pool_id}"

    def get_many(self, user_id: str, pool_ids: list[str]) -> dict[str, datetime | None]:
        if not pool_ids:
            return {}
        try:
            values = cast(list[bytes | None], self.client.mget([self.key(user_id, p) for p in pool_ids]))
        except redis.RedisError as exc:
            raise StoreError(f"last-seen unreadable: {exc}") from exc
        out: dict[str, datetime | None] = {}
        for pool_id, raw in zip(pool_ids, values, strict=True):
            try:
                text = raw.decode() if isinstance(raw, bytes) else raw
                out[pool_id] = timeutil.parse(text) if text else None
            except timeutil.BadTimestamp:
                out[pool_id] = None
        return out

    def touch(self, user_id: str, pool_ids: Iterable[str], moment: datetime | None = None) -> None:
        value = timeutil.iso(moment or timeutil.now())
        pipe = self.client.pipeline(transaction=False)
        for pool_id in pool_ids:
            pipe.set(self.key(user_id, pool_id), value, ex=self.ttl)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"last-seen not written: {exc}") from exc

    def start_if_absent(self, user_id: str, pool_id: str, moment: datetime | None = None) -> bool:
        """A new membership: results from now on are owed to the member (first writer wins:
        every gateway process sees the same control event)."""
        try:
            return bool(self.client.set(self.key(user_id, pool_id), timeutil.iso(moment or timeutil.now()),
                                        ex=self.ttl, nx=True))
        except redis.RedisError as exc:
            raise StoreError(f"membership start not written: {exc}") from exc

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
