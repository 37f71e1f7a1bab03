"""The RabbitMQ topology as plain data: exchanges, queues and their bindings.

No pika here, so the in-memory broker of ``services.common.testing`` routes
messages exactly as the real topology does, and a test can check that every
published routing key reaches a queue. ``messaging`` declares these on every
connection and re-exports the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXCHANGE = "dropbox"  # topic exchange every event and command goes through
RETRY_EXCHANGE = "dropbox.retry"  # topic; its queue dead-letters back to EXCHANGE after a delay
DEAD_LETTER_EXCHANGE = "dropbox.dead"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]
    exchange: str = EXCHANGE
    arguments: dict[str, object] = field(default_factory=dict)


STORE_QUEUE = QueueSpec("file_service_manager.store", ("upload.store",),
                        arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE})
INDEX_QUEUE = QueueSpec("file_service_manager.index", ("file.status.*", "file.grouped"),
                        arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE})
AUDIT_QUEUE = QueueSpec("file_service_manager.audit", ("audit.recorded",),
                        arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE})
STORE_FAILED_QUEUE = QueueSpec("file_uploader.store_failed", ("upload.store_failed",),
                               arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE})
AGGREGATOR_QUEUE = QueueSpec("pool_aggregator.stored", ("file.stored",),
                             arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE})
# Shared by every gateway process: one of them takes each notification and
# emits it through python-socketio's message-queue manager, which reaches the
# clients of every gateway (file-status, pool-result, group-status).
GATEWAY_QUEUE = QueueSpec("socket_gateway.notifications",
                          ("file.status.*", "pool.result_published", "pool.group_changed"),
                          arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE})
# A delayed message (a store retry) waits here for its per-message expiration,
# then is dead-lettered back to EXCHANGE with its own routing key. One queue
# serves every delay because all retries share one delay: per-message TTLs
# only expire at the head of a queue.
RETRY_QUEUE = QueueSpec("dropbox.delayed", ("#",), exchange=RETRY_EXCHANGE,
                        arguments={"x-dead-letter-exchange": EXCHANGE})
DEAD_LETTER_QUEUE = QueueSpec("dropbox.dead_letters", ("#",), exchange=DEAD_LETTER_EXCHANGE)

DURABLE_QUEUES = (STORE_QUEUE, INDEX_QUEUE, AUDIT_QUEUE, STORE_FAILED_QUEUE, AGGREGATOR_QUEUE,
                  GATEWAY_QUEUE, RETRY_QUEUE, DEAD_LETTER_QUEUE)
# Per-process control events (every gateway must see every one: it holds the sockets).
CONTROL_BINDINGS = ("auth.token_revoked", "auth.membership_changed")



def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(pattern.split("."), key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # '#' may swallow 0..len(words) words; the key has at most a handful of words.
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


def queues_for(exchange: str, key: str) -> list[QueueSpec]:
    """The durable queues a message published to ``exchange`` with ``key`` lands in."""
    return [spec for spec in DURABLE_QUEUES
            if spec.exchange == exchange and any(topic_matches(b, key) for b in spec.bindings)]
