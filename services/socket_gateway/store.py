"""The gateway's one Redis connection (besides python-socketio's own ``{prefix}:socketio`` channel).

The gateway stores nothing of its own: where a member's catch-up starts is its ack, kept
durably by pool_aggregator (months), not here. It only reads auth's revocation list
(``services.common.revocations``) and answers /ready with a ping, through this client.
The only module of the gateway that opens a Redis connection.
"""

from __future__ import annotations

import redis

from services.common import redisconn
from services.common.settings import CommonSettings


class GatewayRedis:
    def __init__(self, common: CommonSettings, socket_timeout: float = 2.0) -> None:
        self.client: redis.Redis = redisconn.redis_client(common, socket_timeout=socket_timeout)

    def ping(self) -> bool:
        return bool(self.client.ping())
