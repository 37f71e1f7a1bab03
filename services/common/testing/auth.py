"""An in-memory stand-in for auth's store (its ``ports.AuthStore``, implemented by shape).

Dicts of users, pools, members, keys and revoked token ids. Uniqueness is kept
as PostgreSQL keeps it (user names regardless of case, pool ids) and refused
with the same ``errors.Duplicate`` the real store raises. Answers have the real
store's shapes (``created`` as ISO strings where the real one converts them).
Only tests import this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import Duplicate
from ..timeutil import iso

__all__ = ["FakeAuthStore", "FakeRateCounters", "FakeRevocations", "FakeStorageProbe"]

POOL_FIELDS = ("name", "window_seconds", "close_grace_seconds", "min_contributors", "processing_timeout_seconds",
               "processor_url", "quorum_wait_seconds", "on_short", "max_late_seconds", "storage", "staging",
               "retention_days")


@dataclass
class FakeAuthStore:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # user_id -> row (with password_hash)
    revoked: dict[str, int] = field(default_factory=dict)  # jti -> expires_at
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)  # pool_id -> pool doc
    memberships: dict[tuple[str, str], str] = field(default_factory=dict)  # (pool_id, user_id) -> role
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # key_id -> row
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  # session_id -> login row
    refresh: dict[str, dict[str, Any]] = field(default_factory=dict)  # token_hash -> row
    deleted_pools: dict[str, int | None] = field(default_factory=dict)  # pool_id -> its retention_days
    down: bool = False  # every call raises, as a database that went away would
    migrations: int = 0
    _ticks: int = 0

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("FakeAuthStore.down")

    def _created(self) -> datetime:
        # Strictly increasing, so "ORDER BY created" is the insertion order, as in a test's PostgreSQL.
        self._ticks += 1
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self._ticks)

    def ping(self) -> bool:
        self._check()
        return True

    def migrate(self) -> list[str]:
        self._check()
        self.migrations += 1
        return []

    # --- users and tokens -------------------------------------------------------
    def create_user(self, user_id: str, user_name: str, password_hash: str, role: str = "user") -> dict[str, Any]:
        self._check()
        if user_id in self.users or self.user_by_name(user_name) is not None:
            raise Duplicate(f"user {user_name!r} exists")
        row = {"user_id": user_id, "user_name": user_name, "role": role, "password_hash": password_hash,
               "created": self._created(), "disabled": False, "tokens_valid_after_ms": 0}
        self.users[user_id] = row
        return {k: row[k] for k in ("user_id", "user_name", "role", "created")}

    def user_by_name(self, user_name: str) -> dict[str, Any] | None:
        self._check()
        wanted = user_name.lower()
        found = next((u for u in self.users.values() if u["user_name"].lower() == wanted), None)
        return {k: v for k, v in found.items() if k != "tokens_valid_after_ms"} if found else None

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        self._check()
        if user_id in self.users:
            self.users[user_id]["password_hash"] = password_hash

    def ensure_admin(self, user_id: str, user_name: str, password_hash: str) -> bool:
        existing = self.user_by_name(user_name)
        if existing is None:
            self.create_user(user_id, user_name, password_hash, role="admin")
            return True
        self.users[existing["user_id"]]["role"] = "admin"
        return False

    def list_users(self, limit: int | None = None, after: str | None = None) -> list[dict[str, Any]]:
        self._check()
        rows = sorted(self.users.values(), key=lambda u: (u["created"], u["user_id"]))
        if after is not None:
            last = self.users.get(after)
            rows = [u for u in rows if last is not None and (u["created"], u["user_id"]) >
                    (last["created"], last["user_id"])]
        return [{"user_id": u["user_id"], "user_name": u["user_name"], "role": u["role"], "disabled": u["disabled"],
                 "created": iso(u["created"])} for u in rows[:limit]]

    def update_user(self, user_id: str, *, role: str | None = None, disabled: bool | None = None,
                    tokens_valid_after_ms: int | None = None) -> dict[str, Any] | None:
        self._check()
        user = self.users.get(user_id)
        if user is None:
            return None
        if role is not None:
            user["role"] = role
        if disabled is not None:
            user["disabled"] = disabled
        user["tokens_valid_after_ms"] = max(user["tokens_valid_after_ms"], tokens_valid_after_ms or 0)
        return {"user_id": user_id, "user_name": user["user_name"], "role": user["role"],
                "disabled": user["disabled"], "created": iso(user["created"])}

    def revoke_user_sessions(self, user_id: str) -> list[dict[str, Any]]:
        self._check()
        ended = []
        for session_id, login in self.sessions.items():
            if login["user_id"] == user_id:
                login["revoked"] = True
                ended.append({"session_id": session_id, "user_id": user_id, "access_jti": login["access_jti"],
                              "access_expires_at": login["access_expires_at"]})
        return ended

    def user_by_id(self, user_id: str) -> dict[str, Any] | None:
        self._check()
        user = self.users.get(user_id)
        return {k: user[k] for k in ("user_id", "user_name", "role", "disabled", "created")} if user else None

    def identity(self, user_id: str, jti: str, session_id: str | None = None,
                 issued_ms: int = 0) -> dict[str, Any] | None:
        self._check()
        user = self.users.get(user_id)
        login = self.sessions.get(session_id) if session_id else None
        if user is None or jti in self.revoked or (login is not None and login["revoked"]) \
                or user["disabled"] or user["tokens_valid_after_ms"] > issued_ms:
            return None
        pools = sorted((p, r) for (p, u), r in self.memberships.items() if u == user_id)
        return {"user_id": user_id, "user_name": user["user_name"], "role": user["role"],
                "pools": [{"pool_id": p, "role": r} for p, r in pools]}

    def revoke_token(self, jti: str, user_id: str, expires_at: int) -> bool:
        self._check()
        new = jti not in self.revoked
        self.revoked.setdefault(jti, expires_at)
        return new

    # --- logins and refresh tokens ------------------------------------------------
    def create_session(self, session_id: str, user_id: str, refresh_hash: str, refresh_expires_at: int,
                       access_jti: str, access_expires_at: int) -> None:
        self._check()
        if session_id in self.sessions or refresh_hash in self.refresh:
            raise Duplicate("session or refresh token exists")
        self.sessions[session_id] = {"user_id": user_id, "revoked": False, "access_jti": access_jti,
                                     "access_expires_at": access_expires_at}
        self.refresh[refresh_hash] = {"session_id": session_id, "expires_at": refresh_expires_at, "used": False}

    def rotate_refresh(self, token_hash: str, new_hash: str, refresh_expires_at: int, access_jti: str,
                       access_expires_at: int, now: int) -> dict[str, Any] | None:
        self._check()
        row = self.refresh.get(token_hash)
        if row is None:
            return None
        login = self.sessions[row["session_id"]]
        user = self.users[login["user_id"]]
        found = {"session_id": row["session_id"], "user_id": user["user_id"], "user_name": user["user_name"],
                 "role": user["role"], "access_jti": login["access_jti"],
                 "access_expires_at": login["access_expires_at"]}
        if login["revoked"] or user["disabled"]:
            return {**found, "outcome": "revoked"}
        if row["used"]:
            login["revoked"] = True
            return {**found, "outcome": "reused"}
        if row["expires_at"] <= now:
            return {**found, "outcome": "expired"}
        row["used"] = True
        self.refresh[new_hash] = {"session_id": row["session_id"], "expires_at": refresh_expires_at, "used": False}
        login.update(access_jti=access_jti, access_expires_at=access_expires_at)
        return {**found, "outcome": "ok"}

    def revoke_session(self, session_id: str) -> dict[str, Any] | None:
        self._check()
        login = self.sessions.get(session_id)
        if login is None:
            return None
        login["revoked"] = True
        return {"session_id": session_id, "user_id": login["user_id"], "access_jti": login["access_jti"],
                "access_expires_at": login["access_expires_at"]}

    # --- pools and members --------------------------------------------------------
    def create_pool(self, pool_id: str, spec: Any) -> dict[str, Any]:
        self._check()
        if pool_id in self.pools:
            raise Duplicate(f"pool {pool_id} exists")
        doc = {"pool_id": pool_id, **{k: getattr(spec, k) for k in POOL_FIELDS}, "created": iso(self._created())}
        self.pools[pool_id] = doc
        return dict(doc)

    def get_pool(self, pool_id: str) -> dict[str, Any] | None:
        self._check()
        pool = self.pools.get(pool_id)
        return dict(pool) if pool else None

    def update_pool(self, pool_id: str, spec: Any) -> dict[str, Any] | None:
        self._check()
        pool = self.pools.get(pool_id)
        if pool is None:
            return None
        pool.update({k: getattr(spec, k) for k in POOL_FIELDS})
        return dict(pool)

    def delete_pool(self, pool_id: str) -> dict[str, Any] | None:
        self._check()
        pool = self.pools.pop(pool_id, None)
        if pool is None:
            return None
        members = [{"user_id": m["user_id"], "user_name": m["user_name"]} for m in self.members(pool_id)]
        self.memberships = {k: r for k, r in self.memberships.items() if k[0] != pool_id}
        gone = [k for k, row in self.keys.items() if row["pool_id"] == pool_id]
        keys = sum(1 for k in gone if self.keys[k]["revoked_at"] is None)
        for k in gone:
            del self.keys[k]
        self.deleted_pools[pool_id] = pool.get("retention_days")
        return {"pool": pool, "members": members, "keys": keys}

    def pool_secrets_page(self, after: str | None, limit: int) -> list[dict[str, Any]]:
        self._check()
        return [{"pool_id": p, "storage": d["storage"], "staging": d["staging"]}
                for p, d in sorted(self.pools.items()) if p > (after or "")][:limit]

    def replace_pool_secrets(self, pool_id: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
        self._check()
        pool = self.pools.get(pool_id)
        if pool is None or (pool["storage"], pool["staging"]) != (old["storage"], old["staging"]):
            return False
        pool.update(storage=new["storage"], staging=new["staging"])
        return True

    def retention_rules(self, limit: int) -> list[dict[str, Any]]:
        self._check()
        live = [{"pool_id": p, "retention_days": d["retention_days"], "deleted": False}
                for p, d in sorted(self.pools.items()) if d.get("retention_days") is not None]
        gone = [{"pool_id": p, "retention_days": d, "deleted": True}
                for p, d in sorted(self.deleted_pools.items()) if d is not None]
        return (live + gone)[:limit]

    def list_pools(self, user_id: str, *, all_pools: bool) -> list[dict[str, Any]]:
        self._check()
        found = []
        for pool in sorted(self.pools.values(), key=lambda p: (p["created"], p["pool_id"])):
            role = self.memberships.get((pool["pool_id"], user_id))
            if role is not None or all_pools:
                found.append({**pool, "role": role})
        return found

    def set_member(self, pool_id: str, user_id: str, role: str) -> None:
        self._check()
        if pool_id not in self.pools or user_id not in self.users:
            raise KeyError("foreign key: no such pool or user")  # as PostgreSQL's REFERENCES would
        self.memberships[(pool_id, user_id)] = role

    def remove_member(self, pool_id: str, user_id: str) -> bool:
        self._check()
        return self.memberships.pop((pool_id, user_id), None) is not None

    def members(self, pool_id: str) -> list[dict[str, Any]]:
        self._check()
        rows = [{"user_id": u, "user_name": self.users[u]["user_name"], "role": r}
                for (p, u), r in self.memberships.items() if p == pool_id]
        return sorted(rows, key=lambda m: m["user_name"])

    # --- processor keys -------------------------------------------------------------
    def add_processor_key(self, key_id: str, pool_id: str, key_hash: str) -> dict[str, Any]:
        self._check()
        if key_id in self.keys:
            raise Duplicate(f"key {key_id} exists")
        row = {"key_id": key_id, "pool_id": pool_id, "key_hash": key_hash, "created": iso(self._created()),
               "revoked_at": None}
        self.keys[key_id] = row
        return {"key_id": key_id, "pool_id": pool_id, "created": row["created"]}

    def processor_keys(self, pool_id: str) -> list[dict[str, Any]]:
        self._check()
        rows = sorted((k for k in self.keys.values() if k["pool_id"] == pool_id),
                      key=lambda k: (k["created"], k["key_id"]))
        return [{"key_id": k["key_id"], "pool_id": k["pool_id"], "created": k["created"],
                 "revoked": k["revoked_at"] is not None, "revoked_at": k["revoked_at"]} for k in rows]

    def revoke_processor_key(self, pool_id: str, key_id: str) -> bool:
        self._check()
        row = self.keys.get(key_id)
        if row is None or row["pool_id"] != pool_id:
            return False
        row["revoked_at"] = row["revoked_at"] or iso(self._created())
        return True

    def processor_key(self, key_id: str) -> dict[str, Any] | None:
        self._check()
        row = self.keys.get(key_id)
        if row is None or row["revoked_at"] is not None:
            return None
        return {"key_id": row["key_id"], "pool_id": row["pool_id"], "key_hash": row["key_hash"]}



@dataclass
class FakeRateCounters:
    """auth's ``ports.RateCounters`` in a dict; expiry is left to the key names (one per window).

    ``down = True`` makes every call raise, as an unreachable Redis would.
    """

    counts: dict[str, int] = field(default_factory=dict)
    down: bool = False

    def incr(self, key: str, ttl_seconds: int) -> int:
        if self.down:
            raise ConnectionError("FakeRateCounters.down")
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def get(self, key: str) -> int:
        if self.down:
            raise ConnectionError("FakeRateCounters.down")
        return self.counts.get(key, 0)


@dataclass
class FakeRevocations:
    """The shared revocation list in a dict: auth's ``ports.Revocations`` (``write``) and what
    ``services.common.revocations.RevocationList`` reads (``mget``), so a unit test can write
    with auth and read as the gateway would. Expiry: ``now`` (set it to move time).

    ``down = True`` makes every call raise, as an unreachable Redis would.
    """

    values: dict[str, tuple[str, float]] = field(default_factory=dict)  # key -> (value, expires at)
    down: bool = False
    now: float = 0.0

    def write(self, entries: Sequence[tuple[str, str, int]]) -> None:
        if self.down:
            raise ConnectionError("FakeRevocations.down")
        for key, value, ttl in entries:
            self.values[key] = (value, self.now + ttl)

    def mget(self, keys: Sequence[str]) -> list[str | None]:
        if self.down:
            raise ConnectionError("FakeRevocations.down")
        found = [self.values.get(k) for k in keys]
        return [v[0] if v is not None and v[1] > self.now else None for v in found]

    def ttl(self, key: str) -> float | None:
        found = self.values.get(key)
        return found[1] - self.now if found else None


@dataclass
class FakeStorageProbe:
    """auth's ``ports.StorageProbe``: records every storage probed; ``reason`` makes it refuse
    (400 ``bad_storage``), ``down`` makes it unable to check (503)."""

    probed: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    down: bool = False

    def probe(self, storage: dict[str, Any]) -> None:
        from ..errors import ApiError

        self.probed.append(dict(storage))
        if self.down:
            raise ApiError(503, "unavailable", "file_service_manager did not answer")
        if self.reason is not None:
            raise ApiError(400, "bad_storage", self.reason)
