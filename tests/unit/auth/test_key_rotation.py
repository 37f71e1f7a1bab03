"""JWT key ids: tokens name their key (kid); JWT_SECRET_PREVIOUS validates old tokens during a rotation."""

from __future__ import annotations

import dataclasses

import jwt
import pytest

from services.auth import accounts, core
from services.common.errors import ApiError
from services.common.settings import ConfigError

from .conftest import ENV, make_deps

OLD = "old-jwt-secret-0123456789abcdef-0123456789"
NEW = "new-jwt-secret-0123456789abcdef-0123456789"


def test_tokens_carry_the_kid_of_their_secret() -> None:
    issued = core.encode_token(NEW, user_id="u1", user_name="alice", role="user")
    assert jwt.get_unverified_header(issued.token)["kid"] == core.key_id(NEW) != core.key_id(OLD)
    assert NEW not in core.key_id(NEW)


def test_a_previous_secret_validates_while_it_is_set_and_not_after() -> None:
    before = make_deps(JWT_SECRET=OLD)
    session = accounts.signup(before, {"user_name": "alice", "password": "password-123"})
    old_token = session["access_token"]

    rotating = make_deps(JWT_SECRET=NEW, JWT_SECRET_PREVIOUS=OLD)
    rotating = dataclasses.replace(rotating, store=before.store)
    assert accounts.authenticate(rotating, old_token).identity["user_name"] == "alice"
    fresh = accounts.login(rotating, "alice", {"password": "password-123"})["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] == core.key_id(NEW)  # new tokens: the new secret

    after = make_deps(JWT_SECRET=NEW)
    after = dataclasses.replace(after, store=before.store)
    with pytest.raises(ApiError) as refused:
        accounts.authenticate(after, old_token)
    assert refused.value.status == 401
    assert accounts.authenticate(after, fresh).identity["user_name"] == "alice"


def test_kid_selects_the_key_and_tokens_without_kid_still_validate() -> None:
    claims = {"sub": "u1", "jti": "j1", "iat": 1, "exp": 2**40}
    no_kid = jwt.encode(claims, OLD, algorithm="HS256")
    assert core.decode_token(NEW, no_kid, previous=OLD).user_id == "u1"  # issued before key ids
    unknown = jwt.encode(claims, OLD, algorithm="HS256", headers={"kid": "someone-else"})
    with pytest.raises(core.TokenInvalid):
        core.decode_token(NEW, unknown, previous=OLD)
    lying = jwt.encode(claims, "forged-secret-0123456789abcdef-0123", algorithm="HS256",
                       headers={"kid": core.key_id(NEW)})
    with pytest.raises(core.TokenInvalid):
        core.decode_token(NEW, lying, previous=OLD)


def test_previous_secret_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="differ"):
        make_deps(JWT_SECRET=NEW, JWT_SECRET_PREVIOUS=NEW)
    production = {**ENV, "DROPBOX_ENV": "production", "JWT_SECRET": NEW, "ADMIN_PASSWORD": "prod-admin-password"}
    with pytest.raises(ConfigError, match="JWT_SECRET_PREVIOUS"):
        make_deps(**{**production, "JWT_SECRET_PREVIOUS": "short"})
    assert make_deps(**{**production, "JWT_SECRET_PREVIOUS": OLD}).settings.jwt_secret_previous == OLD
