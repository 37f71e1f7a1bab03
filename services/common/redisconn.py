"""The one way a service gets its Redis client: one server, or the primary behind Sentinel.

``REDIS_URL`` alone: that server. With ``REDIS_SENTINELS`` (``host:port,...``)
the client asks the sentinels for the current primary of ``REDIS_MASTER_NAME``
and asks again whenever a connection to it fails or it answers READONLY (it was
demoted), so after a failover writes go to the new primary; ``REDIS_URL`` then
only gives the password and the database number. A command that meets a
failover is retried a few times with a growing pause (bounded: ~3 s in all),
so a failover costs a pause, not an error, in most cases. The retried commands
of this code base are idempotent (SET, HSET, SADD, EXPIRE, DEL) or guarded by
a lock token, so a retry after a lost answer does no harm.

python-socketio's ``RedisManager`` gets the same choice through ``socketio_url``:
it understands ``redis+sentinel://[:password]@h1:p1,h2:p2/db/master`` itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlparse

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .settings import CommonSettings

# A Sentinel failover takes down-after-milliseconds (5 s in our manifests) plus an election;
# the client retries this many times, pausing 0.1 s doubling up to 1 s (~3 s in all), then
# lets the caller answer 503 and the client retry.
FAILOVER_RETRIES = 5
SENTINEL_TIMEOUT = 2.0  # asking a sentinel is a loopback-fast question; a dead one is skipped


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=1.0, base=0.1), FAILOVER_RETRIES,
                 supported_errors=(RedisConnectionError, RedisTimeoutError, ReadOnlyError))


def _url_parts(url: str) -> tuple[str | None, str | None, int]:
    parsed = urlparse(url)
    path = parsed.path.strip("/")
    db = int(path) if path.isdigit() else 0
    username = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password else None
    return username, password, db


def redis_client(common: CommonSettings, **options: Any) -> redis.Redis:
    """The service's Redis client (``options``: socket_timeout, health_check_interval, ...)."""
    if not common.redis_sentinels:
        return redis.Redis.from_url(common.redis_url, **options)
    username, password, db = _url_parts(common.redis_url)
    sentinel = Sentinel(list(common.redis_sentinels),  # type: ignore[no-untyped-call]
                        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT,
                                         "socket_connect_timeout": SENTINEL_TIMEOUT})
    options.setdefault("retry", _retry())
    options.setdefault("socket_connect_timeout", SENTINEL_TIMEOUT)
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        common.redis_master_name, db=db, username=username, password=password, **options)
    return client


def socketio_url(common: CommonSettings) -> str:
    """The URL for python-socketio's RedisManager: REDIS_URL, or its Sentinel form."""
    if not common.redis_sentinels:
        return common.redis_url
    _, _, db = _url_parts(common.redis_url)
    parsed = urlparse(common.redis_url)
    # python-socketio takes the user and password from the URL as they are written (still
    # percent-encoded), so they are copied over unchanged.
    auth = parsed.netloc.rpartition("@")[0]
    auth = f"{auth}@" if auth else ""
    hosts = ",".join(f"{h}:{p}" for h, p in common.redis_sentinels)
    return f"redis+sentinel://{auth}{hosts}/{db}/{quote(common.redis_master_name, safe='')}"


def socketio_options(common: CommonSettings) -> dict[str, Any]:
    """``redis_options`` for RedisManager (passed to ``Sentinel()`` or ``Redis.from_url()``).

    No socket_timeout for the data connection: the manager's subscriber waits on it for as
    long as nobody emits, and a timeout there would read as a lost connection."""
    if not common.redis_sentinels:
        return {}
    return {"sentinel_kwargs": {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}}
