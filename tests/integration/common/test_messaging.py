"""The broker wrapper against a real RabbitMQ (a vhost of the test's own)."""

from __future__ import annotations

import queue
import subprocess
import time

import pytest

from services.common import contracts as c
from services.common.messaging import (
    AGGREGATOR_QUEUE,
    DEAD_LETTER_QUEUE,
    STORE_QUEUE,
    Broker,
    Consumer,
)

# The legacy queue's unsharded key, as a file_service_manager older than the pool shards publishes
# FileStored: these use pool_aggregator.stored as any consumed quorum queue.
LEGACY_KEY = c.FileStored.routing_key


def _wait(q: queue.Queue, timeout: float = 10):
    return q.get(timeout=timeout)


def test_published_events_are_consumed_and_acked(amqp_url):
    broker = Broker(amqp_url)
    got: queue.Queue = queue.Queue()
    consumer = Consumer(amqp_url, AGGREGATOR_QUEUE, got.put, name="t")
    try:
        event = c.FileGrouped(file_id="f1", pool_id="p", group_id="g", late=False)
        stored = c.FileStored(file_id="f1", upload_id="f1", owner_id="1", owner_name="a", file_name="a",
                              size=1, sha256="x", content_type="t", timestamp="t", created="t")
        broker.publish(event)  # no queue of this test binds file.grouped... the index queue does
        broker.publish(stored, routing_key=LEGACY_KEY)  # before the consumer runs: the queue keeps it
        consumer.start()
        assert _wait(got) == stored
        time.sleep(0.5)
        assert broker.queue_depths([AGGREGATOR_QUEUE.name])[AGGREGATOR_QUEUE.name] == 0
    finally:
        consumer.stop()
        broker.close()


def test_failed_handler_requeues_and_unknown_bodies_are_dead_lettered(amqp_url):
    broker = Broker(amqp_url)
    attempts: list[str] = []
    done: queue.Queue = queue.Queue()

    def flaky(message):
        attempts.append(message.upload_id)
        if len(attempts) == 1:
            raise RuntimeError("mongo is down")
        done.put(message)

    consumer = Consumer(amqp_url, STORE_QUEUE, flaky, name="store", retry_pause=0.1)
    consumer.start()
    try:
        command = c.StoreUpload(upload_id="u9", owner_id="1", owner_name="a", file_name="a", size=1,
                                sha256="ab" * 32, content_type="t", chunk_size=1, chunk_count=1,
                                cache_key="p:upload:u9", items=(), created="t")
        failed = c.UploadStoreFailed(upload_id="u9", attempt=1, reason="x", command=command)
        # A StoreFailed body on the store queue is a known contract but the wrong type for the
        # handler; the handler sees it anyway (routing is the publisher's job).
        broker.publish(failed, routing_key="upload.store")
        assert _wait(done).upload_id == "u9"
        assert attempts == ["u9", "u9"]

        channel_broker = Broker(amqp_url)
        channel_broker._take().channel.basic_publish("dropbox", "upload.store", b"{not json")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if broker.queue_depths([DEAD_LETTER_QUEUE.name])[DEAD_LETTER_QUEUE.name] == 1:
                break
            time.sleep(0.2)
        assert broker.queue_depths([DEAD_LETTER_QUEUE.name])[DEAD_LETTER_QUEUE.name] == 1
        channel_broker.close()
    finally:
        consumer.stop()
        broker.close()


def test_a_poison_message_is_dead_lettered_after_the_delivery_limit(amqp_url):
    """A handler that always fails cannot hold its queue forever; the next message still gets through."""
    broker = Broker(amqp_url)
    seen: list[str] = []
    done: queue.Queue = queue.Queue()

    def handler(message):
        seen.append(message.file_id)
        if message.file_id == "poison":
            raise RuntimeError("always fails")
        done.put(message)

    consumer = Consumer(amqp_url, AGGREGATOR_QUEUE, handler, name="t", retry_pause=0.05, max_deliveries=3)
    consumer.start()
    try:
        def stored(file_id: str) -> c.FileStored:
            return c.FileStored(file_id=file_id, upload_id="u", owner_id="1", owner_name="a", file_name="a",
                                size=1, sha256="x", content_type="t", timestamp="t", created="t")

        broker.publish(stored("poison"), routing_key=LEGACY_KEY)
        broker.publish(stored("fine"), routing_key=LEGACY_KEY)
        assert _wait(done).file_id == "fine"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and consumer.dead_lettered < 1:
            time.sleep(0.05)
        assert seen.count("poison") == 3 and consumer.dead_lettered == 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if broker.queue_depths([DEAD_LETTER_QUEUE.name])[DEAD_LETTER_QUEUE.name] == 1:
                break
            time.sleep(0.1)
        depths = broker.queue_depths([DEAD_LETTER_QUEUE.name, AGGREGATOR_QUEUE.name])
        assert depths == {DEAD_LETTER_QUEUE.name: 1, AGGREGATOR_QUEUE.name: 0}
    finally:
        consumer.stop()
        broker.close()


def test_delayed_publish_arrives_after_the_delay(amqp_url):
    broker = Broker(amqp_url)
    got: queue.Queue = queue.Queue()
    consumer = Consumer(amqp_url, STORE_QUEUE, got.put, name="store")
    consumer.start()
    try:
        time.sleep(0.5)
        command = c.StoreUpload(upload_id="late", owner_id="1", owner_name="a", file_name="a", size=1,
                                sha256="x", content_type="t", chunk_size=1, chunk_count=1, cache_key="k",
                                items=(), created="t", attempt=2)
        started = time.monotonic()
        broker.publish_delayed(command, 1.0)
        assert _wait(got).upload_id == "late"
        assert time.monotonic() - started >= 0.9
    finally:
        consumer.stop()
        broker.close()


def test_a_delayed_file_stored_comes_back_to_its_pools_shard(amqp_url):
    """The retry queue dead-letters back to ``dropbox`` with the message's own (sharded) key:
    it lands in its pool's shard queue, in no other shard and not in the legacy queue."""
    from services.common.topology import AGGREGATOR_SHARD_QUEUES, stored_shard

    broker = Broker(amqp_url)
    got: queue.Queue = queue.Queue()
    shard = AGGREGATOR_SHARD_QUEUES[stored_shard("pool2")]
    consumer = Consumer(amqp_url, shard, got.put, name="shard")
    consumer.start()
    try:
        stored = c.FileStored(file_id="f1", upload_id="f1", owner_id="1", owner_name="a", file_name="a", size=1,
                              sha256="x", content_type="t", timestamp="t", created="t", pool_id="pool2")
        broker.publish_delayed(stored, 0.3)
        assert _wait(got) == stored
        others = [q.name for q in (*AGGREGATOR_SHARD_QUEUES, AGGREGATOR_QUEUE) if q != shard]
        assert set(broker.queue_depths(others).values()) == {0}
    finally:
        consumer.stop()
        broker.close()


@pytest.mark.slow
def test_publisher_and_consumer_survive_closed_connections(amqp_url):
    """Closing every connection of the vhost (as a broker restart does) loses nothing."""
    vhost = amqp_url.rsplit("/", 1)[1]
    broker = Broker(amqp_url)
    got: queue.Queue = queue.Queue()
    consumer = Consumer(amqp_url, AGGREGATOR_QUEUE, got.put, name="agg")
    consumer.start()
    try:
        def event(n: int) -> c.FileStored:
            return c.FileStored(file_id=f"f{n}", upload_id="u", owner_id="1", owner_name="a", file_name="a",
                                size=1, sha256="x", content_type="t", timestamp="t", created="t")

        broker.publish(event(0), routing_key=LEGACY_KEY)
        assert _wait(got).file_id == "f0"
        out = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "vhost"], capture_output=True,
                             text=True, check=True).stdout
        pids = [line.split()[0] for line in out.splitlines() if line.strip().endswith(vhost)]
        assert pids, out
        for pid in pids:
            subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test: simulated restart"], check=True)
        for n in range(1, 6):
            broker.publish(event(n), routing_key=LEGACY_KEY)
        received = {_wait(got, 30).file_id for _ in range(5)}
        assert received == {f"f{n}" for n in range(1, 6)}
    finally:
        consumer.stop()
        broker.close()


def test_ping_survives_idle_connections_the_broker_dropped(amqp_url):
    """An idle pooled connection dies unnoticed (the broker closed it for missed heartbeats):
    readiness must try a fresh one, not report the broker down."""
    import socket as socketlib

    broker = Broker(amqp_url, pool_size=2)
    assert broker.ping() is True and len(broker._idle) == 1
    dead = broker._idle[0].connection
    dead._impl._transport._sock.shutdown(socketlib.SHUT_RDWR)  # the TCP connection is gone
    assert broker.ping() is True
    assert all(channel.connection is not dead for channel in broker._idle)
    broker.close()
