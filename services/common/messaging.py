"""RabbitMQ: the topology, a confirmed publisher and a consumer loop.

This is the only module that imports pika. Every connection declares the whole
durable topology first, so a message published before its consumer ever ran
still has a queue to wait in.

Delivery guarantees:
- ``Broker.publish`` marks messages persistent and waits for the broker's
  confirm; on a broken connection it reconnects and publishes again (bounded),
  so a broker restart costs a retry, not a message. A caller that gets
  ``PublishError`` knows the message was not accepted.
- ``consume`` acks only after the handler returned, i.e. after the handler's
  work is durable. A handler that raises gets the message requeued (after a
  pause, so a dead dependency is not hammered) at most ``MAX_DELIVERIES``
  times, then dead-lettered; a body that is no known contract is dead-lettered
  to ``dropbox.dead_letters`` at once. ``messages_dead_lettered_total`` counts both.

Clusters: ``AMQP_URL`` may list several broker nodes, comma-separated
(``amqp://u:p@rabbit-0:5672/%2F,amqp://u:p@rabbit-1:5672/%2F``). Each new
connection starts at the next node of the list and tries them all, so a lost
node costs a reconnect to another one. Shared queues are quorum queues
(``topology``), replicated over the nodes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pika
import pika.exceptions

from .contracts import Message, decode
from .handlers import ConsumerSpec, UnhandledMessage
from .settings import broker_urls
from .topology import (  # noqa: F401 - re-exported: callers name queues through messaging too
    AGGREGATOR_QUEUE,
    AGGREGATOR_SHARD_QUEUES,
    AUDIT_QUEUE,
    CONTROL_BINDINGS,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DELIVERY_LIMIT,
    DURABLE_QUEUES,
    EXCHANGE,
    GATEWAY_QUEUE,
    INDEX_QUEUE,
    POOL_EVENTS_QUEUE,
    PRESTORE_QUEUE,
    QUORUM,
    RETRY_EXCHANGE,
    RETRY_QUEUE,
    STAGING_DELAY_EXCHANGE,
    STORE_FAILED_QUEUE,
    STORE_QUEUE,
    QueueSpec,
)

__all__ = [
    "AGGREGATOR_QUEUE", "AGGREGATOR_SHARD_QUEUES", "AUDIT_QUEUE", "CONTROL_BINDINGS", "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "DURABLE_QUEUES", "EXCHANGE", "GATEWAY_QUEUE", "INDEX_QUEUE", "POOL_EVENTS_QUEUE", "PRESTORE_QUEUE",
    "RETRY_EXCHANGE", "RETRY_QUEUE",
    "STORE_FAILED_QUEUE", "STORE_QUEUE", "Broker", "Consumer", "PublishError", "QueueSpec",
    "start_consumers", "stop_consumers",
]

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The broker did not accept the message (after reconnecting)."""


def _parameters(url: str, heartbeat: int) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    params.socket_timeout = 5
    return params


class _Nodes:
    """Round robin over the broker nodes: each connection starts one node further, so
    connections spread over the cluster and a reconnect after a node died starts elsewhere."""

    def __init__(self, url: str) -> None:
        self.urls = broker_urls(url)
        self._next = 0
        self._lock = threading.Lock()

    def connect(self, heartbeat: int) -> pika.BlockingConnection:
        with self._lock:
            start, self._next = self._next, (self._next + 1) % len(self.urls)
        order = self.urls[start:] + self.urls[:start]
        # pika tries each in turn (one attempt each, 5 s socket timeout): a dead node is skipped.
        return pika.BlockingConnection([_parameters(u, heartbeat) for u in order])


def _declare_queue(connection: Any, channel: Any, spec: QueueSpec) -> Any:
    """Declare ``spec``; a queue that already exists with other arguments (a classic queue
    left by a version before quorum queues) is used as it is, with a warning: redeclaring it
    would fail forever, and deleting it would lose its messages. Returns the usable channel
    (the broker closes a channel whose declaration it refused)."""
    try:
        channel.queue_declare(spec.name, durable=True, arguments=spec.arguments or None)
        return channel
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:  # PRECONDITION_FAILED: inequivalent arguments
            raise
        if spec.name not in _classic_fallbacks:  # once per process, not once per connection
            log.warning("queue exists with other arguments (classic?); using it as it is - "
                        "drain and delete it to get a quorum queue",
                        extra={"queue": spec.name, "error": exc.reply_text})
        _classic_fallbacks.add(spec.name)
        channel = connection.channel()
        channel.queue_declare(spec.name, passive=True)
        return channel


def declare_topology(connection: Any, queues: Iterable[QueueSpec] = DURABLE_QUEUES) -> Any:
    """Declare every exchange, durable queue and binding; returns the channel to use.
    (``queues``: another set, for bench/topology_bench.py's measurement of its cost.)"""
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(RETRY_EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(STAGING_DELAY_EXCHANGE, exchange_type="direct", durable=True)
    for spec in queues:
        channel = _declare_queue(connection, channel, spec)
        for key in spec.bindings:
            channel.queue_bind(spec.name, spec.exchange, routing_key=key)
    return channel


class _Channel:
    """One confirmed channel on its own connection (pika connections are not thread-safe)."""

    def __init__(self, nodes: _Nodes, heartbeat: int) -> None:
        self.connection = nodes.connect(heartbeat)
        self.channel = declare_topology(self.connection)
        self.channel.confirm_delivery()

    @property
    def usable(self) -> bool:
        return bool(self.connection.is_open and self.channel.is_open)

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except Exception:  # noqa: BLE001 - already broken; we only want it gone
            pass


class Broker:
    """A publisher: thread-safe, confirmed, reconnecting.

    Waiting for a publisher confirm takes a broker round trip; with one shared
    channel every request thread queued behind the others' confirms (measured:
    complete-upload 55 ms under 20 concurrent clients). So publishes take a
    channel from a small pool, up to ``pool_size`` at once, each on its own
    connection.

    ``publish_attempts`` (10: about 15 s of retries with the capped backoff)
    covers a quorum queue's leader election after a node is lost: meanwhile
    the broker nacks publishes to that queue (measured here: several seconds).
    """

    def __init__(self, url: str, *, publish_attempts: int = 10, heartbeat: int = 30,
                 pool_size: int = 4) -> None:
        self.url = url
        self._nodes = _Nodes(url)
        self.publish_attempts = publish_attempts
        self.heartbeat = heartbeat
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._idle: list[_Channel] = []
        self._slots = threading.BoundedSemaphore(pool_size)

    def _take(self) -> _Channel:
        with self._lock:
            while self._idle:
                channel = self._idle.pop()
                if channel.usable:
                    return channel
                channel.close()
        return _Channel(self._nodes, self.heartbeat)

    def _give_back(self, channel: _Channel) -> None:
        with self._lock:
            self._idle.append(channel)

    def publish(self, message: Message, *, exchange: str = EXCHANGE, routing_key: str | None = None,
                expiration_ms: int | None = None) -> None:
        body = message.encode()
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=uuid.uuid4().hex,
            type=type(message).__name__,
            timestamp=int(time.time()),
            expiration=str(expiration_ms) if expiration_ms is not None else None,
        )
        key = routing_key or message.key()
        last: Exception | None = None
        started = time.monotonic()
        for attempt in range(self.publish_attempts):
            with self._slots:
                channel: _Channel | None = None
                try:
                    channel = self._take()
                    channel.channel.basic_publish(exchange, key, body, props, mandatory=False)
                    self._give_back(channel)
                    if attempt:
                        log.info("published after retries", extra={"attempts": attempt + 1, "routing_key": key,
                                                                   "seconds": round(time.monotonic() - started, 2)})
                    return
                except pika.exceptions.NackError as exc:
                    last = exc
                    # Not given back: a quorum queue nacks while it elects a leader, and a channel
                    # that saw that may keep nacking after the election (seen with RabbitMQ
                    # 3.10); a fresh channel publishes to the new leader.
                    if channel is not None:
                        channel.close()
                except (pika.exceptions.AMQPError, OSError) as exc:
                    last = exc
                    if channel is not None:
                        channel.close()
            if attempt:  # the first failure is usually a pooled connection the broker dropped while idle
                time.sleep(min(0.2 * (2 ** attempt), 2.0))
        raise PublishError(f"publish {type(message).__name__} to {key!r} failed: {last!r}")

    def publish_delayed(self, message: Message, delay_seconds: float) -> None:
        """Publish through the delay queue: it reaches its consumers after the delay."""
        self.publish(message, exchange=RETRY_EXCHANGE, routing_key=message.key(),
                     expiration_ms=max(1, int(delay_seconds * 1000)))

    def queue_depths(self, names: Iterable[str]) -> dict[str, int]:
        with self._slots:
            channel = self._take()
            try:
                depths = {name: channel.channel.queue_declare(name, passive=True).method.message_count
                          for name in names}
            except (pika.exceptions.AMQPError, OSError):
                channel.close()
                raise
            self._give_back(channel)
            return depths

    def ping(self) -> bool:
        """Does the broker answer? An idle pooled connection the broker has closed meanwhile
        (missed heartbeats: nobody drives an idle BlockingConnection) is dropped and the next
        one tried, up to a fresh connection, so a quiet service is not reported down."""
        for _ in range(self.pool_size + 1):  # every idle channel at most, then a new one
            try:
                with self._slots:
                    channel = self._take()
                    try:
                        channel.connection.process_data_events(0)
                    except Exception:
                        channel.close()
                        raise
                    self._give_back(channel)
                return True
            except Exception:  # noqa: BLE001, S112 - readiness answers yes/no; try the next channel
                continue
        return False

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for channel in idle:
            channel.close()


Handler = Callable[[Message], None]


# A message whose handler failed this many times is poison, not bad luck: it goes to the
# dead-letter queue (kept there for an operator) instead of blocking its queue forever.
# Quorum queues count deliveries themselves (x-delivery-count, limit topology.DELIVERY_LIMIT);
# the consumer rejects at the same count, before the broker would, so it can log and count it.
MAX_DELIVERIES = DELIVERY_LIMIT
ATTEMPTS_HEADER = "x-dropbox-attempts"  # our own count, on copies republished to classic queues
DELIVERY_COUNT_HEADER = "x-delivery-count"  # the quorum queue's count of earlier returns

# Queues that exist as classic queues although the topology says quorum (``_declare_queue``):
# they do not count deliveries, so their consumers count in a header as classic queues need.
_classic_fallbacks: set[str] = set()


def _count(headers: dict[str, Any], name: str) -> int:
    raw = headers.get(name, 0)
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else 0


def attempts_of(properties: Any) -> int:
    """How many times handlers have already failed on this message (0 for a fresh one): the
    quorum queue's x-delivery-count, or our header on a copy (a message that moved from a
    classic queue to a quorum one keeps the larger count)."""
    headers = getattr(properties, "headers", None) or {}
    return max(_count(headers, ATTEMPTS_HEADER), _count(headers, DELIVERY_COUNT_HEADER))


class Consumer:
    """Consumes one queue with manual acks and a prefetch window; reconnects forever.

    ``queue`` is a durable ``QueueSpec``, or None for a private exclusive queue
    bound to ``bindings`` (per-process control events).

    A failed handler's message is retried after ``retry_pause``, at most
    ``max_deliveries`` times in all, then rejected to the dead-letter exchange.
    On a quorum queue the retry is a ``nack`` with requeue: the broker counts the
    delivery in ``x-delivery-count``. Classic queues (the exclusive control
    queues) do not count redeliveries, so there the count travels in a header of
    a republished copy (the copy goes to the back of the same queue, then the
    original is acked; a crash between the two delivers it twice, which
    handlers are written to survive).
    """

    def __init__(self, url: str, queue: QueueSpec | None, handler: Handler, *, prefetch: int = 4,
                 bindings: tuple[str, ...] = (), name: str = "consumer", retry_pause: float = 1.0,
                 heartbeat: int = 60, max_deliveries: int = MAX_DELIVERIES,
                 on_dead_letter: Callable[[str, str], None] | None = None) -> None:
        self.url = url
        self._nodes = _Nodes(url)
        self.on_dead_letter = on_dead_letter  # (queue, reason): the service's messages_dead_lettered_total
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.bindings = bindings
        self.name = name
        self.retry_pause = retry_pause
        self.heartbeat = heartbeat
        self.max_deliveries = max(1, max_deliveries)
        # Messages this consumer set aside, by reason (poison | unknown | unhandled).
        # Only the consumer's thread writes it.
        self.dead_letters: dict[str, int] = {}
        self.connected = False
        self._stop = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._queue_name = queue.name if queue is not None else ""

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def queue_label(self) -> str:
        return self.queue.name if self.queue is not None else "exclusive"

    def _dead_letter(self, channel: Any, method: Any, reason: str) -> None:
        channel.basic_reject(method.delivery_tag, requeue=False)
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1
        if self.on_dead_letter is not None:
            try:
                self.on_dead_letter(self.queue_label, reason)
            except Exception:  # noqa: BLE001 - a metric must never stop consumption
                log.exception("dead-letter callback failed", extra={"queue": self.name})

    @property
    def _broker_counts(self) -> bool:
        """Whether this queue counts deliveries itself (a quorum queue)."""
        return (self.queue is not None and self.queue.arguments.get("x-queue-type") == QUORUM
                and self.queue.name not in _classic_fallbacks)

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            message = decode(body)
        except Exception as exc:  # noqa: BLE001 - UnknownMessage, or anything a hostile body raises
            # (a deeply nested JSON body: RecursionError). Escaping here, it would end the
            # connection and come back at once, round and round (review).
            log.error("dead-lettering an unknown message", extra={"queue": self.name, "error": repr(exc)[:500]})
            self._dead_letter(channel, method, "unknown")
            return
        if method.redelivered:
            # Rare (a consumer died or failed it): one line, so a message's path through a crash
            # can be followed by its id in the logs.
            log.info("redelivered", extra={"queue": self.name, "message_type": type(message).__name__,
                                           "file_id": getattr(message, "file_id", None)
                                           or getattr(message, "upload_id", None)})
        try:
            self.handler(message)
        except UnhandledMessage as exc:
            log.error("dead-lettering a message this queue has no handler for",
                      extra={"queue": self.name, "error": str(exc)})
            self._dead_letter(channel, method, "unhandled")
            return
        except Exception:  # noqa: BLE001 - retried below: the work was not done
            self._failed(channel, method, properties, body, type(message).__name__)
            return
        channel.basic_ack(method.delivery_tag)

    def _failed(self, channel: Any, method: Any, properties: Any, body: bytes, message_type: str) -> None:
        attempts = attempts_of(properties) + 1
        if attempts >= self.max_deliveries:
            log.exception("handler failed for good; dead-lettering the message",
                          extra={"queue": self.name, "message_type": message_type, "attempts": attempts})
            self._dead_letter(channel, method, "poison")
            return
        log.exception("handler failed; message retried", extra={"queue": self.name, "message_type": message_type,
                                                                 "attempts": attempts})
        self._stop.wait(self.retry_pause)
        if self._broker_counts:
            channel.basic_nack(method.delivery_tag, requeue=True)  # x-delivery-count goes up by one
            return
        headers = {**(getattr(properties, "headers", None) or {}), ATTEMPTS_HEADER: attempts}
        copy = pika.BasicProperties(content_type=properties.content_type, delivery_mode=properties.delivery_mode,
                                    message_id=properties.message_id, type=properties.type,
                                    timestamp=properties.timestamp, headers=headers)
        # The default exchange routes by queue name: the copy reaches this queue only, not every
        # queue bound to the original routing key.
        channel.basic_publish("", self._queue_name, body, copy)
        channel.basic_ack(method.delivery_tag)

    def run(self) -> None:
        """Blocking loop until ``stop()``; survives broker restarts."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._connection = self._nodes.connect(self.heartbeat)
                channel = declare_topology(self._connection)
                channel.basic_qos(prefetch_count=self.prefetch)
                if self.queue is not None:
                    queue_name = self.queue.name
                else:
                    queue_name = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
                    for key in self.bindings:
                        channel.queue_bind(queue_name, EXCHANGE, routing_key=key)
                self._queue_name = queue_name
                channel.basic_consume(queue_name, self._on_message)
                self.connected = True
                backoff = 0.5
                log.info("consuming", extra={"queue": queue_name})
                while not self._stop.is_set():
                    self._connection.process_data_events(time_limit=0.5)
            except Exception as exc:  # noqa: BLE001 - a consumer thread must never die (see below)
                # AMQP and socket errors are the usual way out; but pika also raises others when a
                # connection is reset under it (ValueError on a closed socket, AssertionError in its
                # state machine), and a thread that died on one left its queue without a consumer
                # until the process restarted: seen twice, fleets' gateways stopped receiving
                # notifications after the broker reset their connections (issue 13's session).
                self.connected = False
                if self._stop.is_set():
                    break
                expected = isinstance(exc, (pika.exceptions.AMQPError, OSError))
                log.log(logging.WARNING if expected else logging.ERROR, "broker connection lost; reconnecting",
                        extra={"queue": self.name, "error": repr(exc), "retry_in": backoff}, exc_info=not expected)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                self.connected = False
                conn, self._connection = self._connection, None
                if conn is not None and conn.is_open:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"consumer-{self.name}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def start_consumers(url: str, specs: Iterable[ConsumerSpec],
                    on_dead_letter: Callable[[str, str], None] | None = None) -> list[Consumer]:
    """Start every consumer a service's ``handlers.consumers(...)`` lists; each runs in its own thread.

    The one way every ``__main__`` starts its consumers; stop them with ``stop_consumers``.
    ``on_dead_letter(queue, reason)`` is told of every message a consumer sets aside.
    """
    started: list[Consumer] = []
    for spec in specs:
        for n in range(spec.count):
            name = spec.name if spec.count == 1 else f"{spec.name}-{n}"
            consumer = Consumer(url, spec.queue, spec.dispatch, prefetch=spec.prefetch,
                                bindings=spec.bindings, name=name, on_dead_letter=on_dead_letter)
            consumer.start()
            started.append(consumer)
    return started


def stop_consumers(consumers: Iterable[Consumer]) -> None:
    for consumer in consumers:
        consumer.stop()

