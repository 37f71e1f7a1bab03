"""PostgreSQL: the one module of auth that talks to the database.

Connections come from a ``ThreadedConnectionPool`` (waitress serves with
threads); a semaphore in front of it makes a caller wait for a free connection
instead of getting ``PoolError`` when every one is busy. A connection that
broke (server restart) is closed instead of going back to the pool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
import psycopg2.pool
import redis
from psycopg2.extras import Json

from services.common.errors import Duplicate
from services.common.timeutil import iso

from .core import PoolSpec

__all__ = ["Duplicate", "RedisCounters", "RedisRevocations", "Store", "StoreUnavailable"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any fixed 64-bit number; every auth process takes this lock to migrate, so two
# processes starting together apply each migration exactly once.
MIGRATION_LOCK_ID = 0x6175_7468_6D69_6772  # "authmigr"

POOL_COLUMNS = ("pool_id, name, window_seconds, close_grace_seconds, min_contributors, "
                "processing_timeout_seconds, processor_url, quorum_wait_seconds, on_short, max_late_seconds, "
                "storage, staging, retention_days, created")
POOL_SPEC_COLUMNS = ("name", "window_seconds", "close_grace_seconds", "min_contributors", "processing_timeout_seconds",
                     "processor_url", "quorum_wait_seconds", "on_short", "max_late_seconds",
                     "storage", "staging", "retention_days")
JSON_COLUMNS = ("storage", "staging")  # JSONB: their secrets arrive here already encrypted (pools.sealed)


def _column(spec: PoolSpec, column: str) -> Any:
    value = getattr(spec, column)
    return Json(value) if column in JSON_COLUMNS else value


def _ts(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


class StoreUnavailable(RuntimeError):
    """No database connection could be had in time."""


def _pool_doc(row: dict[str, Any]) -> dict[str, Any]:
    doc = {key: row[key] for key in ("pool_id", *POOL_SPEC_COLUMNS)}
    doc["created"] = iso(row["created"])
    return doc


class Store:
    def __init__(self, dsn: str, *, pool_size: int = 20, connect_timeout: int = 5,
                 statement_timeout_ms: int = 15000, acquire_timeout: float = 30.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.connect_kwargs = {"connect_timeout": connect_timeout,
                               "options": f"-c statement_timeout={statement_timeout_ms}"}
        self.acquire_timeout = acquire_timeout
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)

    # --- connections ---------------------------------------------------------

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        # Lazy: nothing connects until the first query (create_app must not connect).
        with self._pool_lock:
            if self._pool is None:
                self._pool = psycopg2.pool.ThreadedConnectionPool(0, self.pool_size, self.dsn,
                                                                  **self.connect_kwargs)
            return self._pool

    @contextmanager
    def _cursor(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """One transaction: commit when the block returns, roll back when it raises."""
        if not self._slots.acquire(timeout=self.acquire_timeout):
            raise StoreUnavailable("no database connection free")
        try:
            pool = self._get_pool()
            conn = pool.getconn()
            broken = bool(conn.closed)
            try:
                if broken:
                    raise psycopg2.InterfaceError("connection already closed")
                with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    yield cur
                conn.commit()
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            except BaseException:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    broken = True
                raise
            finally:
                pool.putconn(conn, close=broken or bool(conn.closed))
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None

    def ping(self) -> bool:
        with self._cursor() as cur:
            cur.execute("SELECT 1 AS ok")
            return cur.fetchone()["ok"] == 1

    # --- migrations ------------------------------------------------------------

    def migrate(self, directory: Path = MIGRATIONS_DIR) -> list[str]:
        """Apply every ``NNNN_*.sql`` not yet in ``schema_migrations``, in order; returns those applied.

        Each file runs in its own transaction together with its bookkeeping row, so a
        failing migration leaves nothing half-applied. A session advisory lock
        serialises concurrent starters: the second waits, then finds nothing to do.
        """
        files = sorted(p for p in directory.glob("*.sql") if p.name[:4].isdigit())
        applied: list[str] = []
        conn = psycopg2.connect(self.dsn, **self.connect_kwargs)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = 0")  # a migration may take long
                cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
            try:
                conn.autocommit = False
                with conn.cursor() as cur:
                    cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                                " version TEXT PRIMARY KEY,"
                                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
                    cur.execute("SELECT version FROM schema_migrations")
                    done = {row[0] for row in cur.fetchall()}
                conn.commit()
                for path in files:
                    version = path.stem
                    if version in done:
                        continue
                    with conn.cursor() as cur:
                        cur.execute(path.read_text())
                        cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                    conn.commit()
                    applied.append(version)
                    log.info("migration applied", extra={"version": version})
            except BaseException:
                conn.rollback()
                raise
            finally:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
        finally:
            conn.close()
        return applied

    def applied_migrations(self) -> list[str]:
        with self._cursor() as cur:
            cur.execute("SELECT version FROM schema_migrations ORDER BY version")
            return [row["version"] for row in cur.fetchall()]

    # --- users -------------------------------------------------------------------

    def create_user(self, user_id: str, user_name: str, password_hash: str, role: str = "user") -> dict:
        try:
            with self._cursor() as cur:
                cur.execute("INSERT INTO users (user_id, user_name, password_hash, role) "
                            "VALUES (%s, %s, %s, %s) RETURNING user_id, user_name, role, created",
                            (user_id, user_name, password_hash, role))
                return dict(cur.fetchone())
        except psycopg2.errors.UniqueViolation as exc:
            raise Duplicate(f"user {user_name!r} exists") from exc

    def user_by_name(self, user_name: str) -> dict | None:
        """The user (with its password hash) whose name matches regardless of case."""
        with self._cursor() as cur:
            cur.execute("SELECT user_id, user_name, role, disabled, password_hash, created FROM users "
                        "WHERE lower(user_name) = lower(%s)", (user_name,))
            row = cur.fetchone()
            return dict(row) if row else None

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        with self._cursor() as cur:
            cur.execute("UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id))

    def ensure_admin(self, user_id: str, user_name: str, password_hash: str) -> bool:
        """Create the admin, or make an existing user of that name admin (its password is kept).

        True when the account was created. ON CONFLICT makes two processes starting at
        once safe: one inserts, the other finds the row.
        """
        with self._cursor() as cur:
            cur.execute("INSERT INTO users (user_id, user_name, password_hash, role) "
                        "VALUES (%s, %s, %s, 'admin') ON CONFLICT DO NOTHING RETURNING user_id",
                        (user_id, user_name, password_hash))
            created = cur.fetchone() is not None
            if not created:
                cur.execute("UPDATE users SET role = 'admin' WHERE lower(user_name) = lower(%s) "
                            "AND role <> 'admin'", (user_name,))
            return created

    def list_users(self, limit: int | None = None, after: str | None = None) -> list[dict]:
        """Users in (created, user_id) order, at most ``limit``, after the user id ``after``."""
        where, args = "", list[object]()
        if after is not None:
            where = " WHERE (created, user_id) > (SELECT created, user_id FROM users WHERE user_id = %s)"
            args.append(after)
        page = ""
        if limit is not None:
            page = " LIMIT %s"
            args.append(limit)
        with self._cursor() as cur:
            cur.execute(f"SELECT user_id, user_name, role, disabled, created FROM users{where}"
                        f" ORDER BY created, user_id{page}", args)
            return [{**row, "created": iso(row["created"])} for row in cur.fetchall()]

    def update_user(self, user_id: str, *, role: str | None = None, disabled: bool | None = None,
                    tokens_valid_after_ms: int | None = None) -> dict | None:
        """Change what is given; the user as it is now (None if unknown). ``tokens_valid_after_ms``
        only ever grows (GREATEST): two concurrent changes cannot re-validate older tokens."""
        with self._cursor() as cur:
            cur.execute("UPDATE users SET role = COALESCE(%s, role), disabled = COALESCE(%s, disabled),"
                        " tokens_valid_after_ms = GREATEST(tokens_valid_after_ms, COALESCE(%s, 0))"
                        " WHERE user_id = %s RETURNING user_id, user_name, role, disabled, created",
                        (role, disabled, tokens_valid_after_ms, user_id))
            row = cur.fetchone()
            return {**row, "created": iso(row["created"])} if row else None

    def revoke_user_sessions(self, user_id: str) -> list[dict]:
        """End every login of the user; the ones still holding a live access token."""
        with self._cursor() as cur:
            cur.execute("UPDATE login_sessions SET revoked_at = COALESCE(revoked_at, now()) WHERE user_id = %s"
                        " AND expires_at > now() RETURNING session_id, access_jti,"
                        " extract(epoch FROM access_expires_at) AS access_expires_at", (user_id,))
            return [{"session_id": r["session_id"], "user_id": user_id, "access_jti": r["access_jti"],
                     "access_expires_at": int(r["access_expires_at"])}
                    for r in cur.fetchall() if r["access_expires_at"] is not None]

    # --- tokens --------------------------------------------------------------------

    def identity(self, user_id: str, jti: str, session_id: str | None = None, issued_ms: int = 0) -> dict | None:
        """The user with its pools, or None when the user is gone or disabled, the token revoked,
        its login ended, or it was issued before the user's tokens_valid_after_ms.

        One query over two primary keys and the pool_members(user_id) index: it runs on
        every request of every service.
        """
        with self._cursor() as cur:
            cur.execute(
                "SELECT u.user_id, u.user_name, u.role,"
                " (u.disabled OR u.tokens_valid_after_ms > %(issued)s"
                "  OR EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = %(jti)s)"
                "  OR EXISTS (SELECT 1 FROM login_sessions s WHERE s.session_id = %(sid)s"
                "             AND s.revoked_at IS NOT NULL)) AS revoked,"
                " COALESCE(array_agg(m.pool_id ORDER BY m.pool_id) FILTER (WHERE m.pool_id IS NOT NULL),"
                "          '{}') AS pool_ids,"
                " COALESCE(array_agg(m.role ORDER BY m.pool_id) FILTER (WHERE m.pool_id IS NOT NULL),"
                "          '{}') AS pool_roles"
                " FROM users u LEFT JOIN pool_members m ON m.user_id = u.user_id"
                " WHERE u.user_id = %(uid)s GROUP BY u.user_id",
                {"jti": jti, "uid": user_id, "sid": session_id, "issued": issued_ms})
            row = cur.fetchone()
        if row is None or row["revoked"]:
            return None
        return {"user_id": row["user_id"], "user_name": row["user_name"], "role": row["role"],
                "pools": [{"pool_id": p, "role": r} for p, r in zip(row["pool_ids"], row["pool_roles"],
                                                                   strict=True)]}

    def user_by_id(self, user_id: str) -> dict | None:
        with self._cursor() as cur:
            cur.execute("SELECT user_id, user_name, role, disabled, created FROM users WHERE user_id = %s",
                        (user_id,))
            row = cur.fetchone()
            return dict(row) if row else None

    # --- logins and refresh tokens ------------------------------------------------------

    def create_session(self, session_id: str, user_id: str, refresh_hash: str, refresh_expires_at: int,
                       access_jti: str, access_expires_at: int) -> None:
        """A new login with its first refresh token. Logins whose last refresh token expired
        over a day ago are pruned here (their refresh tokens with them): the tables stay bounded."""
        with self._cursor() as cur:
            cur.execute("DELETE FROM login_sessions WHERE expires_at < now() - interval '1 day'")
            cur.execute("INSERT INTO login_sessions (session_id, user_id, expires_at, access_jti, access_expires_at)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        (session_id, user_id, _ts(refresh_expires_at), access_jti, _ts(access_expires_at)))
            cur.execute("INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (%s, %s, %s)",
                        (refresh_hash, session_id, _ts(refresh_expires_at)))

    def rotate_refresh(self, token_hash: str, new_hash: str, refresh_expires_at: int, access_jti: str,
                       access_expires_at: int, now: int) -> dict | None:
        """Use a refresh token once, in one transaction; see ``ports.AuthStore.rotate_refresh``.

        The row locks (FOR UPDATE) make two concurrent uses of one token take turns: the
        first rotates, the second finds it used, which is reuse (the login ends).
        """
        with self._cursor() as cur:
            cur.execute("SELECT r.session_id, r.used_at, extract(epoch FROM r.expires_at) AS expires_at,"
                        " s.revoked_at, s.access_jti, extract(epoch FROM s.access_expires_at) AS access_expires_at,"
                        " u.user_id, u.user_name, u.role, u.disabled"
                        " FROM refresh_tokens r JOIN login_sessions s ON s.session_id = r.session_id"
                        " JOIN users u ON u.user_id = s.user_id WHERE r.token_hash = %s FOR UPDATE OF r, s",
                        (token_hash,))
            row = cur.fetchone()
            if row is None:
                return None
            found = {"session_id": row["session_id"], "user_id": row["user_id"], "user_name": row["user_name"],
                     "role": row["role"], "access_jti": row["access_jti"],
                     "access_expires_at": int(row["access_expires_at"])}
            if row["revoked_at"] is not None or row["disabled"]:
                return {**found, "outcome": "revoked"}
            if row["used_at"] is not None:
                cur.execute("UPDATE login_sessions SET revoked_at = now() WHERE session_id = %s",
                            (row["session_id"],))
                return {**found, "outcome": "reused"}
            if int(row["expires_at"]) <= now:
                return {**found, "outcome": "expired"}
            cur.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = %s", (token_hash,))
            # A login refreshed every few minutes for months keeps only its unexpired tokens (used
            # ones are kept until they expire, so their reuse is still recognised).
            cur.execute("DELETE FROM refresh_tokens WHERE session_id = %s AND expires_at < now()",
                        (row["session_id"],))
            cur.execute("INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (%s, %s, %s)",
                        (new_hash, row["session_id"], _ts(refresh_expires_at)))
            cur.execute("UPDATE login_sessions SET expires_at = %s, access_jti = %s, access_expires_at = %s"
                        " WHERE session_id = %s",
                        (_ts(refresh_expires_at), access_jti, _ts(access_expires_at), row["session_id"]))
            return {**found, "outcome": "ok"}

    def revoke_session(self, session_id: str) -> dict | None:
        """End a login (its refresh tokens stop working); its newest access token's id and expiry."""
        with self._cursor() as cur:
            cur.execute("UPDATE login_sessions SET revoked_at = COALESCE(revoked_at, now()) WHERE session_id = %s"
                        " RETURNING user_id, access_jti, extract(epoch FROM access_expires_at) AS access_expires_at",
                        (session_id,))
            row = cur.fetchone()
        if row is None:
            return None
        return {"session_id": session_id, "user_id": row["user_id"], "access_jti": row["access_jti"],
                "access_expires_at": int(row["access_expires_at"])}

    def revoke_token(self, jti: str, user_id: str, expires_at: int) -> bool:
        """Record a revocation (True if new). Rows of tokens that expired anyway are pruned:
        an expired token is refused by its signature check alone."""
        with self._cursor() as cur:
            cur.execute("INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (%s, %s, %s) "
                        "ON CONFLICT (jti) DO NOTHING RETURNING jti",
                        (jti, user_id, datetime.fromtimestamp(expires_at, UTC)))
            new = cur.fetchone() is not None
            cur.execute("DELETE FROM revoked_tokens WHERE expires_at < now() - interval '5 minutes'")
            return new

    def is_revoked(self, jti: str) -> bool:
        with self._cursor() as cur:
            cur.execute("SELECT 1 FROM revoked_tokens WHERE jti = %s", (jti,))
            return cur.fetchone() is not None

    # --- pools -----------------------------------------------------------------------

    def create_pool(self, pool_id: str, spec: PoolSpec) -> dict:
        try:
            with self._cursor() as cur:
                cur.execute(f"INSERT INTO pools (pool_id, {', '.join(POOL_SPEC_COLUMNS)})"
                            f" VALUES (%s{', %s' * len(POOL_SPEC_COLUMNS)}) RETURNING {POOL_COLUMNS}",
                            (pool_id, *(_column(spec, c) for c in POOL_SPEC_COLUMNS)))
                return _pool_doc(cur.fetchone())
        except psycopg2.errors.UniqueViolation as exc:
            raise Duplicate(f"pool {pool_id} exists") from exc

    def get_pool(self, pool_id: str) -> dict | None:
        with self._cursor() as cur:
            cur.execute(f"SELECT {POOL_COLUMNS} FROM pools WHERE pool_id = %s", (pool_id,))
            row = cur.fetchone()
            return _pool_doc(row) if row else None

    def update_pool(self, pool_id: str, spec: PoolSpec) -> dict | None:
        with self._cursor() as cur:
            cur.execute(f"UPDATE pools SET {', '.join(f'{c} = %s' for c in POOL_SPEC_COLUMNS)}"
                        f" WHERE pool_id = %s RETURNING {POOL_COLUMNS}",
                        (*(_column(spec, c) for c in POOL_SPEC_COLUMNS), pool_id))
            row = cur.fetchone()
            return _pool_doc(row) if row else None

    def delete_pool(self, pool_id: str) -> dict | None:
        """Delete a pool with its members and keys (ON DELETE CASCADE), in one transaction;
        the pool and the members it had (to tell the fleet), or None if unknown."""
        with self._cursor() as cur:
            cur.execute("SELECT u.user_id, u.user_name FROM pool_members m JOIN users u ON u.user_id = m.user_id"
                        " WHERE m.pool_id = %s ORDER BY u.user_name FOR UPDATE OF m", (pool_id,))
            members = [dict(row) for row in cur.fetchall()]
            cur.execute("SELECT count(*) AS n FROM processor_keys WHERE pool_id = %s AND revoked_at IS NULL",
                        (pool_id,))
            keys = int(cur.fetchone()["n"])
            cur.execute(f"DELETE FROM pools WHERE pool_id = %s RETURNING {POOL_COLUMNS}", (pool_id,))
            row = cur.fetchone()
            if row is None:
                return None
            # The pool's retention rule outlives it (same transaction): its files follow the rule.
            cur.execute("INSERT INTO deleted_pools (pool_id, retention_days) VALUES (%s, %s)"
                        " ON CONFLICT (pool_id) DO UPDATE SET retention_days = EXCLUDED.retention_days,"
                        " deleted_at = now()", (pool_id, row["retention_days"]))
            return {"pool": _pool_doc(row), "members": members, "keys": keys}

    def pool_secrets_page(self, after: str | None, limit: int) -> list[dict]:
        with self._cursor() as cur:
            cur.execute("SELECT pool_id, storage, staging FROM pools WHERE pool_id > %s ORDER BY pool_id LIMIT %s",
                        (after or "", limit))
            return [dict(row) for row in cur.fetchall()]

    def replace_pool_secrets(self, pool_id: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
        with self._cursor() as cur:
            cur.execute("UPDATE pools SET storage = %s, staging = %s"
                        " WHERE pool_id = %s AND storage = %s AND staging = %s",
                        (Json(new["storage"]), Json(new["staging"]), pool_id, Json(old["storage"]),
                         Json(old["staging"])))
            return bool(cur.rowcount == 1)

    def retention_rules(self, limit: int) -> list[dict]:
        """Pools (live, then deleted) with a ``retention_days``: ``{pool_id, retention_days, deleted}``."""
        with self._cursor() as cur:
            cur.execute("(SELECT pool_id, retention_days, false AS deleted FROM pools WHERE retention_days IS NOT NULL)"
                        " UNION ALL (SELECT pool_id, retention_days, true FROM deleted_pools"
                        " WHERE retention_days IS NOT NULL) ORDER BY deleted, pool_id LIMIT %s", (limit,))
            return [dict(row) for row in cur.fetchall()]

    def list_pools(self, user_id: str, *, all_pools: bool) -> list[dict]:
        """The user's pools with its role; ``all_pools`` (admin): every pool, role None where not a member."""
        join = "LEFT JOIN" if all_pools else "JOIN"
        cols = ", ".join(f"p.{c.strip()}" for c in POOL_COLUMNS.split(","))
        with self._cursor() as cur:
            cur.execute(f"SELECT {cols}, m.role FROM pools p {join} pool_members m"
                        f" ON m.pool_id = p.pool_id AND m.user_id = %s ORDER BY p.created, p.pool_id",
                        (user_id,))
            return [{**_pool_doc(row), "role": row["role"]} for row in cur.fetchall()]

    def set_member(self, pool_id: str, user_id: str, role: str) -> None:
        with self._cursor() as cur:
            cur.execute("INSERT INTO pool_members (pool_id, user_id, role) VALUES (%s, %s, %s) "
                        "ON CONFLICT (pool_id, user_id) DO UPDATE SET role = EXCLUDED.role",
                        (pool_id, user_id, role))

    def remove_member(self, pool_id: str, user_id: str) -> bool:
        with self._cursor() as cur:
            cur.execute("DELETE FROM pool_members WHERE pool_id = %s AND user_id = %s RETURNING user_id",
                        (pool_id, user_id))
            return cur.fetchone() is not None

    def members(self, pool_id: str) -> list[dict]:
        with self._cursor() as cur:
            cur.execute("SELECT u.user_id, u.user_name, m.role FROM pool_members m"
                        " JOIN users u ON u.user_id = m.user_id WHERE m.pool_id = %s ORDER BY u.user_name",
                        (pool_id,))
            return [dict(row) for row in cur.fetchall()]

    # --- processor keys ----------------------------------------------------------------

    def add_processor_key(self, key_id: str, pool_id: str, key_hash: str) -> dict:
        with self._cursor() as cur:
            cur.execute("INSERT INTO processor_keys (key_id, pool_id, key_hash) VALUES (%s, %s, %s)"
                        " RETURNING key_id, pool_id, created", (key_id, pool_id, key_hash))
            row = cur.fetchone()
            return {**row, "created": iso(row["created"])}

    def processor_keys(self, pool_id: str) -> list[dict]:
        with self._cursor() as cur:
            cur.execute("SELECT key_id, pool_id, created, revoked_at FROM processor_keys WHERE pool_id = %s"
                        " ORDER BY created, key_id", (pool_id,))
            return [{"key_id": r["key_id"], "pool_id": r["pool_id"], "created": iso(r["created"]),
                     "revoked": r["revoked_at"] is not None,
                     "revoked_at": iso(r["revoked_at"]) if r["revoked_at"] else None}
                    for r in cur.fetchall()]

    def revoke_processor_key(self, pool_id: str, key_id: str) -> bool:
        """True when the pool has that key (revoking twice is harmless)."""
        with self._cursor() as cur:
            cur.execute("UPDATE processor_keys SET revoked_at = COALESCE(revoked_at, now())"
                        " WHERE pool_id = %s AND key_id = %s RETURNING key_id", (pool_id, key_id))
            return cur.fetchone() is not None

    def processor_key(self, key_id: str) -> dict | None:
        """An unrevoked key's pool and hash."""
        with self._cursor() as cur:
            cur.execute("SELECT key_id, pool_id, key_hash FROM processor_keys"
                        " WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
            row = cur.fetchone()
            return dict(row) if row else None


class RedisCounters:
    """auth's rate counters in Redis (``{prefix}:auth:rate:<key>``), so every replica counts together.

    The client should have short timeouts: a login waits on these at most that long
    when Redis is unreachable (the caller then lets the request through).
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}:auth:rate:"

    def incr(self, key: str, ttl_seconds: int) -> int:
        name = self.prefix + key
        # One round trip; the expiry makes every key disappear on its own (bounded Redis memory).
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(name)
        pipe.expire(name, ttl_seconds)
        count, _ = pipe.execute()
        return int(count)

    def get(self, key: str) -> int:
        value = self.client.get(self.prefix + key)
        return int(value) if value is not None else 0  # type: ignore[arg-type]


class RedisRevocations:
    """auth's writes to the shared revocation list (``{prefix}:revoked:*``, see services.common.revocations).

    One MULTI/EXEC: a logout's token and login keys land together or not at all. One retry
    after a connection error (a Redis failover drops the connection once); then the error
    goes to the caller, which answers 503 (accounts.py says why).
    """

    ATTEMPTS = 2

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def write(self, entries: Sequence[tuple[str, str, int]]) -> None:
        for attempt in range(self.ATTEMPTS):
            try:
                pipe = self.client.pipeline(transaction=True)
                for key, value, ttl in entries:
                    pipe.set(key, value, ex=max(1, int(ttl)))
                pipe.execute()
                return
            except (redis.ConnectionError, redis.TimeoutError):
                if attempt + 1 == self.ATTEMPTS:
                    raise
