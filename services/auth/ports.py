"""What auth's use cases need from their database: ``AuthStore``.

``store.Store`` (PostgreSQL) is the real one; ``services.common.testing.auth``
has an in-memory one for fast tests. A uniqueness conflict raises
``services.common.errors.Duplicate`` in both. The publisher is
``services.common.ports.Publisher``. ``RateCounters`` count signups and logins
in Redis (``store.RedisCounters``), shared by every auth replica; ``Revocations``
writes the shared revocation list (``store.RedisRevocations``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .core import PoolSpec


class AuthStore(Protocol):
    def ping(self) -> bool: ...

    def migrate(self) -> list[str]: ...

    # --- users and tokens
    def create_user(self, user_id: str, user_name: str, password_hash: str,
                    role: str = "user") -> dict[str, Any]: ...

    def user_by_name(self, user_name: str) -> dict[str, Any] | None:
        """The user (with ``password_hash``) whose name matches regardless of case."""
        ...

    def set_password_hash(self, user_id: str, password_hash: str) -> None: ...

    def ensure_admin(self, user_id: str, user_name: str, password_hash: str) -> bool: ...

    def list_users(self, limit: int | None = None, after: str | None = None) -> list[dict[str, Any]]:
        """Users (``user_id, user_name, role, disabled, created``) in (created, user_id) order,
        at most ``limit`` of them, after the user id ``after``."""
        ...

    def update_user(self, user_id: str, *, role: str | None = None, disabled: bool | None = None,
                    tokens_valid_after_ms: int | None = None) -> dict[str, Any] | None: ...

    def revoke_user_sessions(self, user_id: str) -> list[dict[str, Any]]:
        """End every login of the user; those not expired (``session_id, access_jti, access_expires_at``)."""
        ...

    def user_by_id(self, user_id: str) -> dict[str, Any] | None: ...

    def identity(self, user_id: str, jti: str, session_id: str | None = None,
                 issued_ms: int = 0) -> dict[str, Any] | None:
        """The user with its pools, or None when the user is gone or disabled, the token revoked,
        its login ended, or it was issued (``issued_ms``) before the user's tokens_valid_after_ms."""
        ...

    def revoke_token(self, jti: str, user_id: str, expires_at: int) -> bool: ...

    # --- logins (refresh-token families)
    def create_session(self, session_id: str, user_id: str, refresh_hash: str, refresh_expires_at: int,
                       access_jti: str, access_expires_at: int) -> None: ...

    def rotate_refresh(self, token_hash: str, new_hash: str, refresh_expires_at: int, access_jti: str,
                       access_expires_at: int, now: int) -> dict[str, Any] | None:
        """Use the refresh token ``token_hash`` once, atomically; None when no such token.

        Answers the login (``session_id``, ``user_id``, ``user_name``, ``role``, ``access_jti``,
        ``access_expires_at``) and an ``outcome``: ``ok`` (it is now used; ``new_hash`` is the
        login's next refresh token and ``access_jti`` its newest access token), ``reused`` (it
        was used before: the login is revoked now), ``revoked`` (the login had ended) or
        ``expired``. Only ``ok`` changes the new token's rows.
        """
        ...

    def revoke_session(self, session_id: str) -> dict[str, Any] | None:
        """End a login; its ``user_id``, ``access_jti`` and ``access_expires_at``, or None if unknown."""
        ...

    # --- pools and members
    def create_pool(self, pool_id: str, spec: PoolSpec) -> dict[str, Any]: ...

    def get_pool(self, pool_id: str) -> dict[str, Any] | None: ...

    def update_pool(self, pool_id: str, spec: PoolSpec) -> dict[str, Any] | None: ...

    def delete_pool(self, pool_id: str) -> dict[str, Any] | None:
        """Delete the pool, its members and keys at once: ``{pool, members: [{user_id, user_name}],
        keys: <unrevoked keys it had>}``, or None when unknown."""
        ...

    def list_pools(self, user_id: str, *, all_pools: bool) -> list[dict[str, Any]]: ...

    def pool_secrets_page(self, after: str | None, limit: int) -> list[dict[str, Any]]:
        """``{pool_id, storage, staging}`` (as stored: secrets encrypted) of the pools after ``after``, by id."""
        ...

    def replace_pool_secrets(self, pool_id: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Write ``new``'s storage and staging if the pool still holds ``old``'s (compare-and-swap)."""
        ...

    def retention_rules(self, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` pools, live then deleted, with a ``retention_days``:
        ``{pool_id, retention_days, deleted}`` (a deleted pool's rule is kept when it is deleted)."""
        ...

    def set_member(self, pool_id: str, user_id: str, role: str) -> None: ...

    def remove_member(self, pool_id: str, user_id: str) -> bool: ...

    def members(self, pool_id: str) -> list[dict[str, Any]]: ...

    # --- processor keys
    def add_processor_key(self, key_id: str, pool_id: str, key_hash: str) -> dict[str, Any]: ...

    def processor_keys(self, pool_id: str) -> list[dict[str, Any]]: ...

    def revoke_processor_key(self, pool_id: str, key_id: str) -> bool: ...

    def processor_key(self, key_id: str) -> dict[str, Any] | None:
        """An unrevoked key's ``key_id``, ``pool_id`` and ``key_hash``."""
        ...


class Revocations(Protocol):
    """Writes the shared revocation list (``services.common.revocations``; Redis)."""

    def write(self, entries: Sequence[tuple[str, str, int]]) -> None:
        """``(key, value, ttl_seconds)`` each, all or none; raises when they could not be written."""
        ...


class RateCounters(Protocol):
    """Counters that expire, shared by every auth replica (Redis); may raise when unreachable."""

    def incr(self, key: str, ttl_seconds: int) -> int:
        """Add one to ``key`` (created with ``ttl_seconds`` to live) and return its count."""
        ...

    def get(self, key: str) -> int: ...


class StorageProbe(Protocol):
    """Checks a pool's storage before it is saved (SPEC: a write-read-delete probe). auth cannot build
    a backend itself: file_service_manager probes it (``serviceclient.StorageProbeClient``)."""

    def probe(self, storage: dict[str, Any]) -> None:
        """Returns when the storage works; raises ``ApiError`` 400 ``bad_storage`` with the backend's
        reason (never a secret), or 503 when it cannot be checked now."""
        ...
