"""Reading configuration from the environment, once, in ``__main__``.

Every service builds a frozen settings dataclass from ``os.environ`` with these
helpers. Secrets have development defaults so ``make run`` works on a fresh
machine; with ``DROPBOX_ENV=production`` a secret that is missing or still
equal to its development default stops the service at start.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .validation import MAX_CLOCK_SKEW_SECONDS

T = TypeVar("T")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service."""


DEV_SECRETS = {
    "JWT_SECRET": "dev-jwt-secret-change-me-0123456789abcdef",
    "INTERNAL_API_KEY": "dev-internal-key-change-me",
    "ADMIN_PASSWORD": "admin-password",
}

# Default local ports (SPEC "Services" table).
DEFAULT_PORTS = {
    "socket_gateway": 5000,
    "auth": 5001,
    "file_uploader": 5002,
    "file_service_manager": 5003,
    "pool_aggregator": 5004,
}


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"{name} must be set")
        return default
    return value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean, got {raw!r}")


# An origin as a browser sends it: scheme://host[:port], nothing after.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


def cors_origins(env: Mapping[str, str], name: str = "CORS_ORIGINS",
                 default: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The browser origins allowed to call the services cross-origin (``name``, comma-separated).

    Default in development: the gateway's own origins (it serves the dashboard, which
    calls the other services on other ports), from ``SOCKET_GATEWAY_PORT``. In
    production the default is none (the ingress serves every service on one origin)
    and ``*`` is refused: any web page could then call the API with a stolen token.
    """
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        if default is not None:
            return default
        if is_production(env):
            return ()
        port = env_int(env, "SOCKET_GATEWAY_PORT", DEFAULT_PORTS["socket_gateway"], minimum=1)
        return (f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if "*" in origins:
        if is_production(env):
            raise ConfigError(f"{name} must list origins, not '*', when DROPBOX_ENV=production")
        return ("*",)
    for origin in origins:
        if _ORIGIN.fullmatch(origin) is None:
            raise ConfigError(f"{name}: {origin!r} is not an origin (scheme://host[:port])")
    return origins


# A cluster has 3 to 7 nodes; a longer list is a configuration mistake, not a cluster.
MAX_BROKER_NODES = 16


def broker_urls(value: str) -> list[str]:
    """The node URLs of ``AMQP_URL``: one URL, or several separated by commas (a cluster)."""
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise ConfigError("AMQP_URL names no broker")
    if len(urls) > MAX_BROKER_NODES:
        raise ConfigError(f"AMQP_URL names {len(urls)} brokers; at most {MAX_BROKER_NODES}")
    for one in urls:
        if not one.startswith(("amqp://", "amqps://")):
            # Only the part after '@': the URL carries the broker's password.
            raise ConfigError(f"AMQP_URL: not an AMQP URL: {one.rsplit('@', 1)[-1]!r}")
    return urls


MAX_SENTINELS = 16  # Sentinel runs 3 or 5; more is a mistake


def sentinel_addresses(value: str) -> tuple[tuple[str, int], ...]:
    """``REDIS_SENTINELS``: ``host:port,host:port,...`` (empty: no Sentinel, REDIS_URL is the server)."""
    addresses: list[tuple[str, int]] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_SENTINELS: {part!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    if len(addresses) > MAX_SENTINELS:
        raise ConfigError(f"REDIS_SENTINELS names {len(addresses)} sentinels; at most {MAX_SENTINELS}")
    return tuple(addresses)


MAX_FILESYSTEM_ROOTS = 32  # FILESYSTEM_ROOTS entries; each path checked is compared with every one


def filesystem_roots(env: Mapping[str, str]) -> tuple[str, ...]:
    """FILESYSTEM_ROOTS: ':'-separated absolute directories under which every filesystem storage
    root and staging directory must lie. Unset or empty: no restriction (development, tests)."""
    raw = env.get("FILESYSTEM_ROOTS", "")
    roots = tuple(os.path.normpath(part) for part in raw.split(":") if part.strip())
    if len(roots) > MAX_FILESYSTEM_ROOTS:
        raise ConfigError(f"FILESYSTEM_ROOTS names {len(roots)} directories; at most {MAX_FILESYSTEM_ROOTS}")
    for root in roots:
        if not os.path.isabs(root) or root == "/":
            raise ConfigError("FILESYSTEM_ROOTS entries must be absolute directories other than /")
    return roots


def is_production(env: Mapping[str, str]) -> bool:
    return env.get("DROPBOX_ENV", "development").lower() == "production"


def env_secret(env: Mapping[str, str], name: str) -> str:
    """A secret: its development default outside production, refused in production."""
    value = env.get(name) or ""
    default = DEV_SECRETS[name]
    if is_production(env):
        if not value or value == default:
            raise ConfigError(f"{name} must be set to a non-default value when DROPBOX_ENV=production")
        if name == "JWT_SECRET" and len(value) < 32:
            raise ConfigError("JWT_SECRET must be at least 32 characters in production")
        return value
    return value or default


def previous_internal_key(env: Mapping[str, str], current: str) -> str:
    """INTERNAL_API_KEY_PREVIOUS: the key being rotated out, still accepted on internal routes
    (empty: none). One key, no list; never a development default in production."""
    value = (env.get("INTERNAL_API_KEY_PREVIOUS") or "").strip()
    if not value:
        return ""
    if "," in value:
        raise ConfigError("INTERNAL_API_KEY_PREVIOUS is one key, not a list")
    if value == current:
        raise ConfigError("INTERNAL_API_KEY_PREVIOUS must differ from INTERNAL_API_KEY")
    if is_production(env) and value in DEV_SECRETS.values():
        raise ConfigError("INTERNAL_API_KEY_PREVIOUS must not be a development default when DROPBOX_ENV=production")
    return value


@dataclass(frozen=True)
class CommonSettings:
    """What every service needs to reach the shared infrastructure."""

    env_name: str
    internal_api_key: str
    amqp_url: str
    redis_url: str
    redis_prefix: str
    mongodb_uri: str
    mongodb_db: str
    auth_url: str
    file_uploader_url: str
    file_service_manager_url: str
    pool_aggregator_url: str
    public_file_url: str
    log_level: str
    logstash_host: str | None
    logstash_port: int
    # Browser origins allowed cross-origin (CORS_ORIGINS); empty: same origin only.
    cors_origins: tuple[str, ...] = ()
    # Redis behind Sentinel: the sentinels to ask and the name they monitor the primary under.
    # Empty: REDIS_URL is the server. With them, REDIS_URL still gives the password and db.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_master_name: str = "dropbox"
    # The internal key being rotated out (INTERNAL_API_KEY_PREVIOUS), accepted alongside
    # internal_api_key on internal routes and never sent; empty outside a rotation.
    internal_api_key_previous: str = ""
    # SPEC's MAX_CLOCK_SKEW_SECONDS: how far in the future an update's timestamp may be. Read here,
    # once, for every service (the gateway's pre-check, file_uploader's rule, grouping's guard).
    max_clock_skew_seconds: int = MAX_CLOCK_SKEW_SECONDS
    # FILESYSTEM_ROOTS: the directories filesystem storage and staging may use (auth checks
    # pools against them, file_service_manager again before writing). Empty: no restriction.
    filesystem_roots: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CommonSettings:
        fsm_url = env_str(env, "FILE_SERVICE_MANAGER_URL", "http://127.0.0.1:5003")
        amqp_url = env_str(env, "AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
        broker_urls(amqp_url)  # a bad list stops the service at start, not at its first publish
        internal_api_key = env_secret(env, "INTERNAL_API_KEY")
        return cls(
            env_name=env.get("DROPBOX_ENV", "development"),
            internal_api_key=internal_api_key,
            internal_api_key_previous=previous_internal_key(env, internal_api_key),
            amqp_url=amqp_url,
            redis_url=env_str(env, "REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_prefix=env_str(env, "REDIS_PREFIX", "dropbox"),
            mongodb_uri=env_str(env, "MONGODB_URI", "mongodb://127.0.0.1:27017"),
            mongodb_db=env_str(env, "MONGODB_DB", "dropbox"),
            auth_url=env_str(env, "AUTH_URL", "http://127.0.0.1:5001"),
            file_uploader_url=env_str(env, "FILE_UPLOADER_URL", "http://127.0.0.1:5002"),
            file_service_manager_url=fsm_url,
            pool_aggregator_url=env_str(env, "POOL_AGGREGATOR_URL", "http://127.0.0.1:5004"),
            # What clients are given in download_url; behind an ingress this is the public origin.
            public_file_url=env_str(env, "PUBLIC_FILE_URL", fsm_url),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
            logstash_host=env.get("LOGSTASH_HOST") or None,
            logstash_port=env_int(env, "LOGSTASH_PORT", 5959),
            cors_origins=cors_origins(env),
            redis_sentinels=sentinel_addresses(env.get("REDIS_SENTINELS", "")),
            redis_master_name=env_str(env, "REDIS_MASTER_NAME", "dropbox"),
            max_clock_skew_seconds=env_int(env, "MAX_CLOCK_SKEW_SECONDS", MAX_CLOCK_SKEW_SECONDS, minimum=0),
            filesystem_roots=filesystem_roots(env),
        )


def listen_address(env: Mapping[str, str], service: str) -> tuple[str, int]:
    """``<SERVICE>_HOST``/``<SERVICE>_PORT`` (e.g. ``AUTH_PORT``), falling back to ``HOST``/``PORT``."""
    key = service.upper()
    host = env.get(f"{key}_HOST") or env.get("HOST") or "127.0.0.1"
    port = env_int(env, f"{key}_PORT", env_int(env, "PORT", DEFAULT_PORTS[service]), minimum=1)
    return host, port


def load_or_exit(service: str, build: Callable[[Mapping[str, str]], T]) -> T:
    """``build(os.environ)``, or a one-line configuration error on stderr and exit status 2
    (every service's ``__main__`` starts this way, so a bad environment reads the same)."""
    try:
        return build(dict(os.environ))
    except ConfigError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
