"""REDIS_SENTINELS / REDIS_MASTER_NAME in the settings, and what the helper builds from them."""

from __future__ import annotations

import pytest
import redis
from socketio.redis_manager import parse_redis_sentinel_url

from services.common import redisconn
from services.common.settings import MAX_SENTINELS, CommonSettings, ConfigError


def test_without_sentinels_redis_url_is_the_server() -> None:
    common = CommonSettings.from_env({"REDIS_URL": "redis://127.0.0.1:6390/3"})
    assert common.redis_sentinels == ()
    client = redisconn.redis_client(common, socket_timeout=1)
    assert isinstance(client, redis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"]) == (6390, 3)
    assert redisconn.socketio_url(common) == "redis://127.0.0.1:6390/3"


def test_sentinels_are_parsed_and_bounded() -> None:
    common = CommonSettings.from_env({"REDIS_SENTINELS": "s1:26379, s2:26380,", "REDIS_MASTER_NAME": "m"})
    assert common.redis_sentinels == (("s1", 26379), ("s2", 26380))
    assert common.redis_master_name == "m"
    for bad in ("s1", "s1:x", "s1:0", ":26379", ",".join(["s:1"] * (MAX_SENTINELS + 1))):
        with pytest.raises(ConfigError):
            CommonSettings.from_env({"REDIS_SENTINELS": bad})


def test_with_sentinels_the_client_asks_them_for_the_primary() -> None:
    common = CommonSettings.from_env({"REDIS_SENTINELS": "s1:26379,s2:26380", "REDIS_MASTER_NAME": "m",
                                      "REDIS_URL": "redis://:p%40ss@ignored:6379/2"})
    client = redisconn.redis_client(common, socket_timeout=1)
    pool = client.connection_pool
    assert pool.service_name == "m"
    assert [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
            for c in pool.sentinel_manager.sentinels] == [("s1", 26379), ("s2", 26380)]
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "p@ss"


def test_python_socketio_reads_the_sentinel_url_back() -> None:
    common = CommonSettings.from_env({"REDIS_SENTINELS": "s1:26379,s2:26380", "REDIS_MASTER_NAME": "m",
                                      "REDIS_URL": "redis://:pw@ignored:6379/2"})
    url = redisconn.socketio_url(common)
    assert url.startswith("redis+sentinel://")
    sentinels, service, kwargs = parse_redis_sentinel_url(url)
    assert sentinels == [("s1", 26379), ("s2", 26380)]
    assert service == "m" and kwargs == {"password": "pw", "db": 2}


def test_every_service_gets_its_redis_client_from_the_helper() -> None:
    """Else a service would ignore REDIS_SENTINELS and keep writing to a demoted primary."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "services"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "redisconn.py"
                 and any(call in p.read_text() for call in ("Redis.from_url(", "redis.Redis("))]
    assert offenders == []
