"""file_service_manager settings, read once from the environment in ``__main__``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common import secretbox
from services.common.secretbox import SecretBox
from services.common.settings import (
    CommonSettings,
    ConfigError,
    env_bool,
    env_float,
    env_int,
    is_production,
    listen_address,
)
from services.common.topology import STAGING_MAX_RETRY_QUEUES

from .backends import LEGACY, BackendError, StorageSpec, parse_spec


@dataclass(frozen=True)
class StagingSettings:
    """SPEC "Staging": how often and how patiently results are delivered to pools' targets."""

    # Attempts per target (SPEC: STAGING_MAX_ATTEMPTS, default 5); bounded by the delay queues
    # (topology.STAGING_DELAY_QUEUES: one per retry).
    max_attempts: int = 5
    # Retry n waits base * factor**(n-1) seconds, at most max_delay: 30 s, 1 min, 2 min, 4 min.
    retry_base_seconds: float = 30.0
    retry_factor: float = 2.0
    retry_max_delay_seconds: float = 3600.0
    # How long one attempt may run before a redelivered command may run it again (a crashed
    # consumer's claim): longer than the slowest delivery (a 50 MB copy to a slow S3).
    attempt_lease_seconds: float = 600.0
    webhook_timeout_seconds: float = 10.0
    # Webhooks to loopback/private addresses are refused unless this is set (staging_targets).
    webhook_allow_private: bool = False
    consumers: int = 2  # competing consumer threads; prefetch 1 each bounds deliveries in flight

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StagingSettings:
        attempts = env_int(env, "STAGING_MAX_ATTEMPTS", 5, minimum=1)
        if attempts > STAGING_MAX_RETRY_QUEUES + 1:
            raise ConfigError(f"STAGING_MAX_ATTEMPTS may be at most {STAGING_MAX_RETRY_QUEUES + 1}")
        return cls(max_attempts=attempts,
                   retry_base_seconds=max(0.01, env_float(env, "STAGING_RETRY_DELAY_SECONDS", 30.0)),
                   retry_factor=max(1.0, env_float(env, "STAGING_RETRY_FACTOR", 2.0)),
                   retry_max_delay_seconds=max(0.01, env_float(env, "STAGING_RETRY_MAX_DELAY_SECONDS", 3600.0)),
                   attempt_lease_seconds=max(1.0, env_float(env, "STAGING_ATTEMPT_LEASE_SECONDS", 600.0)),
                   webhook_timeout_seconds=max(0.1, env_float(env, "STAGING_WEBHOOK_TIMEOUT_SECONDS", 10.0)),
                   webhook_allow_private=env_bool(env, "STAGING_WEBHOOK_ALLOW_PRIVATE", False),
                   consumers=env_int(env, "STAGING_CONSUMERS", 2, minimum=1))


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    host: str = "127.0.0.1"
    port: int = 5003
    # TEST ONLY: uploads whose file_name matches this regex fail to store (drives the
    # retry path end to end). Refused when DROPBOX_ENV=production.
    store_fail_pattern: str | None = None
    download_piece: int = 256 * 1024  # bytes per read from GridFS when streaming a download
    store_prefetch: int = 2
    # Stores are I/O-bound (Redis reads, GridFS writes, confirmed publishes): one consumer
    # thread capped small files at ~40/s (23 ms each); several overlap their waits.
    store_consumers: int = 4
    # Pool results are served from memory after one GridFS read (every member downloads the
    # same bytes at once): at most this many bytes in all, and files up to the second bound.
    download_cache_bytes: int = 64 * 1024 * 1024
    download_cache_file_bytes: int = 16 * 1024 * 1024
    threads: int = 16
    # The largest request body waitress buffers: no route here takes more than a small JSON body
    # (downloads, listings and deletes carry none), so anything larger is refused at the headers.
    max_body: int = 64 * 1024
    # GridFS leftovers (chunks without a file document, files without an index record)
    # older than the grace are removed every interval; 0 turns the background pass off.
    sweep_interval_seconds: int = 600
    sweep_grace_seconds: int = 3600
    # Where files without a pool are stored (DEFAULT_STORAGE, SPEC "Storage backends").
    default_storage: StorageSpec = LEGACY
    # STORAGE_SECRETS_KEY (+ STORAGE_SECRETS_OLD_KEYS while rotating): storage credentials at rest.
    secrets: SecretBox | None = field(default=None, repr=False)
    # Every backend in use gets a write-read-delete probe (/ready, storage_backend_up) this often (health.py).
    storage_probe_seconds: int = 30
    staging: StagingSettings = field(default_factory=lambda: StagingSettings())
    # A pool's storage (auth's internal pool route) is reused this long: a PATCHed storage takes
    # effect for new files within it (files already stored keep their backend).
    pool_cache_seconds: float = 30.0
    # SPEC "Retention": files without a pool are deleted this many days after they were stored
    # (None: kept forever); pools' retention_days come from auth. The sweep runs every interval.
    retention_days: int | None = None
    retention_interval_seconds: int = 300
    # A batch upload is announced as one UploadStored, on its pool's shard key (issue 10).
    # ANNOUNCE_BATCHES=false announces as before both: per item as FileStored, on the unsharded
    # key ``file.stored`` (the legacy queue, which every pool_aggregator version consumes): for a
    # rolling upgrade while a pool_aggregator older than UploadStored or the shards still runs (it
    # would dead-letter the batch, and never see the shard queues); turn it back on once every
    # pool_aggregator is upgraded (docs/OPERATIONS.md "Queues").
    announce_batches: bool = True
    # A stored pool file whose group is not known this long after its store is announced again
    # (regrouping.py), checked every interval (0 turns the pass off).
    regroup_after_seconds: float = 600.0
    regroup_interval_seconds: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        common = CommonSettings.from_env(env)
        host, port = listen_address(env, "file_service_manager")
        pattern = env.get("STORE_FAIL_PATTERN") or None
        if pattern:
            if is_production(env):
                raise ConfigError("STORE_FAIL_PATTERN is a test setting; "
                                  "it is refused when DROPBOX_ENV=production")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"STORE_FAIL_PATTERN is not a regular expression: {exc}") from exc
        try:
            box = secretbox.from_env(env, "STORAGE_SECRETS_KEY", "STORAGE_SECRETS_OLD_KEYS")
        except secretbox.SecretError as exc:
            raise ConfigError(str(exc)) from None
        storage = default_storage(env)
        if storage.secrets() and box is None:
            raise ConfigError("DEFAULT_STORAGE has credentials: STORAGE_SECRETS_KEY must be set to keep them")
        return cls(common=common, host=host, port=port, store_fail_pattern=pattern,
                   default_storage=storage, secrets=box,
                   storage_probe_seconds=env_int(env, "STORAGE_PROBE_SECONDS", 30, minimum=1),
                   staging=StagingSettings.from_env(env),
                   download_piece=env_int(env, "DOWNLOAD_PIECE_BYTES", 256 * 1024, minimum=4096),
                   store_prefetch=env_int(env, "STORE_PREFETCH", 2, minimum=1),
                   store_consumers=env_int(env, "STORE_CONSUMERS", 4, minimum=1),
                   download_cache_bytes=env_int(env, "DOWNLOAD_CACHE_BYTES", 64 * 1024 * 1024, minimum=0),
                   download_cache_file_bytes=env_int(env, "DOWNLOAD_CACHE_FILE_BYTES", 16 * 1024 * 1024,
                                                     minimum=0),
                   threads=env_int(env, "FILE_SERVICE_MANAGER_THREADS", 16, minimum=1),
                   sweep_interval_seconds=env_int(env, "GRIDFS_SWEEP_INTERVAL_SECONDS", 600, minimum=0),
                   sweep_grace_seconds=env_int(env, "GRIDFS_SWEEP_GRACE_SECONDS", 3600, minimum=0),
                   pool_cache_seconds=env_float(env, "POOL_STORAGE_CACHE_SECONDS", 30.0),
                   retention_days=env_int(env, "RETENTION_DAYS", 0, minimum=0) if env.get("RETENTION_DAYS")
                   else None,
                   retention_interval_seconds=env_int(env, "RETENTION_INTERVAL_SECONDS", 300, minimum=0),
                   announce_batches=env_bool(env, "ANNOUNCE_BATCHES", True),
                   regroup_after_seconds=float(env_int(env, "REGROUP_AFTER_SECONDS", 600, minimum=1)),
                   regroup_interval_seconds=env_int(env, "REGROUP_INTERVAL_SECONDS", 30, minimum=0))


MAX_STORAGE_JSON = 8192  # characters of DEFAULT_STORAGE


def default_storage(env: Mapping[str, str]) -> StorageSpec:
    """DEFAULT_STORAGE: SPEC's storage JSON for files without a pool (default GridFS ``fs``).

    Errors name the field, never a value: the JSON may hold S3 credentials.
    """
    raw = env.get("DEFAULT_STORAGE", "").strip()
    if not raw:
        return LEGACY
    if len(raw) > MAX_STORAGE_JSON:
        raise ConfigError(f"DEFAULT_STORAGE is longer than {MAX_STORAGE_JSON} characters")
    try:
        return parse_spec(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"DEFAULT_STORAGE is not JSON (at character {exc.pos})") from None
    except BackendError as exc:
        raise ConfigError(f"DEFAULT_STORAGE: {exc}") from None
