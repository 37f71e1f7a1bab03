"""auth's domain rules, pure: validation, ids, tokens, password and key hashing.

No Flask, no database, no broker. Everything here is testable without a server.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common import poolstorage, validation

DEFAULT_TOKEN_TTL = 900  # SPEC: ACCESS_TOKEN_TTL_SECONDS defaults to 15 minutes
DEFAULT_REFRESH_TTL = 30 * 24 * 3600  # SPEC: REFRESH_TOKEN_TTL_SECONDS defaults to 30 days
REFRESH_PREFIX = "rt_"
MAX_REFRESH_TOKEN_LENGTH = 128  # ours are 46 characters; anything longer is not worth hashing
TOKEN_ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 4096  # our tokens are ~350 bytes; a huge header is not worth decoding

USER = "user"
ADMIN = "admin"
USER_ROLES = (USER, ADMIN)
CONTRIBUTOR = "contributor"
LISTENER = "listener"
POOL_ROLES = (CONTRIBUTOR, LISTENER)

MAX_AUDIT_NAME = 64  # a refused name is kept in the audit trail at most this long

MIN_PASSWORD = 8
# argon2 hashes whatever it is given; the bound keeps a client from making us hash megabytes.
MAX_PASSWORD = 1024

MAX_WINDOW_SECONDS = 30 * 24 * 3600
MAX_GRACE_SECONDS = 30 * 24 * 3600
MAX_PROCESSING_TIMEOUT = 7 * 24 * 3600
MAX_MIN_CONTRIBUTORS = 1_000_000
MAX_QUORUM_WAIT = 30 * 24 * 3600
MAX_LATE_SECONDS = 10 * 365 * 24 * 3600
DEFAULT_MAX_LATE = 7 * 24 * 3600  # SPEC: older timestamps are refused (default 7 days)
ON_SHORT = ("process", "fail")  # SPEC: what a group short of its quorum does once the wait is over
DEFAULT_PROCESSING_TIMEOUT = 300
MAX_POOL_NAME = 128
MAX_RETENTION_DAYS = 100 * 365  # SPEC "Retention": null keeps files forever
DEFAULT_STORAGE = {"backend": "gridfs"}  # SPEC: a pool's storage when none is given
MAX_URL = 2048

API_KEY_PREFIX = "pk"

# Every auth request is a small JSON object: a larger body is refused (413) before it is read.
MAX_BODY = 64 * 1024


class Invalid(ValueError):
    """Client input that breaks a rule; the message is safe to show to the client."""


class TokenInvalid(ValueError):
    """A bearer token that is malformed, forged, expired or otherwise unusable."""


# --- users ------------------------------------------------------------------


def check_user_name(value: Any) -> str:
    if not isinstance(value, str) or not validation.USER_NAME.fullmatch(value):
        raise Invalid("user_name must be 3-64 characters of letters, digits, '_', '.' or '-'")
    return value


def check_password(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("password must be a string")
    if len(value) < MIN_PASSWORD:
        raise Invalid(f"password must be at least {MIN_PASSWORD} characters")
    if len(value) > MAX_PASSWORD:
        raise Invalid(f"password must be at most {MAX_PASSWORD} characters")
    return value


def check_pool_role(value: Any) -> str:
    if value not in POOL_ROLES:
        raise Invalid("role must be 'contributor' or 'listener'")
    return value


def new_user_id() -> str:
    return uuid.uuid4().hex


def new_pool_id() -> str:
    return "p_" + secrets.token_hex(8)


class Busy(RuntimeError):
    """Every argon2 slot stayed busy for longer than the allowed wait: answer 429, do not queue."""


class Passwords:
    """argon2id hashing with a bounded number of concurrent hashes and of waiters.

    ``slots`` hashes/verifies run at once (each takes ~64 MiB and a core for tens of
    ms). At most ``queue`` more callers wait, each at most ``wait`` seconds, for a
    slot; any other caller, or a waiter whose wait ran out, gets ``Busy`` at once.
    So a login flood holds at most ``slots + queue`` server threads: the others stay
    free for /auth/validate, which never hashes.

    ``verify`` with no stored hash (unknown user) still runs one verify against a
    dummy hash, so "no such user" and "wrong password" take about the same time.
    """

    def __init__(self, hasher: PasswordHasher | None = None, slots: int = 4, *, queue: int = 4,
                 wait: float = 1.0) -> None:
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self.slots, self.queue, self.wait = slots, queue, wait
        self._slots = threading.BoundedSemaphore(slots)
        self._admitted = threading.BoundedSemaphore(slots + queue)  # running + waiting callers
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._admitted.acquire(blocking=False):
            raise Busy("every password slot is busy and the queue is full")
        try:
            if not self._slots.acquire(timeout=self.wait):
                raise Busy(f"no password slot free within {self.wait} s")
            try:
                yield
            finally:
                self._slots.release()
        finally:
            self._admitted.release()

    def hash(self, password: str) -> str:
        with self._slot():
            return self.hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        with self._slot():
            try:
                return self.hasher.verify(stored if stored is not None else self._dummy, password) \
                    and stored is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True


# --- rate limits ----------------------------------------------------------------

RATE_WINDOW_SECONDS = 60  # fixed windows of a minute: the settings are "per minute"


def rate_window(now: float, window: int = RATE_WINDOW_SECONDS) -> tuple[int, int]:
    """The index of the fixed window holding ``now`` and the whole seconds until it ends (>= 1)."""
    index = int(now // window)
    return index, max(1, math.ceil((index + 1) * window - now))


def rate_key(action: str, scope: str, who: str, window_index: int) -> str:
    """A counter's name: ``who`` (an address, a user name of any length) hashed to a fixed size."""
    digest = hashlib.sha256(who.lower().encode("utf-8", "replace")).hexdigest()[:32]
    return f"{action}:{scope}:{digest}:{window_index}"


# --- tokens -----------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    exp: int


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    user_name: str
    role: str
    jti: str
    iat: int
    exp: int
    # The login (refresh-token family) the token descends from; None for tokens issued before
    # refresh tokens existed. Revoking the login revokes every token of it.
    session_id: str | None = None
    # When the token was issued, to the millisecond (``iat_ms``; ``iat`` is whole seconds): a
    # user's "not valid before" (role change, disable) must not refuse a token issued just after.
    issued_ms: int = 0

    @property
    def token_id(self) -> str:
        return self.jti

    @property
    def issued_at(self) -> float:
        return (self.issued_ms or self.iat * 1000) / 1000


def new_token_id() -> str:
    return secrets.token_hex(16)


def key_id(secret: str) -> str:
    """The ``kid`` naming a signing secret: a hash, so the header tells which key without telling the key."""
    return hashlib.sha256(b"dropbox-jwt-kid:" + secret.encode()).hexdigest()[:16]


def encode_token(secret: str, *, user_id: str, user_name: str, role: str,
                 ttl_seconds: int = DEFAULT_TOKEN_TTL, now: float | None = None,
                 session_id: str | None = None, jti: str | None = None) -> IssuedToken:
    moment = now if now is not None else time.time()
    issued = int(moment)
    jti = jti or new_token_id()
    exp = issued + int(ttl_seconds)
    claims: dict[str, Any] = {"sub": user_id, "name": user_name, "role": role, "jti": jti, "iat": issued,
                              "iat_ms": int(moment * 1000), "exp": exp}
    if session_id is not None:
        claims["sid"] = session_id
    token = jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM, headers={"kid": key_id(secret)})
    return IssuedToken(token, jti, exp)


def _signing_secrets(token: str, secret: str, previous: str | None) -> list[str]:
    """The secrets to try, chosen by the token's ``kid``: the current one, the previous one during a
    rotation window; a token without ``kid`` (issued before key ids) tries both; an unknown kid none."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as exc:
        raise TokenInvalid("invalid token") from exc
    known = [secret] + ([previous] if previous else [])
    if kid is None:
        return known
    return [s for s in known if isinstance(kid, str) and hmac.compare_digest(key_id(s), kid)]


def decode_token(secret: str, token: str, *, now: float | None = None, previous: str | None = None) -> TokenClaims:
    """The claims of a token we signed that has not expired at ``now``; ``TokenInvalid`` otherwise.

    ``secret`` signs new tokens; ``previous`` (JWT_SECRET_PREVIOUS) still validates the
    tokens it signed while it is configured. Expiry is checked here against ``now``
    (default: the system clock), not by PyJWT, so a use case's clock decides.
    Revocation is not checked here (that needs the database).
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid("malformed token")
    claims: dict[str, Any] | None = None
    for candidate in _signing_secrets(token, secret, previous):
        try:
            # algorithms pinned: a token claiming "none" or RS256 is refused.
            claims = jwt.decode(token, candidate, algorithms=[TOKEN_ALGORITHM],
                                options={"require": ["sub", "jti", "iat", "exp"], "verify_exp": False})
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise TokenInvalid("invalid token") from exc
    if claims is None:
        raise TokenInvalid("invalid token")
    sub, jti, exp, iat = claims.get("sub"), claims.get("jti"), claims.get("exp"), claims.get("iat")
    if not (isinstance(sub, str) and sub and isinstance(jti, str) and jti
            and isinstance(exp, int) and isinstance(iat, int)):
        raise TokenInvalid("invalid token")
    if exp <= (time.time() if now is None else now):  # PyJWT's rule: expired at exp itself
        raise TokenInvalid("token expired")
    sid, iat_ms = claims.get("sid"), claims.get("iat_ms")
    return TokenClaims(user_id=sub, user_name=str(claims.get("name", "")), role=str(claims.get("role", "")),
                       jti=jti, iat=iat, exp=exp, session_id=sid if isinstance(sid, str) and sid else None,
                       issued_ms=iat_ms if isinstance(iat_ms, int) and not isinstance(iat_ms, bool) else 0)


# --- refresh tokens ---------------------------------------------------------------


@dataclass(frozen=True)
class NewRefreshToken:
    token: str  # given to the client once
    token_hash: str  # stored: a database leak does not leak usable refresh tokens


def new_session_id() -> str:
    return secrets.token_hex(16)


def new_refresh_token() -> NewRefreshToken:
    """An opaque random string (256 bits): only its hash is stored, a plain SHA-256 suffices
    (like API keys, it cannot be brute-forced the way a password can)."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return NewRefreshToken(token, hash_refresh_token(token))


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(b"dropbox-refresh:" + token.encode()).hexdigest()


def check_refresh_token(value: Any) -> str:
    """A string (else 400); whether it is one of ours is the store's answer (401 if not)."""
    if not isinstance(value, str) or not value:
        raise Invalid("refresh_token must be a non-empty string")
    return value


def looks_like_refresh_token(value: str) -> bool:
    return value.startswith(REFRESH_PREFIX) and len(value) <= MAX_REFRESH_TOKEN_LENGTH


# --- pools ------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    name: str
    window_seconds: int
    close_grace_seconds: int = 0
    min_contributors: int | None = None
    processing_timeout_seconds: int = DEFAULT_PROCESSING_TIMEOUT
    processor_url: str | None = None
    quorum_wait_seconds: int = 0
    on_short: str = "process"
    max_late_seconds: int = DEFAULT_MAX_LATE
    # SPEC "Storage backends" / "Staging": as checked by parse_pool (secrets in clear or "***");
    # the use case (pools.py) resolves "***" and encrypts the secrets before the store sees them.
    storage: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_STORAGE))
    staging: list[dict[str, Any]] = field(default_factory=list)
    retention_days: int | None = None  # None: keep forever


# The fields of SPEC's POST /auth/pools this service keeps (PATCH changes any of them).
POOL_SPEC_FIELDS = ("name", "window_seconds", "close_grace_seconds", "min_contributors", "quorum_wait_seconds",
                    "on_short", "processing_timeout_seconds", "processor_url", "max_late_seconds",
                    "storage", "staging", "retention_days")
SECRET_BEARING = ("storage", "staging")  # fields whose secrets are never shown, logged or audited


class BadStorage(Invalid):
    """A pool's storage breaks a rule: 400 ``bad_storage`` (SPEC), the message safe to show."""


def check_storage(value: Any) -> dict[str, Any]:
    if value is None:
        return dict(DEFAULT_STORAGE)
    try:
        return poolstorage.check_storage(value)
    except poolstorage.StorageInvalid as exc:
        raise BadStorage(str(exc)) from None


def check_staging(value: Any) -> list[dict[str, Any]]:
    try:
        return poolstorage.check_staging(value)
    except poolstorage.StorageInvalid as exc:
        raise Invalid(str(exc)) from None


def _int_field(body: dict[str, Any], key: str, default: int | None, low: int, high: int,
               nullable: bool = False) -> int | None:
    if key not in body:
        return default
    value = body[key]
    if value is None:
        if nullable:
            return None
        if default is not None:
            return default
        raise Invalid(f"{key} is required")
    # bool is an int in Python; JSON true is not a number of seconds.
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{key} must be an integer")
    if not low <= value <= high:
        raise Invalid(f"{key} must be between {low} and {high}")
    return value


def check_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise Invalid(f"processor_url must be an http(s) URL of at most {MAX_URL} characters, or null")
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise Invalid("processor_url must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise Invalid("processor_url is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("processor_url must be an http or https URL with a host")
    return value


def parse_pool(body: dict[str, Any]) -> PoolSpec:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Invalid("name must be a non-empty string")
    name = name.strip()
    if len(name) > MAX_POOL_NAME or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise Invalid(f"name must be at most {MAX_POOL_NAME} printable characters")
    if "window_seconds" not in body:
        raise Invalid("window_seconds is required")
    window = _int_field(body, "window_seconds", None, 1, MAX_WINDOW_SECONDS)
    assert window is not None
    grace = _int_field(body, "close_grace_seconds", 0, 0, MAX_GRACE_SECONDS)
    minimum = _int_field(body, "min_contributors", None, 1, MAX_MIN_CONTRIBUTORS, nullable=True)
    timeout = _int_field(body, "processing_timeout_seconds", DEFAULT_PROCESSING_TIMEOUT, 1,
                         MAX_PROCESSING_TIMEOUT)
    quorum_wait = _int_field(body, "quorum_wait_seconds", 0, 0, MAX_QUORUM_WAIT)
    max_late = _int_field(body, "max_late_seconds", DEFAULT_MAX_LATE, 0, MAX_LATE_SECONDS)
    on_short = body.get("on_short", "process")
    if on_short is None:
        on_short = "process"
    if on_short not in ON_SHORT:
        raise Invalid("on_short must be 'process' or 'fail'")
    assert grace is not None and timeout is not None and quorum_wait is not None and max_late is not None
    retention = _int_field(body, "retention_days", None, 0, MAX_RETENTION_DAYS, nullable=True)
    return PoolSpec(name=name, window_seconds=window, close_grace_seconds=grace, min_contributors=minimum,
                    processing_timeout_seconds=timeout, processor_url=check_url(body.get("processor_url")),
                    quorum_wait_seconds=quorum_wait, on_short=on_short, max_late_seconds=max_late,
                    storage=check_storage(body.get("storage")), staging=check_staging(body.get("staging")),
                    retention_days=retention)


def parse_pool_patch(current: dict[str, Any], body: dict[str, Any]) -> PoolSpec:
    """The pool ``current`` with the fields of ``body`` changed, checked exactly as a new pool is.

    Keys this service does not keep are ignored (as POST ignores them); at least one it keeps
    must be there, so an empty or misspelt PATCH is a 400, not a silent no-op.
    """
    if not any(key in body for key in POOL_SPEC_FIELDS):
        raise Invalid("nothing to change: give at least one of " + ", ".join(POOL_SPEC_FIELDS))
    merged = {key: current.get(key) for key in POOL_SPEC_FIELDS}
    merged.update({key: body[key] for key in POOL_SPEC_FIELDS if key in body})
    return parse_pool(merged)


# --- users (admin) ----------------------------------------------------------------

MAX_PAGE = 1000  # a larger limit is refused (400 naming it), never silently cut
DEFAULT_PAGE = 100


@dataclass(frozen=True)
class UserPatch:
    role: str | None = None
    disabled: bool | None = None


def parse_user_patch(body: dict[str, Any]) -> UserPatch:
    if "role" not in body and "disabled" not in body:
        raise Invalid("nothing to change: give role and/or disabled")
    role = body.get("role")
    if "role" in body and role not in USER_ROLES:
        raise Invalid("role must be 'user' or 'admin'")
    disabled = body.get("disabled")
    if "disabled" in body and not isinstance(disabled, bool):
        raise Invalid("disabled must be true or false")
    return UserPatch(role=role, disabled=disabled)


def parse_limit(value: Any) -> int:
    """A page size from a query string: 1..MAX_PAGE, default DEFAULT_PAGE."""
    if value is None or value == "":
        return DEFAULT_PAGE
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 7:
        raise Invalid(f"limit must be an integer between 1 and {MAX_PAGE}")
    limit = int(value)
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit must be an integer between 1 and {MAX_PAGE}")
    return limit


_CURSOR = re.compile(r"[0-9a-f]{32}")


def parse_cursor(value: Any) -> str | None:
    """A users cursor is the last user id of the previous page (ids are 32 hex characters)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CURSOR.fullmatch(value):
        raise Invalid("cursor is not one this service gave")
    return value


def pool_view(pool: dict[str, Any], *, admin: bool) -> dict[str, Any]:
    """A pool as a caller may see it: every secret of ``storage``/``staging`` is ``"***"`` (SPEC);
    ``processor_url`` (where groups are announced), ``storage`` (where files live: endpoints,
    buckets, server paths) and ``staging`` (where results are copied) are for admins only."""
    storage, staging = poolstorage.mask(pool.get("storage"), pool.get("staging"))
    shown = {**pool, "storage": storage, "staging": staging}
    return shown if admin else {k: v for k, v in shown.items() if k not in _ADMIN_ONLY}


_ADMIN_ONLY = frozenset({"processor_url", "storage", "staging"})


# --- processor API keys ---------------------------------------------------------


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    api_key: str  # shown once
    key_hash: str  # stored


def new_api_key() -> NewApiKey:
    """``pk_<key_id>_<secret>``: the store looks the key up by key_id, then compares hashes.

    The secret has 256 bits of entropy, so a plain SHA-256 is enough (no slow hash needed:
    it cannot be brute-forced like a password).
    """
    key_id = secrets.token_hex(8)
    api_key = f"{API_KEY_PREFIX}_{key_id}_{secrets.token_hex(32)}"
    return NewApiKey(key_id=key_id, api_key=api_key, key_hash=hash_api_key(api_key))


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


_API_KEY = re.compile(r"pk_([0-9a-f]{16})_[0-9a-f]{64}")


def api_key_id(api_key: Any) -> str | None:
    """The key_id inside a well-formed API key, else None."""
    if not isinstance(api_key, str):
        return None
    match = _API_KEY.fullmatch(api_key)
    return match.group(1) if match else None


def api_key_matches(api_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(api_key), stored_hash)
