"""pool_aggregator settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import CommonSettings, env_float, env_int, listen_address


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    host: str
    port: int
    lease_max_expiries: int = 3
    tick_seconds: float = 1.0
    # The ticker's leader lease: renewed every third of it; a dead leader is replaced within it.
    leader_lease_seconds: float = 10.0
    pool_cache_seconds: float = 5.0
    max_result_bytes: int = 50 * 1024 * 1024
    announce_timeout: float = 5.0
    announce_attempts: int = 3
    upstream_timeout: float = 30.0
    threads: int = 16
    # Competing FileStored/UploadStored consumers (threads, one connection each), spread over the
    # pool shard queues (topology.STORED_SHARDS, rounded up: 6 each; as many again on the legacy
    # queue, handlers.consumers): a shard's deliveries in flight, which one grouping slice can
    # gather. A slice holds at most grouping_slice files (a batch's UploadStored, up to
    # MAX_ITEMS files, is a slice of its own).
    # 48 (chosen on one queue, before the shards): bench/grouping_bench.py --per-file grouped
    # 1,000 per-item FileStored as fast as 64 did with a quarter fewer connections. With the
    # shards one pool gets 6 of them: 1,000 per-item FileStored of one pool take 5-7 s instead
    # of 2.3-2.5 s (a batch upload, one UploadStored, does not pay this); another pool's file no
    # longer waits behind them (0.06-0.12 s). README "Pool shards".
    grouping_consumers: int = 48
    grouping_slice: int = 128
    # Pools grouped at once (batching.SliceRunner's leaders, one slice per pool): another pool's
    # file goes through beside a big batch instead of behind it. README: bench/grouping_bench.py.
    grouping_leaders: int = 4
    # How long a result post waits for its bytes to be stored before answering 503 (and undoing).
    result_store_wait_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        host, port = listen_address(env, "pool_aggregator")
        return cls(
            common=CommonSettings.from_env(env),
            host=host,
            port=port,
            lease_max_expiries=env_int(env, "LEASE_MAX_EXPIRIES", 3, minimum=1),
            tick_seconds=max(0.05, env_float(env, "TICK_SECONDS", 1.0)),
            leader_lease_seconds=max(0.5, env_float(env, "LEADER_LEASE_SECONDS", 10.0)),
            pool_cache_seconds=max(0.0, env_float(env, "POOL_CACHE_SECONDS", 5.0)),
            max_result_bytes=env_int(env, "RESULT_MAX_BYTES", 50 * 1024 * 1024, minimum=1),
            announce_timeout=env_float(env, "ANNOUNCE_TIMEOUT_SECONDS", 5.0),
            announce_attempts=env_int(env, "ANNOUNCE_ATTEMPTS", 3, minimum=1),
            upstream_timeout=env_float(env, "UPSTREAM_TIMEOUT_SECONDS", 30.0),
            threads=env_int(env, "POOL_AGGREGATOR_THREADS", 16, minimum=1),
            grouping_consumers=env_int(env, "GROUPING_CONSUMERS", 48, minimum=1),
            grouping_slice=env_int(env, "GROUPING_SLICE", 128, minimum=1),
            grouping_leaders=env_int(env, "GROUPING_LEADERS", 4, minimum=1),
            result_store_wait_seconds=max(0.0, env_float(env, "RESULT_STORE_WAIT_SECONDS", 30.0)),
        )
