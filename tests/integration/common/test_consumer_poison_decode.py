"""A message whose decoding raises something other than UnknownMessage (RecursionError from a
deeply nested JSON body) is dead-lettered as unknown once, not redelivered round and round
through consumer reconnects (found by review)."""

from __future__ import annotations

import threading
import time

import pika

from services.common import contracts as c
from services.common.messaging import AGGREGATOR_QUEUE, Broker, Consumer


def test_a_body_that_breaks_decode_is_dead_lettered_not_reconnected_on(amqp_url) -> None:
    broker = Broker(amqp_url)
    broker.queue_depths([AGGREGATOR_QUEUE.name])  # declares the topology
    broker.close()
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = conn.channel()
    channel.basic_publish("", AGGREGATOR_QUEUE.name, b"[" * 100_000)
    good = c.FileStored(file_id="f1", upload_id="u", owner_id="1", owner_name="a", file_name="a", size=1,
                        sha256="x", content_type="t", timestamp="t", created="t")
    channel.basic_publish("", AGGREGATOR_QUEUE.name, good.encode())
    conn.close()

    handled = threading.Event()
    consumer = Consumer(amqp_url, AGGREGATOR_QUEUE, lambda m: handled.set(), prefetch=1, retry_pause=0.1,
                        name="poison-decode")
    connects = []
    real = consumer._nodes.connect

    def counting(heartbeat: int):
        connects.append(time.monotonic())
        return real(heartbeat)

    consumer._nodes.connect = counting
    thread = consumer.start()
    try:
        got = handled.wait(8)
    finally:
        consumer.stop()
        thread.join(10)
    assert got, f"the good message behind the poison one was never handled ({len(connects)} connects)"
    assert len(connects) <= 2, f"{len(connects)} reconnects in 8 s"
    assert consumer.dead_letters.get("unknown") == 1
