"""auth's settings, read once from the environment in ``__main__``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common import secretbox
from services.common.secretbox import SecretBox, SecretError
from services.common.settings import (
    DEV_SECRETS,
    CommonSettings,
    ConfigError,
    env_float,
    env_int,
    env_secret,
    env_str,
    is_production,
    listen_address,
)

from . import core

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/dropbox"
MIN_FREE_THREADS = 4  # threads a login flood can never take (validate's)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    database_url: str
    host: str
    port: int
    jwt_secret: str
    token_ttl_seconds: int  # access tokens (ACCESS_TOKEN_TTL_SECONDS)
    admin_user: str
    admin_password: str
    # Still validates the tokens it signed (their ``kid`` names it) during a rotation window;
    # new tokens are signed with jwt_secret. Unset it once the token TTL has passed.
    jwt_secret_previous: str | None = None
    db_pool_size: int = 20
    # Concurrent argon2 hashes/verifies: each takes ~64 MiB and a core for tens of ms;
    # bounding them keeps a login burst from exhausting memory. At most hash_queue more
    # requests wait, each at most hash_wait_seconds, for a slot; the rest get 429 at once.
    hash_slots: int = 4
    hash_queue: int = 4
    hash_wait_seconds: float = 1.0
    # waitress worker threads. Signup/login hold at most hash_slots + hash_queue of them
    # (4 + 4 = 8 by default); the other 8 always serve /auth/validate (every request of
    # every service asks it, and it never waits on argon2) and the pool/admin routes.
    # from_env refuses fewer than hash_slots + hash_queue + MIN_FREE_THREADS.
    threads: int = 16
    # Rate limits per minute (0: off); see throttle.py. Per user name only failed logins
    # count, so a user who knows the password is never locked out by someone guessing it
    # beyond the window. Behind a proxy every client shares its address: see trusted_proxy_hops.
    login_rate_per_minute: int = 10
    login_ip_rate_per_minute: int = 120
    signup_rate_per_minute: int = 5
    signup_ip_rate_per_minute: int = 60
    # X-Forwarded-For is trusted only for this many proxies in front of auth (0: never; the
    # client address is the TCP peer, REMOTE_ADDR). Set it only when those proxies overwrite it.
    trusted_proxy_hops: int = 0
    # Refresh tokens rotate on every use; each new one lives this long (a listener that refreshes
    # at least this often stays logged in for good; one away longer logs in again).
    refresh_ttl_seconds: int = core.DEFAULT_REFRESH_TTL
    # STORAGE_SECRETS_KEY (+ STORAGE_SECRETS_OLD_KEYS while rotating): pools' storage/staging secrets at rest.
    secrets: SecretBox | None = field(default=None, repr=False)

    @property
    def internal_api_key(self) -> str:
        return self.common.internal_api_key

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        # env_secret refuses a missing or default JWT_SECRET / INTERNAL_API_KEY /
        # ADMIN_PASSWORD when DROPBOX_ENV=production.
        common = CommonSettings.from_env(env)
        host, port = listen_address(env, "auth")
        admin_user = env_str(env, "ADMIN_USER", "admin")
        admin_password = env_secret(env, "ADMIN_PASSWORD")
        try:
            core.check_user_name(admin_user)
            core.check_password(admin_password)
        except core.Invalid as exc:
            raise ConfigError(f"ADMIN_USER/ADMIN_PASSWORD: {exc}") from exc
        hash_slots = env_int(env, "AUTH_HASH_SLOTS", 4, minimum=1)
        hash_queue = env_int(env, "AUTH_HASH_QUEUE", 4, minimum=0)
        hash_wait = env_float(env, "AUTH_HASH_WAIT_SECONDS", 1.0)
        if not 0 <= hash_wait <= 30:
            raise ConfigError("AUTH_HASH_WAIT_SECONDS must be between 0 and 30")
        threads = env_int(env, "AUTH_THREADS", 16, minimum=1)
        if threads < hash_slots + hash_queue + MIN_FREE_THREADS:
            raise ConfigError(f"AUTH_THREADS must be at least AUTH_HASH_SLOTS + AUTH_HASH_QUEUE + "
                              f"{MIN_FREE_THREADS} (threads for /auth/validate during a login flood)")
        jwt_secret = env_secret(env, "JWT_SECRET")
        previous = env.get("JWT_SECRET_PREVIOUS") or None
        if previous is not None:
            if previous == jwt_secret:
                raise ConfigError("JWT_SECRET_PREVIOUS must differ from JWT_SECRET")
            if is_production(env) and (len(previous) < 32 or previous == DEV_SECRETS["JWT_SECRET"]):
                raise ConfigError("JWT_SECRET_PREVIOUS must be a non-default secret of at least 32 characters "
                                  "when DROPBOX_ENV=production")
        try:
            box = secretbox.from_env(env, "STORAGE_SECRETS_KEY", "STORAGE_SECRETS_OLD_KEYS")
        except SecretError as exc:
            raise ConfigError(str(exc)) from None
        # Unset: pools work, but a storage or staging target with a secret is refused (400 bad_storage).
        return cls(
            secrets=box,
            common=common,
            database_url=env_str(env, "DATABASE_URL", DEFAULT_DATABASE_URL),
            host=host,
            port=port,
            jwt_secret=jwt_secret,
            jwt_secret_previous=previous,
            # At least 5 s: tests run a fleet through many expiries (issue 11).
            token_ttl_seconds=env_int(env, "ACCESS_TOKEN_TTL_SECONDS", core.DEFAULT_TOKEN_TTL, minimum=5),
            refresh_ttl_seconds=env_int(env, "REFRESH_TOKEN_TTL_SECONDS", core.DEFAULT_REFRESH_TTL, minimum=60),
            admin_user=admin_user,
            admin_password=admin_password,
            db_pool_size=env_int(env, "AUTH_DB_POOL_SIZE", 20, minimum=2),
            hash_slots=hash_slots,
            hash_queue=hash_queue,
            hash_wait_seconds=hash_wait,
            threads=threads,
            login_rate_per_minute=env_int(env, "LOGIN_RATE_PER_MINUTE", 10, minimum=0),
            login_ip_rate_per_minute=env_int(env, "LOGIN_IP_RATE_PER_MINUTE", 120, minimum=0),
            signup_rate_per_minute=env_int(env, "SIGNUP_RATE_PER_MINUTE", 5, minimum=0),
            signup_ip_rate_per_minute=env_int(env, "SIGNUP_IP_RATE_PER_MINUTE", 60, minimum=0),
            trusted_proxy_hops=env_int(env, "AUTH_TRUSTED_PROXY_HOPS", 0, minimum=0),
        )
