"""The RabbitMQ topology as plain data: exchanges, queues and their bindings.

No pika here, so the in-memory broker of ``services.common.testing`` routes
messages exactly as the real topology does, and a test can check that every
published routing key reaches a queue. ``messaging`` declares these on every
connection and re-exports the names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

EXCHANGE = "dropbox"  # topic exchange every event and command goes through
RETRY_EXCHANGE = "dropbox.retry"  # topic; its queue dead-letters back to EXCHANGE after a delay
DEAD_LETTER_EXCHANGE = "dropbox.dead"
# direct; one delay queue per staging retry (STAGING_DELAY_QUEUES), dead-lettering to EXCHANGE
STAGING_DELAY_EXCHANGE = "dropbox.staging_delay"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]
    exchange: str = EXCHANGE
    arguments: dict[str, object] = field(default_factory=dict)


# Every shared queue is a quorum queue: durable, replicated over the cluster's nodes (a node
# lost is not a queue lost) and counting redeliveries itself (x-delivery-count). After
# DELIVERY_LIMIT returns the broker dead-letters a message on its own, so even a message that
# crashes its consumer process (no handler ever gets to reject it) cannot circle forever.
# The consumer rejects a poison message one delivery earlier (messaging.Consumer), so the
# broker's limit is only the backstop. Per-process exclusive queues stay classic: an
# exclusive queue cannot be a quorum queue.
QUORUM = "quorum"
DELIVERY_LIMIT = 5


def quorum(dead_letter_exchange: str | None = DEAD_LETTER_EXCHANGE, *,
           delivery_limit: int | None = DELIVERY_LIMIT) -> dict[str, object]:
    """The arguments of a quorum queue; dead-lettering at-least-once (the broker keeps the
    message until the dead-letter queue confirmed it), which quorum queues allow only with
    reject-publish overflow."""
    args: dict[str, object] = {"x-queue-type": QUORUM}
    if dead_letter_exchange is not None:
        args.update({"x-dead-letter-exchange": dead_letter_exchange,
                     "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
    if delivery_limit is not None:
        args["x-delivery-limit"] = delivery_limit
    return args


STORE_QUEUE = QueueSpec("file_service_manager.store", ("upload.store",), arguments=quorum())
# PrestoreUpload (an optimisation: StoreUpload writes whatever a prestore did not) has a queue
# of its own, so a prestore waiting for chunks never holds up a StoreUpload.
PRESTORE_QUEUE = QueueSpec("file_service_manager.prestore", ("upload.prestore",), arguments=quorum())
# files.grouped: FilesGrouped, a batch upload's files in their groups (one message per batch).
INDEX_QUEUE = QueueSpec("file_service_manager.index", ("file.status.*", "file.grouped", "files.grouped"),
                        arguments=quorum())
# audit.recorded: AuditsRecorded, a service's records in batches of up to 500 (issue 13), and the
# single AuditRecorded (an older replica's during an upgrade, or one published in place when the
# trail's buffer is full): one key, one binding, so both reach the same consumer.
AUDIT_QUEUE = QueueSpec("file_service_manager.audit", ("audit.recorded",), arguments=quorum())
STORE_FAILED_QUEUE = QueueSpec("file_uploader.store_failed", ("upload.store_failed",), arguments=quorum())
# file.stored: FileStored, one per single-file upload or result; upload.stored: UploadStored, a
# whole batch upload's files in one message, so another pool's file waits behind one message of
# that batch, not behind its 1,000 (issue 10).
#
# Sharded by pool (issue 10, "batches deep in one queue"): in ONE queue, a backlog of one pool's
# batches deeper than the consumers' prefetch windows (2 x GROUPING_CONSUMERS) put every consumer
# on that pool's messages, all waiting for its one grouping lane, and another pool's file waited
# in the broker behind the whole backlog. So a publisher appends its pool's shard to the key
# (``file.stored.<k>`` / ``upload.stored.<k>``, k = ``stored_shard(pool_id)``), the way Kafka
# partitions by key, with plain topic bindings (no consistent-hash plugin): each shard has its
# own quorum queue and consumers, and a pool's backlog occupies only its shard's consumers.
# Another pool shares that shard with probability 1/STORED_SHARDS and then still waits behind it.
#
# STORED_SHARDS = 8: every connection declares every durable queue, and every integration test
# creates them in a vhost of its own. 8 more quorum queues took 30-260 ms more to create in a
# fresh vhost and a few ms per connection (within the noise; 32: ~500 ms and ~40 ms), measured
# with bench/topology_bench.py at load 6-11 (README "Pool shards"). 8 keep a collision at 1 in 8
# and the default 48 grouping consumers at 6 per shard (a shard's consumers bound the
# deliveries one slice can gather). Changing it re-maps pools: messages already queued stay in (and are consumed from)
# their old shards, but shrinking it leaves the dropped shards' queues unconsumed: drain first.
STORED_SHARDS = 8


def stored_shard(key: str) -> int:
    """The shard (0..STORED_SHARDS-1) of a pool id (or, for a message without a pool, of its
    upload id): a stable hash (BLAKE2b, the same in every process and version; Python's own
    ``hash`` of a str is salted per process) modulo STORED_SHARDS."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % STORED_SHARDS


def _stored_shard_queue(shard: int) -> QueueSpec:
    return QueueSpec(f"pool_aggregator.stored.{shard}", (f"file.stored.{shard}", f"upload.stored.{shard}"),
                     arguments=quorum())


AGGREGATOR_SHARD_QUEUES = tuple(_stored_shard_queue(k) for k in range(STORED_SHARDS))
# The legacy queue, unsharded keys only: a file_service_manager older than the shards still
# publishes ``file.stored`` / ``upload.stored``, and messages queued before the upgrade are
# here; pool_aggregator keeps consuming it (as many consumers as a shard). docs/OPERATIONS.md
# "Queues" says when it may go.
AGGREGATOR_QUEUE = QueueSpec("pool_aggregator.stored", ("file.stored", "upload.stored"), arguments=quorum())
# Pool lifecycle from auth (PoolDeleted): pool_aggregator ends the pool's open groups. Its own
# queue, so a message waits (durably) until that consumer runs, and cannot be dead-lettered as
# unhandled by the FileStored consumer.
POOL_EVENTS_QUEUE = QueueSpec("pool_aggregator.pools", ("auth.pool_deleted",), arguments=quorum())
# Shared by every gateway process: one of them takes each notification and
# emits it through python-socketio's message-queue manager, which reaches the
# clients of every gateway (file-status, pool-result, group-status).
GATEWAY_QUEUE = QueueSpec("socket_gateway.notifications",
                          ("file.status.*", "pool.result_published", "pool.group_changed"),
                          arguments=quorum())
# A delayed message (a store retry) waits here for its per-message expiration,
# then is dead-lettered back to EXCHANGE with its own routing key. One queue
# serves every delay because all retries share one delay: per-message TTLs
# only expire at the head of a queue. Nobody consumes it, so no delivery limit.
RETRY_QUEUE = QueueSpec("dropbox.delayed", ("#",), exchange=RETRY_EXCHANGE,
                        arguments=quorum(EXCHANGE, delivery_limit=None))
# Kept for an operator; replicated like the rest so a node lost loses no evidence.
DEAD_LETTER_QUEUE = QueueSpec("dropbox.dead_letters", ("#",), exchange=DEAD_LETTER_EXCHANGE,
                              arguments=quorum(None, delivery_limit=None))

# Staging of pool results (SPEC "Staging", file_service_manager.staging): each published result
# becomes one StageResult per target of its pool, and a failed attempt comes back here.
STAGING_QUEUE = QueueSpec("file_service_manager.staging", ("pool.result_published", "staging.deliver"),
                          arguments=quorum())
# Staging retries wait with growing delays (SPEC "Staging"). Per-message TTLs only expire at
# the head of a queue, so a 10 s retry behind a 160 s one in RETRY_QUEUE would wait 160 s: each
# retry number has its own queue instead, where every message waits the same delay (the delay
# of retry n is fixed by the settings), so none waits behind a longer one. A message expires
# back to EXCHANGE as ``staging.deliver`` (x-dead-letter-routing-key). Retry n (attempt n + 1)
# goes to queue n; STAGING_MAX_RETRY_QUEUES bounds STAGING_MAX_ATTEMPTS (at most 1 + that).
STAGING_DELIVER_KEY = "staging.deliver"
STAGING_MAX_RETRY_QUEUES = 9


def _staging_delay_queue(retry: int) -> QueueSpec:
    return QueueSpec(f"dropbox.staging_delay.{retry}", (f"retry.{retry}",), exchange=STAGING_DELAY_EXCHANGE,
                     arguments={**quorum(EXCHANGE, delivery_limit=None),
                                "x-dead-letter-routing-key": STAGING_DELIVER_KEY})


STAGING_DELAY_QUEUES = tuple(_staging_delay_queue(n) for n in range(1, STAGING_MAX_RETRY_QUEUES + 1))


def staging_delay_key(retry: int) -> str:
    """The routing key (on STAGING_DELAY_EXCHANGE) of retry ``retry`` (1-based) of a staging target."""
    if not 1 <= retry <= STAGING_MAX_RETRY_QUEUES:
        raise ValueError(f"staging retry {retry} has no delay queue (1..{STAGING_MAX_RETRY_QUEUES})")
    return f"retry.{retry}"


DURABLE_QUEUES = (STORE_QUEUE, PRESTORE_QUEUE, INDEX_QUEUE, AUDIT_QUEUE, STORE_FAILED_QUEUE, AGGREGATOR_QUEUE,
                  *AGGREGATOR_SHARD_QUEUES, POOL_EVENTS_QUEUE, GATEWAY_QUEUE, RETRY_QUEUE, DEAD_LETTER_QUEUE,
                  STAGING_QUEUE, *STAGING_DELAY_QUEUES)
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
