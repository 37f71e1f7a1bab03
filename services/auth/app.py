"""auth's HTTP API (SPEC "auth" plus the internal routes of docs/ARCHITECTURE.md).

Routes are thin: parse -> core rules -> store -> publish. Nothing connects at
import time or in ``create_app``: the store and the broker connect on first use.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify

from services.common import httpkit
from services.common.contracts import MembershipChanged, Message, TokenRevoked
from services.common.httpkit import ApiError, bad_request, forbidden, json_body, not_found, unauthorized
from services.common.messaging import Broker

from . import core
from .config import Settings
from .store import Duplicate, Store

log = logging.getLogger(__name__)

LOGIN_FAILED = "wrong user name or password"
MAX_BODY = 64 * 1024  # every auth request is a small JSON object
MAX_ID = 128  # longer path ids cannot exist; answer 404 without a query


def bootstrap_admin(store: Store, passwords: core.Passwords, user_name: str, password: str) -> bool:
    """Make sure the admin account exists with role admin; True when it was created.

    An existing account keeps its password: changing ADMIN_PASSWORD later does not
    silently reset it (an operator who wants that changes it deliberately).
    """
    created = store.ensure_admin(core.new_user_id(), user_name, passwords.hash(password))
    log.info("admin account ready", extra={"user_name": user_name, "admin_created": created})
    return created


def create_app(settings: Settings, *, store: Store | None = None, broker: Broker | None = None,
               passwords: core.Passwords | None = None) -> Flask:
    store = store or Store(settings.database_url, pool_size=settings.db_pool_size)
    # Few publish attempts: a logout waits for them while RabbitMQ is down (see publish()).
    broker = broker or Broker(settings.common.amqp_url, publish_attempts=3)
    passwords = passwords or core.Passwords(slots=settings.hash_slots)

    app = Flask("services.auth")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["auth_store"] = store
    app.extensions["auth_broker"] = broker
    metrics = httpkit.install(app, "auth", checks={"postgres": store.ping, "rabbitmq": broker.ping},
                              cors_origins=settings.common.cors_origins)
    signups = metrics.counter("auth_signups_total", "Accounts created by signup")
    logins = metrics.counter("auth_logins_total", "Login attempts", ("outcome",))
    revoked = metrics.counter("auth_tokens_revoked_total", "Tokens revoked by logout")
    validations = metrics.counter("auth_validations_total", "Token validations", ("outcome",))
    publish_failures = metrics.counter("auth_publish_failures_total", "Events not accepted by RabbitMQ",
                                       ("event",))

    # --- helpers ---------------------------------------------------------------

    def publish(message: Message) -> bool:
        # The change is already durable in PostgreSQL; an event that does not reach
        # RabbitMQ only delays what gateways learn: they re-validate tokens and
        # memberships with /auth/validate on connect and on every upload. So a failed
        # publish is logged and counted, and the request still succeeds.
        try:
            broker.publish(message)
            return True
        except Exception:  # noqa: BLE001 - see above
            publish_failures.labels(type(message).__name__).inc()
            log.exception("publishing an auth event failed", extra={"event": type(message).__name__})
            return False

    def caller() -> tuple[dict[str, Any], core.TokenClaims]:
        """The identity behind the request's Bearer token, or 401."""
        token = httpkit.bearer_token()
        if token is None:
            validations.labels("missing").inc()
            raise unauthorized("a Bearer token is required")
        try:
            claims = core.decode_token(settings.jwt_secret, token)
        except core.TokenInvalid as exc:
            validations.labels("invalid").inc()
            raise unauthorized(str(exc)) from exc
        identity = store.identity(claims.user_id, claims.jti)
        if identity is None:  # revoked token or deleted user
            validations.labels("revoked").inc()
            raise unauthorized("token revoked or user unknown")
        validations.labels("ok").inc()
        return identity, claims

    def admin() -> dict[str, Any]:
        identity, _ = caller()
        if identity["role"] != core.ADMIN:
            raise forbidden("this route is for admins")
        return identity

    def pool_or_404(pool_id: str) -> dict[str, Any]:
        pool = store.get_pool(pool_id) if len(pool_id) <= MAX_ID else None
        if pool is None:
            raise not_found(f"no pool {pool_id!r}")
        return pool

    def member_or_admin(pool_id: str) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        identity, _ = caller()
        pool = pool_or_404(pool_id)
        role = next((p["role"] for p in identity["pools"] if p["pool_id"] == pool_id), None)
        if role is None and identity["role"] != core.ADMIN:
            raise forbidden("not a member of this pool")
        return identity, pool, role

    def user_or_404(user_name: str) -> dict[str, Any]:
        user = store.user_by_name(user_name) if len(user_name) <= MAX_ID else None
        if user is None:
            raise not_found(f"no user {user_name!r}")
        return user

    def checked(fn, *args: Any) -> Any:
        try:
            return fn(*args)
        except core.Invalid as exc:
            raise bad_request(str(exc)) from exc

    def session(user: dict[str, Any]) -> dict[str, Any]:
        issued = core.encode_token(settings.jwt_secret, user_id=user["user_id"], user_name=user["user_name"],
                                   role=user["role"], ttl_seconds=settings.token_ttl_seconds)
        return {"user_id": user["user_id"], "user_name": user["user_name"], "role": user["role"],
                "access_token": issued.token, "token_type": "Bearer",
                "expires_in": settings.token_ttl_seconds}

    def created(doc: dict[str, Any]) -> tuple[Response, int]:
        return jsonify(doc), 201

    # --- users and tokens ---------------------------------------------------------

    @app.post("/auth/signup")
    def signup() -> tuple[Response, int]:
        body = json_body()
        user_name = checked(core.check_user_name, body.get("user_name"))
        password = checked(core.check_password, body.get("password"))
        try:
            user = store.create_user(core.new_user_id(), user_name, passwords.hash(password))
        except Duplicate as exc:
            raise ApiError(409, "conflict", "that user_name is taken") from exc
        signups.inc()
        log.info("user signed up", extra={"user_id": user["user_id"], "user_name": user_name})
        return created(session(user))

    @app.put("/auth/login/<user_name>")
    def login(user_name: str) -> Response:
        body = json_body()
        password = body.get("password")
        if not isinstance(password, str):
            raise bad_request("password must be a string")
        user = None
        if len(password) <= core.MAX_PASSWORD:
            try:
                core.check_user_name(user_name)
                user = store.user_by_name(user_name)
            except core.Invalid:
                user = None
            # Unknown users still cost one verify (against a dummy hash): the answer's
            # timing does not tell which names exist.
            ok = passwords.verify(user["password_hash"] if user else None, password)
        else:
            ok = False  # longer than any password we accept: no hash can match
        if not ok or user is None:
            logins.labels("failed").inc()
            raise unauthorized(LOGIN_FAILED)
        if passwords.needs_rehash(user["password_hash"]):
            store.set_password_hash(user["user_id"], passwords.hash(password))
        logins.labels("ok").inc()
        return jsonify(session(user))

    @app.put("/auth/logout/<user_name>")
    def logout(user_name: str) -> Response:
        identity, claims = caller()
        if identity["user_name"].lower() != user_name.lower():
            raise forbidden("that token belongs to another user")
        # Durable first: from this commit on /auth/validate refuses the token.
        store.revoke_token(claims.jti, claims.user_id, claims.exp)
        revoked.inc()
        published = publish(TokenRevoked(token_id=claims.jti, user_id=claims.user_id))
        log.info("token revoked", extra={"user_id": claims.user_id, "token_id": claims.jti,
                                         "published": published})
        return jsonify({"user_name": identity["user_name"], "token_id": claims.jti, "logged_out": True})

    @app.get("/auth/validate")
    def validate() -> Response:
        identity, claims = caller()
        return jsonify({**identity, "token_id": claims.jti, "expires_at": claims.exp})

    @app.get("/auth/users")
    def users() -> Response:
        admin()
        return jsonify({"users": store.list_users()})

    # --- pools ------------------------------------------------------------------------

    @app.post("/auth/pools")
    def create_pool() -> tuple[Response, int]:
        admin()
        spec = checked(core.parse_pool, json_body())
        for _ in range(3):  # 64 random bits: a collision is all but impossible, but cheap to handle
            try:
                pool = store.create_pool(core.new_pool_id(), spec)
                break
            except Duplicate:
                continue
        else:
            raise ApiError(500, "internal_error", "could not allocate a pool id")
        log.info("pool created", extra={"pool_id": pool["pool_id"]})
        return created(pool)

    @app.get("/auth/pools")
    def list_pools() -> Response:
        identity, _ = caller()
        pools = store.list_pools(identity["user_id"], all_pools=identity["role"] == core.ADMIN)
        return jsonify({"pools": pools})

    @app.get("/auth/pools/<pool_id>")
    def get_pool(pool_id: str) -> Response:
        _, pool, role = member_or_admin(pool_id)
        return jsonify({**pool, "role": role})

    @app.get("/auth/pools/<pool_id>/members")
    def list_members(pool_id: str) -> Response:
        member_or_admin(pool_id)
        return jsonify({"pool_id": pool_id, "members": store.members(pool_id)})

    @app.post("/auth/pools/<pool_id>/members")
    def add_member(pool_id: str) -> tuple[Response, int]:
        admin()
        body = json_body()
        user_name = checked(core.check_user_name, body.get("user_name"))
        role = checked(core.check_pool_role, body.get("role"))
        pool_or_404(pool_id)
        user = user_or_404(user_name)
        store.set_member(pool_id, user["user_id"], role)
        publish(MembershipChanged(pool_id=pool_id, user_id=user["user_id"], user_name=user["user_name"],
                                  role=role))
        return created({"pool_id": pool_id, "user_id": user["user_id"], "user_name": user["user_name"],
                        "role": role})

    @app.delete("/auth/pools/<pool_id>/members/<user_name>")
    def remove_member(pool_id: str, user_name: str) -> Response:
        admin()
        pool_or_404(pool_id)
        user = user_or_404(user_name)
        if not store.remove_member(pool_id, user["user_id"]):
            raise not_found(f"{user['user_name']!r} is not a member of this pool")
        publish(MembershipChanged(pool_id=pool_id, user_id=user["user_id"], user_name=user["user_name"],
                                  role=None))
        return jsonify({"pool_id": pool_id, "user_id": user["user_id"], "user_name": user["user_name"],
                        "removed": True})

    # --- processor keys --------------------------------------------------------------------

    @app.post("/auth/pools/<pool_id>/processor-keys")
    def create_key(pool_id: str) -> tuple[Response, int]:
        admin()
        pool_or_404(pool_id)
        key = core.new_api_key()
        row = store.add_processor_key(key.key_id, pool_id, key.key_hash)
        log.info("processor key created", extra={"pool_id": pool_id, "key_id": key.key_id})
        return created({"api_key": key.api_key, "key_id": key.key_id, "pool_id": pool_id,
                        "created": row["created"]})

    @app.get("/auth/pools/<pool_id>/processor-keys")
    def list_keys(pool_id: str) -> Response:
        admin()
        pool_or_404(pool_id)
        return jsonify({"pool_id": pool_id, "keys": store.processor_keys(pool_id)})

    @app.delete("/auth/pools/<pool_id>/processor-keys/<key_id>")
    def revoke_key(pool_id: str, key_id: str) -> Response:
        admin()
        pool_or_404(pool_id)
        if len(key_id) > MAX_ID or not store.revoke_processor_key(pool_id, key_id):
            raise not_found(f"no processor key {key_id!r} in this pool")
        log.info("processor key revoked", extra={"pool_id": pool_id, "key_id": key_id})
        return jsonify({"pool_id": pool_id, "key_id": key_id, "revoked": True})

    # --- internal routes (X-Internal-Key) -----------------------------------------------------

    @app.post("/auth/internal/processor-keys/verify")
    def verify_key() -> Response:
        httpkit.check_internal_key(settings.internal_api_key)
        api_key = json_body().get("api_key")
        if not isinstance(api_key, str):
            raise unauthorized("unknown or revoked API key")
        key_id = core.api_key_id(api_key)
        row = store.processor_key(key_id) if key_id else None
        if row is None or not core.api_key_matches(api_key, row["key_hash"]):
            raise unauthorized("unknown or revoked API key")
        return jsonify({"pool_id": row["pool_id"], "key_id": row["key_id"]})

    @app.get("/auth/internal/pools/<pool_id>")
    def internal_pool(pool_id: str) -> Response:
        httpkit.check_internal_key(settings.internal_api_key)
        return jsonify(pool_or_404(pool_id))

    @app.get("/auth/internal/pools/<pool_id>/members")
    def internal_members(pool_id: str) -> Response:
        httpkit.check_internal_key(settings.internal_api_key)
        pool_or_404(pool_id)
        return jsonify({"pool_id": pool_id, "members": store.members(pool_id)})

    return app
