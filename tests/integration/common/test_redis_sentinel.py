"""Redis behind Sentinel: the primary fails over while writes go on through the helper."""

from __future__ import annotations

import threading
import time

import pytest
import redis
import socketio

from devtools.redis_sentinel import SentinelGroup
from services.common import redisconn
from services.common.settings import CommonSettings

pytestmark = pytest.mark.slow


def _settings(group: SentinelGroup) -> CommonSettings:
    return CommonSettings.from_env({"REDIS_SENTINELS": group.sentinels_env,
                                    "REDIS_MASTER_NAME": group.master_name,
                                    "REDIS_URL": "redis://127.0.0.1:1/0"})  # not the server: only db/password


class Writer(threading.Thread):
    """SETs k0, k1, ... through the helper's client as a service would, noting what was acked."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.acked: list[tuple[int, float]] = []  # (n, when)
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set() and n < 100_000:  # bounded: a test runs for seconds
            try:
                self.client.set(f"k{n}", n)
                self.acked.append((n, time.monotonic()))
                n += 1
            except redis.RedisError:
                self.errors += 1  # retried with the same key, as a service's caller would
                time.sleep(0.05)
            time.sleep(0.005)

    def acked_after(self, moment: float) -> list[int]:
        return [n for n, when in self.acked if when > moment]


def _run_failover(group: SentinelGroup, fail) -> None:
    client = redisconn.redis_client(_settings(group), socket_timeout=1)
    writer = Writer(client)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while len(writer.acked) < 50:
            assert time.monotonic() < deadline, "no writes before the failover"
            time.sleep(0.05)
        old = fail()
        new = group.wait_failover(old)
        moved = time.monotonic()
        assert new == group.ports["replica"] != old
        deadline = time.monotonic() + 20
        while len(writer.acked_after(moved)) < 50:
            assert time.monotonic() < deadline, f"writes did not resume ({writer.errors} errors)"
            time.sleep(0.05)
    finally:
        writer.stop.set()
        writer.join(10)
    after = writer.acked_after(moved)
    primary = redis.Redis(host="127.0.0.1", port=new)
    assert primary.info("replication")["role"] == "master"
    values = primary.mget([f"k{n}" for n in after])
    assert values == [str(n).encode() for n in after]  # every write acked since then is on the new primary
    assert client.connection_pool.get_master_address() == ("127.0.0.1", new)
    assert writer.errors <= 5, writer.errors  # the client's own retries absorb most of the switch


def test_killing_the_primary_writes_resume_on_the_promoted_replica(sentinel_group: SentinelGroup):
    _run_failover(sentinel_group, sentinel_group.kill_primary)


def test_sentinel_failover_moves_writes_to_the_new_primary(sentinel_group: SentinelGroup):
    def failover() -> int:
        old = sentinel_group.primary_port()
        sentinel_group.failover()
        return old

    _run_failover(sentinel_group, failover)


def test_python_socketio_manager_publishes_to_the_primary_behind_sentinel(sentinel_group: SentinelGroup):
    common = _settings(sentinel_group)
    manager = socketio.RedisManager(redisconn.socketio_url(common), channel="t:socketio", write_only=True,
                                    redis_options=redisconn.socketio_options(common))
    primary = redis.Redis(host="127.0.0.1", port=sentinel_group.primary_port())
    listener = primary.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("t:socketio")
    manager._publish({"method": "emit", "event": "x"})
    deadline = time.monotonic() + 10
    message = None
    while message is None and time.monotonic() < deadline:
        message = listener.get_message(timeout=0.5)
    assert message is not None and b'"event": "x"' in message["data"]
    listener.close()
