"""Users and tokens: signup, login, logout, validation, the users list, the admin account."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from services.common.contracts import TokenRevoked
from services.common.errors import ApiError, Duplicate, bad_request, conflict, forbidden, not_found, unauthorized
from services.common.settings import DEV_SECRETS

from . import core, events, revocation, throttle
from .deps import Deps
from .ports import AuthStore

log = logging.getLogger(__name__)

LOGIN_FAILED = "wrong user name or password"
BUSY_RETRY_AFTER = 1  # seconds: argon2 slots free up within tens of milliseconds

T = TypeVar("T")


def checked(rule: Callable[[Any], T], value: Any) -> T:
    """``rule(value)``, its ``core.Invalid`` answered as a 400."""
    try:
        return rule(value)
    except core.Invalid as exc:
        raise bad_request(str(exc)) from exc


@contextmanager
def argon2_slot(deps: Deps) -> Iterator[None]:
    """Password work, its ``core.Busy`` answered as 429 overloaded (never an unbounded queue)."""
    try:
        yield
    except core.Busy as exc:
        deps.metrics.hash_busy.inc()
        events.warn_now_and_then("argon2-busy", "password slots busy; refusing signups/logins", error=str(exc))
        raise ApiError(429, "overloaded", "the service is busy; try again", retry_after=BUSY_RETRY_AFTER) from exc


@dataclass(frozen=True)
class Caller:
    """Who sent the request: the stored identity (user and pools) and the token's claims."""

    identity: dict[str, Any]
    claims: core.TokenClaims

    @property
    def is_admin(self) -> bool:
        return bool(self.identity["role"] == core.ADMIN)

    def pool_role(self, pool_id: str) -> str | None:
        return next((p["role"] for p in self.identity["pools"] if p["pool_id"] == pool_id), None)


def authenticate(deps: Deps, token: str | None) -> Caller:
    """The identity behind a Bearer token, or 401 (missing, invalid, expired, revoked, user gone)."""
    validations = deps.metrics.validations
    if token is None:
        validations.labels("missing").inc()
        raise unauthorized("a Bearer token is required")
    try:
        claims = core.decode_token(deps.settings.jwt_secret, token, now=deps.clock.time(),
                                   previous=deps.settings.jwt_secret_previous)
    except core.TokenInvalid as exc:
        validations.labels("invalid").inc()
        raise unauthorized(str(exc)) from exc
    identity = deps.store.identity(claims.user_id, claims.jti, claims.session_id, int(claims.issued_at * 1000))
    if identity is None or revocation.listed(deps, claims):  # revoked token, ended login or deleted user
        validations.labels("revoked").inc()
        raise unauthorized("token revoked or user unknown")
    validations.labels("ok").inc()
    return Caller(identity, claims)


def require_admin(caller: Caller) -> Caller:
    if not caller.is_admin:
        raise forbidden("this route is for admins")
    return caller


def _access_token(deps: Deps, user: dict[str, Any], session_id: str, jti: str, issued: float) -> str:
    """``issued`` is taken BEFORE the user's row (its role) was read: a role change committed after
    that read sets a "not valid before" later than ``issued``, so a token carrying the old role
    is refused (patch_user sets it only once the change is committed)."""
    return core.encode_token(deps.settings.jwt_secret, user_id=user["user_id"], user_name=user["user_name"],
                             role=user["role"], ttl_seconds=deps.settings.token_ttl_seconds, now=issued,
                             session_id=session_id, jti=jti).token


def _expiries(deps: Deps, issued: float) -> tuple[int, int]:
    """(refresh token expiry, access token expiry) for tokens issued at ``issued``."""
    return int(issued) + deps.settings.refresh_ttl_seconds, int(issued) + deps.settings.token_ttl_seconds


def session(deps: Deps, user: dict[str, Any], issued: float | None = None) -> dict[str, Any]:
    """A new login for ``user`` (access + refresh token) and what SPEC's signup/login answer says.

    ``issued``: when the user's row was read (default: now)."""
    issued = deps.clock.time() if issued is None else issued
    session_id, jti, refresh = core.new_session_id(), core.new_token_id(), core.new_refresh_token()
    refresh_exp, access_exp = _expiries(deps, issued)
    deps.store.create_session(session_id, user["user_id"], refresh.token_hash, refresh_exp, jti, access_exp)
    return {"user_id": user["user_id"], "user_name": user["user_name"], "role": user["role"],
            "access_token": _access_token(deps, user, session_id, jti, issued), "refresh_token": refresh.token,
            "token_type": "Bearer", "expires_in": deps.settings.token_ttl_seconds}


REFRESH_REFUSED = "refresh token unknown, expired, already used or revoked"  # one message: tells nothing


def refresh(deps: Deps, body: dict[str, Any]) -> dict[str, Any]:
    """SPEC's POST /auth/refresh: rotate the refresh token; a used one presented again ends the login."""
    token = checked(core.check_refresh_token, body.get("refresh_token"))
    if not core.looks_like_refresh_token(token):
        raise unauthorized(REFRESH_REFUSED)
    jti, new = core.new_token_id(), core.new_refresh_token()
    issued = deps.clock.time()  # before the user's role is read (see _access_token)
    refresh_exp, access_exp = _expiries(deps, issued)
    found = deps.store.rotate_refresh(core.hash_refresh_token(token), new.token_hash, refresh_exp, jti, access_exp,
                                      int(issued))
    if found is None or found["outcome"] != "ok":
        outcome = found["outcome"] if found else "unknown"
        deps.metrics.refreshes.labels(outcome).inc()
        if found is not None and outcome in ("reused", "revoked"):
            # Reused: someone holds a copy of this login's tokens (the rightful client or a thief:
            # we cannot tell which), so the whole login ends, access tokens included. Revoked:
            # listed again, which heals a list write that failed (503) when the login ended.
            revocation.write(deps, logins=[(found["session_id"], found["access_expires_at"])])
            if outcome == "reused":
                log.warning("refresh token reused; login revoked",
                            extra={"user_id": found["user_id"], "session_id": found["session_id"]})
                deps.audit.record("refresh_reused", actor=found["user_id"], outcome="refused",
                                  user_name=found["user_name"], session_id=found["session_id"])
                revoked_login(deps, found)
        raise unauthorized(REFRESH_REFUSED)
    deps.metrics.refreshes.labels("ok").inc()
    return {"access_token": _access_token(deps, found, found["session_id"], jti, issued),
            "refresh_token": new.token,
            "token_type": "Bearer", "expires_in": deps.settings.token_ttl_seconds}


def revoked_login(deps: Deps, login: dict[str, Any]) -> None:
    """Tell the fleet a login ended (its store row is already revoked)."""
    if login.get("access_jti"):
        events.publish(deps, TokenRevoked(token_id=login["access_jti"], user_id=login["user_id"]))


def signup(deps: Deps, body: dict[str, Any], client_ip: str = "") -> dict[str, Any]:
    limits = deps.settings
    throttle.attempt(deps, "signup", "ip", client_ip, limits.signup_ip_rate_per_minute)
    user_name = checked(core.check_user_name, body.get("user_name"))
    password = checked(core.check_password, body.get("password"))
    throttle.attempt(deps, "signup", "user", user_name, limits.signup_rate_per_minute)
    with argon2_slot(deps):
        password_hash = deps.passwords.hash(password)
    try:
        user = deps.store.create_user(core.new_user_id(), user_name, password_hash)
    except Duplicate as exc:
        raise conflict("that user_name is taken") from exc
    deps.metrics.signups.inc()
    log.info("user signed up", extra={"user_id": user["user_id"], "user_name": user_name})
    deps.audit.record("signup", actor=user["user_id"], user_name=user_name, client_ip=client_ip or None)
    return session(deps, user)


def login(deps: Deps, user_name: str, body: dict[str, Any], client_ip: str = "") -> dict[str, Any]:
    """A session for the right password; one message for a wrong password and an unknown name.

    Limited per client address (every attempt counts) and per user name from that address
    (failures count). Not per name alone: failures from anywhere would then lock the account's
    owner out, which anyone knowing the name could do on purpose.
    """
    limits = deps.settings
    name_here = f"{user_name}\n{client_ip}"  # hashed into the counter's key (core.rate_key)
    throttle.attempt(deps, "login", "ip", client_ip, limits.login_ip_rate_per_minute)
    throttle.refuse_if_reached(deps, "login", "user", name_here, limits.login_rate_per_minute)
    password = body.get("password")
    if not isinstance(password, str):
        raise bad_request("password must be a string")
    issued = deps.clock.time()  # before the user's role is read (see _access_token)
    user = None
    if len(password) <= core.MAX_PASSWORD:
        try:
            core.check_user_name(user_name)
            user = deps.store.user_by_name(user_name)
        except core.Invalid:
            user = None
        # Unknown users still cost one verify (against a dummy hash): the answer's
        # timing does not tell which names exist.
        with argon2_slot(deps):
            ok = deps.passwords.verify(user["password_hash"] if user else None, password)
    else:
        ok = False  # longer than any password we accept: no hash can match
    if not ok or user is None:
        deps.metrics.logins.labels("failed").inc()
        throttle.failure(deps, "login", "user", name_here, limits.login_rate_per_minute)
        # The name as typed (bounded: a path segment can be long), never the password.
        deps.audit.record("login_failed", actor=user["user_id"] if user else "anonymous", outcome="refused",
                          user_name=user_name[:core.MAX_AUDIT_NAME], client_ip=client_ip or None)
        raise unauthorized(LOGIN_FAILED)
    if user.get("disabled"):
        # Told only to whoever knows the password: it says nothing to someone guessing.
        deps.metrics.logins.labels("disabled").inc()
        deps.audit.record("login_failed", actor=user["user_id"], outcome="refused", user_name=user["user_name"],
                          reason="disabled", client_ip=client_ip or None)
        raise forbidden("this account is disabled")
    if deps.passwords.needs_rehash(user["password_hash"]):
        try:
            deps.store.set_password_hash(user["user_id"], deps.passwords.hash(password))
        except core.Busy:
            pass  # the password was right: log in now, rehash at a quieter login
    deps.metrics.logins.labels("ok").inc()
    answer = session(deps, user, issued)
    deps.audit.record("login", actor=user["user_id"], user_name=user["user_name"], client_ip=client_ip or None)
    return answer


def logout(deps: Deps, token: str | None, user_name: str) -> dict[str, Any]:
    """Revoke the token and its login (refresh tokens included).

    A token revoked already but not expired may log out again (the answer is the same):
    a client whose logout failed half-way (503) can simply retry it.
    """
    if token is None:
        raise unauthorized("a Bearer token is required")
    try:
        claims = core.decode_token(deps.settings.jwt_secret, token, now=deps.clock.time(),
                                   previous=deps.settings.jwt_secret_previous)
    except core.TokenInvalid as exc:
        raise unauthorized(str(exc)) from exc
    user = deps.store.user_by_id(claims.user_id)
    if user is None:
        raise unauthorized("token revoked or user unknown")
    if user["user_name"].lower() != user_name.lower():
        raise forbidden("that token belongs to another user")
    # Durable first: from this commit on /auth/validate refuses the token and /auth/refresh its login.
    if deps.store.revoke_token(claims.jti, claims.user_id, claims.exp):
        deps.metrics.revoked.inc()
    logins = []
    if claims.session_id is not None:
        ended = deps.store.revoke_session(claims.session_id)
        logins = [(claims.session_id, max(claims.exp, ended["access_expires_at"] if ended else 0))]
    # Then the shared list, before answering (503 if it cannot be written: revocation.py says why);
    # the broker message after it is only the fast path.
    revocation.write(deps, tokens=[(claims.jti, claims.exp)], logins=logins)
    published = events.publish(deps, TokenRevoked(token_id=claims.jti, user_id=claims.user_id))
    log.info("token revoked", extra={"user_id": claims.user_id, "token_id": claims.jti, "published": published})
    deps.audit.record("logout", actor=claims.user_id, user_name=user["user_name"], token_id=claims.jti,
                      session_id=claims.session_id)
    return {"user_name": user["user_name"], "token_id": claims.jti, "logged_out": True}


def validate(caller: Caller) -> dict[str, Any]:
    """SPEC's /auth/validate answer: the identity, its pools, the token's id and expiry."""
    claims = caller.claims
    return {**caller.identity, "token_id": claims.jti, "expires_at": claims.exp, "session_id": claims.session_id,
            "issued_at": claims.issued_at}


def users(deps: Deps, caller: Caller, limit: Any = None, cursor: Any = None) -> dict[str, Any]:
    """A page of users (admin): ``{users, next_cursor}``; ``next_cursor`` is None on the last page."""
    require_admin(caller)
    size = checked(core.parse_limit, limit)
    after = checked(core.parse_cursor, cursor)
    # One more than asked tells whether another page follows, without a count query.
    found = deps.store.list_users(limit=size + 1, after=after)
    page = found[:size]
    return {"users": page, "next_cursor": page[-1]["user_id"] if len(found) > size else None}


def patch_user(deps: Deps, caller: Caller, user_name: str, body: dict[str, Any]) -> dict[str, Any]:
    """SPEC's PATCH /auth/users/<user_name> {role?, disabled?} (admin).

    A role change or a disable makes every token the user holds invalid at once: a "not valid
    before" in PostgreSQL and in the shared list (before answering, 503 if the list cannot be
    written; repeating the PATCH completes it). After a role change the user's refresh tokens still
    work and give tokens with the new role; a disable also ends every login (and the user cannot
    log in or refresh).
    """
    require_admin(caller)
    patch = checked(core.parse_user_patch, body)
    user = deps.store.user_by_name(user_name) if len(user_name) <= 128 else None
    if user is None:
        raise not_found(f"no user {user_name!r}")
    if user["user_id"] == caller.identity["user_id"] and (patch.disabled or patch.role == core.USER):
        # The last admin could lock everyone out; another admin may do it.
        raise forbidden("an admin cannot disable or demote their own account")
    role_changed = patch.role is not None and patch.role != user["role"]
    disabling = bool(patch.disabled) and not user.get("disabled")
    updated = deps.store.update_user(user["user_id"], role=patch.role, disabled=patch.disabled)
    if updated is None:
        raise not_found(f"no user {user_name!r}")
    ended = deps.store.revoke_user_sessions(user["user_id"]) if patch.disabled else []
    # Any role given or a disable (changed or not) revokes: the same PATCH repeated after a 503
    # completes what the first one could not write to the shared list.
    if patch.role is not None or patch.disabled:
        # Taken once the change is committed: a token issued from a read of the old row carries an
        # earlier time (login and refresh take theirs before reading), so it is refused.
        not_before = int(deps.clock.time() * 1000) + 1
        deps.store.update_user(user["user_id"], tokens_valid_after_ms=not_before)
        revocation.write(deps, users=[(user["user_id"], not_before)],
                         logins=[(e["session_id"], e["access_expires_at"]) for e in ended])
    for login in ended:  # the fast path: gateways cut the sockets of the newest tokens at once
        revoked_login(deps, login)
    log.info("user changed", extra={"user_id": user["user_id"], "role_changed": role_changed, "disabled": disabling})
    actor = {"actor": caller.identity["user_id"], "actor_name": caller.identity["user_name"],
             "user_id": user["user_id"], "user_name": user["user_name"]}
    if role_changed:
        deps.audit.record("user_role_changed", **actor, old_role=user["role"], new_role=patch.role)
    if patch.disabled is not None and patch.disabled != bool(user.get("disabled")):
        deps.audit.record("user_disabled" if patch.disabled else "user_enabled", **actor,
                          logins_ended=len(ended) if patch.disabled else None)
    return updated


def bootstrap_admin(store: AuthStore, passwords: core.Passwords, user_name: str, password: str) -> bool:
    """Make sure the admin account exists with role admin; True when it was created.

    An existing account keeps its password: changing ADMIN_PASSWORD later does not
    silently reset it (an operator who wants that changes it deliberately).
    """
    created = store.ensure_admin(core.new_user_id(), user_name, passwords.hash(password))
    log.info("admin account ready", extra={"user_name": user_name, "admin_created": created})
    return created



def admin_password_is_default(deps: Deps) -> bool:
    """Does the stored ADMIN_USER account still accept the development default password?

    ``ensure_admin`` keeps an existing account's password, so a database first started in
    development keeps ``admin-password`` even when production sets ADMIN_PASSWORD.
    """
    admin = deps.store.user_by_name(deps.settings.admin_user)
    if admin is None:
        return False
    return deps.passwords.verify(admin["password_hash"], DEV_SECRETS["ADMIN_PASSWORD"])
