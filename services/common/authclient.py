"""How a service asks auth who is calling.

No service trusts a token on its own: ``validate`` asks auth every time, so a
logged-out token or a removed pool member is refused at once everywhere (the
price is one loopback HTTP call per request; auth answers it from an index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests


class AuthUnavailable(RuntimeError):
    """auth did not answer; callers answer 503 rather than guessing."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    user_name: str
    role: str
    pools: dict[str, str] = field(default_factory=dict)  # pool_id -> "contributor" | "listener"
    token_id: str | None = None
    # For the shared revocation list (``services.common.revocations``) and expiry checks.
    session_id: str | None = None  # the login the token belongs to
    issued_at: float | None = None  # epoch seconds, to the millisecond
    expires_at: int | None = None  # epoch seconds

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def is_member(self, pool_id: str) -> bool:
        return self.is_admin or pool_id in self.pools

    def can_contribute(self, pool_id: str) -> bool:
        return self.pools.get(pool_id) == "contributor"

    @classmethod
    def from_validate(cls, doc: dict[str, Any]) -> Identity:
        return cls(
            user_id=str(doc["user_id"]),
            user_name=doc["user_name"],
            role=doc["role"],
            pools={str(p["pool_id"]): p["role"] for p in doc.get("pools", [])},
            token_id=doc.get("token_id"),
            session_id=doc.get("session_id"),
            issued_at=doc.get("issued_at"),
            expires_at=doc.get("expires_at"),
        )


class AuthClient:
    def __init__(self, base_url: str, internal_key: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.internal_key = internal_key
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
              json: dict[str, Any] | None = None) -> requests.Response:
        """One call to auth; not answering is AuthUnavailable (callers answer 503, never guess)."""
        try:
            return self.session.request(method, f"{self.base_url}{path}", json=json, timeout=self.timeout,
                                        headers=headers or {"X-Internal-Key": self.internal_key})
        except requests.RequestException as exc:
            raise AuthUnavailable(str(exc)) from exc

    def validate(self, token: str | None) -> Identity | None:
        """The token's identity, or None when auth refuses it."""
        if not token:
            return None
        response = self._call("GET", "/auth/validate", headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 200:
            return Identity.from_validate(response.json())
        if response.status_code in (401, 403):
            return None
        raise AuthUnavailable(f"auth answered {response.status_code}")

    def processor_pool(self, api_key: str | None) -> str | None:
        """The one pool a processor API key grants, or None."""
        key = self.processor_key(api_key)
        return key["pool_id"] if key else None

    def processor_key(self, api_key: str | None) -> dict[str, str] | None:
        """``{pool_id, key_id}`` of a processor API key, or None (``processor_pool`` plus the key id)."""
        if not api_key:
            return None
        response = self._call("POST", "/auth/internal/processor-keys/verify", json={"api_key": api_key})
        if response.status_code == 200:
            doc = response.json()
            return {"pool_id": str(doc["pool_id"]), "key_id": str(doc.get("key_id") or "")}
        if response.status_code in (401, 403, 404):
            return None
        raise AuthUnavailable(f"auth answered {response.status_code}")

    def retention_rules(self) -> list[dict[str, Any]]:
        """Every pool, live or deleted, with a ``retention_days`` (SPEC "Retention")."""
        response = self._call("GET", "/auth/internal/retention")
        if response.status_code == 200:
            rules: list[dict[str, Any]] = response.json().get("pools", [])
            return rules
        raise AuthUnavailable(f"auth answered {response.status_code}")

    def pool(self, pool_id: str) -> dict[str, Any] | None:
        """A pool's settings (window_seconds, close_grace_seconds, ..., storage and staging with their
        secrets in clear: never log or forward them), or None if unknown."""
        response = self._call("GET", f"/auth/internal/pools/{pool_id}")
        if response.status_code == 200:
            doc: dict[str, Any] = response.json()
            return doc
        if response.status_code == 404:
            return None
        raise AuthUnavailable(f"auth answered {response.status_code}")
