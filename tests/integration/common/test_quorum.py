"""Quorum queues against a real RabbitMQ (a vhost of the test's own): replicated shared
queues, the broker's delivery count and limit, the dead-letter metric, several broker URLs."""

from __future__ import annotations

import json
import queue
import subprocess
import time

import pika
from prometheus_client import CollectorRegistry, Counter, generate_latest

from devtools import infra
from services.common import contracts as c
from services.common import messaging
from services.common.messaging import (
    AGGREGATOR_QUEUE,
    DEAD_LETTER_QUEUE,
    DURABLE_QUEUES,
    RETRY_QUEUE,
    STORE_QUEUE,
    Broker,
    Consumer,
)
from services.common.topology import DELIVERY_LIMIT, STAGING_DELAY_QUEUES

# The legacy queue's unsharded key, as a file_service_manager older than the pool shards publishes
# FileStored: these use pool_aggregator.stored as any consumed quorum queue.
LEGACY_KEY = c.FileStored.routing_key


def _stored(file_id: str) -> c.FileStored:
    return c.FileStored(file_id=file_id, upload_id="u", owner_id="1", owner_name="a", file_name="a",
                        size=1, sha256="x", content_type="t", timestamp="t", created="t")


def _queues(amqp_url: str) -> dict[str, dict]:
    vhost = amqp_url.rsplit("/", 1)[1]
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "arguments",
                          "--formatter", "json"], capture_output=True, text=True, check=True, timeout=60).stdout
    return {row["name"]: row for row in json.loads(out)}


def _wait_depth(broker: Broker, name: str, depth: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while True:
        got = broker.queue_depths([name])[name]
        if got == depth or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _arguments(row: dict) -> dict:
    raw = row["arguments"]
    # rabbitmqctl's json prints the argument table as [[name, type, value], ...].
    return {item[0]: item[-1] for item in raw} if isinstance(raw, list) else raw


def test_every_shared_queue_is_a_quorum_queue_with_a_delivery_limit(amqp_url):
    broker = Broker(amqp_url)
    try:
        broker.queue_depths([STORE_QUEUE.name])  # the first connection declares the topology
        rows = _queues(amqp_url)
    finally:
        broker.close()
    assert set(rows) >= {spec.name for spec in DURABLE_QUEUES}
    for spec in DURABLE_QUEUES:
        row = rows[spec.name]
        args = _arguments(row)
        assert row["type"] == "quorum", row
        if spec in (RETRY_QUEUE, DEAD_LETTER_QUEUE, *STAGING_DELAY_QUEUES):
            assert "x-delivery-limit" not in args, row  # nobody consumes them
        else:
            assert args["x-delivery-limit"] == DELIVERY_LIMIT, row
            assert args["x-dead-letter-exchange"] == messaging.DEAD_LETTER_EXCHANGE, row
            assert args["x-dead-letter-strategy"] == "at-least-once", row


def test_a_poison_message_is_counted_by_the_queue_and_dead_lettered_with_a_metric(amqp_url):
    broker = Broker(amqp_url)
    seen: list[str] = []
    done: queue.Queue = queue.Queue()

    def handler(message):
        seen.append(message.file_id)
        if message.file_id == "poison":
            raise RuntimeError("always fails")
        done.put(message)

    registry = CollectorRegistry()
    counter = Counter("messages_dead_lettered_total", "test", ["queue", "reason"], registry=registry)
    consumer = Consumer(amqp_url, AGGREGATOR_QUEUE, handler, name="t", retry_pause=0.05,
                        on_dead_letter=lambda q, reason: counter.labels(q, reason).inc())
    consumer.start()
    try:
        broker.publish(_stored("poison"), routing_key=LEGACY_KEY)
        broker.publish(_stored("fine"), routing_key=LEGACY_KEY)
        assert done.get(timeout=15).file_id == "fine"
        assert _wait_depth(broker, DEAD_LETTER_QUEUE.name, 1) == 1
        assert seen.count("poison") == messaging.MAX_DELIVERIES
        assert broker.queue_depths([AGGREGATOR_QUEUE.name])[AGGREGATOR_QUEUE.name] == 0
        text = generate_latest(registry).decode()
        assert f'messages_dead_lettered_total{{queue="{AGGREGATOR_QUEUE.name}",reason="poison"}} 1.0' in text
        # The original was rejected from its queue (not a republished copy).
        channel = broker._take().channel
        method, props, _ = channel.basic_get(DEAD_LETTER_QUEUE.name, auto_ack=True)
        assert method is not None
        death = props.headers["x-death"][0]
        assert (death["queue"], death["reason"], death["count"]) == (AGGREGATOR_QUEUE.name, "rejected", 1)
    finally:
        consumer.stop()
        broker.close()


def test_a_message_that_kills_its_consumer_is_dead_lettered_by_the_broker(amqp_url):
    """No handler ever rejects it (the process dies first): the queue's own limit sets it aside."""
    broker = Broker(amqp_url)
    try:
        broker.publish(_stored("crash"), routing_key=LEGACY_KEY)
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        deliveries = 0
        for _ in range(DELIVERY_LIMIT + 3):
            channel = connection.channel()
            method, _, _ = channel.basic_get(AGGREGATOR_QUEUE.name)
            if method is None:
                break
            deliveries += 1
            channel.close()  # as a crashed consumer: never acked, returned to the queue
        connection.close()
        assert deliveries == DELIVERY_LIMIT + 1
        assert _wait_depth(broker, DEAD_LETTER_QUEUE.name, 1) == 1
    finally:
        broker.close()


def test_several_broker_urls_skip_a_dead_node(amqp_url):
    dead = f"amqp://guest:guest@127.0.0.1:{infra.free_port()}/{amqp_url.rsplit('/', 1)[1]}"
    urls = f"{dead},{amqp_url}"
    broker = Broker(urls)
    got: queue.Queue = queue.Queue()
    consumers = [Consumer(urls, AGGREGATOR_QUEUE, got.put, name=f"t{n}") for n in range(2)]
    for consumer in consumers:
        consumer.start()
    try:
        for n in range(4):  # every publish starts at another node; each must get through
            broker.publish(_stored(f"f{n}"), routing_key=LEGACY_KEY)
        assert {got.get(timeout=20).file_id for _ in range(4)} == {f"f{n}" for n in range(4)}
    finally:
        for consumer in consumers:
            consumer.stop()
        broker.close()


def test_a_classic_queue_left_by_an_older_version_keeps_working(amqp_url):
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(AGGREGATOR_QUEUE.name, durable=True,
                                       arguments={"x-dead-letter-exchange": messaging.DEAD_LETTER_EXCHANGE})
    connection.close()
    broker = Broker(amqp_url)
    seen: list[str] = []

    def handler(message):
        seen.append(message.file_id)
        raise RuntimeError("always fails")

    consumer = Consumer(amqp_url, AGGREGATOR_QUEUE, handler, name="t", retry_pause=0.05, max_deliveries=3)
    consumer.start()
    try:
        broker.publish(_stored("poison"), routing_key=LEGACY_KEY)
        assert _wait_depth(broker, DEAD_LETTER_QUEUE.name, 1) == 1
        assert seen == ["poison"] * 3  # counted in our header, since a classic queue does not count
        assert _queues(amqp_url)[AGGREGATOR_QUEUE.name]["type"] == "classic"
    finally:
        consumer.stop()
        broker.close()
        messaging._classic_fallbacks.discard(AGGREGATOR_QUEUE.name)
